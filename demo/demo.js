// rim's demo page: connects with the JavaScript client through HTTPDNS, authenticates with a
// development token from `rim dev`, shows state, online count, messages and events, changes rooms and
// pushes through the REST API. No framework and no build step: `rim dev` serves the client's ES
// modules under /demo/rim/.

import { RimClient } from '/demo/rim/index.js';

/** The business op the page accepts and pushes (goim's default). */
const OPERATION = 1000;
/** Entries kept in each list, so a page left open stays light. */
const KEEP = 200;

const byId = (id) => document.getElementById(id);
const forms = { connect: byId('connect-form'), room: byId('room-form'), push: byId('push-form') };
/** The current client; events of a replaced one are ignored. */
let client = null;
let mid = '';
let room = '';

/** Appends an entry to list `id`, oldest dropped beyond KEEP; `data` goes to its data attributes. */
function append(id, text, data, isError = false) {
  const item = document.createElement('li');
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString();
  item.append(time, text);
  Object.assign(item.dataset, data);
  if (isError) item.className = 'error';
  const list = byId(id);
  list.append(item);
  while (list.children.length > KEEP) list.firstElementChild.remove();
  item.scrollIntoView({ block: 'nearest' });
}

/** Records an event on the page and in the console. */
function note(kind, text, isError = false) {
  (isError ? console.warn : console.log)(`[rim demo] ${kind}: ${text}`);
  append('events', `${kind}: ${text}`, { kind, text: `${kind}: ${text}` }, isError);
}

/** Shows the connection state; `data-opens` counts the connections opened so far. */
function showState(state, endpoint) {
  const element = byId('state');
  element.textContent = state;
  element.dataset.state = state;
  if (state === 'open') element.dataset.opens = String(Number(element.dataset.opens) + 1);
  byId('endpoint').textContent = endpoint || '–';
}

/** The auth body for user `forMid` in `forRoom`, from `rim dev` (it refuses when the edge checks tokens). */
async function devToken(forMid, forRoom) {
  const response = await fetch(`/dev/token?${new URLSearchParams({ mid: forMid, room: forRoom })}`);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `/dev/token answered HTTP ${response.status}`);
  return answer;
}

/** Connects as `forMid` in `forRoom`, replacing the current client. */
async function connect(forMid, forRoom) {
  if (client) client.close('connecting again');
  client = null;
  mid = forMid;
  room = forRoom;
  byId('room').textContent = room;
  byId('online').textContent = '–';
  showState('fetching token');
  let auth;
  try {
    auth = await devToken(mid, room);
  } catch (error) {
    showState('failed');
    note('token', error.message, true);
    return;
  }
  const current = new RimClient({ httpdns: '/v1/dns?platform=web', auth });
  client = current;
  const on = (type, handler) => current.on(type, (event) => client === current && handler(event));
  on('dns', (e) => note('httpdns', e.candidates.join(' ') || 'no endpoint in the answer'));
  on('state', (e) => {
    showState(e.state, current.url);
    const retry = e.delay === undefined ? '' : `retry in ${Math.round(e.delay)} ms`;
    note('state', [e.state, e.url, retry].filter(Boolean).join(' '));
  });
  on('online', (e) => {
    byId('online').textContent = String(e.count);
  });
  on('message', (m) => append('messages', `op ${m.op}: ${m.text()}`, { op: String(m.op), text: m.text() }));
  on('error', (e) => note('error', `${e.code}: ${e.message}`, true));
  current.start();
}

/** The goim push route for a target: a user id, a room (`type://id`) or everyone. */
function pushPath(target, to) {
  const query = new URLSearchParams({ operation: String(OPERATION) });
  if (target === 'user') {
    query.set('mids', to);
    return `/goim/push/mids?${query}`;
  }
  if (target === 'room') {
    const split = to.indexOf('://');
    if (split <= 0 || split + 3 === to.length) throw new Error(`a room is type://id, e.g. live://1000 (not "${to}")`);
    query.set('type', to.slice(0, split));
    query.set('room', to.slice(split + 3));
    return `/goim/push/room?${query}`;
  }
  return `/goim/push/all?${query}`;
}

/** Pretty-prints a JSON answer; other text as it is. */
function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** Fills the push form's "to" field with the current user or room for the chosen target. */
function suggestTarget() {
  const { target, to } = forms.push.elements;
  to.disabled = target.value === 'all';
  to.value = { user: mid, room, all: '' }[target.value];
}

forms.connect.addEventListener('submit', (event) => {
  event.preventDefault();
  const { mid: midInput, room: roomInput } = forms.connect.elements;
  connect(midInput.value.trim(), roomInput.value.trim()).then(suggestTarget);
});

forms.room.addEventListener('submit', async (event) => {
  event.preventDefault();
  const next = forms.room.elements.room.value.trim();
  if (!client) {
    note('room', 'not connected', true);
    return;
  }
  try {
    await client.changeRoom(next);
    room = next;
    byId('room').textContent = room;
    note('room', `now in ${room}`);
    suggestTarget();
  } catch (error) {
    note('room', `${next}: ${error.message}`, true);
  }
});

forms.push.elements.target.addEventListener('change', suggestTarget);

forms.push.addEventListener('submit', async (event) => {
  event.preventDefault();
  const { target, to, body } = forms.push.elements;
  const out = byId('push-answer');
  out.className = '';
  try {
    const path = pushPath(target.value, to.value.trim());
    out.textContent = `POST ${path} …`;
    const response = await fetch(path, { method: 'POST', body: body.value });
    out.textContent = `POST ${path}\nHTTP ${response.status}\n${pretty(await response.text())}`;
    out.dataset.status = String(response.status);
    if (!response.ok) out.className = 'error';
  } catch (error) {
    out.textContent = error.message;
    out.dataset.status = 'failed';
    out.className = 'error';
  }
});

// The browser says the network is back: try now instead of waiting for the backoff.
addEventListener('online', () => client && client.reconnectNow());

// Connect at once, as ?mid=&room= say (defaults: the user and room of the banner's curl lines).
const params = new URLSearchParams(location.search);
forms.connect.elements.mid.value = params.get('mid') || '123';
forms.connect.elements.room.value = params.get('room') || 'live://1000';
forms.connect.requestSubmit();
