import { test } from 'node:test';
import assert from 'node:assert/strict';

import { RimClient, RimError, RimMessage, RoomRefusedError, State, CloseCode } from '../src/client.js';
import { AdaptiveHeartbeat } from '../src/heartbeat.js';
import { Op, bytesToText, encode } from '../src/protocol.js';
import { FakeClock, dnsResponse, fakeFetch, fakeWebSocketClass, flush } from '../test-support/fakes.js';

const S = 1000;

/** A client on a fake clock and fake sockets, recording every event. */
function setup(options = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const events = [];
  const client = new RimClient({
    urls: ['ws://a:3102/sub', 'ws://b:3102/sub'],
    auth: { token: 'T', room_id: 'live://1000', accepts: [1000] },
    WebSocket: WS,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0, // no jitter: pauses are their nominal value
    ...options,
  });
  for (const type of ['state', 'message', 'online', 'heartbeat', 'disconnect', 'dns', 'error']) {
    client.on(type, (event) => events.push({ type, event }));
  }
  const of = (type) => events.filter((e) => e.type === type).map((e) => e.event);
  const states = () => of('state').map((e) => e.state);
  return { clock, WS, client, events, of, states };
}

/** Starts the client and brings its first socket to 'open' (auth accepted). */
async function connected(options = {}) {
  const t = setup(options);
  t.client.start();
  await flush();
  t.WS.last.open();
  t.WS.last.acceptAuth();
  await flush();
  return t;
}

test('connects to the first URL, sends the auth JSON, and is open on an empty auth reply', async () => {
  const { client, WS, states, of } = setup();
  assert.equal(client.state, State.IDLE);
  client.start();
  await flush();
  assert.equal(WS.instances.length, 1);
  const ws = WS.last;
  assert.equal(ws.url, 'ws://a:3102/sub');
  assert.equal(ws.binaryType, 'arraybuffer');
  ws.open();
  const auth = ws.lastSent(Op.AUTH);
  assert.equal(auth.seq, 1);
  assert.equal(auth.ver, 1);
  assert.deepEqual(JSON.parse(bytesToText(auth.body)), {
    platform: 'web',
    token: 'T',
    room_id: 'live://1000',
    accepts: [1000],
  });
  assert.equal(client.state, State.CONNECTING);
  ws.acceptAuth();
  assert.equal(client.state, State.OPEN);
  assert.equal(client.url, 'ws://a:3102/sub');
  assert.deepEqual(states(), ['connecting', 'open']);
  assert.equal(of('state')[1].url, 'ws://a:3102/sub');
  // a heartbeat right after auth, like goim's browser client; its reply carries the online count
  const hb = ws.lastSent(Op.HEARTBEAT);
  assert.ok(hb && hb.seq === 2);
  ws.replyHeartbeat(1234);
  assert.deepEqual(of('online'), [{ count: 1234 }]);
  assert.equal(client.online, 1234);
  assert.equal(of('error').length, 0);
});

test('a token string is sent as the raw auth body; a function is asked before each attempt', async () => {
  const raw = setup({ auth: 'eyJhbGciOi.jwt.sig' });
  raw.client.start();
  await flush();
  raw.WS.last.open();
  assert.equal(bytesToText(raw.WS.last.lastSent(Op.AUTH).body), 'eyJhbGciOi.jwt.sig');

  let n = 0;
  const fn = setup({ auth: async () => `token-${++n}` });
  fn.client.start();
  await flush();
  fn.WS.last.open();
  assert.equal(bytesToText(fn.WS.last.lastSent(Op.AUTH).body), 'token-1');
  fn.WS.last.serverClose(1006);
  await flush();
  fn.WS.last.open();
  assert.equal(bytesToText(fn.WS.last.lastSent(Op.AUTH).body), 'token-2');

  const anon = setup({ auth: undefined });
  anon.client.start();
  await flush();
  anon.WS.last.open();
  assert.equal(bytesToText(anon.WS.last.lastSent(Op.AUTH).body), '{"platform":"web"}');
});

