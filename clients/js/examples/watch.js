#!/usr/bin/env node
// Connects to a running rim (or goim) and prints every event as a JSON line, until Ctrl-C.
//
//   node --experimental-websocket clients/js/examples/watch.js --httpdns http://127.0.0.1:3111/v1/dns
//   node --experimental-websocket clients/js/examples/watch.js --url ws://127.0.0.1:3102/sub --mid 123
//
// Options: --httpdns URL | --url URL (repeatable), --token T (raw token body) or --mid N --key K,
// --room live://1000, --accepts 1000,1001. Node 20 needs --experimental-websocket (Node 22 does not).

import { RimClient } from '../index.js';

function parse(argv) {
  const out = { urls: [] };
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i];
    const value = argv[i + 1];
    if (!name.startsWith('--') || value === undefined) throw new Error(`bad argument ${name}`);
    i += 1;
    if (name === '--url') out.urls.push(value);
    else out[name.slice(2)] = value;
  }
  return out;
}

const args = parse(process.argv.slice(2));
if (typeof WebSocket !== 'function') {
  console.error('no global WebSocket: run node with --experimental-websocket (Node 20)');
  process.exit(2);
}
const auth = args.token
  ? args.token
  : {
      mid: Number(args.mid ?? 0),
      key: args.key ?? '',
      room_id: args.room ?? 'live://1000',
      accepts: (args.accepts ?? '1000').split(',').map(Number),
    };
const client = new RimClient({
  ...(args.httpdns ? { httpdns: args.httpdns } : { urls: args.urls.length ? args.urls : ['ws://127.0.0.1:3102/sub'] }),
  auth,
});
const print = (type, event) => console.log(JSON.stringify({ t: new Date().toISOString(), type, ...event }));
client.on('state', (e) => print('state', { state: e.state, url: e.url, delay: e.delay, error: e.error?.message }));
client.on('message', (m) => print('message', { op: m.op, seq: m.seq, text: m.text() }));
client.on('online', (e) => print('online', e));
client.on('dns', (e) => print('dns', { candidates: e.candidates }));
client.on('disconnect', (e) => print('disconnect', { url: e.url, code: e.code, reason: e.reason }));
client.on('error', (e) => print('error', { code: e.code, message: e.message }));
process.on('SIGINT', () => {
  client.close();
  process.exit(0);
});
client.start();
