// Test doubles for RimClient: a scriptable WebSocket, a manual clock and a canned fetch. They are
// part of the package (`@rim/client/testing`) so that pages and apps built on it can test offline.

import { Op, decode, encode, encodeBatch } from '../src/protocol.js';

/** Lets pending promise callbacks run (a few macrotask turns). */
export async function flush(turns = 5) {
  const tick = typeof setImmediate === 'function' ? setImmediate : (fn) => setTimeout(fn, 0);
  for (let i = 0; i < turns; i++) await new Promise((resolve) => tick(resolve));
}

/** A manual clock: timers fire only inside `advance`. */
export class FakeClock {
  constructor(start = 0) {
    this._now = start;
    this._next = 1;
    /** @type {Map<number, {at: number, fn: Function, order: number}>} */
    this._timers = new Map();
    this.setTimeout = (fn, ms = 0) => {
      const id = this._next++;
      this._timers.set(id, { at: this._now + Math.max(0, Number(ms) || 0), fn, order: id });
      return id;
    };
    this.clearTimeout = (id) => {
      this._timers.delete(id);
    };
    this.now = () => this._now;
  }

  /** Number of timers waiting. */
  get pending() {
    return this._timers.size;
  }

  /** Delays of the waiting timers from now, soonest first. */
  delays() {
    return [...this._timers.values()].map((t) => t.at - this._now).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, firing due timers in order and letting promises settle between them. */
  async advance(ms) {
    const target = this._now + ms;
    await flush();
    for (;;) {
      let due = null;
      let dueId = null;
      for (const [id, t] of this._timers) {
        if (t.at <= target && (due === null || t.at < due.at || (t.at === due.at && t.order < due.order))) {
          due = t;
          dueId = id;
        }
      }
      if (due === null) break;
      this._timers.delete(dueId);
      this._now = due.at;
      due.fn();
      await flush();
    }
    this._now = target;
    await flush();
  }
}

/**
 * A WebSocket class whose instances are driven by the test. Each call gives a fresh class with its
 * own `instances` list.
 */
export function fakeWebSocketClass() {
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    /** @type {FakeWebSocket[]} */
    static instances = [];

    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.binaryType = 'blob';
      /** @type {Uint8Array[]} */
      this.sent = [];
      this.closedWith = null;
      this.onopen = null;
      this.onmessage = null;
      this.onerror = null;
      this.onclose = null;
      FakeWebSocket.instances.push(this);
    }

    static get last() {
      return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
    }

    send(data) {
      if (this.readyState !== 1) throw new Error('InvalidStateError: not open');
      this.sent.push(new Uint8Array(data));
    }

    close(code = 1000, reason = '') {
      if (code !== 1000 && (code < 3000 || code > 4999)) throw new Error(`InvalidAccessError: close code ${code}`);
      this.closedWith = { code, reason };
      if (this.readyState >= 2) return;
      this.readyState = 3;
    }

    // --- driven by the test ---

    /** The server accepted the WebSocket. */
    open() {
      this.readyState = 1;
      if (this.onopen) this.onopen({ type: 'open' });
    }

    /** The server sent bytes (one binary message). */
    receive(bytes) {
      const copy = new Uint8Array(bytes);
      if (this.onmessage) this.onmessage({ data: copy.buffer });
    }

    /** The server sent one packet. */
    receivePacket(packet) {
      this.receive(encode(packet, { maxBody: Infinity }));
    }

    /** The server sent an op-9 batch. */
    receiveBatch(packets) {
      this.receive(encodeBatch(packets));
    }

    /** The connection failed or was closed by the server. */
    serverClose(code = 1006, reason = '') {
      if (this.readyState === 3 && this.closedWith) return;
      this.readyState = 3;
      if (code === 1006 && this.onerror) this.onerror({ type: 'error' });
      if (this.onclose) this.onclose({ code, reason, wasClean: code !== 1006 });
    }

    /** Packets the client sent, decoded. */
    packets() {
      return this.sent.map((b) => decode(b, {}));
    }

    /** The last packet sent with `op`, or undefined. */
    lastSent(op) {
      const all = this.packets().filter((p) => p.op === op);
      return all[all.length - 1];
    }

    /** Replies like an edge to the client's auth packet: accepted (empty body) or refused (JSON body). */
    acceptAuth(refusal = null) {
      const auth = this.lastSent(Op.AUTH);
      if (!auth) throw new Error('the client sent no auth packet');
      const body = refusal === null ? undefined : JSON.stringify(refusal);
      this.receivePacket({ op: Op.AUTH_REPLY, seq: auth.seq, ver: auth.ver, body });
    }

    /** Replies to the client's last heartbeat with an online count. */
    replyHeartbeat(online = 1) {
      const hb = this.lastSent(Op.HEARTBEAT);
      if (!hb) throw new Error('the client sent no heartbeat');
      const body = new Uint8Array(4);
      new DataView(body.buffer).setInt32(0, online);
      this.receivePacket({ op: Op.HEARTBEAT_REPLY, seq: hb.seq, ver: hb.ver, body });
    }

    /** Echoes the client's last packet of `op` as `replyOp` (room change, subscribe, upstream). */
    replyTo(op, replyOp) {
      const p = this.lastSent(op);
      if (!p) throw new Error(`the client sent no op ${op}`);
      this.receivePacket({ op: replyOp, seq: p.seq, ver: p.ver, body: p.body });
    }
  }
  return FakeWebSocket;
}

/**
 * A fetch that answers from a function `(url) => json | Error | {status, json}` and records calls.
 * @param {(url: string) => unknown} answer
 */
export function fakeFetch(answer) {
  const calls = [];
  const fn = async (url) => {
    calls.push(String(url));
    const result = await answer(String(url));
    if (result instanceof Error) throw result;
    const status = result && typeof result === 'object' && 'status' in result ? result.status : 200;
    const json = result && typeof result === 'object' && 'status' in result ? result.json : result;
    return { ok: status >= 200 && status < 300, status, json: async () => json };
  };
  fn.calls = calls;
  return fn;
}

/** A /v1/dns response for `hosts` on the given ports, with goim's default backoff (seconds). */
export function dnsResponse(hosts, { ws = 3102, wss = 0, tcp = 3101, backoff = {}, heartbeat = 240, heartbeatMax = 2 } = {}) {
  return {
    answer: {
      domain: 'localhost',
      tcp_port: tcp,
      ws_port: ws,
      wss_port: wss,
      heartbeat,
      heartbeat_max: heartbeatMax,
      nodes: [...hosts],
      backoff: { max_delay: 300, base_delay: 3, factor: 1.8, jitter: 0.3, ...backoff },
    },
    ranked: hosts.map((host, i) => ({
      node_id: `node-${i}`,
      region: 'local',
      endpoints: [host],
      ports: { tcp, ws, wss },
      score: { distance_band: null, distance_km: null, region_match: false, connections: 0, weight: 1, load: 0 },
    })),
  };
}
