//! Scenario tests of the ranking and of the goim answer: each one pins down one rule of the documented order.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rim_balancer::{BalancerConfig, NodeCandidate, NodeState, Platform, Ports, answer, rank};

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
            "domain": "", "tcp_port": 7001, "ws_port": 7002, "wss_port": 7003,
            "heartbeat": 240, "heartbeat_max": 2, "nodes": ["ip-best"],
            "backoff": {"max_delay": 300, "base_delay": 3, "factor": 1.8, "jitter": 0.3}
        })
    );
    assert_eq!(
        serde_json::from_value::<rim_balancer::GoimAnswer>(json).unwrap(),
        goim
    );
}

/// How often each node comes first over `seeds` seeded answers, as a fraction.
fn first_choice_shares(
    nodes: &[NodeCandidate],
    seeds: std::ops::Range<u64>,
    config: &BalancerConfig,
) -> BTreeMap<String, f64> {
    let mut client = native_client(Some(SHANGHAI), Some("sh"));
    let mut counts = BTreeMap::new();
    let total = seeds.end - seeds.start;
    for seed in seeds {
        client.seed = Some(seed);
        let first = rank(nodes, &client, now(), config)[0].node_id.clone();
        *counts.entry(first).or_insert(0u64) += 1;
    }
    counts
        .into_iter()
        .map(|(id, n)| (id, n as f64 / total as f64))
        .collect()
}

fn assert_shares(shares: &BTreeMap<String, f64>, expected: &[(&str, f64)]) {
    for (id, want) in expected {
        let got = shares.get(*id).copied().unwrap_or(0.0);
        assert!(
            (got - want).abs() < 0.02,
            "{id}: {got} instead of {want} ({shares:?})"
        );
    }
}

#[test]
fn simultaneous_clients_split_over_idle_nodes_by_weight() {
    let weighted = |id: &str, weight: u32, at| {
        let mut n = node(id, "sh", at);
        n.weight = weight;
        n
    };
    // Same band (Hangzhou is ~165 km away), same region: only the weights differ. A Beijing node is further out.
    let nodes = [
        weighted("w10", 10, SHANGHAI),
        weighted("w20", 20, HANGZHOU),
        weighted("w70", 70, SHANGHAI),
        weighted("far", 1000, BEIJING),
    ];
    let shares = first_choice_shares(&nodes, 0..10_000, &BalancerConfig::default());
    assert_shares(
        &shares,
        &[("w10", 0.1), ("w20", 0.2), ("w70", 0.7), ("far", 0.0)],
    );
}

#[test]
fn loaded_nodes_get_their_share_of_free_capacity_and_overloaded_ones_none() {
    let loaded = |id: &str, connections: u64| {
        let mut n = node(id, "sh", SHANGHAI);
        n.connections = connections;
        n
    };
    // Weights 10, mean load 50, level 50 + 100: free capacities 1500 and 500.
    let config = BalancerConfig::default();
    let shares = first_choice_shares(
        &[loaded("idle", 0), loaded("busy", 1_000)],
        0..10_000,
        &config,
    );
    assert_shares(&shares, &[("idle", 0.75), ("busy", 0.25)]);
    // Mean load 250, level 350: the node at load 500 has no free capacity and always comes last.
    let nodes = [loaded("a", 0), loaded("b", 0), loaded("hot", 5_000)];
    let config = BalancerConfig {
        httpdns_max_nodes: 3,
        ..config
    };
    let mut client = native_client(Some(SHANGHAI), None);
    for seed in 0..1_000 {
        client.seed = Some(seed);
        let ranked = rank(&nodes, &client, now(), &config);
        assert_eq!(ranked[2].node_id, "hot");
        assert_eq!(ranked[2].score.free_capacity, 0.0);
        assert_eq!(ranked[2].score.draw, None);
    }
}

#[test]
fn a_seeded_answer_is_a_pure_function_of_snapshot_and_seed() {
    let nodes: Vec<_> = (0..8)
        .map(|i| node(&format!("n{i}"), "sh", SHANGHAI))
        .collect();
    let reversed: Vec<_> = nodes.iter().rev().cloned().collect();
    let config = BalancerConfig::default();
    let mut client = native_client(Some(SHANGHAI), None);
    assert_eq!(rank(&nodes, &client, now(), &config)[0].node_id, "n0");
    let mut orders = std::collections::BTreeSet::new();
    for seed in 0..64 {
        client.seed = Some(seed);
        let ranked = rank(&nodes, &client, now(), &config);
        assert_eq!(rank(&reversed, &client, now(), &config), ranked);
        assert_eq!(
            answer(&nodes, &client, now(), &config),
            answer(&reversed, &client, now(), &config)
        );
        orders.insert(ids(&ranked).join(","));
    }
    assert!(
        orders.len() > 60,
        "64 seeds gave only {} orders",
        orders.len()
    );
}

