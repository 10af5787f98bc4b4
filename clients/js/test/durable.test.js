// Durable delivery: the codec against every byte example of docs/rim-protocol-extension.md, and
// RimClient with `durable` against a WebSocket server on a real socket that speaks the extension
// (its bytes written out by hand below): resume from what was processed, duplicates dropped,
// coalesced acks for the user stream only, "not resumed" adopted, a store carried across client
// objects, manual acks, room changes, and plain mode byte for byte as before.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { RimClient, RimPush, RimMessage } from '../src/client.js';
import {
  DurableOp,
  MemoryPositionStore,
  PositionTracker,
  decodeDurablePush,
  decodeResumeAnswer,
  encodeAck,
  webStoragePositionStore,
} from '../src/durable.js';
import { Op, ProtocolError, bytesToText, decode, encode, fromHex, toHex } from '../src/protocol.js';
import { NodeWebSocket, startServer } from '../test-support/node-websocket.js';

// ---- the protocol page's examples ----------------------------------------------------------------

const page = readFileSync(fileURLToPath(new URL('../../../docs/rim-protocol-extension.md', import.meta.url)), 'utf8');
const examples = [...page.matchAll(/```rim-example\n([^\n]*)\n([\s\S]*?)```/g)].map((m) => ({
  title: m[1],
  fields: Object.fromEntries([...m[1].matchAll(/(\S+?)=(\S+)/g)].map((f) => [f[1], f[2]])),
  kind: m[1].split(' ')[0],
  data: m[2].trim(),
}));

const REJECTIONS = {
  truncated: 'durable_truncated',
  'too-long': 'durable_too_long',
  version: 'durable_version',
  kind: 'durable_kind',
  flags: 'durable_flags',
  reserved: 'durable_reserved',
  outcome: 'durable_outcome',
  position: 'durable_position',
};

test('the codec agrees with every byte example of the protocol page', () => {
  let checked = 0;
  for (const { title, fields, kind, data } of examples) {
    if (kind === 'push') {
      const packet = decode(fromHex(data));
      assert.equal(packet.op, DurableOp.PUSH, title);
      const push = decodeDurablePush(packet.body);
      assert.deepEqual(
        { ...push, body: bytesToText(push.body) },
        {
          stream: fields.stream,
          replay: fields.replay === 'true',
          op: Number(fields.operation),
          id: fields.id,
          position: { epoch: Number(fields.epoch), seq: Number(fields.seq) },
          body: title.slice(title.indexOf('body=') + 5),
        },
        title,
      );
    } else if (kind === 'resume') {
      const answer = decodeResumeAnswer(decode(fromHex(data)).body);
      const resumed = fields.status === 'resumed';
      assert.deepEqual(
        answer,
        {
          stream: fields.stream,
          resumed,
          count: resumed ? Number(fields.count) : 0,
          reason: resumed ? null : fields.status.replace('-', '_'),
          position: { epoch: Number(fields.epoch), seq: Number(fields.seq) },
        },
        title,
      );
    } else if (kind === 'ack') {
      const bytes = encode({
        op: DurableOp.ACK,
        seq: Number(fields['packet-seq']),
        body: encodeAck({ epoch: Number(fields.epoch), seq: Number(fields.seq) }),
      });
      assert.equal(toHex(bytes), toHex(fromHex(data)), title);
    } else if (kind === 'reject' && (fields.op === '20' || fields.op === '21')) {
      const body = decode(fromHex(data)).body;
      const decoder = fields.op === '20' ? decodeDurablePush : decodeResumeAnswer;
      assert.throws(
        () => decoder(body),
        (error) => error instanceof ProtocolError && error.code === REJECTIONS[fields.error],
        title,
      );
    } else if (kind === 'auth') {
      const position = (text) => {
        if (text === 'none') return null;
        const [epoch, seq] = text.split(':').map(Number);
        return { epoch, seq };
      };
      const expected = JSON.parse(data);
      const room = position(fields.room);
      const tracker = new PositionTracker({
        user: position(fields.user),
        room: room && { room: expected.room_id, ...room },
      });
      const { rim, ...auth } = expected;
      assert.deepEqual(JSON.parse(tracker.authBody(auth)), expected, title);
    } else {
      continue;
    }
    checked += 1;
  }
  assert.ok(checked >= 16, `only ${checked} examples checked`);
});

test('acks refuse positions a peer could not read; stores keep positions', () => {
  assert.throws(() => encodeAck({ epoch: 0, seq: 2 ** 53 }), RangeError);
  assert.throws(() => encodeAck({ epoch: -1, seq: 0 }), RangeError);
  const items = new Map();
  const storage = { getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, v) };
  const store = webStoragePositionStore(storage, 'rim');
  assert.equal(store.get(), null);
  store.set({ user: { epoch: 0, seq: 3 }, room: null });
  assert.deepEqual(store.get(), { user: { epoch: 0, seq: 3 }, room: null });
  items.set('rim', '{not json');
  assert.equal(store.get(), null);
});

