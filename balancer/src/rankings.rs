//! Rankings: what every answer for one node snapshot has in common, computed once per snapshot so
//! that a request only does what depends on the request.
//!
//! An answer depends on the snapshot, the time (through the health gate's staleness bound), the
//! client (platform, location, region hint) and its seed. [`Rankings::new`] takes the snapshot and
//! the time and precomputes, per platform:
//!
//! - the **selectable** nodes (eligible and dialable), and why an answer would be empty;
//! - for clients **without a location** (the common case of a client that sends nothing and is
//!   not found by GeoIP), the full group order for each region hint a node has, and for any other
//!   hint: this is steps 1 and 2 of the `selection` order, which for such clients depends on the
//!   region hint only.
//!
//! A request then only spreads its nearest group(s) with its seed (the per-request part of the
//! order), or, for a located client, scores the precomputed selectable nodes by distance. The
//! health verdicts hold for an interval of time around the build ([`Rankings::is_current`]); an
//! answer asked outside it is computed from scratch, so precomputing never changes an answer:
//! [`Rankings::answer`] equals [`crate::answer()`] for the same snapshot, client and time.
//!
//! The JSON of an answer is precomputed in pieces too: what every answer shares (domain,
//! heartbeat, backoff) and, per node, its ports and each endpoint as a JSON string, so
//! [`Rankings::answer_json`] only concatenates the pieces of the nodes the request's order lists,
//! byte for byte what serializing [`Rankings::answer`] gives.
//!
//! [`RankingCache`] keeps the rankings of the latest snapshot behind an [`ArcSwapOption`]: a
//! request reads them without a lock, and the first request that sees a new snapshot (or time
//! past the interval) builds new rankings and swaps them in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;

use crate::answer::{GoimAnswer, answer_from, goim_answer, listed};
use crate::client::{Client, Platform};
use crate::config::BalancerConfig;
use crate::discovery::{NodeCandidate, NodeState, Ports};
use crate::health::{self, NoEligibleNode};
use crate::selection::{self, RankedNode, Score, Scored};

/// The precomputed order for clients without a location and one region hint.
struct Order {
    /// (index into the candidates, score without free capacity or draw), groups in order.
    scored: Vec<(usize, Score)>,
}

/// What is precomputed for one platform.
struct PlatformTable {
    /// Indices of the selectable nodes.
    selectable: Vec<usize>,
    /// Why an answer for this platform is empty, when `selectable` is.
    why_empty: NoEligibleNode,
    /// Orders for location-less clients whose region hint is a region some selectable node is in.
    by_region: HashMap<String, Order>,
    /// The order for location-less clients with any other hint, or none.
    no_region: Order,
}

/// The answers' common part for one node snapshot; see the module docs.
pub struct Rankings {
    candidates: Vec<NodeCandidate>,
    config: BalancerConfig,
    /// The health verdicts hold from here ...
    valid_from: Option<SystemTime>,
    /// ... to here (both inclusive; `None`: unbounded).
    valid_until: Option<SystemTime>,
    native: PlatformTable,
    web: PlatformTable,
    json: AnswerJson,
}

/// The JSON pieces of the answers (see the module docs).
struct AnswerJson {
    /// `{"domain":"…"`
    head: Vec<u8>,
    /// `,"heartbeat":…,"heartbeat_max":…,"nodes":[`
    middle: Vec<u8>,
    /// `],"backoff":{…}}`
    tail: Vec<u8>,
    /// Per candidate, in snapshot order.
    nodes: Vec<NodeJson>,
}

/// One candidate's JSON pieces.
struct NodeJson {
    /// Its ports as answer fields (`,"tcp_port":…`; ports where nothing listens left out).
    ports: Vec<u8>,
    /// Each endpoint for native clients as a JSON string, in [`NodeCandidate::endpoints`] order.
    native: Vec<Vec<u8>>,
    /// The same for web clients.
    web: Vec<Vec<u8>>,
}

impl Rankings {
    /// Precomputes the answers' common part for `candidates` at time `now` under `config`.
    pub fn new(candidates: Vec<NodeCandidate>, now: SystemTime, config: &BalancerConfig) -> Self {
        let (valid_from, valid_until) = verdict_interval(&candidates, now, config.node_staleness());
        let native = PlatformTable::new(&candidates, Platform::Native, now, config);
        let web = PlatformTable::new(&candidates, Platform::Web, now, config);
        let json = AnswerJson::new(&candidates, config);
        Self {
            candidates,
            config: config.clone(),
            valid_from,
            valid_until,
            native,
            web,
            json,
        }
    }

    /// The snapshot these rankings were built from.
    pub fn candidates(&self) -> &[NodeCandidate] {
        &self.candidates
    }

    /// Whether the precomputed health verdicts still hold at `now`.
    pub fn is_current(&self, now: SystemTime) -> bool {
        self.valid_from.is_none_or(|from| now >= from)
            && self.valid_until.is_none_or(|until| now <= until)
    }