test('a refused auth is reported with the server reason and ends the client', async () => {
  const { client, WS, clock, of, states } = setup();
  client.start();
  await flush();
  WS.last.open();
  WS.last.acceptAuth({ error: 'token expired', reason: 'expired' });
  await flush();
  const [error] = of('error');
  assert.equal(error.code, 'auth_refused');
  assert.equal(error.details.reason, 'expired');
  assert.match(error.message, /token expired/);
  assert.equal(client.state, State.CLOSED);
  assert.deepEqual(states(), ['connecting', 'closed']);
  assert.equal(WS.instances.length, 1);
  assert.ok(WS.last.closedWith, 'the client closed the socket');
  await clock.advance(3600 * S);
  assert.equal(WS.instances.length, 1, 'no reconnect after a refusal');
  assert.equal(clock.pending, 0);
});

test('with retryAuthRefused a refusal is retried after the backoff', async () => {
  const { client, WS, clock } = setup({ retryAuthRefused: true, urls: ['ws://a:3102/sub'] });
  client.start();
  await flush();
  WS.last.open();
  WS.last.acceptAuth({ error: 'nope' });
  await flush();
  assert.equal(client.state, State.RECONNECTING);
  await clock.advance(3 * S);
  assert.equal(WS.instances.length, 2);
});

test('pushes become message events with text and JSON helpers; batches keep their order', async () => {
  const { WS, of } = await connected();
  const ws = WS.last;
  ws.receivePacket({ op: 1000, body: 'hello' });
  ws.receiveBatch([
    { op: 1000, body: '{"n":1}' },
    { op: 1001, body: 'two' },
    { op: 1000, body: 'three' },
  ]);
  const messages = of('message');
  assert.ok(messages.every((m) => m instanceof RimMessage));
  assert.deepEqual(
    messages.map((m) => [m.op, m.text()]),
    [
      [1000, 'hello'],
      [1000, '{"n":1}'],
      [1001, 'two'],
      [1000, 'three'],
    ],
  );
  assert.deepEqual(messages[1].json(), { n: 1 });
  assert.ok(messages[0].body instanceof Uint8Array);
});

test('packets before the auth reply are ignored; a batch may carry the auth reply', async () => {
  const { client, WS, of } = setup();
  client.start();
  await flush();
  const ws = WS.last;
  ws.open();
  ws.receivePacket({ op: 1000, body: 'too early' });
  ws.receiveBatch([
    { op: Op.AUTH_REPLY, seq: 1 },
    { op: 1000, body: 'after auth' },
  ]);
  assert.equal(client.state, State.OPEN);
  assert.deepEqual(
    of('message').map((m) => m.text()),
    ['after auth'],
  );
});

test('adaptive heartbeat: 60 s, grows 30 s per answered period, shrinks and reconnects on a missing reply', async () => {
  const { client, WS, clock, of } = await connected({ urls: ['ws://a:3102/sub'] });
  const ws = WS.last;
  ws.replyHeartbeat(10); // the one right after auth
  const beats = () => ws.packets().filter((p) => p.op === Op.HEARTBEAT).length;
  assert.equal(beats(), 1);
  await clock.advance(60 * S - 1);
  assert.equal(beats(), 1);
  await clock.advance(1);
  assert.equal(beats(), 2, 'second heartbeat after 60 s');
  ws.replyHeartbeat(11);
  assert.equal(client.heartbeat.interval, 90 * S);
  await clock.advance(90 * S);
  assert.equal(beats(), 3, 'third after 90 s more');
  ws.replyHeartbeat(12);
  assert.equal(client.heartbeat.interval, 120 * S);
  assert.deepEqual(
    of('heartbeat').map((h) => [h.interval, h.next]),
    [
      [null, 60 * S],
      [60 * S, 90 * S],
      [90 * S, 120 * S],
    ],
  );
  assert.deepEqual(of('online').map((o) => o.count), [10, 11, 12]);

  // no reply to the 120 s heartbeat within heartbeatTimeout (20 s): failure, back to 90 s, reconnect
  await clock.advance(120 * S);
  assert.equal(beats(), 4);
  await clock.advance(20 * S);
  const errors = of('error').map((e) => e.code);
  assert.deepEqual(errors, ['heartbeat_timeout']);
  assert.equal(ws.closedWith.code, CloseCode.HEARTBEAT_TIMEOUT);
  assert.equal(client.heartbeat.interval, 90 * S);
  assert.equal(client.heartbeat.ceiling, 90 * S);
  assert.equal(client.state, State.RECONNECTING);
  await clock.advance(3 * S);
  assert.equal(WS.instances.length, 2);
  WS.last.open();
  WS.last.acceptAuth();
  WS.last.replyHeartbeat(1);
  await clock.advance(90 * S);
  assert.equal(WS.last.packets().filter((p) => p.op === Op.HEARTBEAT).length, 2, 'the new connection uses the learnt 90 s');
});

