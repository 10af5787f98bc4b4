//! rim's durable-delivery extension on the edge: positions, resume, acks and `written` receipts.
//!
//! A connection opts in with the `rim` field of its auth body ([`crate::auth::body::rim_field`],
//! `docs/rim-protocol-extension.md`); one that does not is served exactly as goim's clients are, and
//! nothing here runs for it except the `written` receipts of the durable pushes it is sent. For a
//! rim-aware connection:
//!
//! - **Pushes** carrying a stream position ([`rim_proto::schema::EdgePush::position`]) reach it as
//!   op-20 packets (inside op 9 on WebSocket, bare on TCP, like every push). The fan-out encodes a
//!   push (or a merged run of pushes) at most twice, lazily: the plain frame for goim clients and the
//!   op-20 frame ([`DurableGroup`]) for rim-aware ones, each shared by all its recipients.
//! - **Resume** ([`resume`]): right after the auth reply, the session asks the control plane
//!   ([`DurableLink::resume`], `POST /edge/v1/resume`) for what the client missed after the positions
//!   it sent, page by page (at most [`MAX_RESUME_REPLAY`] pushes per stream), writes them as replayed
//!   op-20 packets, then one op-21 answer per stream. Meanwhile its live pushes are queued in its
//!   outbox as usual and simply not drained (so they are bounded by the outbox's bytes and age: a
//!   resume that takes too long closes the connection as a slow consumer, as any client that falls
//!   behind). Once the answers are written, the connection's [`Floors`] are set and the held frames
//!   are filtered: every push at or below the position an answer gave (same epoch) was replayed (or
//!   is covered by the app's reload) and is dropped, the rest follows in order. The fan-out applies
//!   the same floors to every later push, so a live push that raced the replay is never sent twice.
//!   A room change (op 12) is a small resume of the new room's stream without a position: the client
//!   gets "resumed 0" with the room's current position.
//! - **Acks** (op 22) are decoded (a malformed one closes the connection) and handed to
//!   [`DurableLink::ack`], which batches them to the control plane; they are not answered.
//! - **`written` receipts**: every durable push with a receipt target (user and key pushes) carries a
//!   [`PushReceipts`] into the outboxes it is queued on; the first connection whose writer wrote it
//!   to its socket hands it to [`DurableLink::written`] (once per push and edge, whatever the number
//!   of its recipients here).
//!
//! The link itself (HTTP calls, batching, retries) lives outside the edge (rim-edgelink's
//! `durable`); an edge without one answers every resume "not resumed: unavailable" and drops acks
//! and receipts.

mod frame;
pub mod resume;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use rim_proto::durable::{NotResumedReason, Position, ResumeOutcome, RimAuth, StreamKind};
use rim_proto::schema::{DeviceAck, EdgeReceipt, ResumeRequest, ResumeResponse};

pub use frame::DurableGroup;
pub(crate) use frame::{filter_held, message_id, replay_frame};
pub use rim_proto::durable::MAX_RESUME_REPLAY;

/// Why a resume call did not get an answer: the client is told "not resumed: unavailable".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resume unavailable: {0}")]
pub struct ResumeUnavailable(pub String);

/// The edge's link to the durable half of the control plane. Implemented by rim-edgelink (HTTP to
/// `/edge/v1/{resume,acks,receipts}`); the edge leaves `node_id` fields empty for it to fill.
#[async_trait]
pub trait DurableLink: Send + Sync + 'static {
    /// One page per stream asked for (`POST /edge/v1/resume`); bounded in time by the link.
    async fn resume(&self, request: ResumeRequest) -> Result<ResumeResponse, ResumeUnavailable>;

    /// Queues a device's cumulative ack for the next batch. Must not block.
    fn ack(&self, ack: DeviceAck);

    /// Queues `written` receipts for the next batch. Must not block.
    fn written(&self, receipts: &[EdgeReceipt]);
}

/// Per stream, the position at or below which a push is not sent to a connection (same epoch):
/// the position of the stream's last op-21 answer. `None` while the stream is being resumed (its
/// pushes are held and filtered once the answer is known) or when the connection has no such stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Floors {
    /// The user stream's floor.
    pub user: Option<Position>,
    /// The current room's stream floor.
    pub room: Option<Position>,
}

