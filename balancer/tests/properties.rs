//! Property tests of the balancer's promises over random snapshots: only eligible, dialable nodes, bounded answers,
//! determinism (for a given seed), distance dominance, an empty answer only with a reason, and no weight-0 node.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use proptest::prelude::*;
use rim_balancer::{
    BalancerConfig, Client, GeoPoint, NodeCandidate, NodeState, Platform, Ports, Rankings, answer,
    rank,
};

fn geo_point() -> impl Strategy<Value = GeoPoint> {
    (-90.0..=90.0f64, -180.0..=180.0f64).prop_map(|(lat, lon)| GeoPoint::new(lat, lon).unwrap())
}

fn state() -> impl Strategy<Value = NodeState> {
    prop_oneof![
        3 => Just(NodeState::Active),
        1 => Just(NodeState::Draining),
        1 => Just(NodeState::Dead),
    ]
}

/// A random node; its endpoints embed its index so any endpoint in an answer names exactly one node.
fn candidate(index: usize) -> impl Strategy<Value = NodeCandidate> {
    (
        prop::sample::select(vec!["sh", "bj", "eu"]),
        geo_point(),
        any::<bool>(),
        0usize..3,
        prop::sample::select(vec![
            PORTS,
            Ports { tcp: 4101, ..PORTS },
            Ports { wss: 0, ..PORTS },
            Ports { tcp: 0, ..PORTS },
            Ports {
                ws: 0,
                wss: 0,
                ..PORTS
            },
        ]),
        0u32..5,
        0u64..1_000,
        state(),
        -150i64..150,
    )
        .prop_map(
            move |(
                region,
                location,
                has_hostname,
                address_count,
                ports,
                weight,
                connections,
                state,
                age_secs,
            )| {
                NodeCandidate {
                    id: format!("n{index}"),
                    region: region.to_owned(),
                    location,
                    hostname: if has_hostname {
                        format!("n{index}.edge.test")
                    } else {
                        String::new()
                    },
                    addresses: (0..address_count)
                        .map(|a| format!("ip-{index}-{a}"))
                        .collect(),
                    ports,
                    weight,
                    connections,
                    state,
                    last_seen: shifted(now(), age_secs),
                }
            },
        )
}

fn shifted(at: SystemTime, age_secs: i64) -> SystemTime {
    if age_secs >= 0 {
        at - Duration::from_secs(age_secs.unsigned_abs())
    } else {
        at + Duration::from_secs(age_secs.unsigned_abs())
    }
}

fn snapshot() -> impl Strategy<Value = Vec<NodeCandidate>> {
    (0usize..12).prop_flat_map(|n| (0..n).map(candidate).collect::<Vec<_>>())
}

fn client() -> impl Strategy<Value = Client> {
    (
        prop::option::of(geo_point()),
        prop::option::of(prop::sample::select(vec!["sh", "bj", "eu"])),
        prop::sample::select(vec![Platform::Web, Platform::Native]),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(location, region, platform, seed)| Client {
            location,
            region: region.map(str::to_owned),
            platform,
            seed,
        })
}

fn config() -> impl Strategy<Value = BalancerConfig> {
    (1usize..8, 1u32..3_000, 1u64..40_000, 1u32..6, 1u32..1_000).prop_map(
        |(max_nodes, band_km, heartbeat_ms, stale_heartbeats, headroom)| BalancerConfig {
            httpdns_max_nodes: max_nodes,
            httpdns_distance_band_km: band_km,
            httpdns_edge_heartbeat_ms: heartbeat_ms,
            httpdns_stale_heartbeats: stale_heartbeats,
            httpdns_headroom_per_weight: headroom,
            ..BalancerConfig::default()
        },
    )
}

/// The eligibility rule restated independently of the crate's health module.
fn eligible(node: &NodeCandidate, config: &BalancerConfig) -> bool {
    let skew = match now().duration_since(node.last_seen) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    node.state == NodeState::Active
        && node.weight > 0
        && skew.as_millis()
            <= u128::from(config.httpdns_edge_heartbeat_ms)
                * u128::from(config.httpdns_stale_heartbeats)
}

/// What a client of `platform` could use on the node, restated independently of the crate.
fn dialable(node: &NodeCandidate, platform: Platform) -> bool {
    let named = !node.hostname.is_empty();
    let addressed = !node.addresses.is_empty();
    match platform {
        Platform::Web => (named || addressed) && (node.ports.ws != 0 || node.ports.wss != 0),
        Platform::Native => addressed && node.ports.tcp != 0,
    }
}

