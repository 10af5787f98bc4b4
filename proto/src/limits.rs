//! Bounds on what a client may make an edge hold, shared by every part that checks them.
//!
//! A client chooses its room name and watch set; each edge keeps them per connection and reports rooms
//! to the control plane, which checks the same bounds on what edges and the auth webhook report. One
//! definition here keeps the edge from accepting what control would refuse.

/// Longest room id, in bytes (`type://id`).
pub const MAX_ROOM_LEN: usize = 256;

/// Longest connection key, in bytes: the push address of one device, named by pushes, sessions,
/// inbox entries and acks.
pub const MAX_KEY_LEN: usize = 256;

/// Longest platform name a client may declare, in bytes (`web`, `ios`, ...).
pub const MAX_PLATFORM_LEN: usize = 128;

/// Most operations one connection's watch set may hold.
pub const MAX_WATCH_OPS: usize = 1024;
