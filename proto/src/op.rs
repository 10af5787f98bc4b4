//! goim v2 operation codes.
//!
//! The operation field of a packet tells the receiver what the body means. Only the ops the protocol
//! defines have names here; every other value is either a client's upstream business op or a server's
//! business push op (conventionally >= 1000). See `shared/spec/PROTOCOL.md`, "Operations".

/// Client heartbeat; the body is ignored.
pub const HEARTBEAT: i32 = 2;
/// Server reply to a heartbeat; the body is the room's online count as a big-endian i32.
pub const HEARTBEAT_REPLY: i32 = 3;
/// Client upstream message; goim answers with the same op and an empty body.
pub const SEND_MSG: i32 = 4;
/// Client auth request; must be the first packet of a connection.
pub const AUTH: i32 = 7;
/// Server answer to an auth request.
pub const AUTH_REPLY: i32 = 8;
/// Batch: a body made of complete packets back to back (WebSocket only carries the outer header).
pub const RAW: i32 = 9;
/// Client asks to move to another room (body = room id, empty = leave).
pub const CHANGE_ROOM: i32 = 12;
/// Server confirms a room change, echoing the body.
pub const CHANGE_ROOM_REPLY: i32 = 13;
/// Client adds comma-separated ops to its watch set.
pub const SUB: i32 = 14;
/// Server confirms a watch-set subscription, echoing the body.
pub const SUB_REPLY: i32 = 15;
/// Client removes comma-separated ops from its watch set.
pub const UNSUB: i32 = 16;
/// Server confirms a watch-set unsubscription, echoing the body.
pub const UNSUB_REPLY: i32 = 17;

/// Smallest operation a push to clients may use: lower ones are protocol operations (auth and
/// heartbeat replies, batches, room changes) that clients would misread. The control plane refuses
/// business pushes below it and edges refuse such pushes again on their internal endpoint.
pub const MIN_BUSINESS_PUSH: i32 = 1000;

/// Reserved by goim and never sent on the wire; a client sending one is treated as an upstream message.
pub const RESERVED: [i32; 6] = [0, 1, 5, 6, 10, 11];

/// Parses a goim watch-set body (`"1000,1001"`): comma-separated decimal ops, blanks ignored.
///
/// Entries that are not valid i32 are skipped rather than failing the whole list, like goim.
pub fn parse_op_list(body: &[u8]) -> Vec<i32> {
    body.split(|b| *b == b',')
        .filter_map(|part| std::str::from_utf8(part).ok()?.trim().parse().ok())
        .collect()
}