test('a connection lost while a heartbeat is outstanding counts as a failed period', async () => {
  const { client, WS, clock } = await connected({ urls: ['ws://a:3102/sub'] });
  WS.last.replyHeartbeat(1);
  await clock.advance(60 * S);
  WS.last.replyHeartbeat(1); // 60 s survived -> 90 s
  await clock.advance(90 * S); // heartbeat sent, no reply yet
  WS.last.serverClose(1006);
  await flush();
  assert.equal(client.heartbeat.interval, 60 * S);
  // a server that closes us for heartbeat timeout says the interval is too long
  const t = await connected({ urls: ['ws://a:3102/sub'], heartbeat: new AdaptiveHeartbeat({ initial: 120 * S }) });
  t.WS.last.replyHeartbeat(1);
  t.WS.last.serverClose(1008, 'heartbeat timeout');
  await flush();
  assert.equal(t.client.heartbeat.interval, 90 * S);
});

test('falls through the list when a candidate fails, immediately, then backs off', async () => {
  const { client, WS, clock, states, of } = setup({ urls: ['ws://a/sub', 'ws://b/sub', 'ws://c/sub'] });
  client.start();
  await flush();
  WS.last.serverClose(1006); // a refuses
  await flush();
  assert.equal(WS.last.url, 'ws://b/sub');
  await clock.advance(10 * S); // b never opens: connect timeout
  assert.equal(WS.instances[1].closedWith.code, 1000);
  assert.equal(WS.last.url, 'ws://c/sub');
  WS.last.open(); // c opens but never answers the auth
  await clock.advance(10 * S);
  assert.equal(WS.instances[2].closedWith.code, CloseCode.AUTH_TIMEOUT);
  assert.deepEqual(of('error').map((e) => e.code), ['connect_failed', 'connect_timeout', 'auth_timeout']);
  assert.equal(client.state, State.RECONNECTING);
  assert.equal(of('state').at(-1).delay, 3 * S);
  assert.equal(WS.instances.length, 3);
  await clock.advance(3 * S);
  assert.equal(WS.instances.length, 4);
  assert.equal(WS.last.url, 'ws://a/sub', 'each round starts again from the best candidate');
  WS.last.open();
  WS.last.acceptAuth();
  assert.deepEqual(states(), ['connecting', 'reconnecting', 'connecting', 'open']);
  assert.equal(of('disconnect').length, 3);
});

test('an error event without a close event (Node 20 WebSocket on a refused connection) ends the attempt', async () => {
  const { client, WS, of } = setup();
  client.start();
  await flush();
  WS.last.onerror({ type: 'error' }); // and no close event ever
  await flush();
  assert.equal(WS.instances.length, 2);
  assert.equal(WS.last.url, 'ws://b:3102/sub');
  assert.equal(of('error')[0].code, 'connect_failed');
  WS.last.open();
  WS.last.acceptAuth();
  WS.last.onerror({ type: 'error' });
  await flush();
  assert.equal(client.state, State.RECONNECTING);
});

test('reconnect backoff: base, then × factor up to max, reset by a successful auth', async () => {
  const { client, WS, clock, of } = setup({
    urls: ['ws://a/sub'],
    backoff: { base: 1000, factor: 2, max: 5000, jitter: 0.5 },
    random: () => 0.5,
  });
  client.start();
  await flush();
  const delays = [];
  for (let i = 0; i < 5; i++) {
    WS.last.serverClose(1006);
    await flush();
    const { delay } = of('state').at(-1);
    delays.push(delay);
    await clock.advance(delay);
  }
  // nominal 1000, 2000, 4000, 5000, 5000 with jitter 0.5 × random 0.5 = 25 % off
  assert.deepEqual(delays, [750, 1500, 3000, 3750, 3750]);
  WS.last.open();
  WS.last.acceptAuth();
  await flush();
  WS.last.serverClose(1001, 'server shutting down');
  await flush();
  assert.equal(of('state').at(-1).state, State.RECONNECTING);
  assert.equal(of('state').at(-1).delay, 750, 'back to base after a connection');
  assert.equal(of('disconnect').at(-1).authenticated, true);
  assert.equal(of('disconnect').at(-1).reason, 'server shutting down');
  assert.equal(client.state, State.RECONNECTING);
});

