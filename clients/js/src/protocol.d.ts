/** Bytes in a packet header. */
export declare const HEADER_LENGTH: 16;
/** Protocol version goim clients send. */
export declare const PROTOCOL_VERSION: 1;
/** goim's limit on the body of a client-to-server packet. */
export declare const DEFAULT_MAX_BODY: number;
/** Default limit on one received WebSocket message. */
export declare const DEFAULT_MAX_MESSAGE: number;

/** Operation codes of goim v2. */
export declare const Op: Readonly<{
  HEARTBEAT: 2;
  HEARTBEAT_REPLY: 3;
  SEND_MSG: 4;
  SEND_MSG_REPLY: 4;
  AUTH: 7;
  AUTH_REPLY: 8;
  RAW: 9;
  CHANGE_ROOM: 12;
  CHANGE_ROOM_REPLY: 13;
  SUB: 14;
  SUB_REPLY: 15;
  UNSUB: 16;
  UNSUB_REPLY: 17;
  BUSINESS: 1000;
}>;

/** Anything that can be a packet body: nothing, UTF-8 text, or bytes. */
export type BodyInput = string | Uint8Array | ArrayBuffer | ArrayBufferView | null | undefined;

/** A decoded packet. */
export interface Packet {
  ver: number;
  op: number;
  seq: number;
  /** The body, a copy independent of the received buffer. */
  body: Uint8Array;
}

/** A packet to encode; `seq` defaults to 0 and `ver` to 1. */
export interface PacketInput {
  op: number;
  body?: BodyInput;
  seq?: number;
  ver?: number;
}

/** Stable labels of protocol violations. */
export type ProtocolErrorCode =
  | 'truncated'
  | 'header_length'
  | 'packet_length'
  | 'nested_batch'
  | 'message_too_large'
  | 'body_too_large'
  | 'text_message'
  | 'bad_message';

/** A packet that breaks the wire protocol. */
export declare class ProtocolError extends Error {
  constructor(code: ProtocolErrorCode | string, message: string);
  readonly name: 'ProtocolError';
  readonly code: ProtocolErrorCode | string;
}

export declare function toBytes(body: BodyInput): Uint8Array;
export declare function bytesToText(bytes: Uint8Array): string;

/** Encodes one packet; throws RangeError for out-of-range fields, ProtocolError for a body over `maxBody` (default 4096). */
export declare function encode(packet: PacketInput, options?: { maxBody?: number }): Uint8Array;

/** Decodes one WebSocket message as exactly one packet (op 9 batches stay packed). */
export declare function decode(data: ArrayBuffer | ArrayBufferView, options?: { maxMessage?: number }): Packet;

/** Splits complete packets back to back (a batch body); throws on any length that does not fit. */
export declare function splitPackets(bytes: Uint8Array): Packet[];

/** Decodes one WebSocket message into its packets, unpacking an op-9 batch. */
export declare function decodeMessage(data: ArrayBuffer | ArrayBufferView, options?: { maxMessage?: number }): Packet[];

/** Encodes an op-9 batch (server side; for tests and tools). */
export declare function encodeBatch(packets: PacketInput[]): Uint8Array;

/** The online count of a heartbeat reply body, or null unless the body is exactly 4 bytes. */
export declare function readOnlineCount(body: Uint8Array): number | null;

/** Comma-separated decimal ops, the body of op 14 / op 16. */
export declare function encodeOps(ops: Iterable<number>): string;

export declare function toHex(bytes: Uint8Array): string;
export declare function fromHex(hex: string): Uint8Array;
