//! rim's Rust client library: what a program needs to hold a connection to a rim (or goim) edge.
//!
//! - [`connection`]: one goim v2 connection over TCP: auth, heartbeats, room change (a refusal is
//!   a typed [`RoomRefused`]), op subscribe, and incoming pushes with op-9 batches unpacked.
//! - [`durable`]: rim's durable delivery (opt-in): positions processed per stream, kept across
//!   reconnects and, through a [`PositionStore`], across restarts; duplicates dropped; coalesced
//!   cumulative acks (op 22); resume answers (op 21) reported so the app reloads what was lost.
//! - [`heartbeat`]: the seed's adaptive heartbeat (60-300 s, step 30 s, backs off on failure).
//! - [`httpdns`]: asking rim's HTTPDNS (`/v1/dns` or goim's `/goim/nodes/weighted`) where to connect.
//! - [`session`]: a connection that comes back by itself: it reconnects through the HTTPDNS
//!   answer (or a fixed list of edge addresses) with jittered backoff, keeps what the heartbeat
//!   learnt, and reports every state change as an event; [`Session::start_durable`] makes it a
//!   durable session.
//!
//! Load generators and rim's end-to-end tests use it, so what they count is what a real client sees.

pub mod connection;
pub mod durable;
pub mod error;
pub mod heartbeat;
pub mod httpdns;
pub mod session;

pub use connection::{AuthReply, Connection, Push};
pub use durable::{Durable, MemoryPositions, PositionStore, Positions, RoomPosition};
pub use error::{ClientError, RoomRefusalReason, RoomRefused};
pub use heartbeat::AdaptiveHeartbeat;
pub use rim_proto::durable::{
    DurablePush, MessageId, NotResumedReason, Position, ResumeAnswer, ResumeOutcome, StreamKind,
};
pub use session::{Session, SessionConfig, SessionEvent};
