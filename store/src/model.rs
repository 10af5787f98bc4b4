//! The records the store keeps: regions, edge nodes, sessions, room counts and API keys.
//!
//! Times are milliseconds since the Unix epoch (`i64`), the unit edges already report in
//! (`SessionEvent::at_unix_ms`), so both stores and the wire agree without conversions.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

/// A deployment region (a Kafka topic and a group of job workers serve each one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// Short unique name, e.g. `sh` or `eu-west`.
    pub name: String,
    /// Rough centre of the region, used when a client's own location is unknown.
    pub latitude: f64,
    /// Rough centre of the region.
    pub longitude: f64,
}

/// What [`crate::Store::delete_region`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionRemoval {
    /// The region is gone, with the records of its dead nodes.
    Removed,
    /// There was no such region.
    Unknown,
    /// Nothing was removed: these live (active or draining) nodes still serve the region, so its
    /// clients and pushes would be stranded. Drain and stop them first.
    HasLiveNodes(Vec<String>),
}

/// Lifecycle state of an edge node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Takes new clients.
    Active,
    /// Finishing its connections; the balancer sends it no new clients.
    Draining,
    /// Stopped reporting; its sessions have been removed.
    Dead,
}

impl NodeState {
    /// The name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Dead => "dead",
        }
    }

    /// Parses [`NodeState::as_str`] back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(NodeState::Active),
            "draining" => Some(NodeState::Draining),
            "dead" => Some(NodeState::Dead),
            _ => None,
        }
    }
}

/// An edge node as the control plane knows it: what it registered plus its last report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique node id chosen by the edge (stable across restarts of the same host).
    pub id: String,
    /// Region the node serves; pushes reach it through that region's job workers.
    pub region: String,
    /// Where the node is, for the balancer.
    pub latitude: f64,
    /// Where the node is, for the balancer.
    pub longitude: f64,
    /// Host name given to web clients.
    pub hostname: String,
    /// Public addresses given to native clients.
    pub addresses: Vec<String>,
    /// Client TCP port.
    pub tcp_port: u16,
    /// Client WebSocket port.
    pub ws_port: u16,
    /// Client WebSocket-over-TLS port (0 when the node has no TLS).
    pub wss_port: u16,
    /// Base URL of the node's internal push endpoint, for job workers.
    pub push_url: String,
    /// Relative capacity for the balancer.
    pub weight: u32,
    /// Current lifecycle state.
    pub state: NodeState,
    /// An admin drained the node: it stays draining across re-registrations (restarts) until an
    /// admin un-drains it. A node that drains itself (shutdown) is active again when it registers.
    pub drained_by_admin: bool,
    /// Id of the node's current process life (empty for edges that do not send one).
    pub boot_id: String,
    /// Open connections at the last report.
    pub connection_count: u64,
    /// Distinct client IPs at the last report.
    pub ip_count: u64,
    /// When the node last registered or reported, by the store's clock (the database's for
    /// PostgreSQL, so every control instance judges liveness by the same clock).
    pub last_seen: UnixMillis,
}

/// Where one connection key lives: the control plane's view of a client device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The connection (device) key; unique across the cluster.
    pub key: String,
    /// User id (0 = anonymous).
    pub mid: i64,
    /// Edge node holding the connection.
    pub node_id: String,
    /// Room id in `type://id` form, or empty.
    pub room: String,
    /// Client platform as the client reported it.
    pub platform: String,
    /// Initial watch set (ops the connection accepts for key/user/broadcast pushes).
    pub accepts: Vec<i32>,
    /// The edge's id for the connection; a disconnect must carry the same id to remove the session.
    pub connection_id: u64,
    /// Client IP address.
    pub ip: String,
    /// When the edge saw the connect.
    pub connected_at: UnixMillis,
    /// When the session is dropped unless renewed.
    pub expires_at: UnixMillis,
}

