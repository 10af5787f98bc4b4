//! The push pipeline: from "send this to these users" to records on the regions' bus topics.
//!
//! Targets are resolved against the store (user → sessions → keys → nodes → regions; keys →
//! sessions → nodes → regions; room and broadcast → every region with live nodes). Each push gets a
//! UUIDv7 message id (time-ordered, unique across instances) and becomes one [`PushMessage`] record
//! per target and region, keyed by its target (`key:<key>`, `mid:<mid>`, `room:<room>`,
//! `broadcast`) so one target's pushes stay ordered in one partition (a key push stored in its
//! user's inbox is keyed by the user, `mid:<mid>`: its position is one of the user's stream, whose
//! positions must reach the edges in order). The records of one push are
//! numbered 0, 1, 2, ... (`PushMessage.record`): edges and clients drop duplicate deliveries by
//! (message id, record), so the records of a push to several users or keys never collide. The
//! caller is answered only after the bus accepted every record; if the bus fails, nothing is
//! reported as sent (the bus contract says none may be assumed delivered).
//!
//! ## Durable pushes: stored before the caller is answered (issue 9)
//! User and key pushes are appended to the users' inboxes ([`rim_store::inbox`]) and room pushes to
//! the room log before the caller is answered, and each bus record carries its stream position
//! (`PushMessage.position`: stream 1 with the user's position for user and key pushes, stream 2
//! with the room's for room pushes, the same in every region's record) and, for user and key
//! pushes, whom receipts name (`receipt_target`: `mid:<mid>`, `key:<key>`). A user without a live
//! session is stored all the same (a later resume finds the push) and gets an `offline` receipt;
//! a key without a live session has no inbox to go to and gets only an `offline` receipt; every
//! target reached gets `accepted` (the append records `stored`). Broadcasts carry no position and
//! are published directly. Keys of anonymous sessions (user 0, which has no inbox) get records
//! without a position, as plain pushes.
//!
//! **Order and failure: append, publish, then commit.** The append and the publish of a batch run
//! under [`Inbox::append_published`](rim_store::inbox::Inbox::append_published): the append's
//! transaction holds the heads of its users and rooms while the records are published and commits
//! only after the bus acknowledged them. So (1) another append of those users or rooms, from this
//! or any other control instance, is numbered and published after this one: positions reach each
//! partition in order; and (2) a push whose publish failed is not kept: its inbox rows and
//! receipts are removed in the same transaction and its numbers are burned (left as a gap) rather
//! than rolled back, because a failed publish may still have put some records on the bus and a
//! reused number would make clients drop a later push as a duplicate. Nothing stored-but-unsent is
//! ever readable by a resume. A failing store fails the push (503) before anything is published;
//! the one exception is a room push, which is then published without a position, as before
//! durable delivery (room pushes need no store to be sent, see below), and reported with
//! `room_log_unavailable`. If the commit itself fails after a successful publish, the caller gets
//! a 503 although the records are on the bus (at-least-once, as for any lost answer).
//!
//! **Throughput: one writer batches concurrent pushes.** Holding a head through a publish
//! serialises a user's pushes behind the bus round trip, so pushes do not each run their own
//! transaction: a writer task ([`DurableWriter`]) takes every durable push waiting at that moment
//! (up to the inbox's batch bounds), appends them in one transaction (one statement for all users,
//! one for all rooms, one for the receipts), publishes all their records in one bus call, and
//! answers each push; up to [`MAX_BATCHES_IN_FLIGHT`] batches run at once. Batches that shared a
//! user's or room's head would run one after the other in PostgreSQL anyway, each holding a
//! connection and a slot while it waits, so a push whose head a running batch holds waits in the
//! writer (never delaying other users' and rooms' pushes behind it), and the next batch for that
//! head takes every push queued for it meanwhile. The pushes of a batch succeed or fail together.
//!
//! The session look-ups of key and user pushes are batched while the store is busy
//! ([`SessionLookups`]): a look-up that finds none running calls the store at once; the ones that
//! come while others run wait, and every look-up waiting then joins one store call for all their
//! keys and one for all their users (up to [`MAX_LOOKUP_NAMES`] names each). Each push gets the
//! sessions of its own names, as its own call would have answered (the per-user bound applies per
//! user, so it holds in a shared call too); up to [`MAX_LOOKUPS_IN_FLIGHT`] batches run at once.
//!
//! **Outages: bounded waits, refuse fast, probe, recover.** Every publish waits at most
//! `control_publish_timeout_ms` for the bus's acknowledgement (durable or not); past it the push
//! fails (503) as for a bus error. For a durable batch that is a failed publish step: its numbers
//! are burned and its transaction commits at once, so its heads are released instead of being held
//! (with every later push of those users waiting behind them) for as long as a broker outage lasts.
//! The bus may still finish that publish in the background (the Kafka producer does, in order
//! with the later ones it is given); its records then carry burned numbers, which a client
//! either takes (a failed push may have been delivered) or drops as at or below its position.
//! The store side is bounded by the pool's acquire timeout. A batch failed by the store
//! (unavailable) or the bus starts an *outage* (logged as an error, gauge
//! `rim_control_durable_outage{side}` = 1): while the writer's next batch runs as its probe, every
//! other durable push is answered 503 at once, naming the outage
//! (`rim_control_durable_refused_total{side}`), instead of piling up behind the failing
//! dependency; a room push refused for a store outage goes out without a position as above. The
//! first batch that succeeds ends the outage (logged with its length and refusals), so pushes
//! flow again with the first push after PostgreSQL or the broker is back.
//!
//! Bounds, each a 400 with a message: operations below [`MIN_BUSINESS_OPERATION`], more than
//! `control_max_targets` targets, user id 0 (goim's anonymous sessions: every anonymous client is
//! "user 0", so it names no one and would load unbounded rows), and a push resolving to more than
//! `control_max_records_per_push` records. A user with more than `control_max_sessions_per_user`
//! live sessions gets the most recently connected ones, and is named in the report's `capped_mids`.
//!
//! Unlike goim, which answers success for users who are offline, the report names the offline
//! users and keys, and room and broadcast answers count the connections targeted (from the edges'
//! last heartbeats: rooms read from the store, broadcasts from the cached node directory) instead
//! of 0. Room and broadcast pushes need no store read to be sent, so they keep flowing from the
//! directory's last good snapshot while PostgreSQL is briefly away.

