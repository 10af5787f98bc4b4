//! Restart hygiene and the sweeper through the edge and admin APIs: a new boot id ends the sessions
//! of the node's previous life, a stopped edge is dead at once, an admin's drain lasts across
//! restarts until lifted, and of several instances on one database one sweeps at a time.

mod common;

use common::*;
use reqwest::Method;
use rim_bus::memory::MemoryBus;
use rim_control::ControlConfig;
use rim_proto::schema::NodeHeartbeat;
use rim_store::Store;
use rim_store::postgres::PostgresStore;
use rim_testkit::postgres::TestPostgres;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn harness() -> Harness {
    start(config(), memory_store(), Arc::new(MemoryBus::new(1_000))).await
}

/// Pushes to user 1; answers the report.
async fn push_to_user_1(h: &Harness) -> Value {
    let (status, body) = Harness::call(
        h.with_key(Method::POST, "/v1/push/users", ADMIN_KEY)
            .json(&json!({"operation": 1000, "mids": [1], "body_text": "x"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body
}

/// The state of a node as `/v1/nodes` lists it.
async fn state_of(h: &Harness, node_id: &str) -> String {
    let (_, nodes) = Harness::call(h.with_key(Method::GET, "/v1/nodes", ADMIN_KEY)).await;
    let node = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == node_id)
        .unwrap_or_else(|| panic!("no {node_id} in {nodes}"));
    node["state"].as_str().unwrap().to_owned()
}

/// Registers `node_id` in `sh` with this boot id.
async fn register_life(h: &Harness, node_id: &str, boot_id: &str) {
    let mut registration = registration(node_id, "sh");
    registration.boot_id = boot_id.into();
    let response = h.edge("/edge/v1/register", &registration).await;
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn a_restarted_edge_ends_the_sessions_of_its_previous_life() {
    let h = harness().await;
    h.register("n1", "sh").await;
    h.sessions("n1", vec![connect("k", 1, 1, now(), "")]).await;
    assert_eq!(push_to_user_1(&h).await["sessions"], 1);
    // Registering again in the same life (after a lost answer) keeps the session.
    register_life(&h, "n1", "boot-1").await;
    assert_eq!(push_to_user_1(&h).await["sessions"], 1);
    // The edge restarted under the same node id: the old connection is gone with its process.
    register_life(&h, "n1", "boot-2").await;
    assert_eq!(push_to_user_1(&h).await["offline_mids"], json!([1]));
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stopped_edge_is_dead_at_once() {
    let h = harness().await;
    h.register("n1", "sh").await;
    h.sessions("n1", vec![connect("k", 1, 1, now(), "")]).await;
    let last = NodeHeartbeat {
        node_id: "n1".into(),
        draining: true,
        stopped: true,
        ..NodeHeartbeat::default()
    };
    assert_eq!(h.edge("/edge/v1/heartbeat", &last).await.status(), 204);
    assert_eq!(state_of(&h, "n1").await, "dead");
    assert_eq!(push_to_user_1(&h).await["offline_mids"], json!([1]));
    // The HTTPDNS answer names no node.
    let (_, dns) = Harness::call(h.http.get(h.url("/v1/dns"))).await;
    assert_eq!(dns["answer"]["nodes"], json!([]), "{dns}");
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_admin_drain_lasts_across_restarts_until_undrained() {
    let h = harness().await;
    h.register("n1", "sh").await;
    let drain = |action: &str| {
        Harness::call(h.with_key(
            Method::POST,
            &format!("/v1/admin/nodes/n1/{action}"),
            ADMIN_KEY,
        ))
    };
    assert_eq!(drain("drain").await.0, 204);
    register_life(&h, "n1", "boot-2").await;
    assert_eq!(h.heartbeat("n1", 0, &[]).await, 204);
    assert_eq!(state_of(&h, "n1").await, "draining");
    assert_eq!(drain("undrain").await.0, 204);
    assert_eq!(state_of(&h, "n1").await, "active");
    register_life(&h, "n1", "boot-3").await;
    assert_eq!(state_of(&h, "n1").await, "active");
    // Unknown nodes are a 404 with a message; the route needs the admin scope.
    let (status, body) =
        Harness::call(h.with_key(Method::POST, "/v1/admin/nodes/ghost/undrain", ADMIN_KEY)).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("ghost"),
        "{body}"
    );
    let reader = h.create_key("reader", &["read"]).await;
    let (status, _) =
        Harness::call(h.with_key(Method::POST, "/v1/admin/nodes/n1/undrain", &reader)).await;
    assert_eq!(status, 403);
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_database_sweep_under_one_lease() {
    let database = TestPostgres::shared().fresh_database();
    let settings = rim_store::StoreSettings::default();
    let store = || async { Arc::new(PostgresStore::connect(&database, settings).await.unwrap()) };
    let config = ControlConfig {
        control_sweep_interval_ms: 100,
        control_node_timeout_ms: 300,
        ..config()
    };
    let a = start(config.clone(), store().await, Arc::new(MemoryBus::new(100))).await;
    let b = start(config, store().await, Arc::new(MemoryBus::new(100))).await;
    a.register("n1", "sh").await;
    a.sessions("n1", vec![connect("k", 1, 1, now(), "")]).await;
    // One of them sweeps: the silent node dies.
    let deadline = Instant::now() + Duration::from_secs(5);
    while state_of(&b, "n1").await != "dead" {
        assert!(Instant::now() < deadline, "nobody swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The lease is held by a running instance: nobody else gets it.
    let outsider = store().await;
    assert!(
        !outsider
            .sweeper_lease("outsider", 10_000, now())
            .await
            .unwrap()
    );
    // With one instance stopped, the other sweeps (it held the lease, or takes it over once the
    // stopped one's runs out, three intervals).
    a.control.shutdown().await.unwrap();
    b.register("n2", "sh").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while state_of(&b, "n2").await != "dead" {
        assert!(
            Instant::now() < deadline,
            "the remaining instance never swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // With both stopped, the lease is free soon after.
    b.control.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !outsider
        .sweeper_lease("outsider", 10_000, now())
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "the lease was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
