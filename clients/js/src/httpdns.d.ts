import type { BackoffParams } from './backoff.js';

/** The goim HTTPDNS answer (`answer` of rim's `/v1/dns`, or goim's `/goim/nodes/weighted`). Seconds. */
export interface GoimAnswer {
  domain: string;
  tcp_port: number;
  ws_port: number;
  wss_port: number;
  heartbeat: number;
  heartbeat_max: number;
  /** Host names (web) or addresses (native), best first. */
  nodes: string[];
  backoff: { max_delay: number; base_delay: number; factor: number; jitter: number };
  reason?: string;
}

/** One node of rim's ranked list. */
export interface RankedNode {
  node_id: string;
  region: string;
  endpoints: string[];
  ports: { tcp: number; ws: number; wss: number };
  score?: Record<string, unknown>;
}

/** rim's `/v1/dns` response. */
export interface DnsResponse {
  answer: GoimAnswer;
  ranked?: RankedNode[];
  reason?: string;
}

/** Where the client is, for HTTPDNS. */
export interface DnsWhere {
  lat?: number;
  lon?: number;
  region?: string;
  platform?: string;
}

export interface ParsedDns {
  candidates: string[];
  backoff: Partial<BackoffParams> | null;
  /** heartbeat × heartbeat_max in milliseconds, or null. */
  heartbeatDeadline: number | null;
  reason: string | null;
}

/** The request URL: adds `platform=web` (unless present), `lat`/`lon` and `region` when given. */
export declare function dnsRequestUrl(url: string, where?: DnsWhere | null, base?: string): string;
/** `ws[s]://host:port/path`, IPv6 literals bracketed. */
export declare function wsUrl(host: string, port: number, options?: { secure?: boolean; path?: string }): string;
export declare function goimAnswer(response: unknown): GoimAnswer | null;
/** WebSocket URLs, best first: the answer's nodes, then the other ranked endpoints; port 0 yields nothing. */
export declare function candidatesFromAnswer(response: unknown, options?: { secure?: boolean; path?: string }): string[];
export declare function emptyReason(response: unknown): string | null;
export declare function heartbeatDeadline(response: unknown): number | null;
export declare function parseDnsResponse(response: unknown, options?: { secure?: boolean; path?: string }): ParsedDns;
/** GETs and parses the answer; rejects on HTTP errors and after `timeout` ms (default 5 000). */
export declare function fetchDns(
  url: string,
  options?: {
    fetch?: typeof fetch;
    timeout?: number;
    setTimeout?: (fn: () => void, ms: number) => unknown;
    clearTimeout?: (id: any) => void;
  },
): Promise<unknown>;
