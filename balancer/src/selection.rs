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
//!
//! Nodes equal on 1 and 2 form a group, inside which:
//!
//! 3. **draw** (seeded clients): a weighted random order in proportion to free weighted capacity, described in
//!    the `spread` module; nodes without free capacity come after those with.
//! 4. **load** = connections / weight, compared exactly (cross-multiplied integers): the whole order for clients
//!    without a seed (operators' explanations, tests), and among undrawn nodes.
//! 5. **exact distance**, then the **node id**, so equal inputs always give the same order.
//!
//! When the client location is unknown, 1 and 5's distance are absent. Nothing here mutates anything: the same
//! snapshot, client (seed included) and time always give the same order.

use std::cmp::Ordering;
use std::time::SystemTime;

use serde::Serialize;

use crate::client::Client;
use crate::config::BalancerConfig;
use crate::discovery::{NodeCandidate, Ports};
use crate::health;
use crate::spread::{self, GroupLoad};

/// Why a node ranks where it does; ranking compares these fields in the order listed in the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
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
    /// Share of the next arrivals this node should take to even out its group, in connections (see
    /// the `spread` module); the weight of its draw.
    pub free_capacity: f64,
    /// Place in the seeded race, smaller first; absent without a seed or without free capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draw: Option<f64>,
}

/// One entry of the ranked list served by rim's own API: a node, where to reach it, and its explained score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RankedNode {
    /// The node's id.
    pub node_id: String,
    /// The node's region.
    pub region: String,
    /// What to dial (host name or addresses for web clients, addresses for native ones), never empty.
    pub endpoints: Vec<String>,
    /// Ports to dial on those endpoints; ports where nothing listens are 0 and left out of the JSON.
    pub ports: Ports,
    /// Why the node is at this position.
    pub score: Score,
}

/// A selectable node with its score, borrowed from the caller's snapshot; the answer builder walks these.
#[derive(Clone, Copy)]
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
    ranked(ordered(candidates, client, now, config), client, config)
}

/// The ranked list from nodes in their final order.
pub(crate) fn ranked(
    ordered: Ordered<'_>,
    client: &Client,
    config: &BalancerConfig,
) -> Vec<RankedNode> {
    ordered
        .take(config.httpdns_max_nodes)
        .map(|s| RankedNode {
            node_id: s.node.id.clone(),
            region: s.node.region.clone(),
            endpoints: s
                .node
                .endpoints(client.platform)
                .map(str::to_owned)
                .collect(),
            ports: s.node.ports,
            score: s.score,
        })
        .collect()
}

/// Every selectable node (eligible, and dialable by the client's platform), best first.
///
/// Per-request work is kept small (HTTPDNS must answer ~100,000 times per second per core): one pass scores every
/// node and one sort puts the groups in order, but a group is spread and sorted internally only when the caller's
/// iteration reaches it, so an answer of five nodes usually draws only in the nearest group. The precomputed
/// [`Rankings`](crate::Rankings) skip even the pass and the sort for clients without a location.
pub(crate) fn ordered<'a>(
    candidates: &'a [NodeCandidate],
    client: &Client,
    now: SystemTime,
    config: &BalancerConfig,
) -> Ordered<'a> {
    let staleness = config.node_staleness();
    let selectable = candidates.iter().filter(|node| {
        health::check(node, now, staleness).is_ok() && node.dialable(client.platform)
    });
    grouped(selectable, client, config)
}

/// Scores `selectable` nodes for `client` and puts their groups in order (steps 1 and 2).
pub(crate) fn grouped<'a>(
    selectable: impl Iterator<Item = &'a NodeCandidate>,
    client: &Client,
    config: &BalancerConfig,
) -> Ordered<'a> {
    let mut scored: Vec<Scored<'a>> = selectable.map(|node| scored(node, client)).collect();
    let nearest = scored
        .iter()
        .filter_map(|s| s.score.distance_km)
        .min_by(f64::total_cmp);
    let band_km = f64::from(config.httpdns_distance_band_km);
    for s in &mut scored {
        s.score.distance_band = s
            .score
            .distance_km
            .zip(nearest)
            .map(|(d, near)| ((d - near) / band_km).floor() as u32);
    }
    scored.sort_unstable_by(compare_groups);
    presorted(scored, client.seed, config)
}