test('HTTPDNS: candidates and backoff from the answer; asked again after repeated failures', async () => {
  let answer = dnsResponse(['edge1', 'edge2'], { backoff: { base_delay: 2, factor: 3, max_delay: 60, jitter: 0 } });
  const fetch = fakeFetch(() => answer);
  const { client, WS, clock, of } = setup({
    urls: undefined,
    httpdns: 'http://127.0.0.1:3111/v1/dns',
    location: { lat: 31.2, lon: 121.5 },
    fetch,
  });
  client.start();
  await flush();
  assert.deepEqual(fetch.calls, ['http://127.0.0.1:3111/v1/dns?platform=web&lat=31.2&lon=121.5']);
  assert.deepEqual(of('dns')[0].candidates, ['ws://edge1:3102/sub', 'ws://edge2:3102/sub']);
  assert.equal(WS.last.url, 'ws://edge1:3102/sub');
  WS.last.serverClose(1006);
  await flush();
  assert.equal(WS.last.url, 'ws://edge2:3102/sub');
  WS.last.serverClose(1006);
  await flush();
  assert.equal(of('state').at(-1).delay, 2 * S, 'base_delay from the answer');
  answer = dnsResponse(['edge3'], { ws: 4102 });
  await clock.advance(2 * S);
  assert.equal(fetch.calls.length, 1, 'one failed round: the answer is reused');
  WS.last.serverClose(1006);
  await flush();
  WS.last.serverClose(1006);
  await flush();
  assert.equal(of('state').at(-1).delay, 6 * S, 'factor from the answer');
  await clock.advance(6 * S);
  assert.equal(fetch.calls.length, 2, 'two failed rounds: HTTPDNS is asked again');
  assert.equal(WS.last.url, 'ws://edge3:4102/sub');
  WS.last.open();
  WS.last.acceptAuth();
  assert.equal(client.state, State.OPEN);
  assert.deepEqual(client.candidates, ['ws://edge3:4102/sub']);
});

test('HTTPDNS failures and empty answers back off; the last good answer is kept', async () => {
  let mode = 'down';
  const fetch = fakeFetch(() => {
    if (mode === 'down') return new Error('connection refused');
    if (mode === 'empty') return { answer: { nodes: [], ws_port: 3102, wss_port: 0, reason: 'no active edge' }, ranked: [] };
    return dnsResponse(['edge1']);
  });
  const { client, WS, clock, of } = setup({ urls: undefined, httpdns: 'http://dns/v1/dns', fetch, dnsMaxAge: 60 * S });
  client.start();
  await flush();
  assert.equal(WS.instances.length, 0);
  assert.equal(of('error')[0].code, 'httpdns');
  assert.equal(client.state, State.RECONNECTING);
  mode = 'empty';
  await clock.advance(3 * S);
  const empty = of('error').at(-1);
  assert.equal(empty.code, 'no_endpoints');
  assert.match(empty.message, /no active edge/);
  assert.equal(WS.instances.length, 0);
  mode = 'up';
  await clock.advance(5400); // 3 s × 1.8
  assert.equal(WS.instances.length, 1);
  WS.last.open();
  WS.last.acceptAuth();
  await flush();
  // the edge drops us and HTTPDNS goes down: the last answer is still used
  mode = 'down';
  WS.last.replyHeartbeat(1);
  await clock.advance(61 * S); // the answer is now older than dnsMaxAge
  WS.last.replyHeartbeat(1);
  WS.last.serverClose(1006);
  await flush();
  await clock.advance(3 * S);
  assert.equal(of('error').at(-1).code, 'httpdns');
  assert.equal(WS.instances.length, 2, 'reconnected to the cached candidate');
  assert.equal(WS.last.url, 'ws://edge1:3102/sub');
});