/// What applying a batch of session events did (the edge API answers the counts, tests check it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionApplyReport {
    /// Connects that created or replaced a session.
    pub connected: u64,
    /// Disconnects that removed the session of their own connection.
    pub disconnected: u64,
    /// Renewals that extended a live session.
    pub renewed: u64,
    /// Events ignored as stale: a disconnect or renew for a connection that no longer owns the
    /// key, or a connect older than the session already stored.
    pub ignored: u64,
    /// Sessions that lost their key to a connect of this batch (another node, or another
    /// connection of the same node), in batch order. Control tells their edges to close them; it
    /// is not part of the edge API's answer.
    #[serde(skip)]
    pub displaced: Vec<DisplacedSession>,
}

/// A connection whose key a newer connection took over: its edge must close it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DisplacedSession {
    /// The key that changed hands.
    pub key: String,
    /// The node holding the old connection.
    pub node_id: String,
    /// The old connection's id on that node.
    pub connection_id: u64,
}

/// What a registration did besides storing the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationReport {
    /// The registration carried a boot id other than the stored one: the node restarted, and the
    /// sessions and room counts of its previous life were removed.
    pub restarted: bool,
    /// Sessions removed because they belonged to the previous life.
    pub sessions_ended: u64,
    /// Whose sessions those were.
    pub ended_users: EndedUsers,
}

/// What one expiry sweep removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryReport {
    /// Nodes marked dead because they stopped reporting.
    pub nodes_marked_dead: u64,
    /// Sessions removed (expired, or on a dead node).
    pub sessions_removed: u64,
    /// Whose sessions were removed: presence tells which of them are now offline.
    pub ended_users: EndedUsers,
}

/// The users (not 0, goim's anonymous user) who lost sessions without a disconnect event (a node
/// declared dead or restarted, an expired session), each with the region of the node of one such
/// session. Sessions that end this way have no edge to report them, so presence reads which of
/// these users have no session left and tells the webhook they went offline.
pub type EndedUsers = BTreeMap<i64, String>;

/// Online count of one room, summed over all live nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomOnline {
    /// Room id in `type://id` form.
    pub room: String,
    /// Connections in the room.
    pub count: u64,
}

/// Cluster-wide online totals over live nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineTotals {
    /// Open connections.
    pub conn_count: u64,
    /// Distinct client IPs, summed per node (an IP on two nodes counts twice).
    pub ip_count: u64,
}

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Push messages.
    Push,
    /// Read online counts and nodes.
    Read,
    /// Manage regions, nodes and API keys.
    Admin,
}

impl Scope {
    /// The name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Push => "push",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Parses [`Scope::as_str`] back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "push" => Some(Scope::Push),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// What a push is addressed to, as far as an API key's permissions go: a key may be limited to
/// some kinds (a key for one service's user notifications need not be able to broadcast).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// Every connection of some users.
    Mids,
    /// Connections by key.
    Keys,
    /// Every connection in a room.
    Room,
    /// Every connection.
    Broadcast,
}

impl TargetKind {
    /// The name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Mids => "mids",
            TargetKind::Keys => "keys",
            TargetKind::Room => "room",
            TargetKind::Broadcast => "broadcast",
        }
    }

    /// Parses [`TargetKind::as_str`] back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "mids" => Some(TargetKind::Mids),
            "keys" => Some(TargetKind::Keys),
            "room" => Some(TargetKind::Room),
            "broadcast" => Some(TargetKind::Broadcast),
            _ => None,
        }
    }
}

/// How fast one API key may push: a token bucket refilled at `per_second` tokens a second,
/// holding at most `burst`; each push takes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained pushes per second.
    pub per_second: u32,
    /// Pushes that may be made at once after a quiet period.
    pub burst: u32,
}

/// A business caller's API key. Only a hash of the secret is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public identifier of the key (shown in listings and logs).
    pub id: String,
    /// SHA-256 of the secret token.
    pub secret_hash: Vec<u8>,
    /// Human description.
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// When it was created.
    pub created_at: UnixMillis,
    /// Set once the key is revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<UnixMillis>,
    /// The target kinds the key may push to; `None`: every kind.
    #[serde(default)]
    pub target_kinds: Option<Vec<TargetKind>>,
    /// How fast the key may push (enforced by each control instance on its own); `None`: no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}