/// `node`'s score for `client` before its group is known (no band, no free capacity, no draw yet).
fn scored<'a>(node: &'a NodeCandidate, client: &Client) -> Scored<'a> {
    Scored {
        node,
        score: Score {
            distance_band: None,
            distance_km: client.location.map(|at| at.distance_km(&node.location)),
            region_match: client.region.as_deref() == Some(node.region.as_str()),
            connections: node.connections,
            weight: node.weight,
            load: node.connections as f64 / f64::from(node.weight),
            free_capacity: 0.0,
            draw: None,
        },
    }
}

/// Selectable nodes whose groups are already in order (as [`grouped`] leaves them), to be finished group by
/// group for a client with `seed`.
pub(crate) fn presorted<'a>(
    scored: Vec<Scored<'a>>,
    seed: Option<u64>,
    config: &BalancerConfig,
) -> Ordered<'a> {
    Ordered {
        scored,
        next: 0,
        ready: 0,
        seed,
        headroom_per_weight: config.httpdns_headroom_per_weight,
    }
}

/// The selectable nodes in group order, each group put in its final order when iteration reaches it.
pub(crate) struct Ordered<'a> {
    scored: Vec<Scored<'a>>,
    /// Position of the next node to yield.
    next: usize,
    /// Nodes before this position are in their final order.
    ready: usize,
    seed: Option<u64>,
    headroom_per_weight: u32,
}

impl<'a> Iterator for Ordered<'a> {
    type Item = Scored<'a>;

    fn next(&mut self) -> Option<Scored<'a>> {
        if self.next == self.ready {
            self.finish_next_group();
        }
        let scored = *self.scored.get(self.next)?;
        self.next += 1;
        Some(scored)
    }
}

impl<'a> Ordered<'a> {
    /// The nodes with their groups in order (for precomputing; nothing drawn yet).
    pub(crate) fn into_scored(self) -> Vec<Scored<'a>> {
        self.scored
    }

    /// Spreads and sorts the group that starts at `ready`.
    fn finish_next_group(&mut self) {
        let rest = &mut self.scored[self.ready..];
        let Some(first) = rest.first() else {
            return;
        };
        let len = rest
            .iter()
            .take_while(|s| compare_groups(first, s).is_eq())
            .count();
        let group = &mut rest[..len];
        spread_group(group, self.seed, self.headroom_per_weight);
        group.sort_unstable_by(compare_within_group);
        self.ready += len;
    }
}

/// Fills in free capacity and, for a seeded client, the draw of every node of one group.
fn spread_group(group: &mut [Scored<'_>], seed: Option<u64>, headroom_per_weight: u32) {
    let mut load = GroupLoad::default();
    for s in group.iter() {
        load.add(s.score.connections, s.score.weight);
    }
    for s in group.iter_mut() {
        let free = load.free_capacity(s.score.connections, s.score.weight, headroom_per_weight);
        s.score.free_capacity = free;
        s.score.draw = seed.and_then(|seed| spread::draw(seed, &s.node.id, free));
    }
}

/// Steps 1 and 2 of the documented order: which group a node is in, nearer and region-matching groups first.
fn compare_groups(a: &Scored<'_>, b: &Scored<'_>) -> Ordering {
    let (x, y) = (&a.score, &b.score);
    x.distance_band
        .cmp(&y.distance_band)
        .then(y.region_match.cmp(&x.region_match))
}

/// Steps 3 to 5 of the documented order, inside one group.
fn compare_within_group(a: &Scored<'_>, b: &Scored<'_>) -> Ordering {
    let (x, y) = (&a.score, &b.score);
    let drawn = match (x.draw, y.draw) {
        (Some(dx), Some(dy)) => dx.total_cmp(&dy),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    drawn
        .then_with(|| {
            // connections / weight compared without rounding: a/b < c/d  <=>  a*d < c*b (weights are positive).
            (u128::from(x.connections) * u128::from(y.weight))
                .cmp(&(u128::from(y.connections) * u128::from(x.weight)))
        })
        .then_with(|| match (x.distance_km, y.distance_km) {
            (Some(dx), Some(dy)) => dx.total_cmp(&dy),
            _ => Ordering::Equal,
        })
        .then_with(|| a.node.id.cmp(&b.node.id))
}