test('HTTPDNS: secure pages use wss and the answer heartbeat deadline caps the interval', async () => {
  const fetch = fakeFetch(() => dnsResponse(['edge1'], { wss: 3103, heartbeat: 60, heartbeatMax: 2 }));
  const { client, WS } = setup({ urls: undefined, httpdns: 'https://dns/v1/dns', fetch, secure: true, heartbeat: { initial: 300 * S } });
  client.start();
  await flush();
  assert.equal(WS.last.url, 'wss://edge1:3103/sub');
  // 60 s × 2 missed = 120 s at the server, minus the 20 s reply timeout
  assert.equal(client.heartbeat.interval, 100 * S);
});

test('changeRoom, subscribe, unsubscribe and send wait for their replies, matched by seq', async () => {
  const { client, WS, clock } = await connected();
  const ws = WS.last;
  const room = client.changeRoom('live://1001');
  const room2 = client.changeRoom('live://1002');
  const sub = client.subscribe([1001, 1002]);
  const unsub = client.unsubscribe([1000]);
  const sent = client.send('{"hi":1}');
  const p12 = ws.packets().filter((p) => p.op === Op.CHANGE_ROOM);
  assert.deepEqual(p12.map((p) => bytesToText(p.body)), ['live://1001', 'live://1002']);
  assert.equal(bytesToText(ws.lastSent(Op.SUB).body), '1001,1002');
  assert.equal(bytesToText(ws.lastSent(Op.UNSUB).body), '1000');
  assert.equal(bytesToText(ws.lastSent(Op.SEND_MSG).body), '{"hi":1}');
  // replies out of order, matched by seq
  ws.replyTo(Op.SEND_MSG, Op.SEND_MSG_REPLY);
  ws.receivePacket({ op: Op.CHANGE_ROOM_REPLY, seq: p12[1].seq, body: 'live://1002' });
  ws.receivePacket({ op: Op.CHANGE_ROOM_REPLY, seq: p12[0].seq, body: 'live://1001' });
  ws.replyTo(Op.SUB, Op.SUB_REPLY);
  ws.replyTo(Op.UNSUB, Op.UNSUB_REPLY);
  await Promise.all([room, room2, sub, unsub, sent]);
  assert.equal(client.room, 'live://1002');
  // an upstream business op gets its own op back
  const custom = client.send('x', 2000);
  ws.replyTo(2000, 2000);
  await custom;
  // a reply that never comes times out
  const lost = client.changeRoom('live://9');
  const check = assert.rejects(lost, (e) => e.code === 'request_timeout');
  await clock.advance(10 * S);
  await check;
  // ops the client manages cannot be sent by hand; bodies over 4096 bytes are refused
  await assert.rejects(client.send('x', Op.AUTH), TypeError);
  await assert.rejects(client.send('x'.repeat(5000)), (e) => e.code === 'body_too_large');
  await assert.rejects(client.subscribe([]), TypeError);
  await assert.rejects(client.changeRoom(5), TypeError);
});

test('the room and the watch set are applied again after a reconnect', async () => {
  const { client, WS, clock } = await connected({ urls: ['ws://a/sub'] });
  const first = WS.last;
  const moved = client.changeRoom('live://2000');
  first.replyTo(Op.CHANGE_ROOM, Op.CHANGE_ROOM_REPLY);
  await moved;
  client.subscribe([1005]);
  first.replyTo(Op.SUB, Op.SUB_REPLY);
  client.unsubscribe([1000]);
  first.replyTo(Op.UNSUB, Op.UNSUB_REPLY);
  first.serverClose(1001, 'server shutting down');
  await flush();
  // while away, the room changes again: resolved once the next connection applies it
  let applied = false;
  const later = client.changeRoom('live://3000').then(() => (applied = true));
  await assert.rejects(client.send('x'), (e) => e.code === 'not_open');
  await clock.advance(3 * S);
  const second = WS.last;
  assert.notEqual(second, first);
  second.open();
  second.acceptAuth();
  assert.equal(bytesToText(second.lastSent(Op.CHANGE_ROOM).body), 'live://3000');
  assert.equal(bytesToText(second.lastSent(Op.SUB).body), '1005');
  assert.equal(bytesToText(second.lastSent(Op.UNSUB).body), '1000');
  await flush();
  assert.equal(applied, false);
  second.replyTo(Op.CHANGE_ROOM, Op.CHANGE_ROOM_REPLY);
  await later;
  assert.equal(applied, true);
});

