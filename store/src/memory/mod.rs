//! [`MemoryStore`]: the embedded store of `rim dev` and single-process deployments.
//!
//! All state sits behind one `RwLock`: lookups (the push path) share it, and every write is a short
//! critical section, so one lock is simpler than sharding and fast enough for one process. It keeps
//! exactly what edges and admins report, so its size is bounded by the cluster it serves, like the
//! database's. Nothing survives a restart: edges re-register and re-report their sessions.

mod inbox;
mod receipt_feed;
mod sessions;

pub use inbox::MemoryInbox;
pub use receipt_feed::MemoryReceiptFeed;

use crate::error::StoreError;
use crate::model::{
    ApiKeyRecord, EndedUsers, ExpiryReport, Node, NodeState, OnlineTotals, Region, RegionRemoval,
    RegistrationReport, RoomOnline, Session, SessionApplyReport, UnixMillis,
};
use crate::node_input::{check_region, is_new_life, load_of, node_from_registration, region_of};
use crate::node_keys::{NodeKeyTable, NodeSigningKey};
use crate::session_rules::plan_session_events;
use crate::{Store, StoreSettings};
use async_trait::async_trait;
use parking_lot::RwLock;
use rim_proto::schema::{NodeHeartbeat, NodeRegistration, SessionEvent};
use sessions::SessionTable;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// A [`Store`] kept in this process's memory.
pub struct MemoryStore {
    settings: StoreSettings,
    state: RwLock<State>,
    node_keys: NodeKeyTable,
    /// Made at the first [`Store::inbox`] call, then shared by every caller.
    inbox: std::sync::OnceLock<std::sync::Arc<MemoryInbox>>,
    /// Made at the first [`Store::receipt_feed`] call, then shared (its consumers live in it).
    receipt_feed: std::sync::OnceLock<std::sync::Arc<MemoryReceiptFeed>>,
}

impl std::fmt::Debug for MemoryStore {
    /// Settings only: the state may hold millions of sessions and must not end up in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A node with the room counts of its last heartbeat.
struct NodeEntry {
    node: Node,
    rooms: BTreeMap<String, u64>,
}

impl NodeEntry {
    fn is_live(&self) -> bool {
        self.node.state != NodeState::Dead
    }
}

#[derive(Default)]
struct State {
    regions: BTreeMap<String, Region>,
    nodes: BTreeMap<String, NodeEntry>,
    sessions: SessionTable,
    api_keys: BTreeMap<String, ApiKeyRecord>,
    /// The sweeper lease: holder and when it runs out.
    lease: Option<(String, UnixMillis)>,
}

impl State {
    /// The node, if it is registered and not dead (a dead node must register again).
    fn live_node_mut(&mut self, node_id: &str) -> Result<&mut NodeEntry, StoreError> {
        self.nodes
            .get_mut(node_id)
            .filter(|entry| entry.is_live())
            .ok_or_else(|| StoreError::UnknownNode(node_id.to_owned()))
    }

    /// Marks a node dead and drops what it reported; returns how many sessions went with it,
    /// noting their users in `ended`.
    fn bury(&mut self, node_id: &str, ended: &mut EndedUsers) -> u64 {
        if let Some(entry) = self.nodes.get_mut(node_id) {
            entry.node.state = NodeState::Dead;
            entry.rooms.clear();
        }
        self.end_sessions_of(node_id, ended)
    }

    /// Removes the sessions of `node_id` (noting their users in `ended`); returns how many.
    fn end_sessions_of(&mut self, node_id: &str, ended: &mut EndedUsers) -> u64 {
        let mids = self.sessions.remove_node(node_id);
        let region = self.region_of_node(node_id);
        let count = mids.len() as u64;
        for mid in mids.into_iter().filter(|mid| *mid != 0) {
            ended.entry(mid).or_insert_with(|| region.clone());
        }
        count
    }

    /// The region `node_id` serves ("" for a node never registered).
    fn region_of_node(&self, node_id: &str) -> String {
        self.nodes
            .get(node_id)
            .map(|entry| entry.node.region.clone())
            .unwrap_or_default()
    }

