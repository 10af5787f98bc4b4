/** Ops of rim's durable-delivery extension. */
export declare const DurableOp: Readonly<{
  /** Server to client: a push with its id and position. */
  PUSH: 20;
  /** Server to client: how a stream resumed. */
  RESUME: 21;
  /** Client to server: processed through a position of the user stream. */
  ACK: 22;
}>;

/** The extension's version (first byte of every body, `v` of the auth field). */
export declare const DURABLE_VERSION: 1;
/** Largest epoch or seq, 2^53 - 1. */
export declare const MAX_POSITION: number;

export declare const DURABLE_DEFAULTS: Readonly<{
  ack: 'auto';
  ackDelay: number;
  ackEvery: number;
}>;

/** Which stream a position is in. */
export type StreamName = 'user' | 'room';

/** A place in a stream: its epoch (life of its history) and the seq of the last push seen. */
export interface StreamPosition {
  epoch: number;
  seq: number;
}

/** What a durable client processed, as a store keeps it. */
export interface Positions {
  user: StreamPosition | null;
  room: (StreamPosition & { room: string }) | null;
}

/** Where a durable client keeps its positions between runs; either method may be async. */
export interface PositionStore {
  /** Positions saved by an earlier run (null or undefined for none); read once, at start(). */
  get(): Positions | null | undefined | Promise<Positions | null | undefined>;
  /** Called after every change (each processed push): keep `positions`. */
  set(positions: Positions): void | Promise<void>;
}

/** Why a stream was not resumed: the app reloads it from its backend. */
export type NotResumedReason = 'epoch_changed' | 'expired' | 'ahead' | 'unavailable' | 'too_many';

/** A decoded op-20 body. */
export interface DurablePushBody {
  stream: StreamName;
  replay: boolean;
  /** The business operation. */
  op: number;
  /** The message id (UUID text). */
  id: string;
  position: StreamPosition;
  body: Uint8Array;
}

/** A decoded op-21 body. */
export interface ResumeAnswer {
  stream: StreamName;
  resumed: boolean;
  /** Replayed pushes (0 when not resumed). */
  count: number;
  /** null when resumed. */
  reason: NotResumedReason | null;
  /** Where the client continues from. */
  position: StreamPosition;
}

/** Durable options of RimClient (`durable: true` takes the defaults). */
export interface DurableOptions {
  /** Where positions are kept (default: a MemoryPositionStore, lost when the page or process ends). */
  store?: PositionStore;
  /** 'auto' (default): a push is processed when its 'message' listeners return; 'manual': on push.ack(). */
  ack?: 'auto' | 'manual';
  /** Longest wait before an ack (default 50 ms). */
  ackDelay?: number;
  /** Processed user pushes after which an ack goes out at once (default 64). */
  ackEvery?: number;
}

/** Throws a ProtocolError (codes durable_truncated, durable_version, durable_kind, durable_flags, durable_reserved, durable_position). */
export declare function decodeDurablePush(body: Uint8Array): DurablePushBody;
/** Throws a ProtocolError (also durable_too_long, durable_outcome). */
export declare function decodeResumeAnswer(body: Uint8Array): ResumeAnswer;
/** The 20-byte op-22 body. */
export declare function encodeAck(position: StreamPosition): Uint8Array;

/** The default store: in memory, for as long as the object lives. */
export declare class MemoryPositionStore implements PositionStore {
  constructor(initial?: Positions | null);
  get(): Positions;
  set(positions: Positions): void;
}

/** A store over localStorage / sessionStorage under `key`. */
export declare function webStoragePositionStore(
  storage: { getItem(key: string): string | null; setItem(key: string, value: string): void },
  key: string,
): PositionStore;

export type AckDue = 'no' | 'soon' | 'now';

/** The bookkeeping of a durable client (RimClient keeps one); for code that drives connections itself. */
export declare class PositionTracker {
  constructor(saved?: Positions | null, options?: { ackEvery?: number });
  positions(): Positions;
  /** The auth as JSON text with the `rim` field (a string that is not JSON is taken as a token). */
  authBody(auth: string | Record<string, unknown>): string;
  /** Whether the push is new (false: a duplicate, drop it). */
  deliver(push: { stream: StreamName; position: StreamPosition }): boolean;
  resumed(answer: ResumeAnswer): AckDue;
  roomConfirmed(room: string): void;
  processed(stream: StreamName, position: StreamPosition): { changed: boolean; ack: AckDue };
  takeAck(): StreamPosition | null;
  reconnected(): AckDue;
}
