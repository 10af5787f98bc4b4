// RimClient: one logical connection to rim (or goim) over WebSocket that comes back by itself.
//
//   start() ─▶ connecting ─▶ (auth accepted) open ─▶ (socket lost) reconnecting ─▶ connecting ─▶ ...
//                  │                                                   ▲
//                  └── every candidate failed ─────────────────────────┘      close() ─▶ closed
//
// Candidates are a fixed list of WebSocket URLs or come from HTTPDNS; each round tries them in
// order and stops at the first that authenticates. Between rounds (and after a lost connection) the
// client waits a jittered exponential backoff whose parameters come from the HTTPDNS answer, and it
// asks HTTPDNS again after `dnsRefreshAfter` failed rounds or when its answer is older than
// `dnsMaxAge`. A refused auth or a takeover by another connection with the same key (close code
// 4000) ends the client instead of reconnecting (unless told otherwise), so two tabs with one key
// do not take turns kicking each other out.
//
// Heartbeats follow the seed's adaptive interval (see heartbeat.js): one right after auth (it also
// reports the room's online count), then one every interval; a reply grows the interval, a missing
// reply (within `heartbeatTimeout`) shrinks it and drops the connection, which is then reconnected.
//
// The room and the ops subscribed or unsubscribed through the client are remembered and applied
// again after each reconnect. A room change counts only once the server echoes the room in its op-13
// reply; rim answers a refused change with a JSON error instead (reason `room_forbidden` or
// `room_too_long`) and keeps the connection in its old room, so the promise rejects with a
// RoomRefusedError and the client keeps (and re-joins after a reconnect) the room it had.
//
// With `durable` the client opts in to rim's durable delivery (see durable.js): the auth carries
// the positions the app processed, pushes arrive as RimPush messages (id, stream, position, replay)
// never twice, each stream's resume answer is a 'resume' event, and processed user pushes are acked
// (op 22, coalesced). A push counts as processed when its 'message' listeners return (`ack: 'auto'`)
// or when the app calls push.ack() (`ack: 'manual'`). Without it every byte is as before.
//
// Nothing here touches the network or the clock except through the injected WebSocket, fetch and
// timer functions.

import { Emitter } from './emitter.js';
import { AdaptiveHeartbeat } from './heartbeat.js';
import { Backoff, backoffParams } from './backoff.js';
import { dnsRequestUrl, fetchDns, parseDnsResponse } from './httpdns.js';
import {
  DURABLE_DEFAULTS,
  DurableOp,
  MemoryPositionStore,
  PositionTracker,
  decodeDurablePush,
  decodeResumeAnswer,
  encodeAck,
} from './durable.js';
import {
  DEFAULT_MAX_BODY,
  DEFAULT_MAX_MESSAGE,
  Op,
  ProtocolError,
  bytesToText,
  decodeMessage,
  encode,
  encodeOps,
  readOnlineCount,
} from './protocol.js';

/** The client's states. */
export const State = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  OPEN: 'open',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

/** WebSocket close codes the client itself uses. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  /** Sent by rim's edge when a newer connection authenticated with the same key. */
  REPLACED: 4000,
  HEARTBEAT_TIMEOUT: 4001,
  PROTOCOL_ERROR: 4002,
  AUTH_TIMEOUT: 4008,
});

/** An error the client reports; `code` is a stable label, `details` depends on it. */
export class RimError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {Record<string, unknown>} [details]
   */
  constructor(code, message, details = {}) {
    super(message);
    this.name = 'RimError';
    this.code = code;
    this.details = details;
    if (details.cause !== undefined) this.cause = details.cause;
  }
}

/**
 * A room change the server refused: rim answered op 12 with a JSON error instead of echoing the room,
 * and the connection stayed in its old room. `reason` is the server's code (`room_forbidden`,
 * `room_too_long`, or `room_refused` if it gave none); `room` is the room asked for.
 */
export class RoomRefusedError extends RimError {
  /**
   * @param {string} room
   * @param {string} body the op-13 reply body
   */
  constructor(room, body) {
    const { reason, why, detail } = parseRefusal(body, 'room_refused');
    super('room_refused', `room change to ${JSON.stringify(room)} refused (${reason}): ${why}`, { reason, room, body: detail });
    this.name = 'RoomRefusedError';
    this.reason = reason;
    this.room = room;
  }
}

/**
 * Reads a server's refusal body: rim's JSON `{error, reason}`, or any text (then `reason` is `fallback`).
 * @param {string} text
 * @param {string} fallback
 */
function parseRefusal(text, fallback) {
  let detail;
  try {
    detail = JSON.parse(text);
  } catch {
    detail = { error: text };
  }
  if (!detail || typeof detail !== 'object') detail = { error: String(detail) };
  const reason = typeof detail.reason === 'string' ? detail.reason : fallback;
  const why = typeof detail.error === 'string' ? detail.error : text;
  return { reason, why, detail };
}

