//! rim's store: everything the stateless control plane knows, kept outside its processes.
//!
//! [`Store`] is the one interface; [`postgres::PostgresStore`] is the production implementation and
//! [`memory::MemoryStore`] the embedded default of `rim dev`. Both pass the same behavioural suite
//! (`tests/`), so swapping them changes durability, not behaviour.
//!
//! ## Session rules (both stores)
//! - A connect creates or replaces the session of its key. Who wins a key is decided by arrival
//!   order at the store, not by the edges' clocks: a connect from another node than the stored
//!   session's always takes the key over. Only between two connects of the same node (one clock)
//!   does the edge's time decide: a connect older than the stored session of its own node (a late
//!   connect of a replaced connection) is ignored.
//! - A connect that takes a key from another connection reports the old one as displaced
//!   ([`SessionApplyReport::displaced`]), so control can tell its edge to close it.
//! - A disconnect removes the session only if it still belongs to the same node and connection id.
//!   (goim deletes whatever session the key has, so a stale disconnect kills the newer connection.)
//! - A renew extends `expires_at` (and updates the room) of the matching node + connection only.
//! - Sessions expire at `expires_at`; a node that stops reporting is marked dead by [`Store::expire`]
//!   and its sessions are removed with it.
//! - Events are replayed in their batch order: a connect and its disconnect in one batch leave nothing,
//!   a duplicate disconnect is ignored, a duplicate connect replaces the session with itself.
//! - A dead node is treated as unknown: its heartbeats and session events fail with
//!   [`StoreError::UnknownNode`] until it registers again (and then reports its connections anew),
//!   so a node that was declared dead cannot quietly resurrect sessions that were removed.
//! - "Live" nodes are those not dead (draining nodes still hold connections and count).
//!
//! ## Node rules (both stores)
//! - A registration with a boot id other than the stored one (a restart) removes the sessions and
//!   room counts of the node's previous life at once. An empty boot id (older edges) changes nothing.
//! - A node drained by an admin stays draining across re-registrations until an admin sets it active;
//!   a node that drained itself (heartbeat `draining`) is active again when it registers.
//! - A heartbeat with `stopped` marks the node dead and removes its sessions at once.
//! - Liveness is judged by the store's clock: the PostgreSQL store stamps `last_seen` and checks node
//!   timeouts and the sweeper lease with the database's `now()`, ignoring the caller's `now`, so
//!   control instances with skewed clocks agree; the memory store (one process) uses the caller's.
//! - One sweeper at a time: [`Store::sweeper_lease`] grants a renewable lease to one holder.

pub mod directory;
pub mod error;
pub mod inbox;
pub mod memory;
pub mod model;
mod node_input;
pub mod node_keys;
pub mod postgres;
pub mod receipt_feed;
mod session_rules;

pub use directory::{DirectorySettings, NodeDirectory, NodeSnapshot};
pub use error::StoreError;
pub use model::*;
pub use node_keys::NodeSigningKey;

use async_trait::async_trait;
use rim_proto::schema::{NodeHeartbeat, NodeRegistration, SessionEvent};
use std::collections::HashMap;

/// Durations the store applies to sessions; the same for every implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// How long a session lives after its connect or last renew, in milliseconds.
    pub session_ttl_ms: i64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        // goim: heartbeat 4 min x 2 missed; edges renew well within that.
        Self {
            session_ttl_ms: 10 * 60 * 1000,
        }
    }
}

