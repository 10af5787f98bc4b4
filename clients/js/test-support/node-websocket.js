// Real WebSockets for Node tests (Node 20 has no global WebSocket without a flag): a small RFC 6455
// client with the browser API RimClient expects, and a small server that hands each connection to
// the test as a stream of goim packets. ws:// only, binary messages, no extensions; Node-only (net,
// http, crypto), so it is not part of the browser package.

import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { decode } from '../src/protocol.js';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const accept = (key) => createHash('sha1').update(key + GUID).digest('base64');

/** One frame: FIN set, `opcode`, masked when `mask` (client to server). */
function frame(opcode, payload, mask) {
  const length = payload.length;
  const head = [0x80 | opcode];
  const bit = mask ? 0x80 : 0;
  if (length < 126) head.push(bit | length);
  else if (length < 65536) head.push(bit | 126, length >> 8, length & 0xff);
  else {
    head.push(bit | 127, 0, 0, 0, 0);
    for (let shift = 24; shift >= 0; shift -= 8) head.push((length >>> shift) & 0xff);
  }
  if (!mask) return Buffer.concat([Buffer.from(head), Buffer.from(payload)]);
  const key = randomBytes(4);
  const body = Buffer.from(payload).map((b, i) => b ^ key[i % 4]);
  return Buffer.concat([Buffer.from(head), key, body]);
}

/** Reads frames from a socket's chunks; calls `onFrame(opcode, payload)` for each complete one. */
function frameReader(onFrame) {
  let pending = Buffer.alloc(0);
  return (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    for (;;) {
      if (pending.length < 2) return;
      const masked = (pending[1] & 0x80) !== 0;
      let length = pending[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (pending.length < 4) return;
        length = pending.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (pending.length < 10) return;
        length = Number(pending.readBigUInt64BE(2));
        offset = 10;
      }
      const keyAt = offset;
      if (masked) offset += 4;
      if (pending.length < offset + length) return;
      let payload = pending.subarray(offset, offset + length);
      if (masked) {
        const key = pending.subarray(keyAt, keyAt + 4);
        payload = Buffer.from(payload).map((b, i) => b ^ key[i % 4]);
      }
      const opcode = pending[0] & 0x0f;
      pending = pending.subarray(offset + length);
      onFrame(opcode, Buffer.from(payload));
    }
  };
}

/** A WebSocket client over node:net with the part of the browser API RimClient uses. */
export class NodeWebSocket {
  constructor(url) {
    const { hostname, port, pathname, search } = new URL(url);
    this.url = url;
    this.readyState = 0;
    this.binaryType = 'blob';
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    const key = randomBytes(16).toString('base64');
    this._socket = connect(Number(port), hostname);
    let handshake = Buffer.alloc(0);
    const read = frameReader((opcode, payload) => this._onFrame(opcode, payload));
    this._socket.on('connect', () => {
      this._socket.write(
        `GET ${pathname}${search} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    this._socket.on('data', (chunk) => {
      if (this.readyState !== 0) return read(chunk);
      handshake = Buffer.concat([handshake, chunk]);
      const end = handshake.indexOf('\r\n\r\n');
      if (end < 0) return undefined;
      const head = handshake.subarray(0, end).toString();
      if (!/^HTTP\/1\.1 101/.test(head) || !head.toLowerCase().includes(accept(key).toLowerCase())) {
        this._closed(1006, 'handshake refused');
        return undefined;
      }
      this.readyState = 1;
      if (this.onopen) this.onopen({ type: 'open' });
      return read(handshake.subarray(end + 4));
    });
    this._socket.on('error', () => {});
    this._socket.on('close', () => this._closed(1006, ''));
  }

  send(data) {
    if (this.readyState !== 1) throw new Error('InvalidStateError: not open');
    this._socket.write(frame(2, data, true));
  }

  close(code = 1000, reason = '') {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    const payload = Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);
    this._socket.end(frame(8, payload, true));
  }

  _onFrame(opcode, payload) {
    if (opcode === 2 && this.onmessage) {
      const data = payload.buffer.slice(payload.byteOffset, payload.byteOffset + payload.length);
      this.onmessage({ data });
    } else if (opcode === 8) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      this._closed(code, payload.subarray(2).toString());
      this._socket.end();
    } else if (opcode === 9 && this.readyState === 1) {
      this._socket.write(frame(10, payload, true));
    }
  }

  _closed(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    if (code === 1006 && this.onerror) this.onerror({ type: 'error' });
    if (this.onclose) this.onclose({ code, reason, wasClean: code !== 1006 });
  }
}

/** A server-side WebSocket connection, read as goim packets. */
class Peer {
  constructor(socket) {
    this.socket = socket;
    this.closed = false;
    this._packets = [];
    this._waiters = [];
    socket.on(
      'data',
      frameReader((opcode, payload) => {
        if (opcode === 2) this._deliver(decode(payload));
        else if (opcode === 8) this.drop();
      }),
    );
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      for (const waiter of this._waiters.splice(0)) waiter.reject(new Error('client closed'));
    });
  }

  _deliver(packet) {
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve(packet);
    else this._packets.push(packet);
  }

  /** The next packet from the client (rejects after `ms` or when it closes). */
  next(ms = 5000) {
    if (this._packets.length) return Promise.resolve(this._packets.shift());
    if (this.closed) return Promise.reject(new Error('client closed'));
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      const timer = setTimeout(() => {
        this._waiters.splice(this._waiters.indexOf(waiter), 1);
        reject(new Error(`no packet from the client within ${ms} ms`));
      }, ms);
      waiter.resolve = (p) => (clearTimeout(timer), resolve(p));
      waiter.reject = (e) => (clearTimeout(timer), reject(e));
      this._waiters.push(waiter);
    });
  }

  /** Sends bytes (one packet or a batch) as one binary message. */
  send(bytes) {
    if (!this.closed) this.socket.write(frame(2, bytes, false));
  }

  /** Ends the connection abruptly (as a lost network would). */
  drop() {
    this.closed = true;
    this.socket.destroy();
  }
}

/**
 * Starts a WebSocket server on a free loopback port; each connection is queued as a Peer.
 * Returns `{url, accept(), close()}`; `accept()` resolves with the next connection.
 */
export async function startServer(path = '/sub') {
  const peers = [];
  const waiting = [];
  const sockets = new Set();
  const server = createServer((request, response) => response.writeHead(404).end());
  server.on('upgrade', (request, socket) => {
    const key = request.headers['sec-websocket-key'];
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept(key)}\r\n\r\n`,
    );
    sockets.add(socket);
    const peer = new Peer(socket);
    const waiter = waiting.shift();
    if (waiter) waiter(peer);
    else peers.push(peer);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `ws://127.0.0.1:${port}${path}`,
    accept: () => (peers.length ? Promise.resolve(peers.shift()) : new Promise((resolve) => waiting.push(resolve))),
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
