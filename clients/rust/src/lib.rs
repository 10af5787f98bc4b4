//! rim's Rust client library: what a program needs to hold a connection to a rim (or goim) edge.
//!
//! - [`connection`]: one goim v2 connection over TCP: auth, heartbeats, room change, op subscribe,
//!   and incoming pushes with op-9 batches unpacked.
//! - [`session`]: a connection that comes back by itself: it reconnects through a list of edge
//!   addresses with jittered backoff and reports every state change as an event.
//!
//! Load generators and rim's end-to-end tests use it, so what they count is what a real client sees.

pub mod connection;
pub mod error;
pub mod session;

pub use connection::{AuthReply, Connection, Push};
pub use error::ClientError;
pub use session::{Session, SessionConfig, SessionEvent};