/** Answers the client's last op 12 the way rim refuses a room change. */
function refuseRoom(ws, reason) {
  const p = ws.lastSent(Op.CHANGE_ROOM);
  const room = bytesToText(p.body);
  const body = { error: `room ${JSON.stringify(room)} is not granted to this connection`, reason };
  if (reason === 'room_forbidden') body.room = room;
  ws.receivePacket({ op: Op.CHANGE_ROOM_REPLY, seq: p.seq, ver: p.ver, body: JSON.stringify(body) });
}

test('a refused room change rejects with its reason and room; the old room is kept and re-joined', async () => {
  const { client, WS, clock, of } = await connected({ urls: ['ws://a/sub'] });
  const first = WS.last;
  const moved = client.changeRoom('live://2000');
  first.replyTo(Op.CHANGE_ROOM, Op.CHANGE_ROOM_REPLY);
  await moved;
  assert.equal(client.room, 'live://2000');

  const refused = client.changeRoom('live://2');
  refuseRoom(first, 'room_forbidden');
  await assert.rejects(refused, (e) => {
    assert.ok(e instanceof RoomRefusedError && e instanceof RimError);
    assert.equal(e.code, 'room_refused');
    assert.equal(e.reason, 'room_forbidden');
    assert.equal(e.room, 'live://2');
    assert.match(e.message, /not granted/);
    return true;
  });
  const tooLong = client.changeRoom('live://' + 'x'.repeat(300));
  refuseRoom(first, 'room_too_long');
  await assert.rejects(tooLong, (e) => e.reason === 'room_too_long' && e.room.length === 307);
  // not JSON (not rim): still a refusal, the body is the message
  const odd = client.changeRoom('live://3');
  const p = first.lastSent(Op.CHANGE_ROOM);
  first.receivePacket({ op: Op.CHANGE_ROOM_REPLY, seq: p.seq, body: 'no' });
  await assert.rejects(odd, (e) => e.reason === 'room_refused' && /: no$/.test(e.message));
  assert.equal(client.room, 'live://2000');
  assert.equal(client.state, State.OPEN);

  // after a reconnect the confirmed room is joined again, not a refused one
  first.serverClose(1001, 'server shutting down');
  await flush();
  await clock.advance(3 * S);
  const second = WS.last;
  second.open();
  second.acceptAuth();
  const rejoined = second.packets().filter((x) => x.op === Op.CHANGE_ROOM).map((x) => bytesToText(x.body));
  assert.deepEqual(rejoined, ['live://2000']);
  second.replyTo(Op.CHANGE_ROOM, Op.CHANGE_ROOM_REPLY);
  await flush();

  // asked while away and refused by the next connection: rejected, after the old room was re-joined
  second.serverClose(1001, 'again');
  await flush();
  const away = client.changeRoom('live://4');
  await clock.advance(3 * S);
  const third = WS.last;
  third.open();
  third.acceptAuth();
  const sent = third.packets().filter((x) => x.op === Op.CHANGE_ROOM);
  assert.deepEqual(sent.map((x) => bytesToText(x.body)), ['live://2000', 'live://4']);
  third.receivePacket({ op: Op.CHANGE_ROOM_REPLY, seq: sent[0].seq, body: 'live://2000' });
  refuseRoom(third, 'room_forbidden');
  await assert.rejects(away, (e) => e.reason === 'room_forbidden' && e.room === 'live://4');
  assert.equal(client.room, 'live://2000');
  assert.equal(of('error').length, 0);
});

test('pending requests reject when the connection drops', async () => {
  const { client, WS } = await connected();
  const room = client.changeRoom('live://7');
  WS.last.serverClose(1006);
  await assert.rejects(room, (e) => e.code === 'disconnected');
});

test('a protocol error from the server closes that connection with a reason and reconnects', async () => {
  const { client, WS, clock, of } = await connected({ urls: ['ws://a/sub'] });
  const bad = encode({ op: 1000, body: 'hello' });
  new DataView(bad.buffer).setInt32(0, 9999); // claims more than it has
  WS.last.receive(bad);
  const [error] = of('error');
  assert.equal(error.code, 'protocol');
  assert.equal(error.details.protocolCode, 'packet_length');
  assert.equal(WS.last.closedWith.code, CloseCode.PROTOCOL_ERROR);
  await flush();
  assert.equal(client.state, State.RECONNECTING);
  await clock.advance(3 * S);
  assert.equal(WS.instances.length, 2);
  // a text message is a protocol error too
  WS.last.open();
  WS.last.acceptAuth();
  WS.last.onmessage({ data: 'not binary' });
  assert.equal(of('error').at(-1).details.protocolCode, 'text_message');
});

