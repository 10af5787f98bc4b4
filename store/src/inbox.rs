//! The durable half of delivery: per-user inboxes, the room log and push receipts.
//!
//! A push to a user or to a key is stored in the user's inbox before the caller is answered, and
//! numbered there: the inbox hands out the user's sequence ([`Position`], see `rim_proto::durable`),
//! so the numbering is one fact in one place however many control instances append at once. A
//! rim-aware client that reconnects reads what it missed after its last position
//! ([`Inbox::read_user`]); a position the inbox can no longer serve is answered with an explicit
//! reason ([`ReadOutcome::NotResumable`]) so the app reloads instead of silently missing pushes.
//! Room pushes get the same numbering per room in a short log (the room window).
//!
//! [`Inbox`] is its own trait, next to [`crate::Store`], implemented by
//! [`crate::postgres::PostgresStore`] and [`crate::memory::MemoryStore`]; both pass one behavioural
//! suite (`tests/inbox.rs`).
//!
//! ## Rules (both implementations)
//! - **Numbering.** Each user has an epoch (0 for its first life) and a head (the last number handed
//!   out). An append numbers the entries of each user head + 1, head + 2, ... in batch order;
//!   concurrent appends for one user are serialised, so the numbers are gap-free and increasing.
//!   [`Inbox::reset_user`] drops a user's history and starts a new epoch (never an earlier one).
//! - **Retention.** A user keeps at most [`InboxSettings::max_per_user`] pushes (older ones go as newer
//!   ones are appended) and none older than [`InboxSettings::max_age_ms`] (removed by
//!   [`Inbox::cleanup`]). `trimmed` is the highest number removed; every number at or below it is gone.
//! - **Reading.** From position `p`: another epoch → [`NotResumedReason::EpochChanged`]; `p.seq`
//!   above the head → [`NotResumedReason::Ahead`]; `p.seq` below `trimmed` →
//!   [`NotResumedReason::Expired`]; else the stored pushes numbered above `p.seq` that are for the
//!   whole user or for the reading key, in order, at most `limit`.
//! - **Rooms.** Each room has an epoch (the time its log started, so a log dropped after
//!   [`InboxSettings::room_idle_ms`] without pushes and started again is another epoch) and numbers its
//!   pushes the same way; entries older than [`InboxSettings::room_window_ms`] do not count. A room is
//!   resumable from `p` if the entry after `p.seq` is still in the window (or `p` is the head);
//!   [`Position::ORIGIN`] (a client that joined before anything was pushed) is resumable in any
//!   epoch whose first entry is still in the window.
//! - **Receipts.** Each `(push, target, state)` is recorded once, with the time it was first reached;
//!   appends record `stored`, acks record `acked` for every push they cover, retention records
//!   `expired` for pushes removed before any ack; the roles record the rest in bulk.
//! - **Acks** are cumulative per user and key and only count in the user's current epoch; an ack
//!   that goes backwards changes nothing.
//! - **Publishing under the numbering** ([`Inbox::append_published`]). A durable push is numbered
//!   here and then published to the bus, and clients drop what arrives at or below their last
//!   position, so the bus must see each stream's numbers in order even when several control
//!   instances push to one user. The append runs inside a transaction that holds the heads of its
//!   users and rooms (row locks; the memory twin: one gate held throughout), hands the positions to
//!   the caller's publish step and commits only once that step succeeded, so the next append of
//!   those streams, from any instance, is numbered and published after this one. If the publish
//!   fails, the batch's pushes and receipts are removed in the same transaction and the transaction
//!   commits with the heads advanced: the numbers are *burned* (a gap; clients see gaps between
//!   sibling keys' pushes anyway) rather than handed out again, because a failed publish may still
//!   have put some records on the bus, and a number reused for another push would make clients
//!   drop that push as a duplicate. Nothing of a failed batch is readable at any time (the
//!   transaction is not visible before it commits).

use crate::error::StoreError;
use crate::model::UnixMillis;
use async_trait::async_trait;
use rim_proto::durable::{MAX_APPEND_BATCH, MAX_RECEIPT_BATCH, MessageId, Position};
use rim_proto::limits::MAX_ROOM_LEN;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

pub use rim_proto::durable::NotResumedReason;

/// Longest connection key an inbox entry or ack may name, in bytes (every part's bound).
pub use rim_proto::limits::MAX_KEY_LEN;

