//! What operators rely on: Prometheus metrics at `/metrics` (read-scope key), the health check, and the background
//! sweeper expiring the sessions of a node that stopped reporting.

mod common;

use common::*;
use metrics_exporter_prometheus::PrometheusBuilder;
use reqwest::Method;
use rim_bus::memory::MemoryBus;
use rim_control::ControlConfig;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn metrics_count_requests_pushes_store_and_bus() {
    // This test binary owns the process's global recorder.
    let prometheus = PrometheusBuilder::new().install_recorder().unwrap();
    let store = memory_store();
    let control = rim_control::start(
        config(),
        SECRET,
        store.clone(),
        Arc::new(MemoryBus::new(100)),
        prometheus,
    )
    .await
    .unwrap();
    let h = Harness {
        base: format!("http://{}", control.local_addr()),
        control,
        http: reqwest::Client::new(),
        store,
    };
    h.register("n1", "sh").await;
    h.sessions("n1", vec![connect("k", 1, 1, now(), "")]).await;
    let (status, _) = Harness::call(
        h.with_key(
            Method::POST,
            "/goim/push/keys?operation=1000&keys=k",
            ADMIN_KEY,
        )
        .body("x"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = Harness::call(h.http.get(h.url("/v1/nodes"))).await;
    assert_eq!(status, 401);
    assert_eq!(
        h.http
            .get(h.url("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );

    let text = h
        .with_key(Method::GET, "/metrics", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Counters only this test touches are checked exactly; shared ones (the sweeper test runs in
    // the same process) at least once.
    for needle in [
        r#"rim_control_requests_total{route="/goim/push/keys",method="POST",status="200"} 1"#,
        r#"rim_control_requests_total{route="/v1/nodes",method="GET",status="401"} 1"#,
        r#"rim_control_pushes_total{type="keys"} 1"#,
        r#"rim_control_store_seconds_count{op="sessions_by_keys"} 1"#,
        r#"rim_control_bus_publish_seconds_count "#,
        r#"rim_control_session_events_total "#,
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_sweeper_removes_sessions_of_a_silent_node() {
    let config = ControlConfig {
        control_sweep_interval_ms: 100,
        // Long enough that a loaded machine still reaches the first push while the node lives.
        control_node_timeout_ms: 1_500,
        ..config()
    };
    let h = start(config, memory_store(), Arc::new(MemoryBus::new(100))).await;
    h.register("n1", "sh").await;
    h.sessions("n1", vec![connect("k", 1, 1, now(), "")]).await;
    assert_eq!(h.heartbeat("n1", 1, &[]).await, 204);
    let push = || {
        h.with_key(Method::POST, "/v1/push/users", ADMIN_KEY)
            .json(&json!({"operation": 1000, "mids": [1], "body_text": "x"}))
    };
    let (_, body) = Harness::call(push()).await;
    assert_eq!(body["sessions"], 1);
    // No heartbeats from now on: within a few sweeps the node is dead and the user offline.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, nodes) = Harness::call(h.with_key(Method::GET, "/v1/nodes", ADMIN_KEY)).await;
        if nodes["nodes"][0]["state"] == "dead" {
            break;
        }
        assert!(Instant::now() < deadline, "node never marked dead: {nodes}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = Harness::call(push()).await;
    assert_eq!(body["offline_mids"], json!([1]), "{body}");
    // A dead node must register again before it may report.
    assert_eq!(h.heartbeat("n1", 0, &[]).await, 404);
    h.control.shutdown().await.unwrap();
}
