//! Property tests of the balancer's promises over random snapshots: only eligible nodes, bounded answers,
//! determinism, distance dominance, and no weight-0 node.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use proptest::prelude::*;
use rim_balancer::{
    BalancerConfig, Client, GeoPoint, NodeCandidate, NodeState, Platform, Ports, answer, rank,
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
        prop::sample::select(vec![PORTS, Ports { tcp: 4101, ..PORTS }]),
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
    (1usize..8, 1u32..3_000, 1u64..120).prop_map(|(max_nodes, band_km, staleness_secs)| {
        BalancerConfig {
            httpdns_max_nodes: max_nodes,
            httpdns_distance_band_km: band_km,
            httpdns_node_staleness_secs: staleness_secs,
            ..BalancerConfig::default()
        }
    })
}

/// The eligibility rule restated independently of the crate's health module.
fn eligible(node: &NodeCandidate, config: &BalancerConfig) -> bool {
    let skew = match now().duration_since(node.last_seen) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    node.state == NodeState::Active
        && node.weight > 0
        && skew.as_secs_f64() <= config.httpdns_node_staleness_secs as f64
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
        }
        let goim = answer(&nodes, &client, now(), &config);
        let any_eligible = nodes.iter().any(|n| eligible(n, &config)
            && match client.platform {
                Platform::Web => !n.hostname.is_empty(),
                Platform::Native => !n.addresses.is_empty(),
            });
        if any_eligible {
            for endpoint in &goim.nodes {
                let node = owner(&nodes, endpoint);
                prop_assert!(node.is_some_and(|n| eligible(n, &config)), "{endpoint} answered");
            }
            prop_assert!(!goim.nodes.is_empty());
        } else {
            prop_assert_eq!(goim.nodes, vec![config.httpdns_domain.clone()]);
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
        region in prop::option::of(Just("sh".to_owned())), seed in prop::option::of(any::<u64>()),
    ) {
        let (da, db) = (at.distance_km(&a), at.distance_km(&b));
        prop_assume!(da != db);
        let (a_id, b_id) = if da < db { ("near", "far") } else { ("far", "near") };
        let mut nodes = others;
        nodes.push(twin(a_id, a, connections, weight));
        nodes.push(twin(b_id, b, connections, weight));
        let client = Client { location: Some(at), region, platform: Platform::Native, seed };
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
}
