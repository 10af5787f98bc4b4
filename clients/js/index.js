// @rim/client: a browser and Node client for rim, the goim-compatible long-connection gateway.
// Plain ES modules, no dependencies, no build step.

export { RimClient, RimError, RoomRefusedError, RimMessage, RimPush, State, CloseCode, CLIENT_DEFAULTS } from './src/client.js';
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
export { Emitter } from './src/emitter.js';
export { AdaptiveHeartbeat, HEARTBEAT_DEFAULTS } from './src/heartbeat.js';
export { Backoff, BACKOFF_DEFAULTS, backoffParams, backoffFromAnswer } from './src/backoff.js';
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