test('taken over by the same key (close 4000): closed, no reconnect, unless asked', async () => {
  const t = await connected();
  t.WS.last.serverClose(CloseCode.REPLACED, 'replaced by a newer connection with the same key');
  await flush();
  assert.equal(t.client.state, State.CLOSED);
  assert.equal(t.of('error').at(-1).code, 'replaced');
  await t.clock.advance(600 * S);
  assert.equal(t.WS.instances.length, 1);

  const r = await connected({ reconnectOnReplaced: true });
  r.WS.last.serverClose(CloseCode.REPLACED, 'replaced');
  await flush();
  assert.equal(r.client.state, State.RECONNECTING);
});

test('close() stops everything: socket closed, timers cancelled, waiters rejected; start() again works', async () => {
  const { client, WS, clock, states } = await connected();
  WS.last.replyHeartbeat(3);
  const pending = client.changeRoom('live://1');
  client.close();
  await assert.rejects(pending, (e) => e.code === 'disconnected');
  assert.equal(client.state, State.CLOSED);
  assert.equal(WS.last.closedWith.code, 1000);
  assert.equal(clock.pending, 0, 'no timer left');
  await clock.advance(600 * S);
  assert.equal(WS.instances.length, 1);
  // close while waiting to reconnect
  client.start();
  await flush();
  assert.equal(WS.instances.length, 2);
  WS.last.serverClose(1006); // a fails
  await flush();
  WS.last.serverClose(1006); // b fails
  await flush();
  assert.equal(client.state, State.RECONNECTING);
  const waiting = client.subscribe([5]);
  client.close('bye');
  await assert.rejects(waiting, (e) => e.code === 'closed');
  assert.equal(clock.pending, 0);
  assert.deepEqual(states().slice(-2), ['reconnecting', 'closed']);
  client.close(); // idempotent
});

test('reconnectNow skips the backoff pause', async () => {
  const { client, WS } = setup({ urls: ['ws://a/sub'], backoff: { base: 60 * S } });
  client.start();
  await flush();
  WS.last.serverClose(1006);
  await flush();
  assert.equal(client.state, State.RECONNECTING);
  client.reconnectNow();
  await flush();
  assert.equal(WS.instances.length, 2);
  assert.equal(client.state, State.CONNECTING);
});

test('a throwing listener does not break the client', async () => {
  const { client, WS, of } = await connected();
  const thrown = [];
  const original = globalThis.queueMicrotask;
  globalThis.queueMicrotask = (fn) => {
    try {
      fn();
    } catch (e) {
      thrown.push(e);
    }
  };
  try {
    client.on('message', () => {
      throw new Error('listener bug');
    });
    WS.last.receiveBatch([{ op: 1000, body: 'a' }, { op: 1000, body: 'b' }]);
  } finally {
    globalThis.queueMicrotask = original;
  }
  assert.equal(thrown.length, 2);
  assert.deepEqual(of('message').map((m) => m.text()), ['a', 'b']);
  assert.equal(client.state, State.OPEN);
});

test('options are validated', () => {
  const WS = fakeWebSocketClass();
  assert.throws(() => new RimClient(), TypeError);
  assert.throws(() => new RimClient({ WebSocket: WS }), TypeError);
  assert.throws(() => new RimClient({ urls: [], WebSocket: WS }), TypeError);
  assert.throws(() => new RimClient({ httpdns: '', WebSocket: WS }), TypeError);
  assert.throws(() => new RimClient({ urls: 'ws://a', WebSocket: WS, heartbeatTimeout: 0 }), RangeError);
  assert.throws(() => new RimClient({ urls: 'ws://a', WebSocket: WS, dnsRefreshAfter: 0 }), RangeError);
  assert.throws(() => new RimClient({ urls: 'ws://a', WebSocket: 42 }), TypeError);
  const c = new RimClient({ urls: 'ws://a', WebSocket: WS });
  assert.deepEqual(c.candidates, ['ws://a']);
  assert.equal(c.close(), c, 'closing an idle client is a no-op');
});