mod lookups;
mod writer;

pub use lookups::{MAX_LOOKUP_NAMES, MAX_LOOKUPS_IN_FLIGHT, SessionLookups};
pub use writer::{DurableWriter, MAX_BATCHES_IN_FLIGHT};

use crate::error::ApiError;
use crate::observe::timed_store;
use crate::state::AppState;
use bytes::Bytes;
use lookups::Wanted;
use rim_bus::OutgoingPush;
use rim_proto::durable::MessageId;
use rim_proto::limits::{MAX_KEY_LEN, MAX_ROOM_LEN};
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{BroadcastTarget, KeyOnNode, KeysTarget, PushMessage, RoomTarget};
use rim_store::inbox::{DurableBatch, Receipt, ReceiptState, ReceiptTarget, RoomEntry, UserEntry};
use rim_store::{NodeSnapshot, NodeState, Session, StoreError, TargetKind};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use writer::{Job, Slot, SlottedRecords, publish_timeout, publish_within};

/// Smallest operation a business push may use: lower ones are protocol operations (auth,
/// heartbeat, batch) that clients would misinterpret.
pub const MIN_BUSINESS_OPERATION: i32 = rim_proto::op::MIN_BUSINESS_PUSH;

/// Whom a push is for.
#[derive(Clone, Debug, PartialEq)]
pub enum PushTarget {
    /// Connections by key.
    Keys(Vec<String>),
    /// Every connection of these users.
    Mids(Vec<i64>),
    /// Every connection in a room (`type://id`).
    Room(String),
    /// Every connection, with an optional per-edge rate cap (0 = none).
    Broadcast {
        /// Deliveries per second per edge (goim's `speed`).
        speed: i32,
    },
}

impl PushTarget {
    /// What kind of target this is: what an API key's allowed kinds are checked against, and the
    /// label of the pushes-by-type metric.
    pub fn kind(&self) -> TargetKind {
        match self {
            PushTarget::Keys(_) => TargetKind::Keys,
            PushTarget::Mids(_) => TargetKind::Mids,
            PushTarget::Room(_) => TargetKind::Room,
            PushTarget::Broadcast { .. } => TargetKind::Broadcast,
        }
    }
}

/// A push as the APIs hand it to the pipeline.
#[derive(Clone, Debug)]
pub struct PushRequest {
    /// Operation code the clients see (>= [`MIN_BUSINESS_OPERATION`]).
    pub operation: i32,
    /// Payload, delivered unchanged.
    pub body: Bytes,
    /// Whom it is for.
    pub target: PushTarget,
}

