import { Emitter } from './emitter.js';
import { AdaptiveHeartbeat } from './heartbeat.js';
import type { HeartbeatOptions } from './heartbeat.js';
import { Backoff } from './backoff.js';
import type { BackoffParams } from './backoff.js';
import type { BodyInput, Packet } from './protocol.js';
import type { DurableOptions, NotResumedReason, Positions, StreamName, StreamPosition } from './durable.js';

export type StateName = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export declare const State: Readonly<{
  IDLE: 'idle';
  CONNECTING: 'connecting';
  OPEN: 'open';
  RECONNECTING: 'reconnecting';
  CLOSED: 'closed';
}>;

export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  REPLACED: 4000;
  HEARTBEAT_TIMEOUT: 4001;
  PROTOCOL_ERROR: 4002;
  AUTH_TIMEOUT: 4008;
}>;

export type RimErrorCode =
  | 'auth_refused'
  | 'auth_timeout'
  | 'auth_body'
  | 'connect_failed'
  | 'connect_timeout'
  | 'heartbeat_timeout'
  | 'protocol'
  | 'httpdns'
  | 'no_endpoints'
  | 'replaced'
  | 'disconnected'
  | 'not_open'
  | 'request_timeout'
  | 'replay'
  | 'room_refused'
  | 'position_store'
  | 'closed'
  | 'internal';

export declare class RimError extends Error {
  constructor(code: RimErrorCode | string, message: string, details?: Record<string, unknown>);
  readonly name: 'RimError' | 'RoomRefusedError';
  readonly code: RimErrorCode;
  /** For 'auth_refused': `{reason, body}` (the server's JSON); for socket errors: `{url, code, reason}`. */
  readonly details: Record<string, any>;
}

/**
 * A refused room change (code 'room_refused'): rim answered op 12 with a JSON error instead of the
 * room, and the connection stayed in its old room.
 */
export declare class RoomRefusedError extends RimError {
  constructor(room: string, body: string);
  readonly name: 'RoomRefusedError';
  readonly code: 'room_refused';
  /** The server's reason: 'room_forbidden', 'room_too_long', or 'room_refused' when it gave none. */
  readonly reason: 'room_forbidden' | 'room_too_long' | 'room_refused' | (string & {});
  /** The room asked for. */
  readonly room: string;
}

/** A push (or any unmatched packet) from the server. */
export declare class RimMessage {
  constructor(packet: Packet);
  readonly op: number;
  readonly seq: number;
  readonly ver: number;
  readonly body: Uint8Array;
  /** The body as UTF-8 text. */
  text(): string;
  /** The body parsed as JSON. */
  json<T = unknown>(): T;
}

/** A push of a durable client (op 20); `op` is the business operation. */
export declare class RimPush extends RimMessage {
  constructor(
    push: { stream: StreamName; replay: boolean; op: number; id: string; position: StreamPosition; body: Uint8Array },
    packet: { ver: number },
    ack: (push: RimPush) => void,
  );
  /** The message id (UUID), as the push API answered it. */
  readonly id: string;
  readonly stream: StreamName;
  readonly position: StreamPosition;
  /** Replayed by a resume (not live). */
  readonly replay: boolean;
  /** Marks this push and every earlier one of its stream processed (needed with `ack: 'manual'`). */
  ack(): void;
}

/** How a stream of a durable client resumed on a connection (op 21). */
export interface ResumeEvent {
  stream: StreamName;
  resumed: boolean;
  /** Replayed pushes that came before this event (0 when not resumed). */
  count: number;
  reason: NotResumedReason | null;
  /** Where the client continues from (the head when not resumed). */
  position: StreamPosition;
  /** Pushes were lost: reload this stream's state from your backend (= !resumed). */
  reload: boolean;
}

/** The goim auth JSON; `platform` defaults to "web". */
export interface AuthObject {
  token?: string;
  mid?: number;
  key?: string;
  room_id?: string;
  platform?: string;
  accepts?: number[];
  [field: string]: unknown;
}

/** An object (sent as JSON), a raw token string or bytes, or a function giving one for each attempt. */
export type AuthInput =
  | string
  | Uint8Array
  | ArrayBuffer
  | AuthObject
  | (() => string | Uint8Array | ArrayBuffer | AuthObject | Promise<string | Uint8Array | ArrayBuffer | AuthObject>);