    /// The goim answer for `client` at `now`: the same as [`crate::answer()`] over the snapshot.
    pub fn answer(&self, client: &Client, now: SystemTime) -> GoimAnswer {
        if !self.is_current(now) {
            return crate::answer(&self.candidates, client, now, &self.config);
        }
        let table = self.table(client.platform);
        let why = || table.why_empty.clone();
        answer_from(self.ordered(table, client), why, client, &self.config)
    }

    /// Appends the JSON of [`Rankings::answer`] for `client` at `now` to `out`, byte for byte what
    /// serializing that answer gives, from the precomputed pieces.
    pub fn answer_json(&self, client: &Client, now: SystemTime, out: &mut Vec<u8>) {
        if !self.is_current(now) {
            return json_into(out, &self.answer(client, now));
        }
        let table = self.table(client.platform);
        let json = &self.json;
        let max = self.config.httpdns_max_nodes;
        let mut endpoints: Vec<&[u8]> = Vec::with_capacity(max);
        let best = listed(self.ordered(table, client), client, max, |node, k, _| {
            let pieces = &json.nodes[index_of(&self.candidates, node)];
            let strings = match client.platform {
                Platform::Native => &pieces.native,
                Platform::Web => &pieces.web,
            };
            endpoints.push(&strings[k]);
        });
        let Some(best) = best else {
            // Nothing to list: the answer says why (rare, so simply serialized).
            return json_into(out, &self.answer(client, now));
        };
        out.extend_from_slice(&json.head);
        out.extend_from_slice(&json.nodes[index_of(&self.candidates, best)].ports);
        out.extend_from_slice(&json.middle);
        for (i, endpoint) in endpoints.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(endpoint);
        }
        out.extend_from_slice(&json.tail);
    }

    /// rim's explained ranking for `client` at `now`: the same as [`crate::rank()`] over the snapshot.
    pub fn rank(&self, client: &Client, now: SystemTime) -> Vec<RankedNode> {
        if !self.is_current(now) {
            return crate::rank(&self.candidates, client, now, &self.config);
        }
        let table = self.table(client.platform);
        selection::ranked(self.ordered(table, client), client, &self.config)
    }

    fn table(&self, platform: Platform) -> &PlatformTable {
        match platform {
            Platform::Native => &self.native,
            Platform::Web => &self.web,
        }
    }

    fn ordered<'a>(&'a self, table: &PlatformTable, client: &Client) -> selection::Ordered<'a> {
        if client.location.is_some() {
            let selectable = table.selectable.iter().map(|&i| &self.candidates[i]);
            return selection::grouped(selectable, client, &self.config);
        }
        let order = client
            .region
            .as_deref()
            .and_then(|region| table.by_region.get(region))
            .unwrap_or(&table.no_region);
        let scored = order
            .scored
            .iter()
            .map(|&(i, score)| Scored {
                node: &self.candidates[i],
                score,
            })
            .collect();
        selection::presorted(scored, client.seed, &self.config)
    }
}

impl AnswerJson {
    fn new(candidates: &[NodeCandidate], config: &BalancerConfig) -> Self {
        let template = goim_answer(config, Ports::default(), Vec::new(), None);
        let mut head = b"{\"domain\":".to_vec();
        json_into(&mut head, &template.domain);
        let mut middle = b",\"heartbeat\":".to_vec();
        json_into(&mut middle, &template.heartbeat);
        middle.extend_from_slice(b",\"heartbeat_max\":");
        json_into(&mut middle, &template.heartbeat_max);
        middle.extend_from_slice(b",\"nodes\":[");
        let mut tail = b"],\"backoff\":".to_vec();
        json_into(&mut tail, &template.backoff);
        tail.push(b'}');
        let nodes = candidates
            .iter()
            .map(|node| {
                let mut ports = Vec::new();
                for (name, port) in [
                    ("tcp_port", node.ports.tcp),
                    ("ws_port", node.ports.ws),
                    ("wss_port", node.ports.wss),
                ] {
                    if port != 0 {
                        ports.extend_from_slice(b",\"");
                        ports.extend_from_slice(name.as_bytes());
                        ports.extend_from_slice(b"\":");
                        json_into(&mut ports, &port);
                    }
                }
                let strings = |platform| {
                    node.endpoints(platform)
                        .map(|endpoint| {
                            let mut string = Vec::new();
                            json_into(&mut string, endpoint);
                            string
                        })
                        .collect()
                };
                NodeJson {
                    ports,
                    native: strings(Platform::Native),
                    web: strings(Platform::Web),
                }
            })
            .collect();
        Self {
            head,
            middle,
            tail,
            nodes,
        }
    }
}

