// The goim v2 wire protocol (see shared/spec/PROTOCOL.md): a 16-byte big-endian header followed by a
// body. On WebSocket every binary message is exactly one packet; a batch (op 9) is one packet whose
// body is made of complete packets back to back.
//
// Every length is checked against the bytes actually received: a hostile or broken server can make
// `decode*` throw a ProtocolError, never read past a buffer, loop forever or allocate what it claims.

/** Bytes in a packet header. */
export const HEADER_LENGTH = 16;
/** Protocol version goim clients send. */
export const PROTOCOL_VERSION = 1;
/** goim's limit on the body of a client-to-server packet (packet 4112 bytes). */
export const DEFAULT_MAX_BODY = 4096;
/** Default limit on one received WebSocket message (server pushes may be large). */
export const DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024;

/** Operation codes of goim v2 (rim replies to op 4 with op 4). */
export const Op = Object.freeze({
  HEARTBEAT: 2,
  HEARTBEAT_REPLY: 3,
  SEND_MSG: 4,
  SEND_MSG_REPLY: 4,
  AUTH: 7,
  AUTH_REPLY: 8,
  RAW: 9,
  CHANGE_ROOM: 12,
  CHANGE_ROOM_REPLY: 13,
  SUB: 14,
  SUB_REPLY: 15,
  UNSUB: 16,
  UNSUB_REPLY: 17,
  /** The default business operation of the goim push API. */
  BUSINESS: 1000,
});

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

/** A packet that breaks the wire protocol; `code` says how. */
export class ProtocolError extends Error {
  /**
   * @param {string} code short stable label
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8');

/**
 * Bytes of a body given as nothing, a string (UTF-8), a Uint8Array, an ArrayBuffer or any other
 * ArrayBuffer view.
 * @param {unknown} body
 * @returns {Uint8Array}
 */
export function toBytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError('a body must be a string, a Uint8Array, an ArrayBuffer or an ArrayBuffer view');
}

/**
 * UTF-8 text of a body (invalid sequences become U+FFFD).
 * @param {Uint8Array} bytes
 */
export function bytesToText(bytes) {
  return decoder.decode(bytes);
}

function checkInt(name, value, min, max) {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
}

/**
 * Encodes one packet.
 * @param {{op: number, body?: unknown, seq?: number, ver?: number}} packet
 * @param {{maxBody?: number}} [options] `maxBody`: largest body accepted (default 4096, goim's limit
 *   for client packets; `Infinity` to disable)
 * @returns {Uint8Array}
 */
export function encode(packet, options = {}) {
  const { op, seq = 0, ver = PROTOCOL_VERSION } = packet;
  checkInt('op', op, INT32_MIN, INT32_MAX);
  checkInt('seq', seq, INT32_MIN, INT32_MAX);
  checkInt('ver', ver, -32768, 32767);
  const body = toBytes(packet.body);
  const maxBody = options.maxBody ?? DEFAULT_MAX_BODY;
  if (body.length > maxBody) {
    throw new ProtocolError('body_too_large', `body of ${body.length} bytes exceeds the limit of ${maxBody}`);
  }
  if (body.length > INT32_MAX - HEADER_LENGTH) {
    throw new ProtocolError('body_too_large', `body of ${body.length} bytes does not fit a packet`);
  }
  const out = new Uint8Array(HEADER_LENGTH + body.length);
  const view = new DataView(out.buffer);
  view.setInt32(0, out.length);
  view.setInt16(4, HEADER_LENGTH);
  view.setInt16(6, ver);
  view.setInt32(8, op);
  view.setInt32(12, seq);
  out.set(body, HEADER_LENGTH);
  return out;
}

/**
 * Bytes of a received WebSocket message (an ArrayBuffer or any ArrayBuffer view, Node's buffers included).
 * @param {unknown} data
 * @returns {Uint8Array}
 */
function messageBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (typeof data === 'string') {
    throw new ProtocolError('text_message', 'received a text WebSocket message; goim packets are binary');
  }
  throw new ProtocolError('bad_message', 'received a WebSocket message that is not binary data (set binaryType to "arraybuffer")');
}

/**
 * Reads the packet starting at `offset`, which must fit entirely in `bytes`.
 * @param {Uint8Array} bytes
 * @param {number} offset
 * @returns {{packet: import('./protocol.d.ts').Packet, end: number}}
 */
