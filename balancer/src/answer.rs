//! The goim-compatible HTTPDNS answer served at `GET /goim/nodes/weighted`.
//!
//! goim's answer carries one set of ports for all listed nodes, so the list holds only nodes that listen on the same
//! ports as the best node (rim's own ranked list carries ports per node and has no such limit). Native clients get
//! every address of each node in rank order, web clients the host names; duplicates are dropped and the list is cut
//! at `httpdns_max_nodes` entries. When no node is eligible the answer names the configured domain, as goim does,
//! so clients can still fall back to DNS.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::config::BalancerConfig;
use crate::discovery::NodeCandidate;
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

/// The goim HTTPDNS answer, field for field, so existing goim clients keep working.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoimAnswer {
    /// Fallback host name from configuration.
    pub domain: String,
    /// TCP port of the listed nodes.
    pub tcp_port: u16,
    /// WebSocket port of the listed nodes.
    pub ws_port: u16,
    /// WebSocket-over-TLS port of the listed nodes.
    pub wss_port: u16,
    /// Client heartbeat interval in seconds.
    pub heartbeat: u32,
    /// Missed heartbeats before the client reconnects.
    pub heartbeat_max: u32,
    /// Host names (web) or addresses (native) to try in order, best first.
    pub nodes: Vec<String>,
    /// Reconnect timing.
    pub backoff: Backoff,
}

/// Builds the goim answer for `client` from the snapshot `candidates` at time `now`. Pure: reading an answer
/// changes no state.
pub fn answer(
    candidates: &[NodeCandidate],
    client: &Client,
    now: SystemTime,
    config: &BalancerConfig,
) -> GoimAnswer {
    let ordered = selection::ordered(candidates, client, now, config);
    let (ports, nodes) = match ordered.first() {
        Some(best) => {
            let ports = best.node.ports;
            let mut nodes: Vec<String> = Vec::with_capacity(config.httpdns_max_nodes);
            let same_ports = ordered.iter().filter(|s| s.node.ports == ports);
            for endpoint in same_ports.flat_map(|s| selection::endpoints(s.node, client.platform)) {
                if nodes.len() == config.httpdns_max_nodes {
                    break;
                }
                if !nodes.iter().any(|n| n == endpoint) {
                    nodes.push(endpoint.to_owned());
                }
            }
            ((ports.tcp, ports.ws, ports.wss), nodes)
        }
        None => {
            let ports = (
                config.httpdns_tcp_port,
                config.httpdns_ws_port,
                config.httpdns_wss_port,
            );
            let fallback = Some(config.httpdns_domain.clone()).filter(|d| !d.is_empty());
            (ports, fallback.into_iter().collect())
        }
    };
    GoimAnswer {
        domain: config.httpdns_domain.clone(),
        tcp_port: ports.0,
        ws_port: ports.1,
        wss_port: ports.2,
        heartbeat: config.httpdns_heartbeat_secs,
        heartbeat_max: config.httpdns_heartbeat_max,
        nodes,
        backoff: Backoff {
            max_delay: config.httpdns_backoff_max_delay_secs,
            base_delay: config.httpdns_backoff_base_delay_secs,
            factor: config.httpdns_backoff_factor,
            jitter: config.httpdns_backoff_jitter,
        },
    }
}