/// Appends `value`'s JSON to `out`. Used on answers and their parts, made of strings, numbers and
/// structs of them, which always serialize (into a `Vec`, which takes any write).
fn json_into(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    if let Err(error) = serde_json::to_writer(&mut *out, value) {
        unreachable!("an HTTPDNS answer did not serialize: {error}");
    }
}

impl PlatformTable {
    fn new(
        candidates: &[NodeCandidate],
        platform: Platform,
        now: SystemTime,
        config: &BalancerConfig,
    ) -> Self {
        let staleness = config.node_staleness();
        let selectable: Vec<usize> = candidates
            .iter()
            .enumerate()
            .filter(|(_, node)| {
                health::check(node, now, staleness).is_ok() && node.dialable(platform)
            })
            .map(|(i, _)| i)
            .collect();
        let order = |region: Option<&str>| {
            let client = Client {
                location: None,
                region: region.map(str::to_owned),
                platform,
                seed: None,
            };
            let nodes = selectable.iter().map(|&i| &candidates[i]);
            let grouped = selection::grouped(nodes, &client, config);
            Order {
                scored: grouped
                    .into_scored()
                    .into_iter()
                    .map(|s| (index_of(candidates, s.node), s.score))
                    .collect(),
            }
        };
        let mut by_region = HashMap::new();
        for &i in &selectable {
            let region = candidates[i].region.as_str();
            if !by_region.contains_key(region) {
                by_region.insert(region.to_owned(), order(Some(region)));
            }
        }
        Self {
            why_empty: NoEligibleNode::tally(candidates, platform, now, staleness),
            no_region: order(None),
            by_region,
            selectable,
        }
    }
}

/// The position of `node`, which borrows from `candidates`, in `candidates`.
fn index_of(candidates: &[NodeCandidate], node: &NodeCandidate) -> usize {
    let offset = (node as *const NodeCandidate).addr() - candidates.as_ptr().addr();
    offset / std::mem::size_of::<NodeCandidate>()
}

/// The interval around `now` in which no node's health verdict changes: an active, weighted node is
/// eligible while `now` is within `staleness` of its last report, so each such node's report
/// splits time at `last_seen ± staleness`.
fn verdict_interval(
    candidates: &[NodeCandidate],
    now: SystemTime,
    staleness: Duration,
) -> (Option<SystemTime>, Option<SystemTime>) {
    let tick = Duration::from_nanos(1);
    let (mut from, mut until): (Option<SystemTime>, Option<SystemTime>) = (None, None);
    let mut later = |t: Option<SystemTime>| {
        if let Some(t) = t {
            from = Some(from.map_or(t, |f| f.max(t)));
        }
    };
    let mut ends: Vec<Option<SystemTime>> = Vec::new();
    for node in candidates {
        if node.state != NodeState::Active || node.weight == 0 {
            continue; // ineligible whatever the time
        }
        let opens = node.last_seen.checked_sub(staleness);
        let closes = node.last_seen.checked_add(staleness);
        match (opens, closes) {
            // Eligible: until its report ages out.
            _ if health::check(node, now, staleness).is_ok() => {
                later(opens);
                ends.push(closes);
            }
            // Stale, its report in the past: stale for good.
            (_, Some(closes)) if now > closes => later(closes.checked_add(tick)),
            // Stale, its report too far in the future: until now comes within reach.
            (Some(opens), _) => ends.push(opens.checked_sub(tick)),
            _ => {}
        }
    }
    for end in ends.into_iter().flatten() {
        until = Some(until.map_or(end, |u| u.min(end)));
    }
    (from, until)
}

/// The rankings of the latest snapshot, shared by every request; see the module docs.
pub struct RankingCache<S> {
    current: ArcSwapOption<Cached<S>>,
}

/// Rankings and the snapshot they were built from.
pub struct Cached<S> {
    source: Arc<S>,
    rankings: Rankings,
}

impl<S> Cached<S> {
    /// The rankings.
    pub fn rankings(&self) -> &Rankings {
        &self.rankings
    }
}

impl<S> Default for RankingCache<S> {
    fn default() -> Self {
        Self {
            current: ArcSwapOption::empty(),
        }
    }
}

impl<S> RankingCache<S> {
    /// The rankings of `source` at `now`: the cached ones if they were built from this very
    /// snapshot (same `Arc`) and still hold at `now`, else new ones from `candidates(source)`,
    /// which replace them.
    pub fn get(
        &self,
        source: &Arc<S>,
        now: SystemTime,
        config: &BalancerConfig,
        candidates: impl FnOnce(&S) -> Vec<NodeCandidate>,
    ) -> Arc<Cached<S>> {
        if let Some(cached) = self.current.load_full()
            && Arc::ptr_eq(&cached.source, source)
            && cached.rankings.is_current(now)
        {
            return cached;
        }
        let fresh = Arc::new(Cached {
            source: source.clone(),
            rankings: Rankings::new(candidates(source), now, config),
        });
        self.current.store(Some(fresh.clone()));
        fresh
    }
}