// ---- a server that speaks the extension ----------------------------------------------------------

const hex = (n, bytes) => n.toString(16).padStart(bytes * 2, '0');
const u64 = (n) => hex(Math.floor(n / 2 ** 32), 4) + hex(n % 2 ** 32, 4);
const ID = '0192f1c49d3e7b2a8c113f5e9a7b6c4d';

/** An op-20 packet, byte by byte as the protocol page lays it out. */
function pushPacket(stream, seq, { epoch = 0, replay = false, op = 1000, body = `${stream} ${seq}` } = {}) {
  const payload = toHex(new TextEncoder().encode(body));
  const kind = stream === 'user' ? '01' : '02';
  const bodyHex = `01${kind}${replay ? '01' : '00'}00${hex(op, 4)}${ID}${u64(epoch)}${u64(seq)}${payload}`;
  return fromHex(`${hex(16 + bodyHex.length / 2, 4)}0010000100000014${'00'.repeat(4)}${bodyHex}`);
}

/** An op-21 packet: `reason` 0 for resumed (with `count`), else 1-5. */
function resumePacket(stream, { count = 0, reason = 0, epoch = 0, seq }) {
  const kind = stream === 'user' ? '01' : '02';
  const bodyHex = `01${kind}${reason ? '01' : '00'}${hex(reason, 1)}${hex(count, 4)}${u64(epoch)}${u64(seq)}`;
  return fromHex(`000000280010000100000015${'00'.repeat(4)}${bodyHex}`);
}

/** Answers the client's auth; returns the auth JSON. */
async function acceptAuth(peer) {
  const auth = await peer.next();
  assert.equal(auth.op, Op.AUTH);
  peer.send(encode({ op: Op.AUTH_REPLY, seq: auth.seq }));
  return JSON.parse(bytesToText(auth.body));
}

/** Reads the client's packets (answering heartbeats) until one of `op` arrives. */
async function expectOp(peer, op) {
  for (;;) {
    const packet = await peer.next();
    if (packet.op === Op.HEARTBEAT) {
      peer.send(encode({ op: Op.HEARTBEAT_REPLY, seq: packet.seq, body: new Uint8Array(4) }));
      continue;
    }
    assert.equal(packet.op, op, `expected op ${op}, got op ${packet.op}`);
    return packet;
  }
}

/** Reads acks until one acks `seq` of epoch `epoch`; returns every acked position. */
async function acksUntil(peer, seq, epoch = 0) {
  const acks = [];
  for (;;) {
    const body = (await expectOp(peer, DurableOp.ACK)).body;
    assert.equal(body.length, 20);
    const view = new DataView(body.buffer, body.byteOffset);
    const position = { epoch: view.getUint32(4) * 2 ** 32 + view.getUint32(8), seq: view.getUint32(12) * 2 ** 32 + view.getUint32(16) };
    acks.push(position);
    if (position.seq === seq && position.epoch === epoch) return acks;
  }
}

/** A durable client on a real socket, recording what it reports. */
function client(server, options = {}) {
  const seen = [];
  const c = new RimClient({
    urls: [server.url],
    WebSocket: NodeWebSocket,
    auth: { mid: 7, key: 'phone-1', room_id: 'live://1', accepts: [1000] },
    backoff: { base: 10, max: 50, jitter: 0 },
    durable: true,
    ...options,
  });
  const waiters = [];
  const record = (entry) => {
    seen.push(entry);
    for (const w of [...waiters]) if (w.match(entry)) waiters.splice(waiters.indexOf(w), 1) && w.resolve();
  };
  c.on('message', (m) => record(m instanceof RimPush ? `${m.stream} ${m.position.seq}${m.replay ? ' replay' : ''}` : `plain ${m.op} ${m.text()}`));
  c.on('resume', (e) => record(`resume ${e.stream} ${e.resumed ? `resumed ${e.count}` : `not resumed ${e.reason}`} at ${e.position.epoch}:${e.position.seq}`));
  c.on('state', (e) => e.state === 'open' && record('open'));
  const until = (entry) =>
    seen.includes(entry)
      ? Promise.resolve()
      : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`never saw ${entry}; saw ${JSON.stringify(seen)}`)), 5000);
          waiters.push({ match: (e) => e === entry, resolve: () => (clearTimeout(timer), resolve()) });
        });
  return { client: c, seen, until };
}

