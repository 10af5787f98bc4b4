// A small event emitter: on / off / once / emit. A listener that throws does not stop the others
// nor the client; its exception is rethrown asynchronously so it still shows up.

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * Adds a listener; returns a function that removes it.
   * @param {string} type
   * @param {Function} listener
   */
  on(type, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => this.off(type, listener);
  }

  /**
   * Removes a listener.
   * @param {string} type
   * @param {Function} listener
   */
  off(type, listener) {
    const set = this._listeners.get(type);
    if (set) {
      set.delete(listener);
      for (const l of set) if (l._rimOnce === listener) set.delete(l);
    }
    return this;
  }

  /**
   * Adds a listener called at most once.
   * @param {string} type
   * @param {Function} listener
   */
  once(type, listener) {
    const wrapper = (event) => {
      this.off(type, wrapper);
      listener(event);
    };
    wrapper._rimOnce = listener;
    return this.on(type, wrapper);
  }

  /**
   * Calls the listeners of `type` with `event`; returns whether there were any.
   * @param {string} type
   * @param {unknown} event
   */
  emit(type, event) {
    const set = this._listeners.get(type);
    if (!set || set.size === 0) return false;
    for (const listener of [...set]) {
      try {
        listener(event);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    return true;
  }

  /**
   * Number of listeners of `type`.
   * @param {string} type
   */
  listenerCount(type) {
    return this._listeners.get(type)?.size ?? 0;
  }
}
