#!/usr/bin/env node
// End-to-end check of the client against a real `rim dev`: connect through HTTPDNS, receive pushes
// to the room, the user and everyone, survive a SIGKILL and restart of the gateway, receive again.
//
//   node --experimental-websocket clients/js/examples/live-check.js path/to/rim
//
// Starts `rim dev` on free loopback ports (nothing else is touched), stops it at the end, and exits
// 0 when every step passed. Not part of `npm test` (it needs the rim binary and real sockets).

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { RimClient } from '../index.js';

const rim = process.argv[2];
if (!rim) {
  console.error('usage: node --experimental-websocket live-check.js path/to/rim');
  process.exit(2);
}
if (typeof WebSocket !== 'function') {
  console.error('no global WebSocket: run node with --experimental-websocket (Node 20)');
  process.exit(2);
}

const log = (...a) => console.log(new Date().toISOString().slice(11, 23), ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const ports = { tcp: await freePort(), ws: await freePort(), internal: await freePort(), control: await freePort() };
const control = `http://127.0.0.1:${ports.control}`;
let child = null;

function startRim() {
  const args = [
    'dev',
    '--edge-tcp-listen', `127.0.0.1:${ports.tcp}`,
    '--edge-ws-listen', `127.0.0.1:${ports.ws}`,
    '--edge-wss-listen', '',
    '--edge-tls-listen', '',
    '--edge-internal-listen', `127.0.0.1:${ports.internal}`,
    '--control-listen', `127.0.0.1:${ports.control}`,
    '--edge-public-hostname', '127.0.0.1',
    '--edge-public-addresses', '127.0.0.1',
  ];
  child = spawn(rim, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
  const prefix = (chunk) => process.env.RIM_VERBOSE && process.stderr.write(String(chunk).replace(/^/gm, '  rim| '));
  child.stdout.on('data', prefix);
  child.stderr.on('data', prefix);
  log(`started rim dev (pid ${child.pid}) ws ${ports.ws}, control ${ports.control}`);
}

async function waitForDns() {
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(`${control}/v1/dns?platform=web`);
      if (r.ok) {
        const json = await r.json();
        if (Array.isArray(json.ranked) && json.ranked.length) return json; // a registered node, not the fallback domain
      }
    } catch {
      // not up yet
    }
    await sleep(100);
  }
  throw new Error('HTTPDNS never answered a node');
}

async function push(path, body) {
  const r = await fetch(`${control}${path}`, { method: 'POST', body });
  const text = await r.text();
  if (!r.ok) throw new Error(`push ${path}: HTTP ${r.status} ${text}`);
}

const failures = [];
function check(ok, what) {
  log(ok ? 'ok  ' : 'FAIL', what);
  if (!ok) failures.push(what);
}

function waitFor(client, type, predicate, ms, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    const off = client.on(type, (event) => {
      if (!predicate(event)) return;
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

let client = null;
try {
  startRim();
  const dns = await waitForDns();
  log('HTTPDNS answer', JSON.stringify(dns.answer));
  client = new RimClient({
    httpdns: `${control}/v1/dns`,
    auth: { mid: 123, key: 'live-check', room_id: 'live://1000', accepts: [1000] },
    backoff: { base: 500, max: 2000 },
  });
  client.on('state', (e) => log('state', e.state, e.url ?? '', e.delay ?? '', e.error ? e.error.message : ''));
  client.on('error', (e) => log('error', e.code, e.message));
  client.on('online', (e) => log('online', e.count));
  const opened = waitFor(client, 'state', (e) => e.state === 'open', 10_000, 'open');
  const online = waitFor(client, 'online', () => true, 10_000, 'online count');
  client.start();
  await opened;
  check(client.url === `ws://127.0.0.1:${ports.ws}/sub`, `connected through HTTPDNS to ${client.url}`);
  check((await online).count >= 1, 'heartbeat reply carries the online count');

  const receive = async (path, body) => {
    const got = waitFor(client, 'message', (m) => m.text() === body, 10_000, body);
    await push(path, body);
    const m = await got;
    check(m.op === 1000, `received "${body}" (op ${m.op}) via ${path.split('?')[0]}`);
  };
  await receive('/goim/push/room?operation=1000&type=live&room=1000', 'room message');
  await receive('/goim/push/mids?operation=1000&mids=123', 'mid message');
  await receive('/goim/push/all?operation=1000', 'broadcast');

  await client.changeRoom('live://1001');
  check(true, 'changeRoom to live://1001 confirmed (op 13)');
  await receive('/goim/push/room?operation=1000&type=live&room=1001', 'room 1001 message');
  await client.subscribe([1001]);
  check(true, 'subscribe [1001] confirmed (op 15)');
  await client.send('upstream hello');
  check(true, 'upstream op 4 answered');

  log('SIGKILL rim dev');
  const reconnecting = waitFor(client, 'state', (e) => e.state === 'reconnecting', 10_000, 'reconnecting');
  child.kill('SIGKILL');
  await reconnecting;
  check(true, 'client noticed the gateway went away');
  await sleep(1500);
  const reopened = waitFor(client, 'state', (e) => e.state === 'open', 30_000, 'reopen');
  startRim();
  await reopened;
  check(true, `reconnected after restart to ${client.url}`);
  await sleep(300); // the room replay (op 12) is in flight
  await receive('/goim/push/room?operation=1000&type=live&room=1001', 'after restart');
} catch (error) {
  check(false, error.message);
} finally {
  if (client) client.close();
  if (child) child.kill('SIGKILL');
}
log(failures.length ? `${failures.length} failure(s)` : 'all passed');
process.exit(failures.length ? 1 : 0);
