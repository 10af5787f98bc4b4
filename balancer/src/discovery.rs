//! Discovery: the shape of what the caller knows about each edge node.
//!
//! The balancer does not find nodes itself. The control plane reads its store (or any other source) and hands a
//! snapshot of [`NodeCandidate`]s to the balancer. Keeping this a plain struct, with no dependency on the store,
//! means the ranking can be tested and reasoned about without a database, and that where candidates come from can
//! change without touching health or selection.

use std::time::SystemTime;

use serde::Serialize;

use crate::location::GeoPoint;

/// The lifecycle state an operator or the control plane assigned to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Accepting new connections.
    Active,
    /// Being emptied by an operator: existing connections stay, new clients must go elsewhere.
    Draining,
    /// Known to be gone (deregistered or declared dead); never handed out.
    Dead,
}

/// The ports an edge listens on; a client needs them next to the node's host name or address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Ports {
    /// goim TCP protocol port.
    pub tcp: u16,
    /// Plain WebSocket port.
    pub ws: u16,
    /// WebSocket over TLS port.
    pub wss: u16,
}

/// One edge node as last reported, the unit the balancer ranks.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCandidate {
    /// Stable, unique node id; also the final tie-break so equal nodes always come out in the same order.
    pub id: String,
    /// Region the node serves (e.g. `sh`); matched against the client's region hint.
    pub region: String,
    /// Where the node is, for the distance to the client.
    pub location: GeoPoint,
    /// Public host name, answered to web clients (browsers need a name that matches the TLS certificate).
    pub hostname: String,
    /// Public addresses (IPs or names without port), answered to native clients, best first.
    pub addresses: Vec<String>,
    /// Listening ports.
    pub ports: Ports,
    /// Relative capacity set by the operator; 0 means "send no new clients here".
    pub weight: u32,
    /// Connections the node held at its last report.
    pub connections: u64,
    /// Lifecycle state.
    pub state: NodeState,
    /// When the node last reported; too old means the node may be gone.
    pub last_seen: SystemTime,
}
