export { RimClient, RimError, RoomRefusedError, RimMessage, RimPush, State, CloseCode, CLIENT_DEFAULTS } from './src/client.js';
export type {
  RimClientOptions,
  RimClientEvents,
  AuthInput,
  AuthObject,
  StateName,
  StateEvent,
  DisconnectEvent,
  HeartbeatEvent,
  OnlineEvent,
  DnsEvent,
  ResumeEvent,
  RimErrorCode,
  WebSocketLike,
  WebSocketConstructor,
} from './src/client.js';
export {
  DurableOp,
  DURABLE_VERSION,
  DURABLE_DEFAULTS,
  MAX_POSITION,
  decodeDurablePush,
  decodeResumeAnswer,
  encodeAck,
  MemoryPositionStore,
  webStoragePositionStore,
  PositionTracker,
} from './src/durable.js';
export type {
  StreamName,
  StreamPosition,
  Positions,
  PositionStore,
  NotResumedReason,
  DurablePushBody,
  ResumeAnswer,
  DurableOptions,
  AckDue,
} from './src/durable.js';
export { Emitter } from './src/emitter.js';
export { AdaptiveHeartbeat, HEARTBEAT_DEFAULTS } from './src/heartbeat.js';
export type { HeartbeatOptions } from './src/heartbeat.js';
export { Backoff, BACKOFF_DEFAULTS, backoffParams, backoffFromAnswer } from './src/backoff.js';
export type { BackoffParams } from './src/backoff.js';
export {
  dnsRequestUrl,
  wsUrl,
  goimAnswer,
  candidatesFromAnswer,
  emptyReason,
  heartbeatDeadline,
  parseDnsResponse,
  fetchDns,
} from './src/httpdns.js';
export type { GoimAnswer, RankedNode, DnsResponse, DnsWhere, ParsedDns } from './src/httpdns.js';
export {
  HEADER_LENGTH,
  PROTOCOL_VERSION,
  DEFAULT_MAX_BODY,
  DEFAULT_MAX_MESSAGE,
  Op,
  ProtocolError,
  toBytes,
  bytesToText,
  encode,
  decode,
  splitPackets,
  decodeMessage,
  encodeBatch,
  readOnlineCount,
  encodeOps,
  toHex,
  fromHex,
} from './src/protocol.js';
export type { Packet, PacketInput, BodyInput, ProtocolErrorCode } from './src/protocol.js';
