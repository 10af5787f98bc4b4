//! The push pipeline: from "send this to these users" to records on the regions' bus topics.
//!
//! Targets are resolved against the store (user → sessions → keys → nodes → regions; keys →
//! sessions → nodes → regions; room and broadcast → every region with live nodes). Each push gets a
//! UUIDv7 message id (time-ordered, unique across instances) and becomes one [`PushMessage`] record
//! per target and region, keyed by its target (`key:<key>`, `mid:<mid>`, `room:<room>`,
//! `broadcast`) so one target's pushes stay ordered in one partition. The records of one push are
//! numbered 0, 1, 2, ... (`PushMessage.record`): edges and clients drop duplicate deliveries by
//! (message id, record), so the records of a push to several users or keys never collide. The
//! caller is answered only after the bus accepted every record; if the bus fails, nothing is
//! reported as sent (the bus contract says none may be assumed delivered).
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

use crate::error::ApiError;
use crate::observe::{timed_publish, timed_store};
use crate::state::AppState;
use bytes::Bytes;
use rim_bus::OutgoingPush;
use rim_proto::limits::MAX_ROOM_LEN;
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{BroadcastTarget, KeyOnNode, KeysTarget, PushMessage, RoomTarget};
use rim_store::{NodeSnapshot, NodeState, Session, TargetKind};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Smallest operation a business push may use: lower ones are protocol operations (auth,
/// heartbeat, batch) that clients would misinterpret.
pub const MIN_BUSINESS_OPERATION: i32 = rim_proto::op::MIN_BUSINESS_PUSH;

/// Longest accepted connection key, in bytes (room ids are bounded by [`MAX_ROOM_LEN`]).
pub const MAX_NAME_LEN: usize = 256;

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
            if let Some(bad) = keys.iter().find(|k| k.is_empty() || k.len() > MAX_NAME_LEN) {
                return Err(ApiError::BadRequest(format!(
                    "key {bad:?} must be 1..={MAX_NAME_LEN} bytes"
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

/// Resolves, publishes and reports one push. Validates first (see [`validate`]).
pub async fn push(state: &AppState, request: PushRequest) -> Result<PushReport, ApiError> {
    validate(&request, state.config.control_max_targets)?;
    let kind = request.target.kind().as_str();
    let now = crate::now_ms();
    let message_id = uuid::Uuid::now_v7().to_string();
    let template = PushMessage {
        message_id: message_id.clone(),
        operation: request.operation,
        body: request.body,
        accepted_at_unix_ms: now,
        record: 0,
        position: None,
        receipt_target: String::new(),
        target: None,
    };
    let mut report = PushReport {
        message_id,
        ..PushReport::default()
    };
    let records = match request.target {
        PushTarget::Keys(keys) => {
            let keys = dedup(keys);
            let sessions =
                timed_store("sessions_by_keys", state.store.sessions_by_keys(&keys, now)).await?;
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
                records.push(record(
                    &template,
                    region,
                    format!("key:{}", session.key),
                    keys_target([session]),
                ));
            }
            report.sessions = online.len() as u64;
            report.offline_keys = keys
                .iter()
                .filter(|k| !online.contains(k.as_str()))
                .cloned()
                .collect();
            records
        }
        PushTarget::Mids(mids) => {
            let mids = dedup(mids);
            let per_user = state.config.control_max_sessions_per_user;
            // One more than the bound tells a capped user from one with exactly the bound.
            let sessions = timed_store(
                "newest_sessions_by_mids",
                state
                    .store
                    .newest_sessions_by_mids(&mids, per_user.saturating_add(1), now),
            )
            .await?;
            let (sessions, capped) = cap_per_user(sessions, per_user);
            report.capped_mids = capped;
            let nodes = state
                .directory
                .snapshot_knowing(&node_ids(&sessions))
                .await?;
            let grouped = group_by_mid_and_region(&sessions, &nodes);
            let mut records = Vec::new();
            for ((mid, region), user_sessions) in &grouped {
                report.sessions += user_sessions.len() as u64;
                records.push(record(
                    &template,
                    region,
                    format!("mid:{mid}"),
                    keys_target(user_sessions.iter().copied()),
                ));
            }
            let online: BTreeSet<i64> = grouped.keys().map(|(mid, _)| *mid).collect();
            report.offline_mids = mids
                .iter()
                .filter(|m| !online.contains(m))
                .copied()
                .collect();
            records
        }
        PushTarget::Room(room) => {
            // Only informative: a store that does not answer must not stop a room push.
            match timed_store(
                "room_online",
                state.store.room_online(std::slice::from_ref(&room)),
            )
            .await
            {
                Ok(online) => report.sessions = online.values().sum(),
                Err(error) => report.count_unavailable = Some(error.to_string()),
            }
            let nodes = state.directory.snapshot().await?;
            let target = Target::Room(RoomTarget { room: room.clone() });
            nodes
                .live_regions()
                .map(|region| record(&template, region, format!("room:{room}"), target.clone()))
                .collect()
        }
        PushTarget::Broadcast { speed } => {
            let nodes = state.directory.snapshot().await?;
            report.sessions = live_connections(&nodes);
            let target = Target::Broadcast(BroadcastTarget { speed });
            nodes
                .live_regions()
                .map(|region| record(&template, region, "broadcast".to_owned(), target.clone()))
                .collect()
        }
    };
    let mut records = records;
    let limit = state.config.control_max_records_per_push;
    if records.len() > limit {
        return Err(ApiError::BadRequest(format!(
            "this push resolves to {} bus records (one per key, per user and region, or per region); \
             at most {limit} per push: split it",
            records.len()
        )));
    }
    for (index, record) in records.iter_mut().enumerate() {
        // Bounded by the check above, far below u32::MAX.
        record.message.record = u32::try_from(index).unwrap_or(u32::MAX);
    }
    report.records = records.len();
    report.regions = records
        .iter()
        .map(|r: &OutgoingPush| r.region.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !records.is_empty() {
        timed_publish(state.bus.publish(records)).await?;
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

/// The nodes holding these sessions.
fn node_ids(sessions: &[Session]) -> Vec<&str> {
    sessions.iter().map(|s| s.node_id.as_str()).collect()
}

/// Removes repeated targets, keeping first-seen order (a key named twice gets one record).
fn dedup<T: Ord + Clone>(items: Vec<T>) -> Vec<T> {
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
