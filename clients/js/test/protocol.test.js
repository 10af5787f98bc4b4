import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  Op,
  ProtocolError,
  decode,
  decodeMessage,
  encode,
  encodeBatch,
  encodeOps,
  fromHex,
  readOnlineCount,
  splitPackets,
  toBytes,
  toHex,
  bytesToText,
} from '../src/protocol.js';

// The byte examples of shared/spec/PROTOCOL.md.
const AUTH_REPLY = '00000010 0010 0001 00000008 00000001';
const HEARTBEAT = '00000010 0010 0001 00000002 00000001';
const HEARTBEAT_REPLY_1000 = '00000014 0010 0001 00000003 00000001 000003e8';
const PUSH_HELLO = '00000015 0010 0001 000003e8 00000000 68656c6c6f';
const PUSH_HELLO_WS = '00000025 0010 0001 00000009 00000000' + PUSH_HELLO;
const CHANGE_ROOM = '0000001b 0010 0001 0000000c 00000002 6c6976653a2f2f31303031';

const hex = (s) => s.replace(/\s+/g, '');

function header({ length, headerLength = 16, ver = 1, op = 1000, seq = 0 }) {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setInt32(0, length);
  v.setInt16(4, headerLength);
  v.setInt16(6, ver);
  v.setInt32(8, op);
  v.setInt32(12, seq);
  return b;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function rejects(fn, code) {
  assert.throws(fn, (error) => {
    assert.ok(error instanceof ProtocolError, `expected a ProtocolError, got ${error}`);
    if (code) assert.equal(error.code, code, error.message);
    return true;
  });
}

test('encodes the byte examples of the protocol page', () => {
  assert.equal(toHex(encode({ op: Op.AUTH_REPLY, seq: 1 })), hex(AUTH_REPLY));
  assert.equal(toHex(encode({ op: Op.HEARTBEAT, seq: 1 })), hex(HEARTBEAT));
  assert.equal(toHex(encode({ op: 1000, body: 'hello' })), hex(PUSH_HELLO));
  assert.equal(toHex(encode({ op: Op.CHANGE_ROOM, seq: 2, body: 'live://1001' })), hex(CHANGE_ROOM));
  assert.equal(toHex(encodeBatch([{ op: 1000, body: 'hello' }])), hex(PUSH_HELLO_WS));
});

test('decodes the byte examples of the protocol page', () => {
  const reply = decode(fromHex(HEARTBEAT_REPLY_1000));
  assert.deepEqual({ op: reply.op, ver: reply.ver, seq: reply.seq }, { op: 3, ver: 1, seq: 1 });
  assert.equal(readOnlineCount(reply.body), 1000);

  const push = decode(fromHex(PUSH_HELLO).buffer);
  assert.equal(push.op, 1000);
  assert.equal(push.seq, 0);
  assert.equal(bytesToText(push.body), 'hello');

  const room = decode(fromHex(CHANGE_ROOM));
  assert.equal(room.op, 12);
  assert.equal(room.seq, 2);
  assert.equal(bytesToText(room.body), 'live://1001');
});

test('a WebSocket batch unpacks into its inner packets, in order', () => {
  const [only] = decodeMessage(fromHex(PUSH_HELLO_WS).buffer);
  assert.equal(only.op, 1000);
  assert.equal(bytesToText(only.body), 'hello');

  const batch = encodeBatch([
    { op: 1000, body: 'one' },
    { op: 1001, body: '' },
    { op: 1000, body: 'three', seq: 7 },
  ]);
  const packets = decodeMessage(batch);
  assert.deepEqual(
    packets.map((p) => [p.op, p.seq, bytesToText(p.body)]),
    [
      [1000, 0, 'one'],
      [1001, 0, ''],
      [1000, 7, 'three'],
    ],
  );
  // decode alone keeps the batch packed
  assert.equal(decode(batch).op, Op.RAW);
  // an empty batch carries nothing
  assert.deepEqual(decodeMessage(encodeBatch([])), []);
  // a non-batch message is one packet
  assert.equal(decodeMessage(encode({ op: 1000, body: 'x' })).length, 1);
});

test('bodies may be strings, bytes, ArrayBuffers or views; decoded bodies are independent copies', () => {
  const bytes = new Uint8Array([1, 2, 3, 4, 5]);
  assert.deepEqual([...toBytes(bytes.buffer)], [1, 2, 3, 4, 5]);
  assert.deepEqual([...toBytes(new DataView(bytes.buffer, 1, 2))], [2, 3]);
  assert.deepEqual([...toBytes('é')], [0xc3, 0xa9]);
  assert.equal(toBytes(undefined).length, 0);
  assert.throws(() => toBytes(42), TypeError);

  const message = encode({ op: 1000, body: 'abc' });
  const packet = decode(message);
  message[16] = 0x7a;
  assert.equal(bytesToText(packet.body), 'abc');

  // a view into a larger buffer decodes from its own offset
  const big = concat(new Uint8Array([9, 9, 9]), encode({ op: 1000, body: 'mid' }), new Uint8Array([9]));
  const view = big.subarray(3, big.length - 1);
  assert.equal(bytesToText(decode(view).body), 'mid');
});

test('encode checks every field and the body limit', () => {
  assert.throws(() => encode({ op: 1.5 }), RangeError);
  assert.throws(() => encode({ op: 2 ** 31 }), RangeError);
  assert.throws(() => encode({ op: 1000, seq: -(2 ** 31) - 1 }), RangeError);
  assert.throws(() => encode({ op: 1000, ver: 40000 }), RangeError);
  assert.throws(() => encode({ op: '7' }), RangeError);
  assert.equal(encode({ op: 4, body: new Uint8Array(4096) }).length, 4112);
  rejects(() => encode({ op: 4, body: new Uint8Array(4097) }), 'body_too_large');
  assert.equal(encode({ op: 4, body: new Uint8Array(5000) }, { maxBody: 8192 }).length, 5016);
  assert.equal(encode({ op: -1, seq: -5, ver: 0 }).length, 16);
});

test('hostile lengths: short, wrong header length, negative, too long, too short', () => {
  rejects(() => decode(new Uint8Array(0)), 'truncated');
  rejects(() => decode(new Uint8Array(15)), 'truncated');
  rejects(() => decode(header({ length: 16, headerLength: 17 })), 'header_length');
  rejects(() => decode(header({ length: 16, headerLength: 0 })), 'header_length');
  rejects(() => decode(header({ length: 16, headerLength: -16 })), 'header_length');
  rejects(() => decode(header({ length: 15 })), 'packet_length');
  rejects(() => decode(header({ length: 0 })), 'packet_length');
  rejects(() => decode(header({ length: -1 })), 'packet_length');
  rejects(() => decode(header({ length: -2147483648 })), 'packet_length');
  // claims more than the message has (goim crashes or over-reads here)
  rejects(() => decode(header({ length: 17 })), 'packet_length');
  rejects(() => decode(header({ length: 2147483647 })), 'packet_length');
  rejects(() => decode(concat(header({ length: 100 }), new Uint8Array(10))), 'packet_length');
  // claims less than the message has: WebSocket messages are exactly one packet
  rejects(() => decode(concat(header({ length: 16 }), new Uint8Array(1))), 'packet_length');
  // two packets in one non-batch message
  rejects(() => decode(concat(encode({ op: 1000 }), encode({ op: 1000 }))), 'packet_length');
});

test('hostile batches: inner lengths are checked against the batch', () => {
  const wrap = (inner) => concat(header({ length: 16 + inner.length, op: Op.RAW }), inner);
  const good = encode({ op: 1000, body: 'ok' });
  // inner packet claims past the end of the batch
  rejects(() => decodeMessage(wrap(concat(good, header({ length: 40 }), new Uint8Array(4)))), 'packet_length');
  // inner packet negative or shorter than a header
  rejects(() => decodeMessage(wrap(header({ length: -16 }))), 'packet_length');
  rejects(() => decodeMessage(wrap(header({ length: 3 }))), 'packet_length');
  // trailing bytes that cannot be a header
  rejects(() => decodeMessage(wrap(concat(good, new Uint8Array(5)))), 'truncated');
  // inner header length wrong
  rejects(() => decodeMessage(wrap(header({ length: 16, headerLength: 12 }))), 'header_length');
  // nested batch
  rejects(() => decodeMessage(wrap(encodeBatch([{ op: 1000 }]))), 'nested_batch');
  // the outer batch length itself lies
  rejects(() => decodeMessage(concat(header({ length: 64, op: Op.RAW }), good)), 'packet_length');
  // splitPackets on its own
  assert.equal(splitPackets(concat(good, good)).length, 2);
  rejects(() => splitPackets(good.subarray(0, 17)), 'packet_length');
});

test('messages that are not binary, or too large, are refused', () => {
  rejects(() => decode('hello'), 'text_message');
  rejects(() => decode({}), 'bad_message');
  rejects(() => decode(undefined), 'bad_message');
  rejects(() => decode(encode({ op: 1000, body: 'x'.repeat(100) }), { maxMessage: 64 }), 'message_too_large');
});

test('random garbage never escapes as anything but a ProtocolError', () => {
  let seed = 12345;
  const random = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  let decoded = 0;
  for (let i = 0; i < 3000; i++) {
    const length = Math.floor(random() * 80);
    const bytes = new Uint8Array(length);
    for (let j = 0; j < length; j++) bytes[j] = Math.floor(random() * 256);
    // make a third of them look plausible so the deeper checks run
    if (length >= 16 && i % 3 === 0) {
      const v = new DataView(bytes.buffer);
      v.setInt16(4, 16);
      if (i % 2 === 0) v.setInt32(0, length);
      if (i % 4 === 0) v.setInt32(8, Op.RAW);
    }
    try {
      const packets = decodeMessage(bytes);
      decoded += 1;
      for (const p of packets) assert.ok(p.body.length <= length);
    } catch (error) {
      assert.ok(error instanceof ProtocolError, String(error));
    }
  }
  assert.ok(decoded > 0, 'some plausible messages decode');
});

test('heartbeat reply online count and op lists', () => {
  assert.equal(readOnlineCount(fromHex('000003e8')), 1000);
  assert.equal(readOnlineCount(fromHex('ffffffff')), -1);
  assert.equal(readOnlineCount(new Uint8Array(0)), null);
  assert.equal(readOnlineCount(new Uint8Array(5)), null);
  assert.equal(encodeOps([1000, 1001, 1002]), '1000,1001,1002');
  assert.equal(encodeOps(new Set([7])), '7');
  assert.throws(() => encodeOps([1000, 'x']), RangeError);
  assert.throws(() => fromHex('abc'), TypeError);
});
