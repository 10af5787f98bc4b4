//! Selection: orders the eligible nodes from best to worst for one client, and says why.
//!
//! The order is lexicographic over a [`Score`], so every position can be explained field by field:
//!
//! 1. **distance band** (only when the client location is known): `floor((d - d_nearest) / band_km)`, where `d` is
//!    the great-circle distance from the client and `d_nearest` the distance of the nearest selectable node. Band 0
//!    holds the nearest node and everything less than `band_km` further; nearer bands always win, so distance
//!    dominates and a node next door beats one across a continent whatever their loads.
//! 2. **region match**: nodes in the client's hinted region first (goim's region bonus, made a preference instead of
//!    a ×1.6 weight).
//! 3. **load** = connections / weight, compared exactly (cross-multiplied integers): within a band and region, the
//!    node with the most spare weighted capacity wins. This spreads clients in proportion to weight, like goim's
//!    connection-share rule.
//! 4. **exact distance**: among equally loaded nodes, the nearer one.
//! 5. **tie-break**: a hash of (client seed, node id) when the caller gave a seed, then the node id; so answers are
//!    stable, and seeded clients spread over nodes that are otherwise exactly equal (e.g. all empty after a deploy).
//!
//! When the client location is unknown, 1 and 4 are absent and the order is region hint, then load, then tie-break.
//! Nothing here mutates anything: the same snapshot, client and time always give the same order.

use std::cmp::Ordering;
use std::time::SystemTime;

use serde::Serialize;

use crate::client::{Client, Platform};
use crate::config::BalancerConfig;
use crate::discovery::{NodeCandidate, Ports};
use crate::health;

/// Why a node ranks where it does; ranking compares these fields in the order listed in the module docs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Score {
    /// Distance bands beyond the nearest selectable node (0 = among the nearest); `None` if the client location is
    /// unknown.
    pub distance_band: Option<u32>,
    /// Great-circle distance from the client in km; `None` if the client location is unknown.
    pub distance_km: Option<f64>,
    /// The node is in the client's hinted region.
    pub region_match: bool,
    /// Connections at the node's last report.
    pub connections: u64,
    /// The node's weight (never 0 here: weight 0 nodes are not eligible).
    pub weight: u32,
    /// `connections / weight`, shown for humans; ranking compares the exact fraction.
    pub load: f64,
    /// Seeded tie-break hash, present only when the client supplied a seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tie_break: Option<u64>,
}

/// One entry of the ranked list served by rim's own API: a node, where to reach it, and its explained score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RankedNode {
    /// The node's id.
    pub node_id: String,
    /// The node's region.
    pub region: String,
    /// Host name (web clients) or addresses (native clients) to dial, never empty.
    pub endpoints: Vec<String>,
    /// Ports to dial on those endpoints.
    pub ports: Ports,
    /// Why the node is at this position.
    pub score: Score,
}

/// A selectable node with its score, borrowed from the caller's snapshot; the answer builder walks these.
pub(crate) struct Scored<'a> {
    pub(crate) node: &'a NodeCandidate,
    pub(crate) score: Score,
}

/// Ranks `candidates` for `client` at time `now`: eligible nodes only, best first, at most
/// `config.httpdns_max_nodes` of them. Pure: reading an answer changes no state.
pub fn rank(
    candidates: &[NodeCandidate],
    client: &Client,
    now: SystemTime,
    config: &BalancerConfig,
) -> Vec<RankedNode> {
    ordered(candidates, client, now, config)
        .into_iter()
        .take(config.httpdns_max_nodes)
        .map(|s| RankedNode {
            node_id: s.node.id.clone(),
            region: s.node.region.clone(),
            endpoints: endpoints(s.node, client.platform)
                .map(str::to_owned)
                .collect(),
            ports: s.node.ports,
            score: s.score,
        })
        .collect()
}

/// Every selectable node (eligible, with something to dial for the client's platform), best first.
pub(crate) fn ordered<'a>(
    candidates: &'a [NodeCandidate],
    client: &Client,
    now: SystemTime,
    config: &BalancerConfig,
) -> Vec<Scored<'a>> {
    let staleness = config.node_staleness();
    let selectable: Vec<(&NodeCandidate, Option<f64>)> = candidates
        .iter()
        .filter(|node| health::check(node, now, staleness).is_ok())
        .filter(|node| endpoints(node, client.platform).next().is_some())
        .map(|node| {
            (
                node,
                client.location.map(|at| at.distance_km(&node.location)),
            )
        })
        .collect();
    let nearest = selectable
        .iter()
        .filter_map(|(_, d)| *d)
        .min_by(f64::total_cmp);
    let band_km = f64::from(config.httpdns_distance_band_km);
    let mut scored: Vec<Scored<'a>> = selectable
        .into_iter()
        .map(|(node, distance_km)| Scored {
            node,
            score: Score {
                distance_band: distance_km
                    .zip(nearest)
                    .map(|(d, near)| ((d - near) / band_km).floor() as u32),
                distance_km,
                region_match: client.region.as_deref() == Some(node.region.as_str()),
                connections: node.connections,
                weight: node.weight,
                load: node.connections as f64 / f64::from(node.weight),
                tie_break: client.seed.map(|seed| tie_break(seed, &node.id)),
            },
        })
        .collect();
    scored.sort_by(compare);
    scored
}

/// What a client of `platform` can dial on `node`; blank entries in the registration are ignored.
pub(crate) fn endpoints(node: &NodeCandidate, platform: Platform) -> impl Iterator<Item = &str> {
    let all: &[String] = match platform {
        Platform::Web => std::slice::from_ref(&node.hostname),
        Platform::Native => &node.addresses,
    };
    all.iter().map(|e| e.trim()).filter(|e| !e.is_empty())
}

/// The ranking order documented at the top of this module.
fn compare(a: &Scored<'_>, b: &Scored<'_>) -> Ordering {
    let (x, y) = (&a.score, &b.score);
    x.distance_band
        .cmp(&y.distance_band)
        .then(y.region_match.cmp(&x.region_match))
        .then_with(|| {
            // connections / weight compared without rounding: a/b < c/d  <=>  a*d < c*b (weights are positive).
            (u128::from(x.connections) * u128::from(y.weight))
                .cmp(&(u128::from(y.connections) * u128::from(x.weight)))
        })
        .then_with(|| match (x.distance_km, y.distance_km) {
            (Some(dx), Some(dy)) => dx.total_cmp(&dy),
            _ => Ordering::Equal,
        })
        .then(x.tie_break.cmp(&y.tie_break))
        .then_with(|| a.node.id.cmp(&b.node.id))
}

/// A stable 64-bit hash of (seed, node id): FNV-1a over the bytes, then the splitmix64 finalizer so that nearby
/// seeds give unrelated orders. Written out rather than taken from `std` because std's hashers are not promised to
/// stay the same across Rust releases, and answers should not change with a compiler upgrade.
fn tie_break(seed: u64, node_id: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for byte in seed.to_le_bytes().iter().chain(node_id.as_bytes()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tie_break_depends_on_seed_and_node() {
        assert_eq!(tie_break(7, "a"), tie_break(7, "a"));
        assert_ne!(tie_break(7, "a"), tie_break(8, "a"));
        assert_ne!(tie_break(7, "a"), tie_break(7, "b"));
    }
}
