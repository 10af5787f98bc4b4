import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  candidatesFromAnswer,
  dnsRequestUrl,
  emptyReason,
  fetchDns,
  heartbeatDeadline,
  parseDnsResponse,
  wsUrl,
} from '../src/httpdns.js';
import { FakeClock, dnsResponse, fakeFetch } from '../test-support/fakes.js';

// The shape rim control serves at /v1/dns (control/src/v1.rs, balancer/src/answer.rs, selection.rs).
const V1 = {
  answer: {
    domain: 'localhost',
    tcp_port: 3101,
    ws_port: 3102,
    wss_port: 3103,
    heartbeat: 240,
    heartbeat_max: 2,
    nodes: ['edge-a.example', 'edge-b.example'],
    backoff: { max_delay: 300, base_delay: 3, factor: 1.8, jitter: 0.3 },
  },
  ranked: [
    { node_id: 'a', region: 'sh', endpoints: ['edge-a.example'], ports: { tcp: 3101, ws: 3102, wss: 3103 }, score: {} },
    { node_id: 'b', region: 'sh', endpoints: ['edge-b.example'], ports: { tcp: 3101, ws: 3102, wss: 3103 }, score: {} },
    { node_id: 'c', region: 'bj', endpoints: ['edge-c.example'], ports: { tcp: 4101, ws: 4102, wss: 0 }, score: {} },
  ],
};

test('candidates: the answer nodes first, then other ranked nodes with their own ports', () => {
  assert.deepEqual(candidatesFromAnswer(V1), [
    'ws://edge-a.example:3102/sub',
    'ws://edge-b.example:3102/sub',
    'ws://edge-c.example:4102/sub',
  ]);
  // wss: node c advertises no wss port, so it is left out
  assert.deepEqual(candidatesFromAnswer(V1, { secure: true, path: 'ws' }), [
    'wss://edge-a.example:3103/ws',
    'wss://edge-b.example:3103/ws',
  ]);
});

test('candidates: a bare goim answer, IPv6 literals, bad entries and empty answers', () => {
  assert.deepEqual(candidatesFromAnswer(V1.answer), ['ws://edge-a.example:3102/sub', 'ws://edge-b.example:3102/sub']);
  const odd = {
    answer: { ws_port: 3102, wss_port: 0, nodes: ['::1', '[2001:db8::1]', '', 42, '10.0.0.1', '10.0.0.1'] },
    ranked: [null, { endpoints: 'nope' }, { endpoints: ['10.0.0.2'], ports: { ws: 70000 } }, { endpoints: ['10.0.0.3'] }],
  };
  assert.deepEqual(candidatesFromAnswer(odd), ['ws://[::1]:3102/sub', 'ws://[2001:db8::1]:3102/sub', 'ws://10.0.0.1:3102/sub']);
  assert.deepEqual(candidatesFromAnswer(odd, { secure: true }), []);
  const empty = { answer: { ...V1.answer, nodes: [], reason: 'no active edge' }, ranked: [] };
  assert.deepEqual(candidatesFromAnswer(empty), []);
  assert.equal(emptyReason(empty), 'no active edge');
  assert.equal(emptyReason({ reason: 'all drained', answer: { nodes: [] } }), 'all drained');
  assert.equal(emptyReason(V1), null);
  for (const junk of [null, 'x', 42, [], {}]) assert.deepEqual(candidatesFromAnswer(junk), []);
});

test('the heartbeat deadline and backoff come from the answer', () => {
  assert.equal(heartbeatDeadline(V1), 480_000);
  assert.equal(heartbeatDeadline({ answer: { nodes: [], heartbeat: 30 } }), 30_000);
  assert.equal(heartbeatDeadline({ answer: { nodes: [], heartbeat: 0 } }), null);
  const parsed = parseDnsResponse(V1);
  assert.deepEqual(parsed.backoff, { base: 3000, max: 300_000, factor: 1.8, jitter: 0.3 });
  assert.equal(parsed.candidates.length, 3);
  assert.equal(parsed.reason, null);
});

test('request URL: platform=web unless given, coordinates and region when known', () => {
  assert.equal(dnsRequestUrl('http://127.0.0.1:3111/v1/dns'), 'http://127.0.0.1:3111/v1/dns?platform=web');
  assert.equal(
    dnsRequestUrl('http://h/v1/dns?platform=ios', { lat: 31.2, lon: 121.5, region: 'sh' }),
    'http://h/v1/dns?platform=ios&lat=31.2&lon=121.5&region=sh',
  );
  assert.equal(dnsRequestUrl('/v1/dns', { lat: 1 }, 'http://page:3111/demo/'), 'http://page:3111/v1/dns?platform=web');
  assert.throws(() => dnsRequestUrl('/v1/dns'), TypeError, 'a relative URL needs a page');
  assert.equal(wsUrl('h', 1, {}), 'ws://h:1/sub');
});

test('fetchDns returns the JSON, rejects HTTP errors and times out', async () => {
  const clock = new FakeClock();
  const ok = fakeFetch(() => dnsResponse(['localhost']));
  const json = await fetchDns('http://x/v1/dns', { fetch: ok, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout });
  assert.deepEqual(json.answer.nodes, ['localhost']);
  assert.equal(clock.pending, 0, 'the timeout is cleared');

  const bad = fakeFetch(() => ({ status: 503, json: {} }));
  await assert.rejects(fetchDns('http://x/v1/dns', { fetch: bad, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout }), /HTTP 503/);

  let aborted = false;
  const hang = (url, init) =>
    new Promise((_, reject) => {
      init.signal.addEventListener('abort', () => {
        aborted = true;
        reject(new Error('aborted'));
      });
    });
  const pending = fetchDns('http://x/v1/dns', { fetch: hang, timeout: 1000, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout });
  const check = assert.rejects(pending, /did not answer within 1000 ms/);
  await clock.advance(1000);
  await check;
  assert.ok(aborted, 'the request is aborted');
});