impl Floors {
    /// True if a push at `position` of stream `kind` was already sent (or skipped by the answer).
    pub fn covers(&self, kind: StreamKind, position: Position) -> bool {
        let floor = match kind {
            StreamKind::User => self.user,
            StreamKind::Room => self.room,
        };
        floor.is_some_and(|floor| floor.epoch == position.epoch && position.seq <= floor.seq)
    }
}

/// What a rim-aware connection carries beyond a plain one (boxed in its [`crate::channel::Channel`],
/// so plain connections pay one pointer).
#[derive(Debug)]
pub struct RimState {
    /// The positions the client authenticated with (what the resume after auth starts from).
    pub auth: RimAuth,
    /// Taken by the fan-out around each offer to the connection's outbox, and by the session while
    /// it sets a floor and takes the held frames, so no push slips between the two unfiltered
    /// (lock order: floors, then the outbox).
    pub floors: Mutex<Floors>,
}

impl RimState {
    /// The state of a connection that authenticated with `auth`, before its resume.
    pub fn new(auth: RimAuth) -> Self {
        Self {
            auth,
            floors: Mutex::default(),
        }
    }
}

/// The `written` receipts of one run of durable pushes, shared by every outbox it is queued on and
/// recorded by the first writer that wrote it.
#[derive(Debug)]
pub struct PushReceipts {
    receipts: Vec<EdgeReceipt>,
    recorded: AtomicBool,
}

impl PushReceipts {
    /// Receipts for `targets` (message id, receipt target); `None` when there are none.
    pub fn new(targets: impl IntoIterator<Item = ([u8; 16], String)>) -> Option<Self> {
        let receipts: Vec<EdgeReceipt> = targets
            .into_iter()
            .map(|(id, target)| EdgeReceipt {
                message_id: id.to_vec().into(),
                target,
                at_unix_ms: 0,
            })
            .collect();
        (!receipts.is_empty()).then(|| Self {
            receipts,
            recorded: AtomicBool::new(false),
        })
    }

    /// Hands the receipts to `link`, stamped now, unless another writer did already.
    pub fn record(&self, link: &dyn DurableLink) {
        if self.recorded.swap(true, Ordering::AcqRel) {
            return;
        }
        let now = now_ms();
        let receipts: Vec<EdgeReceipt> = self
            .receipts
            .iter()
            .map(|receipt| EdgeReceipt {
                at_unix_ms: now,
                ..receipt.clone()
            })
            .collect();
        link.written(&receipts);
    }
}

/// Counts a resume answer (`rim_edge_resumes_total{stream, outcome}`).
pub(crate) fn resumed(kind: StreamKind, outcome: ResumeOutcome) {
    let stream = match kind {
        StreamKind::User => "user",
        StreamKind::Room => "room",
    };
    let outcome = match outcome {
        ResumeOutcome::Resumed(_) => "resumed",
        ResumeOutcome::NotResumed(NotResumedReason::EpochChanged) => "epoch_changed",
        ResumeOutcome::NotResumed(NotResumedReason::Expired) => "expired",
        ResumeOutcome::NotResumed(NotResumedReason::Ahead) => "ahead",
        ResumeOutcome::NotResumed(NotResumedReason::Unavailable) => "unavailable",
        ResumeOutcome::NotResumed(NotResumedReason::TooMany) => "too_many",
    };
    metrics::counter!("rim_edge_resumes_total", "stream" => stream, "outcome" => outcome)
        .increment(1);
}

/// Counts an op-22 ack of a rim-aware connection (`rim_edge_acks_total{user}`: `yes` when the
/// connection has a user stream and the ack is passed on, `no` when there is nothing to ack).
pub(crate) fn acked(has_user: bool) {
    let user = if has_user { "yes" } else { "no" };
    metrics::counter!("rim_edge_acks_total", "user" => user).increment(1);
}

/// Milliseconds since the Unix epoch, the time unit of receipts.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_cover_their_epoch_up_to_their_seq() {
        let floors = Floors {
            user: Some(Position { epoch: 3, seq: 10 }),
            room: None,
        };
        assert!(floors.covers(StreamKind::User, Position { epoch: 3, seq: 10 }));
        assert!(floors.covers(StreamKind::User, Position { epoch: 3, seq: 1 }));
        assert!(!floors.covers(StreamKind::User, Position { epoch: 3, seq: 11 }));
        assert!(!floors.covers(StreamKind::User, Position { epoch: 4, seq: 1 }));
        assert!(!floors.covers(StreamKind::Room, Position { epoch: 3, seq: 1 }));
    }
}
