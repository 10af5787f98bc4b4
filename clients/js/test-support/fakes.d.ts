import type { Packet, PacketInput } from '../src/protocol.js';

/** Lets pending promise callbacks run (a few macrotask turns). */
export declare function flush(turns?: number): Promise<void>;

/** A manual clock: timers fire only inside `advance`. Pass its members as RimClient options. */
export declare class FakeClock {
  constructor(start?: number);
  setTimeout: (fn: () => void, ms?: number) => number;
  clearTimeout: (id: number) => void;
  now: () => number;
  readonly pending: number;
  delays(): number[];
  advance(ms: number): Promise<void>;
}

export interface FakeWebSocket {
  url: string;
  readyState: number;
  binaryType: string;
  sent: Uint8Array[];
  closedWith: { code: number; reason: string } | null;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code?: number; reason?: string; wasClean?: boolean }) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  open(): void;
  receive(bytes: Uint8Array): void;
  receivePacket(packet: PacketInput): void;
  receiveBatch(packets: PacketInput[]): void;
  serverClose(code?: number, reason?: string): void;
  packets(): Packet[];
  lastSent(op: number): Packet | undefined;
  acceptAuth(refusal?: Record<string, unknown> | null): void;
  replyHeartbeat(online?: number): void;
  replyTo(op: number, replyOp: number): void;
}

export interface FakeWebSocketClass {
  new (url: string): FakeWebSocket;
  instances: FakeWebSocket[];
  readonly last: FakeWebSocket;
}

export declare function fakeWebSocketClass(): FakeWebSocketClass;

export interface FakeFetch {
  (url: string): Promise<{ ok: boolean; status: number; json(): Promise<unknown> }>;
  calls: string[];
}

export declare function fakeFetch(answer: (url: string) => unknown): FakeFetch;

export declare function dnsResponse(
  hosts: string[],
  options?: {
    ws?: number;
    wss?: number;
    tcp?: number;
    backoff?: Partial<{ max_delay: number; base_delay: number; factor: number; jitter: number }>;
    heartbeat?: number;
    heartbeatMax?: number;
  },
): unknown;