/// How long and how much the inbox keeps; the same for every implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboxSettings {
    /// Longest a user push is kept, in milliseconds.
    pub max_age_ms: i64,
    /// Most pushes kept per user; older ones are removed as newer ones arrive.
    pub max_per_user: u64,
    /// How far back a room resumes, in milliseconds.
    pub room_window_ms: i64,
    /// How long a room without pushes keeps its numbering before its log is dropped, in milliseconds.
    pub room_idle_ms: i64,
    /// Longest a receipt is kept, in milliseconds.
    pub receipt_max_age_ms: i64,
}

impl Default for InboxSettings {
    fn default() -> Self {
        const DAY: i64 = 24 * 60 * 60 * 1000;
        Self {
            max_age_ms: 7 * DAY,
            max_per_user: 1_000,
            room_window_ms: 2 * 60 * 1000,
            room_idle_ms: DAY,
            receipt_max_age_ms: 7 * DAY,
        }
    }
}

impl InboxSettings {
    /// Refuses settings that would keep nothing or overflow the arithmetic.
    pub fn check(&self) -> Result<(), StoreError> {
        let positive = [
            ("max_age_ms", self.max_age_ms),
            ("room_window_ms", self.room_window_ms),
            ("room_idle_ms", self.room_idle_ms),
            ("receipt_max_age_ms", self.receipt_max_age_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value <= 0) {
            return Err(StoreError::Invalid(format!(
                "inbox {name} must be positive"
            )));
        }
        if self.max_per_user == 0 || self.max_per_user > rim_proto::durable::MAX_POSITION {
            return Err(StoreError::Invalid(
                "inbox max_per_user must be 1..=2^53-1".into(),
            ));
        }
        Ok(())
    }
}

/// One push to store in a user's inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    /// The user (not 0).
    pub mid: i64,
    /// For a key push, the key (only that device reads it); `None` for every device of the user.
    pub key: Option<String>,
    /// The push's id.
    pub message_id: MessageId,
    /// Business operation.
    pub operation: i32,
    /// Payload.
    pub body: Vec<u8>,
}

/// One push to store in a room's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomEntry {
    /// The room (`type://id`).
    pub room: String,
    /// The push's id.
    pub message_id: MessageId,
    /// Business operation.
    pub operation: i32,
    /// Payload.
    pub body: Vec<u8>,
}

/// A stored push as a resume reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPush {
    /// Its place in its stream.
    pub position: Position,
    /// The push's id.
    pub message_id: MessageId,
    /// The key it is for, for a key push.
    pub key: Option<String>,
    /// Business operation.
    pub operation: i32,
    /// Payload.
    pub body: Vec<u8>,
    /// When it was stored.
    pub stored_at: UnixMillis,
}

/// What a read after a position found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The pushes after the position (possibly none).
    Page {
        /// At most `limit` pushes, in order.
        pushes: Vec<StoredPush>,
        /// The stream's head when read: the reader is up to date once it has read through it.
        head: Position,
    },
    /// The position cannot be served; the client reloads and continues from `head`.
    NotResumable {
        /// Why.
        reason: NotResumedReason,
        /// The stream's current head.
        head: Position,
    },
}

/// Whom a receipt is about: the target as the push named it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReceiptTarget {
    /// A user (`mid:<mid>`).
    Mid(i64),
    /// A connection key (`key:<key>`).
    Key(String),
}

impl ReceiptTarget {
    /// The stored form, the same as the push's bus partition key (`mid:1`, `key:abc`).
    pub fn to_text(&self) -> String {
        match self {
            ReceiptTarget::Mid(mid) => format!("mid:{mid}"),
            ReceiptTarget::Key(key) => format!("key:{key}"),
        }
    }

    /// Parses the stored form.
    pub fn from_text(text: &str) -> Option<Self> {
        if let Some(mid) = text.strip_prefix("mid:") {
            return mid.parse().ok().map(ReceiptTarget::Mid);
        }
        text.strip_prefix("key:")
            .map(|key| ReceiptTarget::Key(key.to_owned()))
    }

    /// The target of an inbox entry.
    pub fn of_entry(mid: i64, key: Option<&str>) -> Self {
        match key {
            Some(key) => ReceiptTarget::Key(key.to_owned()),
            None => ReceiptTarget::Mid(mid),
        }
    }
}

/// What became of a push for one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReceiptState {
    /// The control plane accepted it for this target.
    Accepted,
    /// It is in the user's inbox.
    Stored,
    /// An edge wrote it to a socket of the target.
    Written,
    /// A device of the target acked it.
    Acked,
    /// The target had no session when it was pushed.
    Offline,
    /// Retention removed it before any ack.
    Expired,
    /// The fallback webhook was claimed for it (not acked in time, or offline): recorded once,
    /// before the call, by the one control instance that makes it (see [`crate::receipt_feed`]).
    Fallback,
}

