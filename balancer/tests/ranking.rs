//! Scenario tests of the ranking and of the goim answer: each one pins down one rule of the documented order.

mod common;

use std::time::Duration;

use common::*;
use rim_balancer::{BalancerConfig, NodeState, Platform, Ports, answer, rank};

#[test]
fn nearer_nodes_rank_first_and_scores_explain_it() {
    let nodes = [
        node("fra", "eu", FRANKFURT),
        node("bj", "bj", BEIJING),
        node("sh", "sh", SHANGHAI),
    ];
    let client = native_client(Some(SHANGHAI), None);
    let ranked = rank(&nodes, &client, now(), &BalancerConfig::default());
    assert_eq!(ids(&ranked), ["sh", "bj", "fra"]);
    assert_eq!(ranked[0].score.distance_km, Some(0.0));
    assert_eq!(ranked[0].score.distance_band, Some(0));
    let beijing_km = ranked[1].score.distance_km.unwrap();
    assert!((beijing_km - 1067.0).abs() < 10.0, "{beijing_km}");
    assert_eq!(ranked[1].score.distance_band, Some(3)); // 1067 km / 300 km bands
    assert!(ranked[2].score.distance_band > ranked[1].score.distance_band);
}

#[test]
fn load_decides_inside_a_band_but_never_across_bands() {
    let mut near_busy = node("near-busy", "sh", SHANGHAI);
    near_busy.connections = 100; // load 10 per weight unit
    let mut near_roomy = node("near-roomy", "sh", HANGZHOU); // ~165 km away: same 300 km band
    near_roomy.connections = 150;
    near_roomy.weight = 20; // load 7.5
    let far_idle = node("far-idle", "bj", BEIJING);
    let client = native_client(Some(SHANGHAI), None);
    let ranked = rank(
        &[far_idle, near_busy, near_roomy],
        &client,
        now(),
        &BalancerConfig::default(),
    );
    assert_eq!(ids(&ranked), ["near-roomy", "near-busy", "far-idle"]);
    assert_eq!(ranked[0].score.load, 7.5);
    assert_eq!(ranked[1].score.load, 10.0);
}

#[test]
fn bands_are_measured_from_the_nearest_eligible_node() {
    // Nearest node is ~1067 km away; a node ~165 km further is still in band 0 and, being emptier, wins.
    let client = native_client(Some(BEIJING), None);
    let mut sh = node("sh", "sh", SHANGHAI);
    sh.connections = 50;
    let hz = node("hz", "sh", HANGZHOU);
    let ranked = rank(&[sh, hz], &client, now(), &BalancerConfig::default());
    assert_eq!(ids(&ranked), ["hz", "sh"]);
    assert!(ranked.iter().all(|r| r.score.distance_band == Some(0)));
}

#[test]
fn region_hint_wins_inside_a_band() {
    let mut hinted = node("hinted", "sh", HANGZHOU);
    hinted.connections = 90;
    let other = node("other", "zj", SHANGHAI);
    let client = native_client(Some(SHANGHAI), Some("sh"));
    let ranked = rank(&[other, hinted], &client, now(), &BalancerConfig::default());
    assert_eq!(ids(&ranked), ["hinted", "other"]);
    assert!(ranked[0].score.region_match && !ranked[1].score.region_match);
}

#[test]
fn unknown_location_ranks_by_region_hint_then_load() {
    let loaded = |id: &str, region: &str, connections: u64| {
        let mut n = node(id, region, FRANKFURT);
        n.connections = connections;
        n
    };
    let nodes = [
        loaded("bj-busy", "bj", 50),
        loaded("sh-idle", "sh", 0),
        loaded("bj-idle", "bj", 5),
        loaded("sh-mid", "sh", 20),
    ];
    let hinted = rank(
        &nodes,
        &native_client(None, Some("bj")),
        now(),
        &BalancerConfig::default(),
    );
    assert_eq!(ids(&hinted), ["bj-idle", "bj-busy", "sh-idle", "sh-mid"]);
    assert!(
        hinted
            .iter()
            .all(|r| r.score.distance_km.is_none() && r.score.distance_band.is_none())
    );
    let unhinted = rank(
        &nodes,
        &native_client(None, None),
        now(),
        &BalancerConfig::default(),
    );
    assert_eq!(ids(&unhinted), ["sh-idle", "bj-idle", "sh-mid", "bj-busy"]);
}

#[test]
fn draining_dead_stale_and_weightless_nodes_are_never_answered() {
    let config = BalancerConfig::default();
    let mut draining = node("draining", "sh", SHANGHAI);
    draining.state = NodeState::Draining;
    let mut dead = node("dead", "sh", SHANGHAI);
    dead.state = NodeState::Dead;
    let mut stale = node("stale", "sh", SHANGHAI);
    stale.last_seen = now() - config.node_staleness() - Duration::from_secs(1);
    let mut weightless = node("weightless", "sh", SHANGHAI);
    weightless.weight = 0;
    let mut far_busy = node("far-busy", "eu", FRANKFURT);
    far_busy.connections = 1_000_000;
    let nodes = [draining, dead, stale, weightless, far_busy];
    let client = native_client(Some(SHANGHAI), Some("sh"));
    assert_eq!(ids(&rank(&nodes, &client, now(), &config)), ["far-busy"]);
    assert_eq!(
        answer(&nodes, &client, now(), &config).nodes,
        ["ip-far-busy"]
    );
}