/// What the pipeline did with a push: the answer both APIs give.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PushReport {
    /// The push's id (UUIDv7); edges and clients drop duplicate deliveries by it.
    pub message_id: String,
    /// Connections the push was addressed to: the live sessions of the keys and users, or, for a
    /// room or broadcast, the connections in the room or online as of the edges' last heartbeats
    /// (on live nodes).
    pub sessions: u64,
    /// Regions whose topics received a record.
    pub regions: Vec<String>,
    /// Records published to the bus.
    pub records: usize,
    /// Requested keys without a live session.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub offline_keys: Vec<String>,
    /// Requested users without a live session.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub offline_mids: Vec<i64>,
    /// Requested users with more live sessions than `control_max_sessions_per_user`: only their
    /// most recently connected sessions were targeted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capped_mids: Vec<i64>,
    /// Set when a room's connections could not be counted (the store did not answer): the push was
    /// sent all the same (it needs only the cached node directory) and `sessions` is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_unavailable: Option<String>,
    /// Set when a room push could not be stored in the room log (the store did not answer): it
    /// was sent all the same, without a position, so rim-aware clients cannot resume it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_log_unavailable: Option<String>,
}

/// Checks a push's operation and target against the configured bounds (400 otherwise).
pub fn validate(request: &PushRequest, max_targets: usize) -> Result<(), ApiError> {
    if request.operation < MIN_BUSINESS_OPERATION {
        return Err(ApiError::BadRequest(format!(
            "operation must be >= {MIN_BUSINESS_OPERATION} (lower codes are protocol operations), got {}",
            request.operation
        )));
    }
    let count = match &request.target {
        PushTarget::Keys(keys) => {
            if let Some(bad) = keys.iter().find(|k| k.is_empty() || k.len() > MAX_KEY_LEN) {
                return Err(ApiError::BadRequest(format!(
                    "key {bad:?} must be 1..={MAX_KEY_LEN} bytes"
                )));
            }
            keys.len()
        }
        PushTarget::Mids(mids) => {
            if mids.contains(&0) {
                return Err(ApiError::BadRequest(
                    "mid 0 is no push target: it stands for every anonymous session, not a user"
                        .into(),
                ));
            }
            mids.len()
        }
        PushTarget::Room(room) => {
            validate_room(room)?;
            1
        }
        PushTarget::Broadcast { speed } => {
            if *speed < 0 {
                return Err(ApiError::BadRequest(format!(
                    "speed must be >= 0, got {speed}"
                )));
            }
            1
        }
    };
    if count == 0 {
        return Err(ApiError::BadRequest("no target given".into()));
    }
    if count > max_targets {
        return Err(ApiError::BadRequest(format!(
            "at most {max_targets} targets per push, got {count}"
        )));
    }
    Ok(())
}

/// A room id must be `type://id` with both parts non-empty and bounded.
pub fn validate_room(room: &str) -> Result<(), ApiError> {
    match room.split_once("://") {
        Some((kind, id)) if !kind.is_empty() && !id.is_empty() && room.len() <= MAX_ROOM_LEN => {
            Ok(())
        }
        _ => Err(ApiError::BadRequest(format!(
            "room must be `type://id` (both non-empty, at most {MAX_ROOM_LEN} bytes), got {room:?}"
        ))),
    }
}