    fn live_nodes(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.values().filter(|entry| entry.is_live())
    }
}

impl MemoryStore {
    /// An empty store applying `settings`.
    pub fn new(settings: StoreSettings) -> Self {
        Self {
            settings,
            state: RwLock::new(State::default()),
            node_keys: NodeKeyTable::default(),
            inbox: std::sync::OnceLock::new(),
            receipt_feed: std::sync::OnceLock::new(),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn inbox(
        &self,
        settings: crate::inbox::InboxSettings,
    ) -> Result<std::sync::Arc<dyn crate::inbox::Inbox>, StoreError> {
        if let Some(inbox) = self.inbox.get() {
            return Ok(inbox.clone());
        }
        let made = std::sync::Arc::new(MemoryInbox::new(settings)?);
        Ok(self.inbox.get_or_init(|| made).clone())
    }

    fn receipt_feed(
        &self,
        settings: crate::inbox::InboxSettings,
    ) -> Result<std::sync::Arc<dyn crate::receipt_feed::ReceiptFeed>, StoreError> {
        // Make the inbox first if nobody asked for it yet; the feed reads its state.
        self.inbox(settings)?;
        let inbox = self
            .inbox
            .get()
            .ok_or_else(|| StoreError::Unavailable("memory inbox missing".into()))?;
        Ok(self
            .receipt_feed
            .get_or_init(|| std::sync::Arc::new(MemoryReceiptFeed::new(inbox.clone())))
            .clone())
    }

    async fn upsert_region(&self, region: &Region) -> Result<(), StoreError> {
        check_region(region)?;
        self.state
            .write()
            .regions
            .insert(region.name.clone(), region.clone());
        Ok(())
    }

    async fn regions(&self) -> Result<Vec<Region>, StoreError> {
        Ok(self.state.read().regions.values().cloned().collect())
    }

    async fn insert_region(&self, region: &Region) -> Result<bool, StoreError> {
        check_region(region)?;
        let mut state = self.state.write();
        if state.regions.contains_key(&region.name) {
            return Ok(false);
        }
        state.regions.insert(region.name.clone(), region.clone());
        Ok(true)
    }

    async fn delete_region(&self, name: &str) -> Result<RegionRemoval, StoreError> {
        let mut state = self.state.write();
        if !state.regions.contains_key(name) {
            return Ok(RegionRemoval::Unknown);
        }
        let live: Vec<String> = state
            .live_nodes()
            .filter(|entry| entry.node.region == name)
            .map(|entry| entry.node.id.clone())
            .collect();
        if !live.is_empty() {
            return Ok(RegionRemoval::HasLiveNodes(live));
        }
        state.nodes.retain(|_, entry| entry.node.region != name);
        state.regions.remove(name);
        Ok(RegionRemoval::Removed)
    }

    async fn register_node(
        &self,
        reg: &NodeRegistration,
        now: UnixMillis,
    ) -> Result<RegistrationReport, StoreError> {
        let mut node = node_from_registration(reg, now)?;
        let mut guard = self.state.write();
        let state = &mut *guard;
        state
            .regions
            .entry(node.region.clone())
            .or_insert_with(|| region_of(&node));
        let mut report = RegistrationReport::default();
        match state.nodes.get_mut(&node.id) {
            Some(entry) => {
                report.restarted = is_new_life(&entry.node.boot_id, &node.boot_id);
                node.connection_count = entry.node.connection_count;
                node.ip_count = entry.node.ip_count;
                node.drained_by_admin = entry.node.drained_by_admin;
                if node.drained_by_admin {
                    node.state = NodeState::Draining;
                }
                entry.node = node;
                if report.restarted {
                    entry.rooms.clear();
                    let id = entry.node.id.clone();
                    report.sessions_ended = state.end_sessions_of(&id, &mut report.ended_users);
                }
            }
            None => {
                let entry = NodeEntry {
                    node,
                    rooms: BTreeMap::new(),
                };
                state.nodes.insert(entry.node.id.clone(), entry);
            }
        }
        Ok(report)
    }

    async fn node_heartbeat(
        &self,
        report: &NodeHeartbeat,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let load = load_of(report);
        let mut state = self.state.write();
        let entry = state.live_node_mut(&report.node_id)?;
        entry.node.connection_count = load.connection_count;
        entry.node.ip_count = load.ip_count;
        entry.node.last_seen = now;
        if report.draining {
            entry.node.state = NodeState::Draining;
        }
        entry.rooms = load.rooms;
        if report.stopped {
            // Presence is not told of these (its module doc says what it does not see).
            state.bury(&report.node_id, &mut EndedUsers::new());
        }
        Ok(())
    }

    async fn set_node_state(&self, node_id: &str, node_state: NodeState) -> Result<(), StoreError> {
        let mut state = self.state.write();
        let entry = state
            .nodes
            .get_mut(node_id)
            .ok_or_else(|| StoreError::UnknownNode(node_id.to_owned()))?;
        match node_state {
            NodeState::Dead => {
                state.bury(node_id, &mut EndedUsers::new());
            }
            NodeState::Draining => {
                entry.node.drained_by_admin = true;
                entry.node.state = NodeState::Draining;
            }
            NodeState::Active => {
                entry.node.drained_by_admin = false;
                if entry.is_live() {
                    entry.node.state = NodeState::Active;
                }
            }
        }
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        Ok(self
            .state
            .read()
            .nodes
            .values()
            .map(|entry| entry.node.clone())
            .collect())
    }

    async fn apply_session_events(
        &self,
        node_id: &str,
        events: &[SessionEvent],
        now: UnixMillis,
    ) -> Result<SessionApplyReport, StoreError> {
        let mut state = self.state.write();
        state.live_node_mut(node_id)?;
        let mut plan =
            plan_session_events(node_id, events, now, self.settings.session_ttl_ms, |key| {
                state.sessions.get(key).cloned()
            });
        let report = std::mem::take(&mut plan.report);
        state.sessions.apply(plan);
        Ok(report)
    }

    async fn sessions_by_keys(
        &self,
        keys: &[String],
        now: UnixMillis,
    ) -> Result<Vec<Session>, StoreError> {
        Ok(self.state.read().sessions.live_by_keys(keys, now))
    }

    async fn newest_sessions_by_mids(
        &self,
        mids: &[i64],
        per_user: usize,
        now: UnixMillis,
    ) -> Result<Vec<Session>, StoreError> {
        Ok(self
            .state
            .read()
            .sessions
            .newest_by_mids(mids, per_user, now))
    }

    async fn expire(
        &self,
        now: UnixMillis,
        node_timeout_ms: i64,
    ) -> Result<ExpiryReport, StoreError> {
        let deadline = now.saturating_sub(node_timeout_ms);
        let mut state = self.state.write();
        let silent: Vec<String> = state
            .live_nodes()
            .filter(|entry| entry.node.last_seen < deadline)
            .map(|entry| entry.node.id.clone())
            .collect();
        let mut report = ExpiryReport {
            nodes_marked_dead: silent.len() as u64,
            ..ExpiryReport::default()
        };
        for node_id in &silent {
            report.sessions_removed += state.bury(node_id, &mut report.ended_users);
        }
        for (mid, node_id) in state.sessions.remove_expired(now) {
            report.sessions_removed += 1;
            if mid != 0 && !report.ended_users.contains_key(&mid) {
                let region = state.region_of_node(&node_id);
                report.ended_users.insert(mid, region);
            }
        }
        Ok(report)
    }

    async fn sweeper_lease(
        &self,
        holder: &str,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.write();
        let free = match &state.lease {
            Some((current, until)) => current == holder || *until <= now,
            None => true,
        };
        if free {
            state.lease = Some((holder.to_owned(), now.saturating_add(lease_ms)));
        }
        Ok(free)
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn room_online(&self, rooms: &[String]) -> Result<HashMap<String, u64>, StoreError> {
        let state = self.state.read();
        Ok(rooms
            .iter()
            .map(|room| {
                let count = state
                    .live_nodes()
                    .filter_map(|entry| entry.rooms.get(room))
                    .fold(0u64, |sum, count| sum.saturating_add(*count));
                (room.clone(), count)
            })
            .collect())
    }

    async fn top_rooms(
        &self,
        room_type: &str,
        limit: usize,
    ) -> Result<Vec<RoomOnline>, StoreError> {
        let prefix = format!("{room_type}://");
        let state = self.state.read();
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for entry in state.live_nodes() {
            for (room, count) in entry
                .rooms
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            {
                if !room.starts_with(&prefix) {
                    break;
                }
                let total = totals.entry(room).or_default();
                *total = total.saturating_add(*count);
            }
        }
        let mut rooms: Vec<RoomOnline> = totals
            .into_iter()
            .map(|(room, count)| RoomOnline {
                room: room.to_owned(),
                count,
            })
            .collect();
        // Stable sort: equal counts keep the id order of the BTreeMap.
        rooms.sort_by_key(|room| std::cmp::Reverse(room.count));
        rooms.truncate(limit);
        Ok(rooms)
    }

    async fn online_totals(&self) -> Result<OnlineTotals, StoreError> {
        let state = self.state.read();
        Ok(state
            .live_nodes()
            .fold(OnlineTotals::default(), |totals, entry| OnlineTotals {
                conn_count: totals
                    .conn_count
                    .saturating_add(entry.node.connection_count),
                ip_count: totals.ip_count.saturating_add(entry.node.ip_count),
            }))
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut state = self.state.write();
        if state.api_keys.contains_key(&key.id) {
            return Err(StoreError::Invalid(format!(
                "API key id {:?} already exists",
                key.id
            )));
        }
        if state
            .api_keys
            .values()
            .any(|k| k.secret_hash == key.secret_hash)
        {
            return Err(StoreError::Invalid("API key secret already exists".into()));
        }
        state.api_keys.insert(key.id.clone(), key.clone());
        Ok(())
    }

    async fn api_key_by_hash(
        &self,
        secret_hash: &[u8],
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let state = self.state.read();
        Ok(state
            .api_keys
            .values()
            .find(|k| k.secret_hash == secret_hash)
            .cloned())
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Ok(self.state.read().api_keys.values().cloned().collect())
    }

    async fn node_signing_keys(&self) -> Result<Vec<NodeSigningKey>, StoreError> {
        Ok(self.node_keys.all())
    }

    async fn insert_node_signing_key(&self, key: &NodeSigningKey) -> Result<bool, StoreError> {
        Ok(self.node_keys.insert(key))
    }

    async fn delete_node_signing_keys_below(&self, generation: i64) -> Result<u64, StoreError> {
        Ok(self.node_keys.delete_below(generation))
    }

    async fn revoke_api_key(&self, id: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let mut state = self.state.write();
        Ok(match state.api_keys.get_mut(id) {
            Some(key) => {
                key.revoked_at.get_or_insert(now);
                true
            }
            None => false,
        })
    }
}