#[test]
fn a_killed_edge_leaves_the_answers_within_three_heartbeats() {
    let config = BalancerConfig::default();
    let heartbeat = Duration::from_millis(config.httpdns_edge_heartbeat_ms);
    assert_eq!(heartbeat * 3, Duration::from_secs(30));
    let client = native_client(Some(SHANGHAI), None);
    // The edge reported at now() and was killed right after; another edge keeps reporting.
    let answered_after = |silence: Duration, config: &BalancerConfig| {
        let killed = node("killed", "sh", SHANGHAI);
        let at = now() + silence;
        let mut alive = node("alive", "bj", BEIJING);
        alive.last_seen = at;
        ids(&rank(&[killed, alive], &client, at, config)).contains(&"killed")
    };
    assert!(answered_after(heartbeat * 2 + heartbeat / 2, &config));
    assert!(!answered_after(
        heartbeat * 3 + Duration::from_millis(1),
        &config
    ));
    let fast = BalancerConfig {
        httpdns_edge_heartbeat_ms: 1_000,
        httpdns_stale_heartbeats: 2,
        ..BalancerConfig::default()
    };
    assert!(answered_after(Duration::from_millis(1_900), &fast));
    assert!(!answered_after(Duration::from_millis(2_001), &fast));
}

#[test]
fn web_clients_get_the_host_name_or_address_and_the_real_ports() {
    let mut named = node("named", "sh", SHANGHAI);
    named.ports = Ports {
        tcp: 7001,
        ws: 7002,
        wss: 0,
    };
    let mut client = native_client(Some(SHANGHAI), None);
    client.platform = Platform::Web;
    let config = BalancerConfig::default();
    let goim = answer(std::slice::from_ref(&named), &client, now(), &config);
    assert_eq!(goim.nodes, ["named.edge.test"]);
    let json = serde_json::to_value(&goim).unwrap();
    assert_eq!(
        (json["tcp_port"].as_u64(), json["ws_port"].as_u64()),
        (Some(7001), Some(7002))
    );
    assert!(
        json.get("wss_port").is_none(),
        "no TLS, no wss_port: {json}"
    );
    let ranked =
        serde_json::to_value(rank(std::slice::from_ref(&named), &client, now(), &config)).unwrap();
    assert_eq!(
        ranked[0]["ports"],
        serde_json::json!({"tcp": 7001, "ws": 7002})
    );

    let mut nameless = named.clone();
    nameless.hostname = " ".into();
    nameless.addresses = vec!["".into(), "192.0.2.10".into()];
    assert_eq!(
        answer(&[nameless], &client, now(), &config).nodes,
        ["192.0.2.10"]
    );
}

#[test]
fn a_node_is_answered_only_to_clients_that_have_a_port_on_it() {
    let mut tcp_only = node("tcp-only", "sh", SHANGHAI);
    tcp_only.ports = Ports {
        tcp: 3101,
        ws: 0,
        wss: 0,
    };
    let mut wss_only = node("wss-only", "sh", SHANGHAI);
    wss_only.ports = Ports {
        tcp: 0,
        ws: 0,
        wss: 443,
    };
    let nodes = [tcp_only, wss_only];
    let config = BalancerConfig::default();
    let mut client = native_client(Some(SHANGHAI), None);
    assert_eq!(ids(&rank(&nodes, &client, now(), &config)), ["tcp-only"]);
    client.platform = Platform::Web;
    assert_eq!(ids(&rank(&nodes, &client, now(), &config)), ["wss-only"]);
    let goim = answer(&nodes, &client, now(), &config);
    assert_eq!((goim.tcp_port, goim.ws_port, goim.wss_port), (0, 0, 443));
}

#[test]
fn with_no_eligible_node_the_answer_is_empty_and_says_why() {
    let mut dead = node("dead", "sh", SHANGHAI);
    dead.state = NodeState::Dead;
    let mut drained = node("drained", "sh", SHANGHAI);
    drained.state = NodeState::Draining;
    let config = BalancerConfig {
        httpdns_domain: "conn.example.com".into(),
        ..BalancerConfig::default()
    };
    let client = native_client(None, None);
    let goim = answer(&[dead, drained], &client, now(), &config);
    assert!(goim.nodes.is_empty());
    let json = serde_json::to_value(&goim).unwrap();
    assert_eq!(json["domain"], "conn.example.com");
    assert_eq!(json["nodes"], serde_json::json!([]));
    for port in ["tcp_port", "ws_port", "wss_port"] {
        assert!(json.get(port).is_none(), "{port} advertised: {json}");
    }
    assert_eq!(
        json["reason"]["message"],
        "no eligible edge node among 2 known: 1 draining, 1 dead"
    );
    assert_eq!(
        (
            json["reason"]["dead"].as_u64(),
            json["reason"]["draining"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        serde_json::from_value::<rim_balancer::GoimAnswer>(json).unwrap(),
        goim
    );
    let nobody = answer(&[], &client, now(), &BalancerConfig::default());
    assert!(nobody.nodes.is_empty() && nobody.domain.is_empty());
    assert_eq!(nobody.reason.map(|r| r.known), Some(0));
}