/// Resolves, stores (user, key and room pushes), publishes and reports one push. Validates first
/// (see [`validate`]).
pub async fn push(state: &AppState, request: PushRequest) -> Result<PushReport, ApiError> {
    validate(&request, state.config.control_max_targets)?;
    let kind = request.target.kind().as_str();
    let now = crate::now_ms();
    let uuid = uuid::Uuid::now_v7();
    let id = MessageId(*uuid.as_bytes());
    let template = PushMessage {
        message_id: uuid.to_string(),
        operation: request.operation,
        body: request.body,
        accepted_at_unix_ms: now,
        record: 0,
        position: None,
        receipt_target: String::new(),
        target: None,
    };
    let mut report = PushReport {
        message_id: template.message_id.clone(),
        ..PushReport::default()
    };
    // What the push stores (empty for broadcasts) and, per record, which entry's position it
    // carries.
    let mut durable = Durable::new(id, &template);
    // A room push's count of its room's connections, taken beside its delivery.
    let mut room_count: Option<RoomCount<'_>> = None;
    let records = match request.target {
        PushTarget::Keys(keys) => {
            let keys = dedup(keys);
            let sessions = state
                .lookups
                .sessions(state, Wanted::Keys(keys.clone()))
                .await?;
            let nodes = state
                .directory
                .snapshot_knowing(&node_ids(&sessions))
                .await?;
            let mut records = Vec::new();
            let mut online = BTreeSet::new();
            for session in &sessions {
                let Some(region) = nodes.live_region(&session.node_id) else {
                    continue;
                };
                online.insert(session.key.as_str());
                let target = ReceiptTarget::Key(session.key.clone());
                // A stored key push is numbered in its user's stream, so it shares the user's
                // partition: the stream's positions then reach the edges in order. User 0
                // (anonymous) has no inbox: its key gets a plain push, keyed by the key.
                let stored = session.mid != 0;
                let partition = if stored {
                    ReceiptTarget::Mid(session.mid).to_text()
                } else {
                    target.to_text()
                };
                let mut record = record(&template, region, partition, keys_target([session]));
                record.message.receipt_target = target.to_text();
                let slot = stored.then(|| durable.user(session.mid, Some(session.key.clone())));
                durable.receipt(target, ReceiptState::Accepted, now);
                records.push((record, slot));
            }
            report.sessions = online.len() as u64;
            report.offline_keys = keys
                .iter()
                .filter(|k| !online.contains(k.as_str()))
                .cloned()
                .collect();
            for key in &report.offline_keys {
                durable.receipt(ReceiptTarget::Key(key.clone()), ReceiptState::Offline, now);
            }
            records
        }
        PushTarget::Mids(mids) => {
            let mids = dedup(mids);
            let per_user = state.config.control_max_sessions_per_user;
            let sessions = state
                .lookups
                .sessions(state, Wanted::Mids(mids.clone()))
                .await?;
            let (sessions, capped) = cap_per_user(sessions, per_user);
            report.capped_mids = capped;
            let nodes = state
                .directory
                .snapshot_knowing(&node_ids(&sessions))
                .await?;
            let grouped = group_by_mid_and_region(&sessions, &nodes);
            let online: BTreeSet<i64> = grouped.keys().map(|(mid, _)| *mid).collect();
            // Every user is stored, online or not, in the order named.
            let slots: BTreeMap<i64, Slot> = mids
                .iter()
                .map(|mid| (*mid, durable.user(*mid, None)))
                .collect();
            let mut records = Vec::new();
            for ((mid, region), user_sessions) in &grouped {
                report.sessions += user_sessions.len() as u64;
                let mut record = record(
                    &template,
                    region,
                    format!("mid:{mid}"),
                    keys_target(user_sessions.iter().copied()),
                );
                record.message.receipt_target = ReceiptTarget::Mid(*mid).to_text();
                records.push((record, slots.get(mid).copied()));
            }
            for mid in &mids {
                let reached = if online.contains(mid) {
                    ReceiptState::Accepted
                } else {
                    report.offline_mids.push(*mid);
                    ReceiptState::Offline
                };
                durable.receipt(ReceiptTarget::Mid(*mid), reached, now);
            }
            records
        }
        PushTarget::Room(room) => {
            // Only informative: counted while the push is stored and sent, not before it.
            let counted = room.clone();
            room_count = Some(Box::pin(async move {
                timed_store("room_online", state.store.room_online(&[counted])).await
            }));
            let nodes = state.directory.snapshot().await?;
            let target = Target::Room(RoomTarget { room: room.clone() });
            let slot = durable.room(room.clone());
            nodes
                .live_regions()
                .map(|region| {
                    let record = record(&template, region, format!("room:{room}"), target.clone());
                    (record, Some(slot))
                })
                .collect()
        }
        PushTarget::Broadcast { speed } => {
            let nodes = state.directory.snapshot().await?;
            report.sessions = live_connections(&nodes);
            let target = Target::Broadcast(BroadcastTarget { speed });
            nodes
                .live_regions()
                .map(|region| {
                    let record = record(&template, region, "broadcast".to_owned(), target.clone());
                    (record, None)
                })
                .collect()
        }
    };
    let mut records: SlottedRecords = records;
    let limit = state.config.control_max_records_per_push;
    if records.len() > limit {
        return Err(ApiError::BadRequest(format!(
            "this push resolves to {} bus records (one per key, per user and region, or per region); \
             at most {limit} per push: split it",
            records.len()
        )));
    }
    for (index, (record, _)) in records.iter_mut().enumerate() {
        // Bounded by the check above, far below u32::MAX.
        record.message.record = u32::try_from(index).unwrap_or(u32::MAX);
    }
    report.records = records.len();
    report.regions = records
        .iter()
        .map(|(r, _)| r.region.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let count = async {
        match room_count {
            Some(count) => Some(count.await),
            None => None,
        }
    };
    let (delivered, counted) = tokio::join!(deliver(state, durable, records), count);
    report.room_log_unavailable = delivered?;
    match counted {
        Some(Ok(online)) => report.sessions = online.values().sum(),
        // A store that does not answer must not stop a room push.
        Some(Err(error)) => report.count_unavailable = Some(error.to_string()),
        None => {}
    }
    metrics::counter!("rim_control_pushes_total", "type" => kind).increment(1);
    tracing::debug!(
        id = %report.message_id,
        kind,
        sessions = report.sessions,
        records = report.records,
        offline = report.offline_mids.len() + report.offline_keys.len(),
        "push accepted"
    );
    Ok(report)
}

/// A room's count of live connections in the store, for a room push's report.
type RoomCount<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<HashMap<String, u64>, StoreError>> + Send + 'a>>;

/// Sends a push's records: through the durable writer when it stores anything, else straight to
/// the bus. For a room push whose room log did not answer (nothing went out), the records are
/// sent without a position, as before durable delivery, and the answer is why.
async fn deliver(
    state: &AppState,
    durable: Durable<'_>,
    records: SlottedRecords,
) -> Result<Option<String>, ApiError> {
    if durable.is_empty() {
        if !records.is_empty() {
            let records = records.into_iter().map(|(record, _)| record).collect();
            publish_within(state.bus.as_ref(), records, publish_timeout(state)).await?;
        }
        return Ok(None);
    }
    let job = durable.into_job(records);
    let Err(failure) = state.writer.write(state, job.job).await else {
        return Ok(None);
    };
    match (failure.store_failed, job.room_fallback) {
        (true, Some(records)) => {
            if !records.is_empty() {
                publish_within(state.bus.as_ref(), records, publish_timeout(state)).await?;
            }
            Ok(Some(failure.error.to_string()))
        }
        _ => Err(failure.error),
    }
}

/// The durable part of one push while it is being resolved: its inbox entries and receipts.
struct Durable<'a> {
    id: MessageId,
    template: &'a PushMessage,
    batch: DurableBatch,
}