/** The part of the WebSocket API the client uses (browsers, the `ws` package, fakes). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code?: number; reason?: string; wasClean?: boolean }) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface RimClientOptions {
  /** Fixed WebSocket URLs, tried in order (give this or `httpdns`). */
  urls?: string | string[];
  /** HTTPDNS URL, e.g. `http://127.0.0.1:3111/v1/dns` (`platform=web` is added unless present). */
  httpdns?: string;
  /** Client position for HTTPDNS, or a function returning it (may be async; null for none). */
  location?: { lat: number; lon: number } | null | (() => { lat: number; lon: number } | null | Promise<{ lat: number; lon: number } | null>);
  /** Region hint for HTTPDNS. */
  region?: string;
  /** Base URL for a relative `httpdns` (default: the page's location). */
  baseUrl?: string;
  /** Use wss and the answer's wss_port (default: true on an https page). */
  secure?: boolean;
  /** WebSocket path for HTTPDNS candidates (default "/sub"). */
  path?: string;
  /** Auth body (default `{"platform":"web"}`, anonymous in `rim dev` trust mode). */
  auth?: AuthInput;
  /** Heartbeat bounds in ms, or a shared AdaptiveHeartbeat. */
  heartbeat?: HeartbeatOptions | AdaptiveHeartbeat;
  /** Default reconnect pacing in ms; an HTTPDNS answer's `backoff` overrides it. */
  backoff?: Partial<BackoffParams>;
  /** Wait for a heartbeat reply (default 20 000 ms). */
  heartbeatTimeout?: number;
  /** Wait for the WebSocket to open (default 10 000 ms). */
  connectTimeout?: number;
  /** Wait for the auth reply (default 10 000 ms). */
  authTimeout?: number;
  /** Wait for a reply to changeRoom/subscribe/unsubscribe/send (default 10 000 ms). */
  requestTimeout?: number;
  /** Wait for HTTPDNS (default 5 000 ms). */
  dnsTimeout?: number;
  /** Failed rounds after which HTTPDNS is asked again (default 2). */
  dnsRefreshAfter?: number;
  /** An HTTPDNS answer older than this (ms) is refreshed before reconnecting (default 300 000). */
  dnsMaxAge?: number;
  /** Reconnect after a takeover by the same key (close code 4000); default false. */
  reconnectOnReplaced?: boolean;
  /** Keep reconnecting after a refused auth (useful when `auth` is a function fetching fresh tokens); default false. */
  retryAuthRefused?: boolean;
  /** Largest body the client sends (default 4096, goim's limit). */
  maxBody?: number;
  /** Largest message accepted from the server (default 16 MiB). */
  maxMessage?: number;
  /**
   * Opt in to rim's durable delivery: positions resumed across reconnects (and restarts, with a
   * store), pushes as RimPush never twice, 'resume' events, coalesced acks. Default off.
   */
  durable?: boolean | DurableOptions;
  /** Injected for tests or Node: WebSocket constructor (default globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor;
  fetch?: typeof fetch;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: any) => void;
  now?: () => number;
  /** Uniform in [0, 1) (backoff jitter). */
  random?: () => number;
}

export interface StateEvent {
  state: StateName;
  previous: StateName;
  /** 'open': the URL connected to. */
  url?: string;
  /** 'reconnecting': the pause before the next round, ms. */
  delay?: number;
  /** 'reconnecting': rounds paused since the last success. */
  attempt?: number;
  /** 'reconnecting' / 'closed': what ended the previous round or the client. */
  error?: RimError;
  /** 'closed': why. */
  reason?: string;
}

export interface DisconnectEvent {
  url: string;
  /** Whether this connection had been authenticated (false: a failed attempt). */
  authenticated: boolean;
  code: number;
  reason: string;
  /** The server (or network) closed it, rather than the client. */
  byServer: boolean;
  error?: RimError;
}

export interface HeartbeatEvent {
  /** The interval this heartbeat ended (null for the one right after auth). */
  interval: number | null;
  /** The interval until the next heartbeat. */
  next: number;
  online: number | null;
  /** Round trip in ms. */
  rtt: number;
}

export interface OnlineEvent {
  count: number;
}

export interface DnsEvent {
  url: string;
  candidates: string[];
  response: unknown;
}

export interface RimClientEvents {
  [event: string]: unknown;
  state: StateEvent;
  /** A plain push, or a RimPush for a durable client. */
  message: RimMessage | RimPush;
  /** Durable clients: one per stream per connection, after any replay. */
  resume: ResumeEvent;
  online: OnlineEvent;
  heartbeat: HeartbeatEvent;
  disconnect: DisconnectEvent;
  dns: DnsEvent;
  error: RimError;
}

export declare const CLIENT_DEFAULTS: Readonly<{
  path: string;
  heartbeatTimeout: number;
  connectTimeout: number;
  authTimeout: number;
  requestTimeout: number;
  dnsTimeout: number;
  dnsRefreshAfter: number;
  dnsMaxAge: number;
  reconnectOnReplaced: boolean;
  retryAuthRefused: boolean;
  maxBody: number;
  maxMessage: number;
}>;

export declare class RimClient extends Emitter<RimClientEvents> {
  constructor(options: RimClientOptions);
  readonly state: StateName;
  /** URL of the authenticated connection, or null. */
  readonly url: string | null;
  /** Last room online count, or null. */
  readonly online: number | null;
  readonly heartbeat: AdaptiveHeartbeat;
  readonly backoff: Backoff;
  /** The room the server confirmed last through changeRoom (undefined if none yet). */
  readonly room: string | undefined;
  /** Candidate URLs (fixed list or last HTTPDNS answer). */
  readonly candidates: string[];
  /** What a durable client processed (what its store holds); null for a plain client. */
  readonly positions: Positions | null;
  /** Marks a RimPush (and every earlier push of its stream) processed, like push.ack(). */
  ack(push: RimPush): this;
  /** Starts connecting (no-op unless idle or closed). */
  start(): this;
  /** Stops for good; pending requests reject with code 'closed'. */
  close(reason?: string): this;
  /** Skips the current backoff pause. */
  reconnectNow(): this;
  /**
   * Moves to a room ('' leaves); resolves when op 13 echoes the room (then remembered across
   * reconnects); rejects with a RoomRefusedError when the server refuses (the old room is kept).
   */
  changeRoom(room: string): Promise<void>;
  /** Adds ops to the watch set (op 14); remembered across reconnects. */
  subscribe(ops: Iterable<number>): Promise<void>;
  /** Removes ops from the watch set (op 16); remembered across reconnects. */
  unsubscribe(ops: Iterable<number>): Promise<void>;
  /** Upstream message (op 4 by default); resolves on the reply; rejects 'not_open' when not open. */
  send(body: BodyInput, op?: number): Promise<void>;
}
