/** A small event emitter; `Events` maps event names to their payload types. */
export declare class Emitter<Events extends Record<string, unknown> = Record<string, unknown>> {
  constructor();
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events & string>(type: K, listener: (event: Events[K]) => void): () => void;
  /** Removes a listener (also one added with `once`). */
  off<K extends keyof Events & string>(type: K, listener: (event: Events[K]) => void): this;
  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof Events & string>(type: K, listener: (event: Events[K]) => void): () => void;
  /** Calls the listeners; a throwing listener is isolated (its error is rethrown asynchronously). */
  emit<K extends keyof Events & string>(type: K, event: Events[K]): boolean;
  listenerCount(type: keyof Events & string): number;
}