/// The node owning an answered endpoint (endpoints embed the node index).
fn owner<'a>(nodes: &'a [NodeCandidate], endpoint: &str) -> Option<&'a NodeCandidate> {
    nodes
        .iter()
        .find(|n| n.hostname == endpoint || n.addresses.iter().any(|a| a == endpoint))
}

/// Two equally loaded, healthy nodes of one region at the given points.
fn twin(id: &str, location: GeoPoint, connections: u64, weight: u32) -> NodeCandidate {
    let mut n = node(id, "sh", SHANGHAI);
    n.location = location;
    n.connections = connections;
    n.weight = weight;
    n
}

proptest! {
    #[test]
    fn only_eligible_nodes_are_answered(nodes in snapshot(), client in client(), config in config()) {
        for ranked in rank(&nodes, &client, now(), &config) {
            let node = nodes.iter().find(|n| n.id == ranked.node_id).unwrap();
            prop_assert!(eligible(node, &config), "ineligible {node:?} ranked");
            prop_assert!(dialable(node, client.platform), "undialable {node:?} ranked");
        }
        let goim = answer(&nodes, &client, now(), &config);
        let any_answerable = nodes.iter().any(|n| eligible(n, &config) && dialable(n, client.platform));
        if any_answerable {
            for endpoint in &goim.nodes {
                let node = owner(&nodes, endpoint);
                prop_assert!(node.is_some_and(|n| eligible(n, &config)), "{endpoint} answered");
            }
            prop_assert!(!goim.nodes.is_empty());
            prop_assert!(goim.reason.is_none());
        } else {
            prop_assert!(goim.nodes.is_empty());
            prop_assert_eq!((goim.tcp_port, goim.ws_port, goim.wss_port), (0, 0, 0));
            let reason = goim.reason.unwrap();
            let excluded = reason.draining + reason.dead + reason.weightless + reason.stale + reason.undialable;
            prop_assert_eq!((reason.known, excluded), (nodes.len(), nodes.len()));
        }
    }

    #[test]
    fn answers_hold_at_most_max_nodes(nodes in snapshot(), client in client(), config in config()) {
        prop_assert!(rank(&nodes, &client, now(), &config).len() <= config.httpdns_max_nodes);
        prop_assert!(answer(&nodes, &client, now(), &config).nodes.len() <= config.httpdns_max_nodes);
    }

    #[test]
    fn same_input_same_output_whatever_the_input_order(
        nodes in snapshot(), client in client(), config in config()
    ) {
        let ranked = rank(&nodes, &client, now(), &config);
        let goim = answer(&nodes, &client, now(), &config);
        prop_assert_eq!(&rank(&nodes, &client, now(), &config), &ranked);
        prop_assert_eq!(&answer(&nodes, &client, now(), &config), &goim);
        let reversed: Vec<_> = nodes.iter().rev().cloned().collect();
        prop_assert_eq!(rank(&reversed, &client, now(), &config), ranked);
        prop_assert_eq!(answer(&reversed, &client, now(), &config), goim);
    }

    #[test]
    fn a_strictly_closer_node_with_equal_load_ranks_first(
        a in geo_point(), b in geo_point(), at in geo_point(),
        connections in 0u64..1_000, weight in 1u32..5, others in snapshot(), config in config(),
        region in prop::option::of(Just("sh".to_owned())),
    ) {
        let (da, db) = (at.distance_km(&a), at.distance_km(&b));
        prop_assume!(da != db);
        let (a_id, b_id) = if da < db { ("near", "far") } else { ("far", "near") };
        let mut nodes = others;
        nodes.push(twin(a_id, a, connections, weight));
        nodes.push(twin(b_id, b, connections, weight));
        // Without a seed: seeded clients are spread at random inside a band on purpose.
        let client = Client { location: Some(at), region, platform: Platform::Native, seed: None };
        let config = BalancerConfig { httpdns_max_nodes: 64, ..config };
        let ranked = rank(&nodes, &client, now(), &config);
        let order = ids(&ranked);
        let position = |id: &str| order.iter().position(|o| *o == id);
        prop_assert!(position("near").is_some_and(|n| position("far").is_some_and(|f| n < f)), "{order:?}");
    }

    #[test]
    fn a_node_next_door_beats_one_5000_km_away_whatever_the_loads(
        at in geo_point(), offset_bearing in 0.0..360.0f64, offset_km in 0.0..1.0f64, far_bearing in 0.0..360.0f64,
        near_load in (0u64..1_000_000, 1u32..100), far_load in (0u64..1_000_000, 1u32..100),
        band_km in 1u32..4_000, seed in prop::option::of(any::<u64>()),
    ) {
        let mut near = twin("near", travel(at, offset_bearing, offset_km), near_load.0, near_load.1);
        near.region = "elsewhere".into();
        let far = twin("far", travel(at, far_bearing, 5_000.0), far_load.0, far_load.1);
        let client = Client { location: Some(at), region: Some("sh".into()), platform: Platform::Native, seed };
        let config = BalancerConfig { httpdns_distance_band_km: band_km, ..BalancerConfig::default() };
        let ranked = rank(&[far, near], &client, now(), &config);
        prop_assert_eq!(ids(&ranked), ["near", "far"]);
    }

    #[test]
    fn a_seeded_first_choice_is_always_from_the_best_group(
        nodes in snapshot(), client in client(), seed in any::<u64>(), config in config()
    ) {
        let unseeded = rank(&nodes, &Client { seed: None, ..client.clone() }, now(), &config);
        let seeded = rank(&nodes, &Client { seed: Some(seed), ..client }, now(), &config);
        prop_assert_eq!(seeded.len(), unseeded.len());
        if let (Some(best), Some(first)) = (unseeded.first(), seeded.first()) {
            prop_assert_eq!(first.score.distance_band, best.score.distance_band);
            prop_assert_eq!(first.score.region_match, best.score.region_match);
        }
    }

    #[test]
    fn weight_0_nodes_are_never_returned(
        nodes in snapshot(), zeroed in prop::collection::vec(any::<bool>(), 12), client in client(), config in config()
    ) {
        let nodes: Vec<_> = nodes.into_iter().zip(zeroed).map(|(mut n, zero)| {
            if zero { n.weight = 0; }
            n
        }).collect();
        for ranked in rank(&nodes, &client, now(), &config) {
            prop_assert!(nodes.iter().any(|n| n.id == ranked.node_id && n.weight > 0));
        }
        for endpoint in answer(&nodes, &client, now(), &config).nodes {
            prop_assert!(owner(&nodes, &endpoint).is_none_or(|n| n.weight > 0), "{endpoint}");
        }
    }

    #[test]
    fn precomputed_rankings_answer_exactly_as_the_direct_computation(
        nodes in snapshot(), client in client(), config in config(), later_secs in -200i64..200
    ) {
        // Built at one moment and asked at another (inside or outside the verdicts' interval).
        let rankings = Rankings::new(nodes.clone(), now(), &config);
        for at in [now(), shifted(now(), later_secs)] {
            prop_assert_eq!(rankings.answer(&client, at), answer(&nodes, &client, at, &config));
            prop_assert_eq!(rankings.rank(&client, at), rank(&nodes, &client, at, &config));
        }
    }

    #[test]
    fn precomputed_json_is_byte_for_byte_the_serialized_answer(
        nodes in snapshot(), client in client(), config in config(), later_secs in -200i64..200,
        escaped in any::<bool>(), max_nodes in 0usize..8,
    ) {
        // Endpoints and domain that need escaping, and any list length (0 included).
        let mut nodes = nodes;
        let mut config = BalancerConfig { httpdns_max_nodes: max_nodes, ..config };
        if escaped {
            config.httpdns_domain = "conn \"q\" \\ \u{e9}\u{1}.test".into();
            for node in &mut nodes {
                node.hostname = node.hostname.replace("edge", "\"edge\"\t\u{e9}");
                for address in &mut node.addresses {
                    address.push_str("\\\u{7f}");
                }
            }
        }
        let rankings = Rankings::new(nodes.clone(), now(), &config);
        for at in [now(), shifted(now(), later_secs)] {
            let mut json = b"prefix".to_vec();
            rankings.answer_json(&client, at, &mut json);
            let expected = serde_json::to_vec(&answer(&nodes, &client, at, &config)).unwrap();
            prop_assert_eq!(
                String::from_utf8_lossy(&json[6..]), String::from_utf8_lossy(&expected)
            );
            prop_assert_eq!(&json[..6], b"prefix");
        }
    }

    #[test]
    fn rankings_are_current_exactly_while_no_health_verdict_changes(
        nodes in snapshot(), config in config(), later_secs in -200i64..200
    ) {
        let rankings = Rankings::new(nodes.clone(), now(), &config);
        let at = shifted(now(), later_secs);
        let verdicts = |t: SystemTime| -> Vec<bool> {
            let staleness = config.node_staleness();
            nodes.iter().map(|n| {
                let skew = t.duration_since(n.last_seen).unwrap_or_else(|e| e.duration());
                n.state == NodeState::Active && n.weight > 0 && skew <= staleness
            }).collect()
        };
        prop_assert!(rankings.is_current(now()));
        if rankings.is_current(at) {
            prop_assert_eq!(verdicts(at), verdicts(now()));
        }
    }
}