test('a durable client resumes from what it processed, drops duplicates and acks only the user stream', async () => {
  const server = await startServer();
  const store = new MemoryPositionStore();
  const { client: c, seen, until } = client(server, { durable: { store } });
  c.start();
  const first = await server.accept();
  const auth = await acceptAuth(first);
  assert.deepEqual(auth, { platform: 'web', mid: 7, key: 'phone-1', room_id: 'live://1', accepts: [1000], rim: { v: 1 } });
  first.send(resumePacket('user', { seq: 10 }));
  first.send(resumePacket('room', { epoch: 5, seq: 2 }));
  for (const seq of [11, 12, 12, 11]) first.send(pushPacket('user', seq));
  first.send(pushPacket('room', 3, { epoch: 5 }));
  const acks = await acksUntil(first, 12);
  assert.ok(acks.length <= 2, `coalesced: ${JSON.stringify(acks)}`);
  assert.ok(acks.every((a) => a.epoch === 0), 'room pushes are never acked');
  await until('room 3');
  first.drop();

  const second = await server.accept();
  const again = await acceptAuth(second);
  assert.deepEqual(again.rim, { v: 1, user: { epoch: 0, seq: 12 }, room: { epoch: 5, seq: 3 } });
  second.send(pushPacket('user', 12, { replay: true }));
  second.send(pushPacket('user', 13, { replay: true }));
  second.send(resumePacket('user', { count: 2, seq: 13 }));
  second.send(resumePacket('room', { epoch: 5, seq: 3 }));
  second.send(pushPacket('user', 14));
  assert.deepEqual((await acksUntil(second, 14)).at(-1), { epoch: 0, seq: 14 });
  await until('user 14');
  assert.deepEqual(seen, [
    'open',
    'resume user resumed 0 at 0:10',
    'resume room resumed 0 at 5:2',
    'user 11',
    'user 12',
    'room 3',
    'open',
    'user 13 replay',
    'resume user resumed 2 at 0:13',
    'resume room resumed 0 at 5:3',
    'user 14',
  ]);
  assert.deepEqual(store.get(), { user: { epoch: 0, seq: 14 }, room: { room: 'live://1', epoch: 5, seq: 3 } });
  assert.deepEqual(c.positions, store.get());
  c.close();
  await server.close();
});

test('"not resumed" adopts the head and says reload; a new client object resumes from the store', async () => {
  const server = await startServer();
  const store = new MemoryPositionStore({ user: { epoch: 0, seq: 5 }, room: null });
  const one = client(server, { durable: { store }, auth: 'header.eyJtaWQiOjd9.sig' });
  const resumes = [];
  one.client.on('resume', (e) => resumes.push(e));
  one.client.start();
  const peer = await server.accept();
  const auth = await acceptAuth(peer);
  assert.deepEqual(auth, { token: 'header.eyJtaWQiOjd9.sig', rim: { v: 1, user: { epoch: 0, seq: 5 } } });
  peer.send(resumePacket('user', { reason: 2, seq: 900 }));
  peer.send(pushPacket('user', 900)); // at the head: nothing new
  peer.send(pushPacket('user', 901));
  await one.until('user 901');
  assert.deepEqual(resumes, [
    { stream: 'user', resumed: false, count: 0, reason: 'expired', position: { epoch: 0, seq: 900 }, reload: true },
  ]);
  assert.deepEqual((await acksUntil(peer, 901)).at(-1), { epoch: 0, seq: 901 });
  // "unavailable" (the edge could not ask the store) keeps the client's own position.
  peer.send(resumePacket('user', { reason: 4, seq: 0 }));
  await one.until('resume user not resumed unavailable at 0:0');
  assert.deepEqual(store.get().user, { epoch: 0, seq: 901 });
  one.client.close();

  // The app restarts: a new client with the same store asks to resume from 901.
  const two = client(server, { durable: { store }, auth: 'header.eyJtaWQiOjd9.sig' });
  two.client.start();
  const next = await server.accept();
  assert.deepEqual((await acceptAuth(next)).rim, { v: 1, user: { epoch: 0, seq: 901 } });
  // A malformed op-20 body closes the connection as a protocol error (4002).
  const closed = new Promise((resolve) => two.client.once('disconnect', resolve));
  next.send(encode({ op: DurableOp.PUSH, body: new Uint8Array([1, 3]) }));
  assert.equal((await closed).code, 4002);
  two.client.close();
  await server.close();
});

