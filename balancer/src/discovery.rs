//! Discovery: the shape of what the caller knows about each edge node.
//!
//! The balancer does not find nodes itself. The control plane reads its store (or any other source) and hands a
//! snapshot of [`NodeCandidate`]s to the balancer. Keeping this a plain struct, with no dependency on the store,
//! means the ranking can be tested and reasoned about without a database, and that where candidates come from can
//! change without touching health or selection.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::client::Platform;
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
///
/// 0 means "nothing listens" (e.g. `wss` on a node without TLS): such a port is never advertised, so it is left out
/// of the JSON rather than sent as a port a client would try.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// goim TCP protocol port (0: none).
    #[serde(default, skip_serializing_if = "not_listening")]
    pub tcp: u16,
    /// Plain WebSocket port (0: none).
    #[serde(default, skip_serializing_if = "not_listening")]
    pub ws: u16,
    /// WebSocket over TLS port (0: none).
    #[serde(default, skip_serializing_if = "not_listening")]
    pub wss: u16,
}

impl Ports {
    /// Whether a client of `platform` has a port to use: TCP for native clients (goim's protocol), WebSocket with
    /// or without TLS for browsers.
    pub fn serve(&self, platform: Platform) -> bool {
        match platform {
            Platform::Native => self.tcp != 0,
            Platform::Web => self.ws != 0 || self.wss != 0,
        }
    }
}

/// Port 0 is the "nothing listens here" marker; serde skips such ports.
pub(crate) fn not_listening(port: &u16) -> bool {
    *port == 0
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

impl NodeCandidate {
    /// What a client of `platform` can dial on this node, best first; blank entries are ignored. Native clients get
    /// every address; browsers get the host name (TLS certificates, mixed-content rules), or the addresses when the
    /// node has no host name, so a node without a name stays reachable from a page served over plain HTTP.
    pub fn endpoints(&self, platform: Platform) -> impl Iterator<Item = &str> {
        let names = std::slice::from_ref(&self.hostname);
        let has_name = !self.hostname.trim().is_empty();
        let all: &[String] = match platform {
            Platform::Web if has_name => names,
            Platform::Web | Platform::Native => &self.addresses,
        };
        all.iter().map(|e| e.trim()).filter(|e| !e.is_empty())
    }

    /// Whether a client of `platform` could connect at all: something to dial and a port it can use.
    pub fn dialable(&self, platform: Platform) -> bool {
        self.ports.serve(platform) && self.endpoints(platform).next().is_some()
    }
}