/** A packet from the server, as given to 'message' listeners. */
export class RimMessage {
  /** @param {{op: number, seq: number, ver: number, body: Uint8Array}} packet */
  constructor(packet) {
    this.op = packet.op;
    this.seq = packet.seq;
    this.ver = packet.ver;
    this.body = packet.body;
  }

  /** The body as UTF-8 text. */
  text() {
    return bytesToText(this.body);
  }

  /** The body parsed as JSON (throws if it is not JSON). */
  json() {
    return JSON.parse(this.text());
  }
}

/**
 * A push of a durable client (op 20): a RimMessage whose `op` is the business operation, with the
 * push's message `id`, its `stream` ('user' or 'room'), its `position` {epoch, seq} and whether it is
 * a `replay` from a resume. `ack()` marks it (and every earlier push of its stream) processed.
 */
export class RimPush extends RimMessage {
  /**
   * @param {{stream: 'user' | 'room', replay: boolean, op: number, id: string, position: {epoch: number, seq: number}, body: Uint8Array}} push
   * @param {{ver: number}} packet
   * @param {(push: RimPush) => void} ack
   */
  constructor(push, packet, ack) {
    super({ op: push.op, seq: 0, ver: packet.ver, body: push.body });
    this.id = push.id;
    this.stream = push.stream;
    this.position = push.position;
    this.replay = push.replay;
    this._ack = ack;
  }

  /** Marks this push, and every earlier one of its stream, processed (what `ack: 'manual'` needs). */
  ack() {
    this._ack(this);
  }
}

export const CLIENT_DEFAULTS = Object.freeze({
  path: '/sub',
  heartbeatTimeout: 20_000,
  connectTimeout: 10_000,
  authTimeout: 10_000,
  requestTimeout: 10_000,
  dnsTimeout: 5_000,
  dnsRefreshAfter: 2,
  dnsMaxAge: 300_000,
  reconnectOnReplaced: false,
  retryAuthRefused: false,
  maxBody: DEFAULT_MAX_BODY,
  maxMessage: DEFAULT_MAX_MESSAGE,
});

/** Ops the client manages itself; `send` refuses them. */
const CONTROL_OPS = new Set([2, 3, 7, 8, 9, 12, 13, 14, 15, 16, 17]);
/** Ops of rim's extension: managed by a durable client (a plain one may send them as upstream). */
const DURABLE_OPS = { first: 20, last: 29 };
/** Replies matched to requests by seq; an unmatched one is dropped rather than shown as a push. */
const REPLY_OPS = new Set([Op.SEND_MSG_REPLY, Op.CHANGE_ROOM_REPLY, Op.SUB_REPLY, Op.UNSUB_REPLY]);
const INT32_MAX = 2147483647;

function closeReason(text) {
  // A close reason is at most 123 bytes; ours are ASCII.
  return text.length > 120 ? text.slice(0, 120) : text;
}

/** The `durable` option, checked: null when off, else its options, store and tracker. */
function durableOptions(durable) {
  if (durable === undefined || durable === false || durable === null) return null;
  const given = durable === true ? {} : durable;
  if (typeof given !== 'object') throw new TypeError('`durable` is true or an options object');
  const options = { ...DURABLE_DEFAULTS, ...given };
  if (options.ack !== 'auto' && options.ack !== 'manual') throw new RangeError("`durable.ack` is 'auto' or 'manual'");
  if (typeof options.ackDelay !== 'number' || !(options.ackDelay >= 0)) {
    throw new RangeError('`durable.ackDelay` must be a number of milliseconds');
  }
  if (!Number.isInteger(options.ackEvery) || options.ackEvery < 1) throw new RangeError('`durable.ackEvery` must be a positive integer');
  const store = options.store ?? new MemoryPositionStore();
  if (typeof store.get !== 'function' || typeof store.set !== 'function') {
    throw new TypeError('`durable.store` needs get() and set(positions)');
  }
  return { options, store, tracker: new PositionTracker(null, options), loaded: false };
}

function checkOps(ops) {
  const list = [...ops];
  if (list.length === 0) throw new TypeError('give at least one op');
  encodeOps(list); // validates
  return list;
}