impl<'a> Durable<'a> {
    fn new(id: MessageId, template: &'a PushMessage) -> Self {
        Self {
            id,
            template,
            batch: DurableBatch::default(),
        }
    }

    /// Adds an inbox entry for `mid` (a key push when `key` is set); its slot.
    fn user(&mut self, mid: i64, key: Option<String>) -> Slot {
        self.batch.users.push(UserEntry {
            mid,
            key,
            message_id: self.id,
            operation: self.template.operation,
            body: self.template.body.to_vec(),
        });
        Slot::User(self.batch.users.len() - 1)
    }

    /// Adds a room-log entry; its slot.
    fn room(&mut self, room: String) -> Slot {
        self.batch.rooms.push(RoomEntry {
            room,
            message_id: self.id,
            operation: self.template.operation,
            body: self.template.body.to_vec(),
        });
        Slot::Room(self.batch.rooms.len() - 1)
    }

    /// Adds a receipt recorded with the push.
    fn receipt(&mut self, target: ReceiptTarget, state: ReceiptState, at: i64) {
        self.batch.receipts.push(Receipt {
            message_id: self.id,
            target,
            state,
            at,
        });
    }

    /// Whether the push stores nothing (a broadcast).
    fn is_empty(&self) -> bool {
        let batch = &self.batch;
        batch.users.is_empty() && batch.rooms.is_empty() && batch.receipts.is_empty()
    }

    /// The writer's job for these records, and for a room push the records to send without a
    /// position if the room log does not answer.
    fn into_job(self, records: SlottedRecords) -> PreparedJob {
        let room_fallback = (self.batch.users.is_empty() && !self.batch.rooms.is_empty())
            .then(|| records.iter().map(|(record, _)| record.clone()).collect());
        PreparedJob {
            job: Job {
                batch: self.batch,
                records,
            },
            room_fallback,
        }
    }
}

/// A push's writer job, with the room fallback (see [`Durable::into_job`]).
struct PreparedJob {
    job: Job,
    room_fallback: Option<Vec<OutgoingPush>>,
}

/// Most records of each kind one inbox cleanup round removes.
pub const CLEANUP_BATCH: u64 = 5_000;

