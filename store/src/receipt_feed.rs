//! The receipt feed: every push receipt in the order it was recorded, read by named consumers that
//! each keep a cursor and a lease in the store, and the `fallback` claim that makes the fallback
//! webhook fire once per push and target.
//!
//! Receipts ([`crate::inbox`]) are written by every control instance and edge report at once. Two
//! things are built on them that must survive restarts and run on exactly one instance at a time:
//! the batched receipt webhook (every receipt, in order, at least once) and the fallback webhook
//! (pushes not acked in time, or to offline targets, once). Both are consumers of this feed:
//!
//! - **Order.** Each receipt gets a [`FeedCursor`] when it is recorded; [`ReceiptFeed::read`]
//!   returns receipts after a cursor in cursor order, and only receipts whose place is final: no
//!   receipt can later appear before one that was read (in PostgreSQL a receipt is read only once
//!   every transaction that could still commit an earlier one has ended). A consumer that advances
//!   its cursor past what it handled therefore never skips anything.
//! - **Consumers.** A consumer is a name with a cursor and a lease. [`ReceiptFeed::lease`] takes or
//!   renews the lease (the sweeper lease's rule: free when nobody holds it or it ran out) and
//!   answers the cursor; [`ReceiptFeed::advance`] moves the cursor forward only for the lease
//!   holder, so an instance that lost its lease while a webhook call hung cannot move the cursor of
//!   the instance that took over. A consumer seen for the first time starts at the end of the feed:
//!   configuring a webhook does not replay the history it never asked for.
//! - **Fallback claims.** [`ReceiptFeed::claim_fallbacks`] records the `fallback` receipt of each
//!   candidate whose target has not acked the push, and answers only the candidates it recorded:
//!   the state is recorded once per push and target, so whichever instance claims first is the
//!   only one that calls the webhook, whatever happens concurrently or after a restart.
//!
//! Implemented by [`crate::postgres::PostgresReceiptFeed`] and [`crate::memory::MemoryReceiptFeed`];
//! both pass one suite (`tests/receipt_feed.rs`). Obtained with [`crate::Store::receipt_feed`].

use crate::error::StoreError;
use crate::inbox::{ReceiptState, ReceiptTarget};
use crate::model::UnixMillis;
use async_trait::async_trait;
use rim_proto::durable::{MAX_RECEIPT_BATCH, MessageId, Position};

/// A place in the feed: the receipt at it and everything before it have been read. Ordered; the
/// numbers mean nothing outside the store that handed them out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedCursor {
    /// The recording transaction's number (PostgreSQL), 0 in memory.
    pub txn: u64,
    /// The receipt's feed id: unique per recorded receipt, the event id receivers deduplicate by.
    pub id: u64,
}

/// One receipt as the feed hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEvent {
    /// Its place in the feed ([`FeedCursor::id`] is its event id).
    pub cursor: FeedCursor,
    /// The push.
    pub message_id: MessageId,
    /// For whom.
    pub target: ReceiptTarget,
    /// Which state was reached.
    pub state: ReceiptState,
    /// When it was first reached.
    pub at: UnixMillis,
}

/// Why the fallback webhook is called for a push and target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FallbackReason {
    /// The target had no session when the push was accepted.
    Offline,
    /// The target did not ack the push within the deadline.
    Unacked,
}

impl FallbackReason {
    /// The name the webhook body carries.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Offline => "offline",
            FallbackReason::Unacked => "unacked",
        }
    }
}

/// A push and target the caller wants the fallback for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackCandidate {
    /// The push.
    pub message_id: MessageId,
    /// For whom.
    pub target: ReceiptTarget,
    /// Why.
    pub reason: FallbackReason,
}

/// The push of a candidate as it is stored, when it still is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackPush {
    /// Its place in the user's stream.
    pub position: Position,
    /// Business operation.
    pub operation: i32,
    /// Payload.
    pub body: Vec<u8>,
}

/// A candidate this caller claimed: it alone calls the fallback webhook for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedFallback {
    /// What was claimed.
    pub candidate: FallbackCandidate,
    /// The push from the user's inbox; `None` when it is not there (a key push to a key without a
    /// session is never stored; retention may have removed it).
    pub push: Option<FallbackPush>,
}

/// The ordered feed of receipts with consumer cursors, leases and fallback claims. See the module
/// docs for the rules.
#[async_trait]
pub trait ReceiptFeed: Send + Sync + 'static {
    /// Takes or renews `consumer`'s lease for `holder` for `lease_ms` (free when nobody holds it or
    /// its holder's lease ran out; by the store's clock in PostgreSQL). Answers the consumer's cursor
    /// while `holder` holds the lease, `None` while another holder's runs. A consumer named for the
    /// first time starts at the feed's end.
    async fn lease(
        &self,
        consumer: &str,
        holder: &str,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<Option<FeedCursor>, StoreError>;

    /// Moves `consumer`'s cursor forward to `to` if `holder` holds its lease (a cursor already
    /// there stays). `false` when another holder took the lease: the caller stops and lets it work.
    async fn advance(
        &self,
        consumer: &str,
        holder: &str,
        to: FeedCursor,
    ) -> Result<bool, StoreError>;

    /// The receipts after `after` whose state is one of `states`, in feed order, at most `limit`
    /// (1 and above; capped at [`MAX_RECEIPT_BATCH`]).
    async fn read(
        &self,
        after: FeedCursor,
        states: &[ReceiptState],
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError>;

    /// Records a `fallback` receipt at `now` for each candidate that has neither an `acked` nor a
    /// `fallback` receipt yet, and answers those, with their stored push (at most
    /// [`MAX_RECEIPT_BATCH`] candidates; a candidate named twice counts once).
    async fn claim_fallbacks(
        &self,
        candidates: &[FallbackCandidate],
        now: UnixMillis,
    ) -> Result<Vec<ClaimedFallback>, StoreError>;
}

/// Checks a read's limit and caps it.
pub(crate) fn check_read_limit(limit: usize) -> Result<usize, StoreError> {
    if limit == 0 {
        return Err(StoreError::Invalid(
            "feed read limit must be at least 1".into(),
        ));
    }
    Ok(limit.min(MAX_RECEIPT_BATCH))
}

/// Checks a batch of candidates and drops repeats (first mention wins), keeping the batch order.
pub(crate) fn unique_candidates(
    candidates: &[FallbackCandidate],
) -> Result<Vec<&FallbackCandidate>, StoreError> {
    if candidates.len() > MAX_RECEIPT_BATCH {
        return Err(StoreError::Invalid(format!(
            "at most {MAX_RECEIPT_BATCH} fallback candidates per claim, got {}",
            candidates.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    Ok(candidates
        .iter()
        .filter(|candidate| seen.insert((candidate.message_id, &candidate.target)))
        .collect())
}

/// Checks a consumer name: non-empty and short (it is a primary key).
pub(crate) fn check_consumer(consumer: &str) -> Result<(), StoreError> {
    if consumer.is_empty() || consumer.len() > 64 {
        return Err(StoreError::Invalid(
            "feed consumer names are 1..=64 bytes".into(),
        ));
    }
    Ok(())
}