impl ReceiptState {
    /// Every state, in their stored order.
    pub const ALL: [ReceiptState; 7] = [
        ReceiptState::Accepted,
        ReceiptState::Stored,
        ReceiptState::Written,
        ReceiptState::Acked,
        ReceiptState::Offline,
        ReceiptState::Expired,
        ReceiptState::Fallback,
    ];

    /// The stored code.
    pub fn code(self) -> i16 {
        match self {
            ReceiptState::Accepted => 1,
            ReceiptState::Stored => 2,
            ReceiptState::Written => 3,
            ReceiptState::Acked => 4,
            ReceiptState::Offline => 5,
            ReceiptState::Expired => 6,
            ReceiptState::Fallback => 7,
        }
    }

    /// The state of a stored code.
    pub fn from_code(code: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.code() == code)
    }

    /// The name the APIs and webhooks use.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptState::Accepted => "accepted",
            ReceiptState::Stored => "stored",
            ReceiptState::Written => "written",
            ReceiptState::Acked => "acked",
            ReceiptState::Offline => "offline",
            ReceiptState::Expired => "expired",
            ReceiptState::Fallback => "fallback",
        }
    }
}

/// One receipt: a push reached a state for a target at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The push.
    pub message_id: MessageId,
    /// For whom.
    pub target: ReceiptTarget,
    /// Which state.
    pub state: ReceiptState,
    /// When it was first reached.
    pub at: UnixMillis,
}

/// One device's cumulative ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckEntry {
    /// The user.
    pub mid: i64,
    /// The acking connection's key.
    pub key: String,
    /// Everything of the user stream through this position is processed.
    pub position: Position,
}

/// What a batch of acks did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckReport {
    /// Acks in the user's current epoch and within its head (they moved a device's position, or
    /// repeated it).
    pub applied: u64,
    /// Acks of another epoch or beyond the head, ignored.
    pub stale: u64,
    /// New `acked` receipts recorded.
    pub acked_pushes: u64,
}

/// What one cleanup round removed; each figure is at most the round's batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// User pushes past their age.
    pub messages: u64,
    /// Room entries past the room window.
    pub room_entries: u64,
    /// Room logs idle past `room_idle_ms`.
    pub room_heads: u64,
    /// Receipts past their age.
    pub receipts: u64,
}

impl CleanupReport {
    /// Whether some figure reached the batch, so another round has more to do.
    pub fn is_full(&self, batch: u64) -> bool {
        [
            self.messages,
            self.room_entries,
            self.room_heads,
            self.receipts,
        ]
        .iter()
        .any(|removed| *removed >= batch)
    }
}

/// Everything one durable batch stores: user and key pushes, room pushes and the receipts that go
/// with them ([`Inbox::append_published`]). Each part is bounded like its own call (at most
/// [`MAX_APPEND_BATCH`] entries of each kind, [`MAX_RECEIPT_BATCH`] receipts); parts may be empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableBatch {
    /// Pushes for users' inboxes, numbered as by [`Inbox::append_user`].
    pub users: Vec<UserEntry>,
    /// Pushes for room logs, numbered as by [`Inbox::append_room`].
    pub rooms: Vec<RoomEntry>,
    /// Receipts recorded with the batch (`accepted`, `offline`), as by [`Inbox::record_receipts`].
    pub receipts: Vec<Receipt>,
}

/// The positions a [`DurableBatch`] was given, in the order of its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchPositions {
    /// One per [`DurableBatch::users`] entry.
    pub users: Vec<Position>,
    /// One per [`DurableBatch::rooms`] entry.
    pub rooms: Vec<Position>,
}

/// Why a publish step failed; [`Inbox::append_published`] hands it back unchanged (control
/// downcasts it to its bus error).
pub type PublishError = Box<dyn std::error::Error + Send + Sync>;

/// The publish step of [`Inbox::append_published`]: gets the batch's positions and resolves once
/// the bus durably holds every record carrying them (or failed).
pub type PublishStep<'a> = Box<
    dyn FnOnce(
            BatchPositions,
        ) -> Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>>
        + Send
        + 'a,
>;

/// Why [`Inbox::append_published`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishedAppendError {
    /// The store refused or failed the batch before the publish ran (nothing was published), or
    /// could not commit it after the publish (the records may be on the bus; the caller answers
    /// as for a failed push).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The publish step failed: the batch is not kept (its numbers are burned, see the module
    /// docs).
    #[error("publish failed: {0}")]
    Publish(PublishError),
}