export class RimClient extends Emitter {
  /** @param {import('./client.d.ts').RimClientOptions} options */
  constructor(options) {
    super();
    if (!options || typeof options !== 'object') throw new TypeError('RimClient needs options');
    const { urls, httpdns } = options;
    if (urls === undefined && httpdns === undefined) throw new TypeError('give `urls` or `httpdns`');
    if (urls !== undefined) {
      const list = typeof urls === 'string' ? [urls] : urls;
      if (!Array.isArray(list) || list.length === 0 || !list.every((u) => typeof u === 'string' && u !== '')) {
        throw new TypeError('`urls` must be a non-empty list of WebSocket URLs');
      }
      this._urls = [...list];
    } else {
      if (typeof httpdns !== 'string' || httpdns === '') throw new TypeError('`httpdns` must be a URL');
      this._urls = null;
    }
    this._opts = { ...CLIENT_DEFAULTS, ...options };
    for (const key of ['heartbeatTimeout', 'connectTimeout', 'authTimeout', 'requestTimeout', 'dnsTimeout', 'dnsMaxAge']) {
      const v = this._opts[key];
      if (typeof v !== 'number' || !(v > 0)) throw new RangeError(`\`${key}\` must be a positive number of milliseconds`);
    }
    if (!Number.isInteger(this._opts.dnsRefreshAfter) || this._opts.dnsRefreshAfter < 1) {
      throw new RangeError('`dnsRefreshAfter` must be a positive integer');
    }
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('no WebSocket constructor: pass `WebSocket` (in Node 20, for example the `ws` package)');
    }
    this._fetch = options.fetch ?? (typeof globalThis.fetch === 'function' ? (...a) => globalThis.fetch(...a) : undefined);
    this._setTimeout = options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this._clearTimeoutFn = options.clearTimeout ?? ((id) => globalThis.clearTimeout(id));
    this._now = options.now ?? (() => Date.now());
    this._secure =
      options.secure ?? (typeof globalThis.location === 'object' && globalThis.location?.protocol === 'https:');
    this._heartbeat =
      options.heartbeat instanceof AdaptiveHeartbeat ? options.heartbeat : new AdaptiveHeartbeat(options.heartbeat ?? {});
    this._backoffDefaults = backoffParams(options.backoff ?? {});
    this._backoff = new Backoff(this._backoffDefaults, options.random ?? Math.random);
    this._durable = durableOptions(options.durable);

