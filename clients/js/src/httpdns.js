// HTTPDNS: where to connect. rim control answers `GET /v1/dns?platform=web[&lat=&lon=][&region=]`
// with `{"answer": <goim answer>, "ranked": [<explained nodes>]}` (goim's own route
// `/goim/nodes/weighted` answers the bare goim answer; both are understood here):
//
//   answer: {domain, tcp_port, ws_port, wss_port, heartbeat, heartbeat_max, nodes: [host, ...],
//            backoff: {max_delay, base_delay, factor, jitter}}          (seconds)
//   ranked: [{node_id, region, endpoints: [host, ...], ports: {tcp, ws, wss}, score: {...}}, ...]
//
// `answer.nodes` are best first and share the answer's ports; `ranked` lists every node with its
// own ports. Candidates are the answer's nodes first, then the other ranked endpoints, deduplicated.
// A port of 0 (or a missing one) means nothing listens there and yields no candidate.

import { backoffFromAnswer } from './backoff.js';

/**
 * The HTTPDNS request URL: `platform=web` unless the URL names a platform, and the client's
 * coordinates or region hint when given.
 * @param {string} url absolute, or relative to the page
 * @param {{lat?: number, lon?: number, region?: string, platform?: string} | null} [where]
 * @param {string} [base] base for a relative URL (default: the page's location)
 */
export function dnsRequestUrl(url, where = null, base = undefined) {
  const pageBase = base ?? (typeof globalThis.location === 'object' && globalThis.location ? globalThis.location.href : undefined);
  const u = pageBase === undefined ? new URL(url) : new URL(url, pageBase);
  if (!u.searchParams.has('platform')) u.searchParams.set('platform', (where && where.platform) || 'web');
  if (where) {
    const { lat, lon, region } = where;
    if (Number.isFinite(lat) && Number.isFinite(lon)) {
      u.searchParams.set('lat', String(lat));
      u.searchParams.set('lon', String(lon));
    }
    if (typeof region === 'string' && region !== '') u.searchParams.set('region', region);
  }
  return u.toString();
}

function hostPart(host) {
  // An IPv6 literal needs brackets in a URL.
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

function validPort(port) {
  return Number.isInteger(port) && port > 0 && port < 65536;
}

/**
 * A WebSocket URL for `host` and `port`.
 * @param {string} host
 * @param {number} port
 * @param {{secure?: boolean, path?: string}} [options]
 */
export function wsUrl(host, port, options = {}) {
  const scheme = options.secure ? 'wss' : 'ws';
  let path = options.path ?? '/sub';
  if (!path.startsWith('/')) path = `/${path}`;
  return `${scheme}://${hostPart(host)}:${port}${path}`;
}

/**
 * The goim answer inside an HTTPDNS response (rim's `{answer, ranked}` or a bare goim answer).
 * @param {unknown} response
 */
export function goimAnswer(response) {
  if (!response || typeof response !== 'object') return null;
  const r = /** @type {any} */ (response);
  if (r.answer && typeof r.answer === 'object') return r.answer;
  if (Array.isArray(r.nodes)) return r;
  return null;
}

/**
 * WebSocket URLs to try, best first, from an HTTPDNS response.
 * @param {unknown} response parsed JSON
 * @param {{secure?: boolean, path?: string}} [options]
 * @returns {string[]}
 */
export function candidatesFromAnswer(response, options = {}) {
  const secure = Boolean(options.secure);
  const out = [];
  const add = (host, port) => {
    if (typeof host !== 'string' || host === '' || !validPort(port)) return;
    const url = wsUrl(host, port, { secure, path: options.path });
    if (!out.includes(url)) out.push(url);
  };
  const answer = goimAnswer(response);
  if (answer && Array.isArray(answer.nodes)) {
    const port = secure ? answer.wss_port : answer.ws_port;
    for (const host of answer.nodes) add(host, port);
  }
  const ranked = response && typeof response === 'object' ? /** @type {any} */ (response).ranked : undefined;
  if (Array.isArray(ranked)) {
    for (const node of ranked) {
      if (!node || typeof node !== 'object' || !Array.isArray(node.endpoints)) continue;
      const ports = node.ports && typeof node.ports === 'object' ? node.ports : {};
      const port = secure ? ports.wss : ports.ws;
      for (const host of node.endpoints) add(host, port);
    }
  }
  return out;
}

/**
 * Why an answer has no candidates, if it says (`reason` in the response or the answer).
 * @param {unknown} response
 */
export function emptyReason(response) {
  const r = /** @type {any} */ (response);
  const answer = goimAnswer(response);
  const reason = (r && typeof r === 'object' && r.reason) || (answer && answer.reason);
  return typeof reason === 'string' && reason !== '' ? reason : null;
}

/**
 * The longest heartbeat interval the server tolerates, in milliseconds, from the answer's
 * `heartbeat` × `heartbeat_max` (seconds), or null.
 * @param {unknown} response
 */
export function heartbeatDeadline(response) {
  const answer = goimAnswer(response);
  if (!answer) return null;
  const interval = answer.heartbeat;
  if (typeof interval !== 'number' || !Number.isFinite(interval) || interval <= 0) return null;
  const missed = Number.isInteger(answer.heartbeat_max) && answer.heartbeat_max > 0 ? answer.heartbeat_max : 1;
  return interval * missed * 1000;
}

/**
 * Everything the client uses from an HTTPDNS response.
 * @param {unknown} response
 * @param {{secure?: boolean, path?: string}} [options]
 */
export function parseDnsResponse(response, options = {}) {
  return {
    candidates: candidatesFromAnswer(response, options),
    backoff: backoffFromAnswer(goimAnswer(response)),
    heartbeatDeadline: heartbeatDeadline(response),
    reason: emptyReason(response),
  };
}

/**
 * Fetches and parses an HTTPDNS answer.
 * @param {string} url the full request URL (see dnsRequestUrl)
 * @param {{fetch?: typeof fetch, timeout?: number, setTimeout?: Function, clearTimeout?: Function}} [options]
 * @returns {Promise<unknown>} the parsed JSON
 */
export async function fetchDns(url, options = {}) {
  const doFetch = options.fetch ?? globalThis.fetch;
  if (typeof doFetch !== 'function') throw new Error('no fetch function available for HTTPDNS');
  const set = options.setTimeout ?? globalThis.setTimeout;
  const clear = options.clearTimeout ?? globalThis.clearTimeout;
  const timeout = options.timeout ?? 5_000;
  const controller = typeof AbortController === 'function' ? new AbortController() : null;
  let timer;
  const timedOut = new Promise((_, reject) => {
    timer = set(() => {
      if (controller) controller.abort();
      reject(new Error(`HTTPDNS ${url} did not answer within ${timeout} ms`));
    }, timeout);
  });
  try {
    const request = (async () => {
      const response = await doFetch(url, {
        headers: { accept: 'application/json' },
        ...(controller ? { signal: controller.signal } : {}),
      });
      if (!response.ok) throw new Error(`HTTPDNS ${url} answered HTTP ${response.status}`);
      return response.json();
    })();
    request.catch(() => {}); // a late failure after the timeout is not unhandled
    return await Promise.race([request, timedOut]);
  } finally {
    clear(timer);
  }
}