/// Per-user inboxes, the room log and receipts. See the module docs for the rules.
#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Stores a batch of user and key pushes and numbers them; returns each entry's position, in
    /// the batch's order. Records a `stored` receipt per entry. [`StoreError::Invalid`] for an empty
    /// batch or one above [`MAX_APPEND_BATCH`], user 0 or an empty or oversized key.
    async fn append_user(
        &self,
        entries: &[UserEntry],
        now: UnixMillis,
    ) -> Result<Vec<Position>, StoreError>;

    /// The pushes of `mid` after `after` that the connection with `key` receives (user pushes and
    /// its key's pushes; `None`: user pushes only), at most `limit` (1 and above).
    async fn read_user(
        &self,
        mid: i64,
        key: Option<&str>,
        after: Position,
        limit: usize,
    ) -> Result<ReadOutcome, StoreError>;

    /// The current head of a user's stream ([`Position::ORIGIN`] before anything was stored): where
    /// a client without a position starts.
    async fn user_head(&self, mid: i64) -> Result<Position, StoreError>;

    /// Drops a user's stored pushes and acked positions and starts a new epoch; returns the new
    /// head (seq 0).
    async fn reset_user(&self, mid: i64, now: UnixMillis) -> Result<Position, StoreError>;

    /// Applies a batch of cumulative acks (at most [`MAX_RECEIPT_BATCH`]); records `acked` receipts
    /// for every stored push each ack newly covers.
    async fn record_acks(
        &self,
        acks: &[AckEntry],
        now: UnixMillis,
    ) -> Result<AckReport, StoreError>;

    /// Records receipts (at most [`MAX_RECEIPT_BATCH`]); a state already recorded for a push and
    /// target keeps its first time. Returns how many were new.
    async fn record_receipts(&self, receipts: &[Receipt]) -> Result<u64, StoreError>;

    /// Every receipt of a push, by target, then state.
    async fn receipts(&self, message_id: MessageId) -> Result<Vec<Receipt>, StoreError>;

    /// Stores a batch of room pushes and numbers them per room; returns each entry's position, in
    /// the batch's order.
    async fn append_room(
        &self,
        entries: &[RoomEntry],
        now: UnixMillis,
    ) -> Result<Vec<Position>, StoreError>;

    /// The pushes of `room` after `after` still in the room window at `now`, at most `limit`.
    async fn read_room(
        &self,
        room: &str,
        after: Position,
        limit: usize,
        now: UnixMillis,
    ) -> Result<ReadOutcome, StoreError>;

    /// The current head of a room's stream ([`Position::ORIGIN`] while it has no log).
    async fn room_head(&self, room: &str) -> Result<Position, StoreError>;

    /// Stores a durable batch, runs `publish` with its positions while holding the numbering of
    /// every stream it touches, and keeps the batch only if `publish` succeeded (see "Publishing
    /// under the numbering" in the module docs). Returns the positions. The same checks as
    /// [`Inbox::append_user`], [`Inbox::append_room`] and [`Inbox::record_receipts`] apply to the
    /// parts, and `publish` is not called when they fail.
    async fn append_published(
        &self,
        batch: &DurableBatch,
        now: UnixMillis,
        publish: PublishStep<'_>,
    ) -> Result<BatchPositions, PublishedAppendError>;

    /// One bounded round of retention: removes at most `batch` of each kind of expired record
    /// (user pushes past their age, room entries past the window, idle room logs, old receipts).
    /// Call again while [`CleanupReport::is_full`].
    async fn cleanup(&self, now: UnixMillis, batch: u64) -> Result<CleanupReport, StoreError>;
}

/// Checks an append batch's size.
pub(crate) fn check_batch(len: usize, max: usize, what: &str) -> Result<(), StoreError> {
    if len == 0 || len > max {
        return Err(StoreError::Invalid(format!(
            "a batch holds 1..={max} {what}, got {len}"
        )));
    }
    Ok(())
}

/// Checks a durable batch: each part within its bound (parts may be empty).
pub(crate) fn check_durable_batch(batch: &DurableBatch) -> Result<(), StoreError> {
    if !batch.users.is_empty() {
        check_user_entries(&batch.users)?;
    }
    if !batch.rooms.is_empty() {
        check_room_entries(&batch.rooms)?;
    }
    if !batch.receipts.is_empty() {
        check_receipts(&batch.receipts)?;
    }
    Ok(())
}

/// Checks a batch of user entries.
pub(crate) fn check_user_entries(entries: &[UserEntry]) -> Result<(), StoreError> {
    check_batch(entries.len(), MAX_APPEND_BATCH, "pushes")?;
    for entry in entries {
        check_mid(entry.mid)?;
        if let Some(key) = &entry.key {
            check_key(key)?;
        }
    }
    Ok(())
}

