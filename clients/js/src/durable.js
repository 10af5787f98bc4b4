// rim's durable-delivery extension, client side (docs/rim-protocol-extension.md; Rust codec
// rim_proto::durable, client rim_client::durable): the op-20/21/22 bodies, the `rim` auth field,
// and the bookkeeping of positions that RimClient does with `durable: true`.
//
// A client keeps two marks per stream (user, room). `processed` is what the app finished with:
// the next auth asks to resume from it, op 22 acks it (user stream only), the position store keeps
// it for the next run. `delivered` is the highest push handed to the app: a push at or below it
// (same epoch) is a duplicate (replayed and live, or resent after a retry) and is dropped, so the
// app never sees one push twice while the client object lives. After a reconnect the edge replays
// from `processed`, and what it resends up to `delivered` is dropped.
//
// A "not resumed" answer means the history is gone: its head is adopted at once and the app is told
// to reload (after "unavailable", the store did not answer, the client keeps its own position). A "resumed" answer's head is adopted once the app processed everything handed out (it
// matters for a client without a position, and for the numbers of sibling devices' pushes this
// device never sees). A room position belongs to a room name and is sent only when the auth enters
// that room (its `room_id`, or the token's `room_id`/`room` claim); a confirmed room change starts
// the new room at the head its op-21 answer names. Acks are cumulative and coalesced: one op 22
// after `ackEvery` processed user pushes, or `ackDelay` ms after the first unacked one.

import { ProtocolError } from './protocol.js';

/** Ops of the extension. */
export const DurableOp = Object.freeze({
  /** Server to client: a push with its id and position. */
  PUSH: 20,
  /** Server to client: how a stream resumed. */
  RESUME: 21,
  /** Client to server: processed through a position of the user stream. */
  ACK: 22,
});

/** The extension's version: first byte of every body, `v` of the auth field. */
export const DURABLE_VERSION = 1;
/** Largest epoch or seq (2^53 - 1): positions are plain numbers. */
export const MAX_POSITION = Number.MAX_SAFE_INTEGER;

export const DURABLE_DEFAULTS = Object.freeze({
  /** 'auto': a push is processed when its 'message' listeners return; 'manual': on push.ack(). */
  ack: 'auto',
  /** Longest wait (ms) before an ack goes out for processed user pushes. */
  ackDelay: 50,
  /** Processed user pushes after which an ack goes out at once. */
  ackEvery: 64,
});

const PUSH_HEADER = 40;
const RESUME_LENGTH = 24;
const ACK_LENGTH = 20;
const STREAMS = ['user', 'room'];
const REASONS = [null, 'epoch_changed', 'expired', 'ahead', 'unavailable', 'too_many'];

function fail(code, message) {
  throw new ProtocolError(code, message);
}

/** The body as a DataView after checking its version and length (`exact`: nothing may follow). */
function fixed(what, body, length, exact) {
  if (!(body instanceof Uint8Array)) throw new TypeError('a body is a Uint8Array');
  if (body.length < length) fail('durable_truncated', `${what} body of ${body.length} bytes is shorter than its ${length}-byte layout`);
  if (body[0] !== DURABLE_VERSION) fail('durable_version', `extension version ${body[0]} is not supported (this client speaks ${DURABLE_VERSION})`);
  if (exact && body.length !== length) fail('durable_too_long', `${what} body of ${body.length} bytes is longer than its ${length}-byte layout`);
  return new DataView(body.buffer, body.byteOffset, body.length);
}

function stream(byte) {
  const name = STREAMS[byte - 1];
  if (name === undefined) fail('durable_kind', `unknown stream kind ${byte}`);
  return name;
}

/** A big-endian u64 at `offset`, refused above 2^53 - 1. */
function number(view, offset) {
  const high = view.getUint32(offset);
  const low = view.getUint32(offset + 4);
  if (high > 0x1fffff) fail('durable_position', 'position number above the largest allowed, 2^53 - 1');
  return high * 2 ** 32 + low;
}

function position(view, offset) {
  return { epoch: number(view, offset), seq: number(view, offset + 8) };
}