/// Sessions, nodes, regions, room counts and API keys.
///
/// Every method is one short transaction; implementations are shared behind `Arc<dyn Store>` by
/// all request handlers. Errors say whether the caller is at fault ([`StoreError::UnknownNode`],
/// [`StoreError::Invalid`]) or the store is unavailable ([`StoreError::Unavailable`]).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or updates a region.
    async fn upsert_region(&self, region: &Region) -> Result<(), StoreError>;
    /// All regions, by name.
    async fn regions(&self) -> Result<Vec<Region>, StoreError>;
    /// Creates a region only if no region has its name: `false` (and nothing changed) if one does.
    /// The admin API's create, so a second creator learns the name is taken instead of moving it.
    async fn insert_region(&self, region: &Region) -> Result<bool, StoreError>;
    /// Removes a region that no live node serves, together with its dead nodes' records; refuses
    /// ([`RegionRemoval::HasLiveNodes`]) while an active or draining node is in it.
    async fn delete_region(&self, name: &str) -> Result<RegionRemoval, StoreError>;

    /// Registers an edge node (or re-registers it after a restart): stores its metadata, marks it
    /// active (draining if an admin drained it) and seen now (see the node rules for whose clock).
    /// Creates its region (at the node's location) if unknown. A new boot id ends the sessions of
    /// the previous life; otherwise load figures and room counts stay as last reported until the
    /// next heartbeat. [`StoreError::Invalid`] for an empty id or region, a port above 65535 or
    /// coordinates off the globe.
    async fn register_node(
        &self,
        node: &NodeRegistration,
        now: UnixMillis,
    ) -> Result<RegistrationReport, StoreError>;
    /// Records a node's periodic report: counts, room counts (replacing the previous ones; a room
    /// listed twice is summed) and whether it is draining (`draining: false` undoes no drain). A
    /// report with `stopped` marks the node dead and removes its sessions, as expiry does.
    /// [`StoreError::UnknownNode`] if it never registered or is dead.
    async fn node_heartbeat(
        &self,
        report: &NodeHeartbeat,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// Sets a node's state by admin decision: [`NodeState::Draining`] drains it until an admin sets
    /// [`NodeState::Active`] (which lifts the drain; a dead node stays dead until it registers);
    /// [`NodeState::Dead`] removes its sessions and room counts, as expiry does.
    /// [`StoreError::UnknownNode`] if absent.
    async fn set_node_state(&self, node_id: &str, state: NodeState) -> Result<(), StoreError>;
    /// All nodes, by id.
    async fn nodes(&self) -> Result<Vec<Node>, StoreError>;

    /// Applies a batch of a node's session events in order, by the rules in the crate docs.
    /// [`StoreError::UnknownNode`] if the node never registered or is dead. Events without a key or
    /// of an unknown kind are counted as ignored.
    async fn apply_session_events(
        &self,
        node_id: &str,
        events: &[SessionEvent],
        now: UnixMillis,
    ) -> Result<SessionApplyReport, StoreError>;
    /// Live sessions (not expired at `now`) of these keys, ordered by key.
    async fn sessions_by_keys(
        &self,
        keys: &[String],
        now: UnixMillis,
    ) -> Result<Vec<Session>, StoreError>;
    /// Live sessions (not expired at `now`) of these users, at most `per_user` of each user (the
    /// most recently connected ones, ties by key), ordered by key. The bound keeps one user with
    /// a runaway number of connections from loading unbounded rows into one push.
    async fn newest_sessions_by_mids(
        &self,
        mids: &[i64],
        per_user: usize,
        now: UnixMillis,
    ) -> Result<Vec<Session>, StoreError>;
    /// Every live session of these users, ordered by key (tests and tools; pushes use the bounded
    /// [`Store::newest_sessions_by_mids`]).
    async fn sessions_by_mids(
        &self,
        mids: &[i64],
        now: UnixMillis,
    ) -> Result<Vec<Session>, StoreError> {
        self.newest_sessions_by_mids(mids, usize::MAX, now).await
    }
    /// Marks nodes not seen for `node_timeout_ms` (by the store's clock) dead and removes their
    /// sessions and room counts; removes sessions whose `expires_at` is not after `now`.
    async fn expire(
        &self,
        now: UnixMillis,
        node_timeout_ms: i64,
    ) -> Result<ExpiryReport, StoreError>;
    /// Takes or renews the sweeper lease for `holder` for `lease_ms` (by the store's clock):
    /// `true` if `holder` holds it now, `false` while another holder's lease runs. Control instances
    /// sweep only while they hold it, so one sweeps at a time.
    async fn sweeper_lease(
        &self,
        holder: &str,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<bool, StoreError>;
    /// Whether the store answers at all ([`StoreError::Unavailable`] when not): the health check.
    async fn health(&self) -> Result<(), StoreError>;

    /// The durable inbox kept beside this store (same database, or same process for the memory
    /// store), so a role given a store also has its inbox. The memory store keeps one inbox for its
    /// life: later calls return it whatever their settings. [`StoreError::Invalid`] for settings
    /// that keep nothing.
    fn inbox(
        &self,
        settings: inbox::InboxSettings,
    ) -> Result<std::sync::Arc<dyn inbox::Inbox>, StoreError>;

    /// The receipt feed over the inbox's receipts ([`receipt_feed`]): consumers, their cursors and
    /// leases, fallback claims. The memory store makes its inbox first if needed (with `settings`)
    /// and keeps one feed for its life.
    fn receipt_feed(
        &self,
        settings: inbox::InboxSettings,
    ) -> Result<std::sync::Arc<dyn receipt_feed::ReceiptFeed>, StoreError>;

    /// Online counts of these rooms over live nodes; rooms nobody is in count 0.
    async fn room_online(&self, rooms: &[String]) -> Result<HashMap<String, u64>, StoreError>;
    /// Rooms whose id starts with `room_type://`, most online first (ties by room id), at most `limit`.
    async fn top_rooms(&self, room_type: &str, limit: usize)
    -> Result<Vec<RoomOnline>, StoreError>;
    /// Connection and IP totals over live nodes.
    async fn online_totals(&self) -> Result<OnlineTotals, StoreError>;

    /// Stores a new API key. [`StoreError::Invalid`] if the id or hash already exists.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    /// The key with this secret hash, revoked or not (the caller checks `revoked_at`).
    async fn api_key_by_hash(&self, secret_hash: &[u8])
    -> Result<Option<ApiKeyRecord>, StoreError>;
    /// All API keys, by id.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revokes a key; `false` if no such key.
    async fn revoke_api_key(&self, id: &str, now: UnixMillis) -> Result<bool, StoreError>;

    /// Every node-token signing key, by generation (see [`node_keys`]).
    async fn node_signing_keys(&self) -> Result<Vec<NodeSigningKey>, StoreError>;
    /// Adds a signing key unless its generation or kid is taken: `false` when another control
    /// instance inserted that generation first (read the keys again to use the winner's).
    async fn insert_node_signing_key(&self, key: &NodeSigningKey) -> Result<bool, StoreError>;
    /// Deletes the signing keys of generations below `generation`; how many.
    async fn delete_node_signing_keys_below(&self, generation: i64) -> Result<u64, StoreError>;
}