function readPacket(bytes, offset) {
  const available = bytes.length - offset;
  if (available < HEADER_LENGTH) {
    throw new ProtocolError('truncated', `${available} bytes left where a ${HEADER_LENGTH}-byte header is needed`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_LENGTH);
  const packetLength = view.getInt32(0);
  const headerLength = view.getInt16(4);
  if (headerLength !== HEADER_LENGTH) {
    throw new ProtocolError('header_length', `header length ${headerLength}, expected ${HEADER_LENGTH}`);
  }
  if (packetLength < HEADER_LENGTH) {
    throw new ProtocolError('packet_length', `packet length ${packetLength} is shorter than the header`);
  }
  if (packetLength > available) {
    throw new ProtocolError('packet_length', `packet length ${packetLength} exceeds the ${available} bytes received`);
  }
  const packet = {
    ver: view.getInt16(6),
    op: view.getInt32(8),
    seq: view.getInt32(12),
    body: bytes.slice(offset + HEADER_LENGTH, offset + packetLength),
  };
  return { packet, end: offset + packetLength };
}

/**
 * Decodes one WebSocket message as exactly one packet (its packet length must equal the message
 * length). A batch is returned as one op-9 packet; use `decodeMessage` to unpack it.
 * @param {unknown} data
 * @param {{maxMessage?: number}} [options]
 */
export function decode(data, options = {}) {
  const bytes = messageBytes(data);
  const maxMessage = options.maxMessage ?? DEFAULT_MAX_MESSAGE;
  if (bytes.length > maxMessage) {
    throw new ProtocolError('message_too_large', `message of ${bytes.length} bytes exceeds the limit of ${maxMessage}`);
  }
  const { packet, end } = readPacket(bytes, 0);
  if (end !== bytes.length) {
    throw new ProtocolError('packet_length', `packet length ${end} but the message has ${bytes.length} bytes`);
  }
  return packet;
}

/**
 * Splits bytes made of complete packets back to back (the body of an op-9 batch). Packets must
 * fill the bytes exactly; nested batches are refused.
 * @param {Uint8Array} bytes
 */
export function splitPackets(bytes) {
  const packets = [];
  let offset = 0;
  while (offset < bytes.length) {
    const { packet, end } = readPacket(bytes, offset);
    if (packet.op === Op.RAW) {
      throw new ProtocolError('nested_batch', 'a batch inside a batch');
    }
    packets.push(packet);
    offset = end;
  }
  return packets;
}

/**
 * Decodes one WebSocket message into the packets it carries: the packet itself, or the inner
 * packets of an op-9 batch, in order.
 * @param {unknown} data
 * @param {{maxMessage?: number}} [options]
 */
export function decodeMessage(data, options = {}) {
  const packet = decode(data, options);
  if (packet.op !== Op.RAW) return [packet];
  return splitPackets(packet.body);
}

/**
 * Encodes an op-9 batch of packets (what a server sends; useful for tests and tools).
 * @param {Array<{op: number, body?: unknown, seq?: number, ver?: number}>} packets
 */
export function encodeBatch(packets) {
  const inner = packets.map((p) => encode(p, { maxBody: Infinity }));
  const total = inner.reduce((n, p) => n + p.length, 0);
  const body = new Uint8Array(total);
  let offset = 0;
  for (const p of inner) {
    body.set(p, offset);
    offset += p.length;
  }
  return encode({ op: Op.RAW, seq: 0, body }, { maxBody: Infinity });
}

/**
 * The room online count a heartbeat reply carries (big-endian int32), or null if the body is not
 * exactly 4 bytes.
 * @param {Uint8Array} body
 */
export function readOnlineCount(body) {
  if (!(body instanceof Uint8Array) || body.length !== 4) return null;
  return new DataView(body.buffer, body.byteOffset, 4).getInt32(0);
}

/**
 * The body of a subscribe/unsubscribe packet: comma-separated decimal ops.
 * @param {Iterable<number>} ops
 */
export function encodeOps(ops) {
  const list = [...ops];
  for (const op of list) checkInt('op', op, INT32_MIN, INT32_MAX);
  return list.join(',');
}

/**
 * Hex of bytes, for logs and tests.
 * @param {Uint8Array} bytes
 */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Bytes of a hex string (whitespace ignored).
 * @param {string} hex
 */
export function fromHex(hex) {
  const clean = hex.replace(/\s+/g, '');
  if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) throw new TypeError('not a hex string');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}