/// Checks a batch of room entries.
pub(crate) fn check_room_entries(entries: &[RoomEntry]) -> Result<(), StoreError> {
    check_batch(entries.len(), MAX_APPEND_BATCH, "pushes")?;
    entries.iter().try_for_each(|entry| check_room(&entry.room))
}

/// Checks a batch of acks.
pub(crate) fn check_acks(acks: &[AckEntry]) -> Result<(), StoreError> {
    check_batch(acks.len(), MAX_RECEIPT_BATCH, "acks")?;
    for ack in acks {
        check_mid(ack.mid)?;
        check_key(&ack.key)?;
        check_position(ack.position)?;
    }
    Ok(())
}

/// A batch of acks with one per device (user and key), in device order: the furthest position of
/// the epoch mentioned last (a device that acks in a new epoch has moved on to it).
pub(crate) fn latest_acks(acks: &[AckEntry]) -> BTreeMap<(i64, &str), Position> {
    let mut latest: BTreeMap<(i64, &str), Position> = BTreeMap::new();
    for ack in acks {
        latest
            .entry((ack.mid, ack.key.as_str()))
            .and_modify(|kept| {
                if kept.epoch != ack.position.epoch || kept.seq < ack.position.seq {
                    *kept = ack.position;
                }
            })
            .or_insert(ack.position);
    }
    latest
}

/// Checks a batch of receipts.
pub(crate) fn check_receipts(receipts: &[Receipt]) -> Result<(), StoreError> {
    check_batch(receipts.len(), MAX_RECEIPT_BATCH, "receipts")?;
    receipts
        .iter()
        .try_for_each(|receipt| match &receipt.target {
            ReceiptTarget::Key(key) => check_key(key),
            ReceiptTarget::Mid(mid) => check_mid(*mid),
        })
}

/// User 0 is goim's anonymous user: it has no inbox.
pub(crate) fn check_mid(mid: i64) -> Result<(), StoreError> {
    if mid == 0 {
        return Err(StoreError::Invalid(
            "user 0 (anonymous) has no inbox".into(),
        ));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(StoreError::Invalid(format!(
            "key must be 1..={MAX_KEY_LEN} bytes"
        )));
    }
    Ok(())
}

/// A room id is non-empty and within the shared bound.
pub(crate) fn check_room(room: &str) -> Result<(), StoreError> {
    if room.is_empty() || room.len() > MAX_ROOM_LEN {
        return Err(StoreError::Invalid(format!(
            "room must be 1..={MAX_ROOM_LEN} bytes"
        )));
    }
    Ok(())
}

/// A read's page size must be positive; it is capped at one resume page.
pub(crate) fn check_limit(limit: usize) -> Result<usize, StoreError> {
    if limit == 0 {
        return Err(StoreError::Invalid("read limit must be at least 1".into()));
    }
    Ok(limit.min(rim_proto::durable::RESUME_PAGE))
}

/// A position given by a caller must be one the codec would accept.
pub(crate) fn check_position(position: Position) -> Result<Position, StoreError> {
    Position::new(position.epoch, position.seq).map_err(|err| StoreError::Invalid(err.to_string()))
}

/// The verdict on a user read from `after`, given the stream's epoch, head and trimmed number:
/// `None` if readable.
pub(crate) fn user_verdict(after: Position, head: Position, trimmed: u64) -> Option<ReadOutcome> {
    let reason = if after.epoch != head.epoch {
        NotResumedReason::EpochChanged
    } else if after.seq > head.seq {
        NotResumedReason::Ahead
    } else if after.seq < trimmed {
        NotResumedReason::Expired
    } else {
        return None;
    };
    Some(ReadOutcome::NotResumable { reason, head })
}

/// The verdict on a room read from `after`, given the head and the first entry after `after` that
/// is still in the window (`first`, its number), when the position itself is acceptable.
pub(crate) fn room_verdict(
    after: Position,
    head: Position,
    first: Option<u64>,
) -> Option<ReadOutcome> {
    let origin = after == Position::ORIGIN;
    let reason = if !origin && after.epoch != head.epoch {
        NotResumedReason::EpochChanged
    } else if after.seq > head.seq {
        NotResumedReason::Ahead
    } else if after.seq < head.seq && first != Some(after.seq + 1) {
        NotResumedReason::Expired
    } else {
        return None;
    };
    Some(ReadOutcome::NotResumable { reason, head })
}

/// The epoch a reset starts: the reset's time, or one more than the old epoch if that is later.
pub(crate) fn next_epoch(old: u64, now: UnixMillis) -> u64 {
    u64::try_from(now).unwrap_or(0).max(old + 1)
}
