//! The goim-compatible HTTPDNS answer served at `GET /goim/nodes/weighted`.
//!
//! goim's answer carries one set of ports for all listed nodes, so the list holds only nodes that listen on the same
//! ports as the best node (rim's own ranked list carries ports per node and has no such limit). Native clients get
//! every address of each node in rank order, web clients the host names (or addresses of nodes without one);
//! duplicates are dropped and the list is cut at `httpdns_max_nodes` entries. Ports where nothing listens are 0 and
//! left out of the JSON. When no node is eligible the answer lists no node and no port, and says why in `reason`:
//! goim answered a configured domain with default ports instead, which sent clients to a host that may not exist.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::config::BalancerConfig;
use crate::discovery::{NodeCandidate, Ports, not_listening};
use crate::health::NoEligibleNode;
use crate::selection;

/// Reconnect timing advice for clients, in goim's field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Longest delay between reconnect attempts, in seconds.
    pub max_delay: u32,
    /// First delay, in seconds.
    pub base_delay: u32,
    /// Growth factor between consecutive delays.
    pub factor: f64,
    /// Random spread applied to each delay, as a fraction.
    pub jitter: f64,
}

/// The goim HTTPDNS answer, field for field, so existing goim clients keep working, plus rim's `reason` for an
/// empty answer (goim clients ignore it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoimAnswer {
    /// Host name from configuration, for clients that keep a DNS name to fall back on (may be empty).
    pub domain: String,
    /// TCP port of the listed nodes; absent (0) when they have none.
    #[serde(default, skip_serializing_if = "not_listening")]
    pub tcp_port: u16,
    /// WebSocket port of the listed nodes; absent (0) when they have none.
    #[serde(default, skip_serializing_if = "not_listening")]
    pub ws_port: u16,
    /// WebSocket-over-TLS port of the listed nodes; absent (0) when they have none (no TLS).
    #[serde(default, skip_serializing_if = "not_listening")]
    pub wss_port: u16,
    /// Client heartbeat interval in seconds.
    pub heartbeat: u32,
    /// Missed heartbeats before the client reconnects.
    pub heartbeat_max: u32,
    /// Host names (web) or addresses (native) to try in order, best first; empty when no node is eligible.
    pub nodes: Vec<String>,
    /// Reconnect timing.
    pub backoff: Backoff,
    /// Why `nodes` is empty; absent when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<NoEligibleNode>,
}

/// Builds the goim answer for `client` from the snapshot `candidates` at time `now`. Pure: reading an answer
/// changes no state, and the same snapshot, client (seed included) and time give the same answer.
pub fn answer(
    candidates: &[NodeCandidate],
    client: &Client,
    now: SystemTime,
    config: &BalancerConfig,
) -> GoimAnswer {
    let why = || NoEligibleNode::tally(candidates, client.platform, now, config.node_staleness());
    answer_from(
        selection::ordered(candidates, client, now, config),
        why,
        client,
        config,
    )
}

/// The answer from nodes in their final order; `why` explains an empty one.
pub(crate) fn answer_from(
    ordered: selection::Ordered<'_>,
    why: impl FnOnce() -> NoEligibleNode,
    client: &Client,
    config: &BalancerConfig,
) -> GoimAnswer {
    let mut nodes: Vec<String> = Vec::with_capacity(config.httpdns_max_nodes);
    let best = listed(
        ordered,
        client,
        config.httpdns_max_nodes,
        |_, _, endpoint| nodes.push(endpoint.to_owned()),
    );
    let (ports, reason) = match best {
        Some(best) => (best.ports, None),
        None => (Ports::default(), Some(why())),
    };
    goim_answer(config, ports, nodes, reason)
}

/// What an answer lists, from nodes in their final order: the endpoints of the best node and of
/// the later nodes on the same ports, in order, duplicates dropped, at most `max`; `each` gets
/// every listed endpoint with its node and its position among the node's endpoints. Returns the
/// best node, `None` when there is none.
pub(crate) fn listed<'a>(
    mut ordered: selection::Ordered<'a>,
    client: &Client,
    max: usize,
    mut each: impl FnMut(&'a NodeCandidate, usize, &'a str),
) -> Option<&'a NodeCandidate> {
    let best = ordered.next()?;
    let ports = best.node.ports;
    let mut seen: Vec<&str> = Vec::with_capacity(max);
    let same_ports = std::iter::once(best).chain(ordered.filter(|s| s.node.ports == ports));
    'nodes: for scored in same_ports {
        for (k, endpoint) in scored.node.endpoints(client.platform).enumerate() {
            if seen.len() == max {
                break 'nodes;
            }
            if !seen.contains(&endpoint) {
                seen.push(endpoint);
                each(scored.node, k, endpoint);
            }
        }
    }
    Some(best.node)
}

/// The answer listing `nodes` on `ports`, with the configured domain, heartbeat and backoff.
pub(crate) fn goim_answer(
    config: &BalancerConfig,
    ports: Ports,
    nodes: Vec<String>,
    reason: Option<NoEligibleNode>,
) -> GoimAnswer {
    GoimAnswer {
        domain: config.httpdns_domain.clone(),
        tcp_port: ports.tcp,
        ws_port: ports.ws,
        wss_port: ports.wss,
        heartbeat: config.httpdns_heartbeat_secs,
        heartbeat_max: config.httpdns_heartbeat_max,
        nodes,
        backoff: Backoff {
            max_delay: config.httpdns_backoff_max_delay_secs,
            base_delay: config.httpdns_backoff_base_delay_secs,
            factor: config.httpdns_backoff_factor,
            jitter: config.httpdns_backoff_jitter,
        },
        reason,
    }
}
