// RimClient with `durable` against a real `rim dev` (control plane, in-memory inbox and bus, job,
// edge in one process) over real sockets: pushes to the user arrive as RimPush with their
// positions, a connection cut by a proxy comes back and receives what was sent meanwhile (replayed,
// in order, once), then live pushes; a new client object with the same store resumes after a
// "restart" of the app.
//
// Uses the rim binary from RIM_BIN (scripts/test.sh names the one its workspace build made), or
// builds it (`cargo build -p rim --bin rim`, which has rim's own feature set, so it may rebuild rim);
// skipped only when neither is available (a checkout of the JavaScript package alone).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

import { RimClient, RimPush } from '../src/client.js';
import { MemoryPositionStore } from '../src/durable.js';
import { NodeWebSocket } from '../test-support/node-websocket.js';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The rim binary, or null when it cannot be had. */
function rimBinary() {
  if (process.env.RIM_BIN) {
    assert.ok(existsSync(process.env.RIM_BIN), `RIM_BIN names ${process.env.RIM_BIN}, which is missing`);
    return process.env.RIM_BIN;
  }
  if (!existsSync(join(root, 'Cargo.toml'))) return null;
  const built = spawnSync('cargo', ['build', '--quiet', '--locked', '-p', 'rim', '--bin', 'rim'], { cwd: root, stdio: 'inherit' });
  if (built.error && built.error.code === 'ENOENT') return null;
  assert.equal(built.status, 0, 'cargo build -p rim --bin rim');
  const dir = process.env.CARGO_TARGET_DIR ?? join(root, 'target');
  return join(dir, 'debug', 'rim');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** `rim dev` on free loopback ports; resolves once HTTPDNS names its edge. */
async function startRim(binary) {
  const ports = { tcp: await freePort(), ws: await freePort(), internal: await freePort(), control: await freePort() };
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
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  let logs = '';
  child.stdout.on('data', (chunk) => (logs += chunk));
  child.stderr.on('data', (chunk) => (logs += chunk));
  const control = `http://127.0.0.1:${ports.control}`;
  for (let i = 0; ; i++) {
    try {
      const answer = await (await fetch(`${control}/v1/dns?platform=web`)).json();
      if (Array.isArray(answer.ranked) && answer.ranked.length) break;
    } catch {
      // not up yet
    }
    if (i > 300) throw new Error(`rim dev never came up:\n${logs}`);
    await sleep(100);
  }
  return { child, ports, control, logs: () => logs };
}

/** A TCP forwarder to `port` whose connections the test can cut (and refuse while `down`). */
async function proxy(port) {
  const sockets = new Set();
  let down = false;
  const server = createServer((client) => {
    if (down) return client.destroy();
    const upstream = connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
    return undefined;
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    cut() {
      down = true;
      for (const s of sockets) s.destroy();
    },
    restore() {
      down = false;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function pushToUser(control, mid, body) {
  const response = await fetch(`${control}/goim/push/mids?operation=1000&mids=${mid}`, { method: 'POST', body });
  assert.ok(response.ok, `push: HTTP ${response.status} ${await response.text()}`);
}

/** Resolves when `predicate(seen)` holds (checked on every message and resume event). */
function waitUntil(client, seen, predicate, what, ms = 15_000) {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!predicate(seen)) return;
      clearTimeout(timer);
      offs.forEach((off) => off());
      resolve();
    };
    const timer = setTimeout(() => {
      offs.forEach((off) => off());
      reject(new Error(`timed out waiting for ${what}; saw ${JSON.stringify(seen.slice(-20))}`));
    }, ms);
    const offs = [client.on('message', () => queueMicrotask(check)), client.on('resume', () => queueMicrotask(check))];
    check();
  });
}

const binary = rimBinary();

test('against rim dev: a cut connection comes back and gets what it missed, once, in order, then live', { skip: binary ? false : 'no rim binary and no cargo' }, async () => {
  const rim = await startRim(binary);
  const cut = await proxy(rim.ports.ws);
  const store = new MemoryPositionStore();
  const seen = [];
  const open = [];
  const client = new RimClient({
    urls: [`ws://127.0.0.1:${cut.port}/sub`],
    WebSocket: NodeWebSocket,
    auth: { mid: 4242, key: 'durable-js', accepts: [1000] },
    backoff: { base: 50, max: 200, jitter: 0 },
    durable: { store },
  });
  client.on('message', (m) => seen.push(m instanceof RimPush ? { body: m.text(), seq: m.position.seq, replay: m.replay, id: m.id } : { plain: m.text() }));
  client.on('resume', (e) => seen.push({ resume: e.stream, resumed: e.resumed, count: e.count, at: e.position.seq }));
  client.on('state', (e) => e.state === 'open' && open.push(e));
  try {
    client.start();
    await waitUntil(client, seen, (s) => s.some((e) => e.resume === 'user'), 'the first resume answer');
    for (let n = 0; n < 5; n++) await pushToUser(rim.control, 4242, `live ${n}`);
    await waitUntil(client, seen, (s) => s.filter((e) => e.body).length === 5, 'five live pushes');
    const before = store.get().user;
    assert.ok(before && before.seq >= 5, `processed position kept: ${JSON.stringify(before)}`);

    cut.cut();
    await sleep(300);
    for (let n = 0; n < 50; n++) await pushToUser(rim.control, 4242, `away ${n}`);
    cut.restore();
    await waitUntil(client, seen, (s) => s.filter((e) => e.body && e.body.startsWith('away')).length === 50, 'the 50 missed pushes', 30_000);
    await waitUntil(client, seen, (s) => s.filter((e) => e.resume === 'user').length === 2, 'the second resume answer');
    await pushToUser(rim.control, 4242, 'live after');
    await waitUntil(client, seen, (s) => s.some((e) => e.body === 'live after'), 'a live push after the resume');

    assert.ok(open.length >= 2, 'reconnected');
    const pushes = seen.filter((e) => e.body);
    assert.deepEqual(
      pushes.map((e) => e.body),
      [...Array.from({ length: 5 }, (_, n) => `live ${n}`), ...Array.from({ length: 50 }, (_, n) => `away ${n}`), 'live after'],
      'every push once, in order',
    );
    assert.ok(pushes.every((e, i) => i === 0 || e.seq > pushes[i - 1].seq), 'positions increase');
    assert.ok(pushes.slice(5, 55).every((e) => e.replay), 'the missed pushes are replays');
    assert.equal(new Set(pushes.map((e) => e.id)).size, pushes.length, 'distinct message ids');
    const answers = seen.filter((e) => e.resume === 'user');
    assert.deepEqual(answers[1], { resume: 'user', resumed: true, count: 50, at: pushes[54].seq });
    assert.ok(seen.indexOf(answers[1]) > seen.findIndex((e) => e.body === 'away 49'), 'the answer follows the replay');
    client.close();

    // The app restarts: a new client with the same store resumes after what was processed.
    await pushToUser(rim.control, 4242, 'while closed');
    const again = [];
    const second = new RimClient({
      urls: [`ws://127.0.0.1:${rim.ports.ws}/sub`],
      WebSocket: NodeWebSocket,
      auth: { mid: 4242, key: 'durable-js', accepts: [1000] },
      durable: { store },
    });
    second.on('message', (m) => again.push({ body: m.text(), replay: m.replay }));
    second.on('resume', (e) => again.push({ resume: e.stream, count: e.count }));
    second.start();
    await waitUntil(second, again, (s) => s.some((e) => e.resume === 'user'), 'the resume of the new client');
    assert.deepEqual(again, [{ body: 'while closed', replay: true }, { resume: 'user', count: 1 }]);
    second.close();
  } catch (error) {
    error.message += `\nrim dev logs:\n${rim.logs().slice(-4000)}`;
    throw error;
  } finally {
    client.close();
    rim.child.kill('SIGKILL');
    await cut.close();
  }
});