#[test]
fn web_clients_get_host_names_and_native_clients_every_address_up_to_the_limit() {
    let mut nodes = Vec::new();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let mut n = node(id, "sh", SHANGHAI);
        n.connections = i as u64; // a, b, c in that order
        n.addresses = vec![format!("{id}-v4"), format!("{id}-v6")];
        nodes.push(n);
    }
    let config = BalancerConfig::default();
    let mut client = native_client(Some(SHANGHAI), None);
    assert_eq!(
        answer(&nodes, &client, now(), &config).nodes,
        ["a-v4", "a-v6", "b-v4", "b-v6", "c-v4"]
    );
    client.platform = Platform::Web;
    assert_eq!(
        answer(&nodes, &client, now(), &config).nodes,
        ["a.edge.test", "b.edge.test", "c.edge.test"]
    );
}

#[test]
fn nodes_without_anything_to_dial_for_the_platform_are_skipped_and_duplicates_dropped() {
    let mut no_address = node("no-address", "sh", SHANGHAI);
    no_address.addresses = vec![" ".into()];
    let mut shared_a = node("shared-a", "sh", SHANGHAI);
    shared_a.hostname = "edge.example.com".into();
    shared_a.connections = 1;
    let mut shared_b = shared_a.clone();
    shared_b.id = "shared-b".into();
    let nodes = [no_address, shared_a, shared_b];
    let config = BalancerConfig::default();
    let mut client = native_client(Some(SHANGHAI), None);
    assert_eq!(
        ids(&rank(&nodes, &client, now(), &config)),
        ["shared-a", "shared-b"]
    );
    client.platform = Platform::Web;
    assert_eq!(
        ids(&rank(&nodes, &client, now(), &config)),
        ["no-address", "shared-a", "shared-b"]
    );
    assert_eq!(
        answer(&nodes, &client, now(), &config).nodes,
        ["no-address.edge.test", "edge.example.com"]
    );
}

#[test]
fn goim_answer_lists_only_nodes_on_the_best_nodes_ports() {
    let best = node("best", "sh", SHANGHAI);
    let mut odd = node("odd", "sh", SHANGHAI);
    odd.ports = Ports { tcp: 4101, ..PORTS };
    odd.connections = 1;
    let mut same = node("same", "sh", SHANGHAI);
    same.connections = 2;
    let nodes = [odd, same, best];
    let client = native_client(Some(SHANGHAI), None);
    let config = BalancerConfig::default();
    assert_eq!(
        ids(&rank(&nodes, &client, now(), &config)),
        ["best", "odd", "same"]
    );
    let goim = answer(&nodes, &client, now(), &config);
    assert_eq!(goim.nodes, ["ip-best", "ip-same"]);
    assert_eq!(
        (goim.tcp_port, goim.ws_port, goim.wss_port),
        (PORTS.tcp, PORTS.ws, PORTS.wss)
    );
}

#[test]
fn answer_has_goims_json_shape_and_defaults() {
    let mut best = node("best", "sh", SHANGHAI);
    best.ports = Ports {
        tcp: 7001,
        ws: 7002,
        wss: 7003,
    };
    let config = BalancerConfig::default();
    let goim = answer(
        &[best],
        &native_client(Some(SHANGHAI), None),
        now(),
        &config,
    );
    let json = serde_json::to_value(&goim).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "domain": "localhost", "tcp_port": 7001, "ws_port": 7002, "wss_port": 7003,
            "heartbeat": 240, "heartbeat_max": 2, "nodes": ["ip-best"],
            "backoff": {"max_delay": 300, "base_delay": 3, "factor": 1.8, "jitter": 0.3}
        })
    );
    assert_eq!(
        serde_json::from_value::<rim_balancer::GoimAnswer>(json).unwrap(),
        goim
    );
}

#[test]
fn with_no_eligible_node_the_answer_falls_back_to_the_domain() {
    let mut dead = node("dead", "sh", SHANGHAI);
    dead.state = NodeState::Dead;
    let mut config = BalancerConfig {
        httpdns_domain: "conn.example.com".into(),
        ..BalancerConfig::default()
    };
    let client = native_client(None, None);
    let goim = answer(std::slice::from_ref(&dead), &client, now(), &config);
    assert_eq!(goim.nodes, ["conn.example.com"]);
    assert_eq!(
        (goim.tcp_port, goim.ws_port, goim.wss_port),
        (3101, 3102, 3103)
    );
    config.httpdns_domain.clear();
    assert!(answer(&[dead], &client, now(), &config).nodes.is_empty());
}

#[test]
fn seeds_spread_clients_over_exactly_equal_nodes_and_keep_each_client_stable() {
    let nodes: Vec<_> = (0..8)
        .map(|i| node(&format!("n{i}"), "sh", SHANGHAI))
        .collect();
    let config = BalancerConfig::default();
    let mut client = native_client(Some(SHANGHAI), None);
    assert_eq!(rank(&nodes, &client, now(), &config)[0].node_id, "n0");
    let mut firsts = std::collections::BTreeSet::new();
    for seed in 0..64 {
        client.seed = Some(seed);
        let first = rank(&nodes, &client, now(), &config)[0].node_id.clone();
        assert_eq!(rank(&nodes, &client, now(), &config)[0].node_id, first);
        firsts.insert(first);
    }
    assert!(firsts.len() >= 6, "64 seeds reached only {firsts:?}");
    // A seed never overrides load: the one busier node stays last.
    let mut nodes = nodes;
    nodes[3].connections = 1;
    let config = BalancerConfig {
        httpdns_max_nodes: 8,
        ..config
    };
    for seed in 0..64 {
        client.seed = Some(seed);
        let ranked = rank(&nodes, &client, now(), &config);
        assert_eq!(ranked.len(), 8);
        assert_eq!(ranked[7].node_id, "n3");
    }
}