    this._state = State.IDLE;
    this._gen = 0;
    this._conn = null;
    this._wake = null;
    this._dns = null;
    this._failedRounds = 0;
    this._online = null;
    /** The room the server confirmed last (re-joined after a reconnect); undefined until one is. */
    this._room = undefined;
    /** A room asked for while not open, applied by the next connection (its waiters are _roomWaiters). */
    this._roomWanted = undefined;
    /** Room changes are numbered so that only the newest confirmed one sets _room. */
    this._roomAsked = 0;
    this._roomConfirmed = 0;
    /** op -> true (subscribed) / false (unsubscribed) through this client. */
    this._watch = new Map();
    this._roomWaiters = [];
    this._watchWaiters = [];
  }

  /** The current state: idle, connecting, open, reconnecting or closed. */
  get state() {
    return this._state;
  }

  /** URL of the authenticated connection, or null. */
  get url() {
    return this._conn && this._conn.authenticated ? this._conn.url : null;
  }

  /** The last online count of the room (from heartbeat replies), or null. */
  get online() {
    return this._online;
  }

  /** The adaptive heartbeat (its `interval`, `lastGood`, `ceiling`; `reset()` after a network change). */
  get heartbeat() {
    return this._heartbeat;
  }

  /** The reconnect backoff in use. */
  get backoff() {
    return this._backoff;
  }

  /** The room the server confirmed last through changeRoom (undefined if none yet). */
  get room() {
    return this._room;
  }

  /**
   * What a durable client has processed, `{user: {epoch, seq} | null, room: {room, epoch, seq} |
   * null}` (what its store holds); null for a plain client.
   */
  get positions() {
    return this._durable ? this._durable.tracker.positions() : null;
  }

  /**
   * Marks a RimPush (and every earlier push of its stream) processed; the same as `push.ack()`.
   * @param {RimPush} push
   */
  ack(push) {
    if (!(push instanceof RimPush)) throw new TypeError('ack() takes a RimPush from a durable client');
    push.ack();
    return this;
  }

  /** The candidate URLs of the last round (fixed list or last HTTPDNS answer). */
  get candidates() {
    if (this._urls) return [...this._urls];
    return this._dns ? [...this._dns.candidates] : [];
  }

  /** Starts connecting (no-op unless idle or closed). */
  start() {
    if (this._state !== State.IDLE && this._state !== State.CLOSED) return this;
    const gen = ++this._gen;
    this._failedRounds = 0;
    this._backoff.reset();
    this._run(gen).catch((error) => {
      // Not expected: every failure inside is handled. Report it rather than lose it.
      this._emitError(new RimError('internal', `client loop failed: ${error && error.message}`, { cause: error }));
    });
    return this;
  }

  /**
   * Stops for good (until start() is called again): closes the connection, cancels every timer,
   * rejects pending requests.
   * @param {string} [reason]
   */
  close(reason = 'closed by the client') {
    if (this._state === State.CLOSED || this._state === State.IDLE) return this;
    this._halt(new RimError('closed', reason));
    return this;
  }

  /** Skips the current backoff pause and tries again now (for example on the browser's 'online' event). */
  reconnectNow() {
    if (this._wake) this._wake();
    return this;
  }

  /**
   * Moves to another room (`''` leaves the room); resolves when the server confirms (op 13 echoing
   * the room), rejects with a RoomRefusedError (code 'room_refused', with `reason` and `room`) when it
   * refuses, and the client then stays in its old room. A confirmed room is remembered and applied
   * again after every reconnect; if the client is not open, the promise settles when the next
   * connection applies the room (the last one asked for, when several were).
   * @param {string} room
   */
  changeRoom(room) {
    if (typeof room !== 'string') return Promise.reject(new TypeError('a room is a string such as "live://1000"'));
    if (this._isOpen()) return this._moveTo(room);
    this._roomWanted = room;
    return this._waitFor(this._roomWaiters);
  }

  /**
   * Adds ops to the connection's watch set (op 14); remembered across reconnects like the room.
   * @param {Iterable<number>} ops
   */
  subscribe(ops) {
    return this._watchChange(ops, true);
  }

  /**
   * Removes ops from the watch set (op 16); remembered across reconnects.
   * @param {Iterable<number>} ops
   */
  unsubscribe(ops) {
    return this._watchChange(ops, false);
  }

  /**
   * Sends an upstream message (op 4 unless another business op is given); resolves on the server's
   * reply. Not queued: rejects with code 'not_open' when the client is not open.
   * @param {import('./protocol.d.ts').BodyInput} body
   * @param {number} [op]
   */
  send(body, op = Op.SEND_MSG) {
    const extension = this._durable && op >= DURABLE_OPS.first && op <= DURABLE_OPS.last;
    if (!Number.isInteger(op) || CONTROL_OPS.has(op) || extension) {
      return Promise.reject(new TypeError(`op ${op} is managed by the client; use another op for upstream messages`));
    }
    return this._request(op, op, body).then(() => undefined);
  }

  // ---------------------------------------------------------------------------------------------

  _isOpen() {
    return Boolean(this._conn && this._conn.authenticated && !this._conn.done);
  }

  _watchChange(ops, add) {
    let list;
    try {
      list = checkOps(ops);
    } catch (error) {
      return Promise.reject(error);
    }
    for (const op of list) this._watch.set(op, add);
    if (this._isOpen()) {
      return add
        ? this._request(Op.SUB, Op.SUB_REPLY, encodeOps(list)).then(() => undefined)
        : this._request(Op.UNSUB, Op.UNSUB_REPLY, encodeOps(list)).then(() => undefined);
    }
    return this._waitFor(this._watchWaiters);
  }

  /** Sends op 12 for `room`: resolves once the server echoes it, rejects with a RoomRefusedError otherwise. */
  _moveTo(room) {
    const order = ++this._roomAsked;
    return this._request(Op.CHANGE_ROOM, Op.CHANGE_ROOM_REPLY, room).then((packet) => {
      const body = bytesToText(packet.body);
      if (body !== room) throw new RoomRefusedError(room, body);
      if (order > this._roomConfirmed) {
        this._roomConfirmed = order;
        this._room = room;
      }
    });
  }

  _waitFor(waiters) {
    return new Promise((resolve, reject) => {
      waiters.push({ resolve, reject });
    });
  }

  _setState(state, details = {}) {
    const previous = this._state;
    if (previous === state && state !== State.RECONNECTING) return;
    this._state = state;
    this.emit('state', { state, previous, ...details });
  }

  _emitError(error) {
    this.emit('error', error);
  }

  _halt(error) {
    this._gen += 1;
    if (this._wake) this._wake();
    if (this._conn) this._end(this._conn, { error }, CloseCode.NORMAL, 'client closed');
    this._roomWanted = undefined;
    for (const w of this._roomWaiters.splice(0)) w.reject(error);
    for (const w of this._watchWaiters.splice(0)) w.reject(error);
    this._setState(State.CLOSED, { reason: error.message, error });
  }

  async _run(gen) {
    if (this._durable && !this._durable.loaded) await this._loadPositions();
    while (gen === this._gen) {
      this._setState(State.CONNECTING);
      const candidates = await this._candidates(gen);
      if (gen !== this._gen) return;
      let outcome = null;
      for (const url of candidates) {
        outcome = await this._connect(url, gen);
        if (gen !== this._gen) return;
        if (outcome.authenticated || outcome.fatal) break;
      }
      if (outcome && outcome.fatal) {
        this._halt(outcome.error);
        return;
      }
      if (outcome && outcome.authenticated) {
        this._failedRounds = 0;
      } else {
        this._failedRounds += 1;
        if (this._failedRounds >= this._opts.dnsRefreshAfter) {
          this._failedRounds = 0;
          if (this._dns) this._dns.stale = true;
        }
      }
      const delay = this._backoff.next();
      this._setState(State.RECONNECTING, {
        delay,
        attempt: this._backoff.attempts,
        error: outcome ? outcome.error : undefined,
      });
      await this._sleep(delay);
    }
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = this._setTimeout(() => {
        this._wake = null;
        resolve();
      }, ms);
      this._wake = () => {
        this._clearTimeoutFn(timer);
        this._wake = null;
        resolve();
      };
    });
  }

  async _candidates(gen) {
    if (this._urls) return [...this._urls];
    const previous = this._dns;
    const now = this._now();
    if (previous && !previous.stale && now - previous.at < this._opts.dnsMaxAge) return previous.candidates;
    let url = this._opts.httpdns;
    try {
      let where = this._opts.location;
      if (typeof where === 'function') where = await where();
      where = { ...(where || {}), region: this._opts.region };
      url = dnsRequestUrl(this._opts.httpdns, where, this._opts.baseUrl);
      const response = await fetchDns(url, {
        fetch: this._fetch,
        timeout: this._opts.dnsTimeout,
        setTimeout: this._setTimeout,
        clearTimeout: this._clearTimeoutFn,
      });
      if (gen !== this._gen) return [];
      const parsed = parseDnsResponse(response, { secure: this._secure, path: this._opts.path });
      this._backoff.configure({ ...this._backoffDefaults, ...(parsed.backoff || {}) });
      this._heartbeat.setLimit(
        parsed.heartbeatDeadline === null ? null : parsed.heartbeatDeadline - this._opts.heartbeatTimeout,
      );
      this._dns = { candidates: parsed.candidates, at: this._now(), stale: false };
      this.emit('dns', { url, candidates: [...parsed.candidates], response });
      if (parsed.candidates.length === 0) {
        const why = parsed.reason ? `: ${parsed.reason}` : '';
        this._emitError(new RimError('no_endpoints', `HTTPDNS answered no ${this._secure ? 'wss' : 'ws'} endpoint${why}`, { url, response }));
      }
      return parsed.candidates;
    } catch (error) {
      if (gen !== this._gen) return [];
      this._emitError(new RimError('httpdns', `HTTPDNS failed: ${error && error.message}`, { url, cause: error }));
      return previous ? previous.candidates : []; // keep the last answer; it stays stale so we ask again
    }
  }

  async _authBody() {
    let auth = this._opts.auth;
    if (typeof auth === 'function') auth = await auth();
    if (this._durable) return this._durableAuthBody(auth);
    if (auth === undefined || auth === null) return JSON.stringify({ platform: 'web' });
    if (typeof auth === 'string' || auth instanceof Uint8Array || auth instanceof ArrayBuffer) return auth;
    if (typeof auth === 'object') return JSON.stringify({ platform: 'web', ...auth });
    throw new TypeError('`auth` must be a token string, an auth object, or a function returning one');
  }

  /** The auth body of a durable client: the auth as an object, with the `rim` field. */
  _durableAuthBody(auth) {
    if (auth instanceof ArrayBuffer) auth = new Uint8Array(auth);
    if (auth instanceof Uint8Array) auth = bytesToText(auth);
    if (auth === undefined || auth === null) auth = {};
    if (typeof auth === 'object' && !Array.isArray(auth)) auth = { platform: 'web', ...auth };
    if (typeof auth !== 'string' && (typeof auth !== 'object' || Array.isArray(auth))) {
      throw new TypeError('`auth` must be a token string, an auth object, or a function returning one');
    }
    return this._durable.tracker.authBody(auth);
  }

  async _loadPositions() {
    const durable = this._durable;
    try {
      durable.tracker = new PositionTracker(await durable.store.get(), durable.options);
    } catch (error) {
      this._emitError(new RimError('position_store', `could not load positions: ${error && error.message}`, { cause: error }));
    }
    durable.loaded = true;
  }

  _savePositions() {
    const durable = this._durable;
    const report = (error) =>
      this._emitError(new RimError('position_store', `could not save positions: ${error && error.message}`, { cause: error }));
    try {
      const saved = durable.store.set(durable.tracker.positions());
      if (saved && typeof saved.then === 'function') saved.then(undefined, report);
    } catch (error) {
      report(error);
    }
  }

  /** A durable push (op 20): handed to 'message' listeners unless it is a duplicate. */
  _onDurablePush(packet) {
    const tracker = this._durable.tracker;
    const push = decodeDurablePush(packet.body);
    if (!tracker.deliver(push)) return;
    const message = new RimPush(push, packet, (done) => this._processed(done));
    this.emit('message', message);
    if (this._durable.options.ack === 'auto') this._processed(message);
  }

  /** A resume answer (op 21): applied, then reported as a 'resume' event. */
  _onResumeAnswer(conn, packet) {
    const answer = decodeResumeAnswer(packet.body);
    const due = this._durable.tracker.resumed(answer);
    this._savePositions();
    this._scheduleAck(conn, due);
    this.emit('resume', { ...answer, reload: !answer.resumed });
  }

  _processed(push) {
    const { changed, ack } = this._durable.tracker.processed(push.stream, push.position);
    if (!changed) return;
    this._savePositions();
    const conn = this._conn;
    if (conn && conn.authenticated && !conn.done) this._scheduleAck(conn, ack);
  }

  /** Sends the ack now ('now') or within `ackDelay` ('soon'). */
  _scheduleAck(conn, due) {
    if (due === 'now') {
      this._clearTimer(conn, conn.ackTimer);
      conn.ackTimer = null;
      this._sendAck(conn);
    } else if (due === 'soon' && !conn.ackTimer) {
      conn.ackTimer = this._timer(
        conn,
        () => {
          conn.ackTimer = null;
          this._sendAck(conn);
        },
        this._durable.options.ackDelay,
      );
    }
  }

  _sendAck(conn) {
    const position = this._durable.tracker.takeAck();
    if (position === null) return;
    try {
      this._send(conn, { op: DurableOp.ACK, seq: this._nextSeq(conn), body: encodeAck(position) });
    } catch (error) {
      this._fail(conn, 'disconnected', `cannot send an ack: ${error && error.message}`, { cause: error });
    }
  }

  _nextSeq(conn) {
    conn.seq = conn.seq >= INT32_MAX ? 1 : conn.seq + 1;
    return conn.seq;
  }

  _timer(conn, fn, ms) {
    const id = this._setTimeout(() => {
      conn.timers.delete(id);
      if (!conn.done) fn();
    }, ms);
    conn.timers.add(id);
    return id;
  }

  _clearTimer(conn, id) {
    if (id === undefined || id === null) return;
    if (conn.timers.delete(id)) this._clearTimeoutFn(id);
  }

  _send(conn, packet) {
    if (conn.done || !conn.ws || conn.ws.readyState !== 1) {
      throw new RimError('not_open', 'the connection is not open');
    }
    const bytes = encode(packet, { maxBody: this._opts.maxBody });
    conn.ws.send(bytes);
  }

  async _connect(url, gen) {
    let body;
    try {
      body = await this._authBody();
    } catch (error) {
      const e = new RimError('auth_body', `could not make the auth body: ${error && error.message}`, { cause: error });
      this._emitError(e);
      return { authenticated: false, error: e };
    }
    if (gen !== this._gen) return { authenticated: false };
    return new Promise((resolve) => {
      const conn = {
        url,
        ws: null,
        seq: 0,
        authenticated: false,
        done: false,
        timers: new Set(),
        pending: new Map(),
        heartbeat: null,
        authTimer: null,
        resolve,
      };
      this._conn = conn;
      let ws;
      try {
        ws = new this._WebSocket(url);
      } catch (error) {
        this._fail(conn, 'connect_failed', `cannot open ${url}: ${error && error.message}`, { cause: error });
        return;
      }
      conn.ws = ws;
      try {
        ws.binaryType = 'arraybuffer';
      } catch {
        // a WebSocket without binaryType delivers bytes some other way; decode copes or reports it
      }
      const connectTimer = this._timer(
        conn,
        () => this._fail(conn, 'connect_timeout', `no WebSocket connection to ${url} within ${this._opts.connectTimeout} ms`),
        this._opts.connectTimeout,
      );
      ws.onopen = () => {
        if (conn.done) return;
        this._clearTimer(conn, connectTimer);
        try {
          this._send(conn, { op: Op.AUTH, seq: this._nextSeq(conn), body });
        } catch (error) {
          // An auth body over the limit will never be accepted: stop instead of retrying forever.
          const fatal = error instanceof ProtocolError;
          this._fail(conn, 'auth_body', `cannot send the auth packet: ${error && error.message}`, { cause: error, fatal });
          return;
        }
        conn.authTimer = this._timer(
          conn,
          () =>
            this._fail(conn, 'auth_timeout', `no auth reply from ${url} within ${this._opts.authTimeout} ms`, {
              closeCode: CloseCode.AUTH_TIMEOUT,
            }),
          this._opts.authTimeout,
        );
      };
      ws.onmessage = (event) => this._onMessage(conn, event ? event.data : undefined);
      // An error event means the connection failed (the standard always follows it with a close
      // event, code 1006, but some implementations, e.g. Node 20's experimental WebSocket on a
      // refused connection, never send that close): end the attempt or connection here.
      ws.onerror = () => this._onClose(conn, { code: 1006, reason: '' });
      ws.onclose = (event) => this._onClose(conn, event || {});
    });
  }

  /**
   * Ends an attempt or connection once: timers cleared, socket closed, requests rejected.
   * @param {any} conn
   * @param {{error?: RimError, fatal?: boolean}} outcome
   */
  _end(conn, outcome, closeCode = CloseCode.NORMAL, reason = '', remote = null) {
    if (conn.done) return;
    conn.done = true;
    for (const id of conn.timers) this._clearTimeoutFn(id);
    conn.timers.clear();
    const ws = conn.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      if (remote === null && ws.readyState !== undefined && ws.readyState < 2) {
        try {
          ws.close(closeCode, closeReason(reason));
        } catch {
          // already closing
        }
      }
    }
    const gone = new RimError('disconnected', `connection to ${conn.url} ended`);
    for (const p of conn.pending.values()) p.reject(gone);
    conn.pending.clear();
    if (this._conn === conn) this._conn = null;
    this.emit('disconnect', {
      url: conn.url,
      authenticated: conn.authenticated,
      code: remote ? remote.code : closeCode,
      reason: remote ? remote.reason : reason,
      byServer: remote !== null,
      error: outcome.error,
    });
    conn.resolve({ authenticated: conn.authenticated, fatal: Boolean(outcome.fatal), error: outcome.error });
  }

  _fail(conn, code, message, { cause, fatal = false, closeCode = CloseCode.NORMAL, details = {} } = {}) {
    if (conn.done) return;
    const error = new RimError(code, message, { url: conn.url, ...details, ...(cause !== undefined ? { cause } : {}) });
    this._emitError(error);
    this._end(conn, { error, fatal }, closeCode, message);
  }

  _onClose(conn, event) {
    if (conn.done) return;
    const code = typeof event.code === 'number' ? event.code : 1006;
    const reason = typeof event.reason === 'string' ? event.reason : '';
    if (conn.authenticated && ((conn.heartbeat && conn.heartbeat.counted) || /heartbeat/i.test(reason))) {
      // The connection died during a heartbeat period (or the server says we were too slow).
      this._heartbeat.failure();
    }
    const remote = { code, reason };
    const said = reason ? `, ${reason}` : '';
    if (code === CloseCode.REPLACED && !this._opts.reconnectOnReplaced) {
      const error = new RimError('replaced', `replaced by a newer connection with the same key (${code}${said})`, { url: conn.url, code, reason });
      this._emitError(error);
      this._end(conn, { error, fatal: true }, code, reason, remote);
      return;
    }
    if (!conn.authenticated) {
      const error = new RimError('connect_failed', `${conn.url} closed before auth (${code}${said})`, { url: conn.url, code, reason });
      this._emitError(error);
      this._end(conn, { error }, code, reason, remote);
      return;
    }
    const error = new RimError('disconnected', `${conn.url} closed (${code}${said})`, { url: conn.url, code, reason });
    this._end(conn, { error }, code, reason, remote);
  }

  _onMessage(conn, data) {
    if (conn.done) return;
    let packets;
    try {
      packets = decodeMessage(data, { maxMessage: this._opts.maxMessage });
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this._fail(conn, 'protocol', `protocol error from ${conn.url}: ${error.message}`, {
        cause: error,
        closeCode: CloseCode.PROTOCOL_ERROR,
        details: { protocolCode: error.code },
      });
      return;
    }
    for (const packet of packets) {
      if (conn.done) return;
      this._onPacket(conn, packet);
    }
  }

  _onPacket(conn, packet) {
    if (!conn.authenticated) {
      if (packet.op !== Op.AUTH_REPLY) return; // goim ignores packets out of place; so do we
      this._clearTimer(conn, conn.authTimer);
      if (packet.body.length === 0) this._accepted(conn);
      else this._refused(conn, packet.body);
      return;
    }
    if (packet.op === Op.HEARTBEAT_REPLY) {
      this._onHeartbeatReply(conn, packet);
      return;
    }
    if (packet.op === Op.AUTH_REPLY) return;
    if (packet.seq !== 0) {
      const pending = conn.pending.get(packet.seq);
      if (pending && pending.replyOp === packet.op) {
        conn.pending.delete(packet.seq);
        // The server is in the new room from here on: its op-21 answer may follow in this message.
        if (this._durable && packet.op === Op.CHANGE_ROOM_REPLY && bytesToText(packet.body) === pending.sent) {
          this._durable.tracker.roomConfirmed(pending.sent);
          this._savePositions();
        }
        pending.resolve(packet);
        return;
      }
    }
    if (this._durable && (packet.op === DurableOp.PUSH || packet.op === DurableOp.RESUME)) {
      try {
        if (packet.op === DurableOp.PUSH) this._onDurablePush(packet);
        else this._onResumeAnswer(conn, packet);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        this._fail(conn, 'protocol', `protocol error from ${conn.url}: ${error.message}`, {
          cause: error,
          closeCode: CloseCode.PROTOCOL_ERROR,
          details: { protocolCode: error.code },
        });
      }
      return;
    }
    if (REPLY_OPS.has(packet.op)) return; // a late reply to a request that timed out
    this.emit('message', new RimMessage(packet));
  }

  _accepted(conn) {
    conn.authenticated = true;
    this._backoff.reset();
    this._failedRounds = 0;
    this._setState(State.OPEN, { url: conn.url });
    if (conn.done) return; // a state listener closed the client
    this._sendHeartbeat(conn, false);
    if (this._durable && !conn.done) this._scheduleAck(conn, this._durable.tracker.reconnected());
    if (!conn.done) this._replay(conn);
  }

  _refused(conn, body) {
    const { reason, why, detail } = parseRefusal(bytesToText(body), 'auth_failed');
    this._fail(conn, 'auth_refused', `auth refused by ${conn.url}: ${why}`, {
      fatal: !this._opts.retryAuthRefused,
      details: { reason, body: detail },
    });
  }

  _sendHeartbeat(conn, counted) {
    if (conn.done) return;
    const seq = this._nextSeq(conn);
    const interval = counted ? conn.interval : null;
    try {
      this._send(conn, { op: Op.HEARTBEAT, seq });
    } catch (error) {
      this._fail(conn, 'disconnected', `cannot send a heartbeat: ${error && error.message}`, { cause: error });
      return;
    }
    const timer = this._timer(conn, () => this._onHeartbeatTimeout(conn), this._opts.heartbeatTimeout);
    conn.heartbeat = { seq, counted, interval, sentAt: this._now(), timer };
  }

  _onHeartbeatReply(conn, packet) {
    const online = readOnlineCount(packet.body);
    const beat = conn.heartbeat;
    if (beat) {
      conn.heartbeat = null;
      this._clearTimer(conn, beat.timer);
      if (beat.counted) this._heartbeat.success();
      const next = this._heartbeat.interval;
      conn.interval = next;
      conn.nextHeartbeat = this._timer(conn, () => this._sendHeartbeat(conn, true), next);
      this.emit('heartbeat', { interval: beat.interval, next, online, rtt: this._now() - beat.sentAt });
    }
    if (online !== null) {
      this._online = online;
      this.emit('online', { count: online });
    }
  }

  _onHeartbeatTimeout(conn) {
    const beat = conn.heartbeat;
    conn.heartbeat = null;
    if (beat && beat.counted) this._heartbeat.failure();
    this._fail(conn, 'heartbeat_timeout', `no heartbeat reply within ${this._opts.heartbeatTimeout} ms`, {
      closeCode: CloseCode.HEARTBEAT_TIMEOUT,
    });
  }

  _request(op, replyOp, body) {
    const conn = this._conn;
    if (!conn || !conn.authenticated || conn.done) {
      return Promise.reject(new RimError('not_open', 'the client is not open'));
    }
    return new Promise((resolve, reject) => {
      const seq = this._nextSeq(conn);
      try {
        this._send(conn, { op, seq, body });
      } catch (error) {
        reject(error);
        return;
      }
      const timer = this._timer(
        conn,
        () => {
          conn.pending.delete(seq);
          reject(new RimError('request_timeout', `no reply to op ${op} (seq ${seq}) within ${this._opts.requestTimeout} ms`));
        },
        this._opts.requestTimeout,
      );
      conn.pending.set(seq, {
        replyOp,
        sent: typeof body === 'string' ? body : undefined,
        resolve: (packet) => {
          this._clearTimer(conn, timer);
          resolve(packet);
        },
        reject: (error) => {
          this._clearTimer(conn, timer);
          reject(error);
        },
      });
    });
  }

  /**
   * Applies the remembered room and watch changes on a new connection: the confirmed room first (so a
   * refused new room leaves the connection there), then a room asked for while not open.
   */
  _replay(conn) {
    const report = (what, error) => {
      if (!conn.done) this._emitError(new RimError('replay', `could not apply the ${what}: ${error && error.message}`, { cause: error }));
    };
    const settle = (promise, waiters, what, retry = () => {}) => {
      const taken = waiters.splice(0);
      promise.then(
        () => {
          for (const w of taken) w.resolve();
        },
        (error) => {
          if (error instanceof RoomRefusedError) {
            for (const w of taken) w.reject(error); // refused: asking again would not help
            return;
          }
          waiters.unshift(...taken); // applied again on the next connection
          retry();
          report(what, error);
        },
      );
    };
    const wanted = this._roomWanted;
    this._roomWanted = undefined;
    const confirmed = this._room;
    if (confirmed !== undefined && confirmed !== wanted) {
      this._moveTo(confirmed).catch((error) => {
        // The server no longer grants it (a new token, say): the connection is in the token's room.
        if (error instanceof RoomRefusedError && this._room === confirmed) this._room = undefined;
        report('room', error);
      });
    }
    if (wanted !== undefined) {
      settle(this._moveTo(wanted), this._roomWaiters, 'room', () => {
        this._roomWanted ??= wanted;
      });
    }
    const add = [];
    const remove = [];
    for (const [op, on] of this._watch) (on ? add : remove).push(op);
    const requests = [];
    if (add.length) requests.push(this._request(Op.SUB, Op.SUB_REPLY, encodeOps(add)));
    if (remove.length) requests.push(this._request(Op.UNSUB, Op.UNSUB_REPLY, encodeOps(remove)));
    settle(Promise.all(requests), this._watchWaiters, 'subscriptions');
  }
}