test('with manual acks positions move only on push.ack(); pushes handed out are not handed out again', async () => {
  const server = await startServer();
  const store = new MemoryPositionStore();
  const pushes = [];
  const t = client(server, { durable: { store, ack: 'manual' } });
  t.client.on('message', (m) => pushes.push(m));
  t.client.start();
  const first = await server.accept();
  await acceptAuth(first);
  first.send(pushPacket('user', 1));
  first.send(pushPacket('user', 2));
  await t.until('user 2');
  assert.equal(store.get().user, null, 'nothing acked yet');
  pushes[0].ack();
  assert.deepEqual(await acksUntil(first, 1), [{ epoch: 0, seq: 1 }]);
  first.drop();
  const second = await server.accept();
  assert.deepEqual((await acceptAuth(second)).rim, { v: 1, user: { epoch: 0, seq: 1 } });
  second.send(pushPacket('user', 2, { replay: true }));
  second.send(pushPacket('user', 3, { replay: true }));
  await t.until('user 3 replay');
  assert.equal(t.seen.filter((s) => s.startsWith('user 2')).length, 1, 'push 2 once');
  t.client.ack(pushes[1]);
  t.client.ack(pushes[2]);
  assert.deepEqual((await acksUntil(second, 3)).at(-1), { epoch: 0, seq: 3 });
  t.client.close();
  await server.close();
});

test('a room change starts the new room at its head; 500 pushes are acked in a few coalesced acks', async () => {
  const server = await startServer();
  const store = new MemoryPositionStore();
  const t = client(server, { durable: { store } });
  t.client.start();
  const peer = await server.accept();
  await acceptAuth(peer);
  peer.send(resumePacket('room', { epoch: 5, seq: 2 }));
  peer.send(pushPacket('room', 3, { epoch: 5 }));
  await t.until('room 3');
  const moved = t.client.changeRoom('live://2');
  const change = await expectOp(peer, Op.CHANGE_ROOM);
  assert.equal(bytesToText(change.body), 'live://2');
  // The confirmation and the new room's answer in one message (an op-9 batch).
  const inner = [encode({ op: Op.CHANGE_ROOM_REPLY, seq: change.seq, body: 'live://2' }), resumePacket('room', { epoch: 8, seq: 100 })];
  peer.send(encode({ op: Op.RAW, body: Uint8Array.from(inner.flatMap((p) => [...p])) }, { maxBody: Infinity }));
  await moved;
  peer.send(pushPacket('room', 101, { epoch: 8 }));
  await t.until('room 101');
  assert.deepEqual(store.get().room, { room: 'live://2', epoch: 8, seq: 101 });
  const burst = [];
  for (let seq = 1; seq <= 500; seq++) burst.push(...encode({ op: DurableOp.PUSH, body: pushPacket('user', seq).subarray(16) }, { maxBody: Infinity }));
  peer.send(encode({ op: Op.RAW, body: Uint8Array.from(burst) }, { maxBody: Infinity }));
  const acks = await acksUntil(peer, 500);
  assert.ok(acks.length <= 500 / 64 + 2, `${acks.length} acks`);
  assert.deepEqual(
    t.seen.filter((s) => s.startsWith('user ')),
    Array.from({ length: 500 }, (_, i) => `user ${i + 1}`),
  );
  t.client.close();
  await server.close();
});

test('a plain client is unchanged: the same auth bytes, and op 20 is an ordinary message', async () => {
  const server = await startServer();
  const t = client(server, { durable: undefined });
  t.client.start();
  const peer = await server.accept();
  const auth = await peer.next();
  assert.equal(bytesToText(auth.body), '{"platform":"web","mid":7,"key":"phone-1","room_id":"live://1","accepts":[1000]}');
  peer.send(encode({ op: Op.AUTH_REPLY, seq: auth.seq }));
  peer.send(pushPacket('user', 1));
  peer.send(encode({ op: 1000, body: 'hello' }));
  await t.until('plain 1000 hello');
  const [first] = t.seen.filter((s) => s.startsWith('plain'));
  assert.ok(first.startsWith('plain 20 '), first);
  assert.equal(t.client.positions, null);
  // ops 20-29 are ordinary upstream messages for a plain client
  const sent = t.client.send('up', 22);
  const up = await expectOp(peer, 22);
  assert.equal(bytesToText(up.body), 'up');
  peer.send(encode({ op: 22, seq: up.seq }));
  await sent;
  t.client.close();
  await server.close();
});

test('RimPush is a RimMessage with the business op', () => {
  const push = new RimPush(
    { stream: 'user', replay: false, op: 1001, id: 'x', position: { epoch: 0, seq: 1 }, body: new TextEncoder().encode('{"a":1}') },
    { ver: 1 },
    () => {},
  );
  assert.ok(push instanceof RimMessage);
  assert.equal(push.op, 1001);
  assert.deepEqual(push.json(), { a: 1 });
});