/// Most cleanup rounds per sweep: a backlog larger than this is worked off over several sweeps, so
/// the sweep's other work (node expiry) keeps its interval.
pub const MAX_CLEANUP_ROUNDS: usize = 100;

/// Inbox retention, run by the sweeper (which holds the sweeper lease, so one instance at a time):
/// bounded [`Inbox::cleanup`](rim_store::inbox::Inbox::cleanup) rounds until one is not full, counting what went in
/// `rim_control_inbox_removed_total{kind}`. Errors are logged; the next sweep tries again.
pub async fn clean_inbox(state: &AppState) {
    for _ in 0..MAX_CLEANUP_ROUNDS {
        let report = match timed_store(
            "inbox_cleanup",
            state.inbox.cleanup(crate::now_ms(), CLEANUP_BATCH),
        )
        .await
        {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(%error, "inbox cleanup failed; retrying next interval");
                return;
            }
        };
        for (kind, removed) in [
            ("messages", report.messages),
            ("room_entries", report.room_entries),
            ("room_heads", report.room_heads),
            ("receipts", report.receipts),
        ] {
            metrics::counter!("rim_control_inbox_removed_total", "kind" => kind).increment(removed);
        }
        if report != rim_store::inbox::CleanupReport::default() {
            tracing::info!(
                messages = report.messages,
                room_entries = report.room_entries,
                room_heads = report.room_heads,
                receipts = report.receipts,
                "inbox retention"
            );
        }
        if !report.is_full(CLEANUP_BATCH) {
            return;
        }
    }
}

/// The nodes holding these sessions.
fn node_ids(sessions: &[Session]) -> Vec<&str> {
    sessions.iter().map(|s| s.node_id.as_str()).collect()
}

/// Removes repeated targets, keeping first-seen order (a key named twice gets one record).
fn dedup<T: Ord + Clone>(items: Vec<T>) -> Vec<T> {
    if items.len() < 2 {
        return items;
    }
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

/// Connections on live nodes as of their last heartbeats (what a broadcast targets), from the
/// cached node directory, so a broadcast needs no store read.
fn live_connections(nodes: &NodeSnapshot) -> u64 {
    nodes
        .nodes()
        .iter()
        .filter(|node| node.state != NodeState::Dead)
        .fold(0u64, |sum, node| sum.saturating_add(node.connection_count))
}

/// Keeps at most `per_user` sessions of each user, the most recently connected (ties by key);
/// returns them (ordered by key, as the store answers) and the users that had more.
fn cap_per_user(sessions: Vec<Session>, per_user: usize) -> (Vec<Session>, Vec<i64>) {
    let mut by_mid: BTreeMap<i64, Vec<Session>> = BTreeMap::new();
    for session in sessions {
        by_mid.entry(session.mid).or_default().push(session);
    }
    let mut capped = Vec::new();
    let mut kept = Vec::new();
    for (mid, mut of_user) in by_mid {
        if of_user.len() > per_user {
            capped.push(mid);
            of_user.sort_unstable_by(|a, b| {
                b.connected_at
                    .cmp(&a.connected_at)
                    .then_with(|| a.key.cmp(&b.key))
            });
            of_user.truncate(per_user);
        }
        kept.extend(of_user);
    }
    kept.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    (kept, capped)
}

/// Sessions of each user on live nodes, grouped by (user, region): one record each.
fn group_by_mid_and_region<'a>(
    sessions: &'a [Session],
    nodes: &NodeSnapshot,
) -> BTreeMap<(i64, String), Vec<&'a Session>> {
    let mut grouped: BTreeMap<(i64, String), Vec<&Session>> = BTreeMap::new();
    for session in sessions {
        if let Some(region) = nodes.live_region(&session.node_id) {
            grouped
                .entry((session.mid, region.to_owned()))
                .or_default()
                .push(session);
        }
    }
    grouped
}

/// The keys target naming each session's key and node.
fn keys_target<'a>(sessions: impl IntoIterator<Item = &'a Session>) -> Target {
    Target::Keys(KeysTarget {
        keys: sessions
            .into_iter()
            .map(|s| KeyOnNode {
                key: s.key.clone(),
                node_id: s.node_id.clone(),
            })
            .collect(),
    })
}

/// One bus record of the push for one target in one region.
pub(crate) fn record(
    template: &PushMessage,
    region: &str,
    partition_key: String,
    target: Target,
) -> OutgoingPush {
    OutgoingPush {
        region: region.to_owned(),
        partition_key,
        message: PushMessage {
            target: Some(target),
            ..template.clone()
        },
    }
}