function uuid(bytes) {
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Decodes an op-20 body: `{stream, replay, op, id, position: {epoch, seq}, body}`.
 * @param {Uint8Array} body
 */
export function decodeDurablePush(body) {
  const view = fixed('push', body, PUSH_HEADER, false);
  const kind = stream(body[1]);
  if ((body[2] & ~1) !== 0) fail('durable_flags', `unknown flags 0x${body[2].toString(16)}`);
  if (body[3] !== 0) fail('durable_reserved', 'reserved bytes must be zero');
  return {
    stream: kind,
    replay: (body[2] & 1) === 1,
    op: view.getInt32(4),
    id: uuid(body.subarray(8, 24)),
    position: position(view, 24),
    body: body.slice(PUSH_HEADER),
  };
}

/**
 * Decodes an op-21 body: `{stream, resumed, count, reason, position}` (`reason` null when resumed).
 * @param {Uint8Array} body
 */
export function decodeResumeAnswer(body) {
  const view = fixed('resume', body, RESUME_LENGTH, true);
  const kind = stream(body[1]);
  const [status, code] = [body[2], body[3]];
  const count = view.getUint32(4);
  const reason = REASONS[code];
  const resumed = status === 0 && code === 0;
  if (!resumed && !(status === 1 && code > 0 && reason !== undefined && count === 0)) {
    fail('durable_outcome', `resume status ${status} with reason ${code} is not defined`);
  }
  return { stream: kind, resumed, count, reason: resumed ? null : reason, position: position(view, 8) };
}

/** Whether `position` is `{epoch, seq}` with integers in [0, 2^53 - 1]. */
function isPosition(position) {
  return (
    position !== null &&
    typeof position === 'object' &&
    [position.epoch, position.seq].every((n) => Number.isSafeInteger(n) && n >= 0)
  );
}

/**
 * The op-22 body acking the user stream through `position`.
 * @param {{epoch: number, seq: number}} position
 */
export function encodeAck(position) {
  if (!isPosition(position)) throw new RangeError('a position is {epoch, seq} with integers in [0, 2^53 - 1]');
  const out = new Uint8Array(ACK_LENGTH);
  const view = new DataView(out.buffer);
  out[0] = DURABLE_VERSION;
  for (const [offset, n] of [
    [4, position.epoch],
    [12, position.seq],
  ]) {
    view.setUint32(offset, Math.floor(n / 2 ** 32));
    view.setUint32(offset + 4, n % 2 ** 32);
  }
  return out;
}

/** Positions as a store keeps them: `{user: {epoch, seq} | null, room: {room, epoch, seq} | null}`. */
function normalize(saved) {
  const out = { user: null, room: null };
  if (!saved || typeof saved !== 'object') return out;
  if (isPosition(saved.user)) out.user = { epoch: saved.user.epoch, seq: saved.user.seq };
  if (isPosition(saved.room) && typeof saved.room.room === 'string' && saved.room.room !== '') {
    out.room = { room: saved.room.room, epoch: saved.room.epoch, seq: saved.room.seq };
  }
  return out;
}

/** The default position store: kept in memory for as long as the store object lives. */
export class MemoryPositionStore {
  /** @param {unknown} [initial] positions to start from */
  constructor(initial = null) {
    this._positions = normalize(initial);
  }

  get() {
    return { ...this._positions };
  }

  set(positions) {
    this._positions = normalize(positions);
  }
}

/**
 * A position store over a Web Storage object (`localStorage`, `sessionStorage`) under `key`, so a
 * page resumes where it was after a reload.
 * @param {{getItem(key: string): string | null, setItem(key: string, value: string): void}} storage
 * @param {string} key
 */
export function webStoragePositionStore(storage, key) {
  return {
    get() {
      const text = storage.getItem(key);
      if (text === null) return null;
      try {
        return JSON.parse(text);
      } catch {
        return null; // unreadable: start without positions rather than fail
      }
    },
    set(positions) {
      storage.setItem(key, JSON.stringify(positions));
    },
  };
}

/** Decodes base64url (a JWT part) to text, or null. */
function base64urlText(part) {
  if (typeof atob !== 'function' || !/^[A-Za-z0-9_-]*=*$/.test(part)) return null;
  const clean = part.replace(/=+$/, '').replace(/-/g, '+').replace(/_/g, '/');
  try {
    const binary = atob(clean + '='.repeat((4 - (clean.length % 4)) % 4));
    return new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
  } catch {
    return null;
  }
}

/**
 * The room an auth object puts the connection in, if the client can tell: its `room_id`, else the
 * token's `room_id` (or `room`) claim, read without checking the signature (the edge does that).
 */
function authRoom(auth) {
  const named = (object, field) => (typeof object[field] === 'string' && object[field] !== '' ? object[field] : null);
  const room = named(auth, 'room_id');
  if (room !== null || typeof auth.token !== 'string') return room;
  const text = base64urlText(auth.token.split('.')[1] ?? '');
  if (text === null) return null;
  try {
    const claims = JSON.parse(text);
    return claims && typeof claims === 'object' ? (named(claims, 'room_id') ?? named(claims, 'room')) : null;
  } catch {
    return null;
  }
}

/** The marks of one stream. */
class Marks {
  constructor(position = null) {
    this.processed = position;
    this.delivered = position;
    this.head = null;
  }

  seen(position) {
    const mark = this.delivered;
    return mark !== null && mark.epoch === position.epoch && position.seq <= mark.seq;
  }

  process(position) {
    const mark = this.processed;
    const moved = mark === null || mark.epoch !== position.epoch || mark.seq < position.seq;
    if (moved) this.processed = position;
    this.adoptHead();
    return moved;
  }

  adoptHead() {
    const head = this.head;
    if (head === null || !same(this.processed, this.delivered)) return;
    this.head = null;
    const mark = this.processed;
    if (mark === null || mark.epoch !== head.epoch || mark.seq < head.seq) {
      this.processed = head;
      this.delivered = head;
    }
  }
}

function same(a, b) {
  return a === b || (a !== null && b !== null && a.epoch === b.epoch && a.seq === b.seq);
}

/**
 * What a durable client has handed out and processed, per stream, and what to ack. RimClient keeps
 * one for its whole life (across reconnects); it is exported for code that drives connections itself.
 */
export class PositionTracker {
  /**
   * @param {unknown} [saved] positions a store saved
   * @param {{ackEvery?: number}} [options]
   */
  constructor(saved = null, { ackEvery = DURABLE_DEFAULTS.ackEvery } = {}) {
    const positions = normalize(saved);
    this._user = new Marks(positions.user);
    this._room = new Marks(positions.room && { epoch: positions.room.epoch, seq: positions.room.seq });
    this._roomName = positions.room ? positions.room.room : null;
    this._unacked = 0;
    this._acked = null;
    this._ackEvery = Math.max(1, Math.floor(ackEvery));
  }

  /** What is processed, as a store keeps it. */
  positions() {
    const user = this._user.processed;
    const room = this._room.processed;
    return {
      user: user && { epoch: user.epoch, seq: user.seq },
      room: room && this._roomName !== null ? { room: this._roomName, epoch: room.epoch, seq: room.seq } : null,
    };
  }

  /**
   * `auth` (an object, or a token string / JSON text) with the `rim` field asking to resume from the
   * processed positions, as the JSON text to send.
   * @param {string | Record<string, unknown>} auth
   */
  authBody(auth) {
    let object = auth;
    if (typeof auth === 'string') {
      try {
        object = JSON.parse(auth);
      } catch {
        object = { token: auth.trim() };
      }
    }
    if (!object || typeof object !== 'object' || Array.isArray(object)) {
      throw new TypeError('a durable client needs an auth object or a token');
    }
    const room = authRoom(object);
    if (room !== this._roomName) this._enterRoom(room);
    const rim = { v: DURABLE_VERSION };
    const user = this._user.processed;
    if (user) rim.user = { epoch: user.epoch, seq: user.seq };
    const roomAt = this._room.processed;
    if (roomAt && this._roomName !== null) rim.room = { epoch: roomAt.epoch, seq: roomAt.seq };
    return JSON.stringify({ ...object, rim });
  }

  /**
   * Whether a decoded push is new (hand it to the app) rather than a duplicate (drop it).
   * @param {{stream: 'user' | 'room', position: {epoch: number, seq: number}}} push
   */
  deliver(push) {
    const marks = this._marks(push.stream);
    if (marks.seen(push.position)) return false;
    marks.delivered = push.position;
    return true;
  }

  /**
   * Applies a decoded resume answer ("not resumed": its head at once). Returns the ack due:
   * 'no', 'soon' or 'now'.
   */
  resumed(answer) {
    const marks = this._marks(answer.stream);
    if (answer.resumed) {
      marks.head = answer.position;
      marks.adoptHead();
    } else if (answer.reason === 'unavailable') {
      // The store did not answer: the history may be intact, the client keeps its own position.
    } else {
      const fresh = new Marks(answer.position);
      if (answer.stream === 'user') this._user = fresh;
      else this._room = fresh;
    }
    return this._ackDue();
  }

  /** The server confirmed a move to `room` (op 13): its stream starts at the head op 21 gives. */
  roomConfirmed(room) {
    this._enterRoom(room === '' ? null : room);
  }

  /**
   * The app processed the push at `position` of `stream` (and everything before it). Returns
   * whether the positions changed and the ack due.
   */
  processed(stream, position) {
    if (!this._marks(stream).process(position)) return { changed: false, ack: 'no' };
    if (stream === 'user') this._unacked += 1;
    return { changed: true, ack: this._ackDue() };
  }

  /** The user position to ack now, if it moved since the last ack (it becomes the last ack). */
  takeAck() {
    const position = this._user.processed;
    if (position === null || same(position, this._acked)) return null;
    this._acked = position;
    this._unacked = 0;
    return { epoch: position.epoch, seq: position.seq };
  }

  /** A new connection: nothing is acked on it yet. Returns the ack due. */
  reconnected() {
    this._acked = null;
    return this._ackDue();
  }

  _ackDue() {
    const position = this._user.processed;
    if (position === null || same(position, this._acked)) return 'no';
    return this._unacked >= this._ackEvery ? 'now' : 'soon';
  }

  _enterRoom(room) {
    this._roomName = room;
    this._room = new Marks();
  }

  _marks(stream) {
    return stream === 'user' ? this._user : this._room;
  }
}
