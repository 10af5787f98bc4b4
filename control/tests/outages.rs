//! Failures of what the control plane depends on: PostgreSQL going away and coming back, and a
//! Kafka broker that cannot be reached. Requests must fail clearly (503, nothing claimed as done)
//! and succeed again once the dependency is back, without restarting the control plane.

mod common;

use common::*;
use reqwest::Method;
use rim_bus::kafka::{KafkaProducer, KafkaSettings};
use rim_bus::memory::MemoryBus;
use rim_store::postgres::{PoolSettings, PostgresStore};
use rim_testkit::postgres::TestPostgres;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_gives_503_then_recovers() {
    let cluster = TestPostgres::start();
    let pool = PoolSettings {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(1),
    };
    let store = PostgresStore::connect_with(
        &cluster.fresh_database(),
        rim_store::StoreSettings::default(),
        pool,
    )
    .await
    .unwrap();
    let h = start(config(), Arc::new(store), Arc::new(MemoryBus::new(1000))).await;
    h.register("n1", "sh").await;
    assert_eq!(
        h.sessions("n1", vec![connect("k", 1, 1, now(), "")])
            .await
            .0,
        200
    );

    cluster.stop();
    let push = || {
        h.with_key(
            Method::POST,
            "/goim/push/mids?operation=1000&mids=1",
            ADMIN_KEY,
        )
        .body("x")
    };
    let (status, body) = Harness::call(push()).await;
    assert_eq!((status, body["code"].as_i64()), (503, Some(-500)), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("store unavailable"),
        "{body}"
    );
    let (status, body) = h.sessions("n1", vec![connect("k2", 2, 2, now(), "")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    let (status, _) = Harness::call(h.with_key(Method::GET, "/v1/online/total", ADMIN_KEY)).await;
    assert_eq!(status, 503);

    cluster.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = Harness::call(push()).await;
        if status == 200 {
            assert_eq!(
                body["data"]["sessions"], 1,
                "the session written before the restart is gone: {body}"
            );
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "still failing after the restart: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        h.sessions("n1", vec![connect("k2", 2, 2, now(), "")])
            .await
            .0,
        200
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_gives_503_and_claims_nothing() {
    let port = rim_testkit::ports::free_port().unwrap();
    let settings = KafkaSettings {
        delivery_timeout: Duration::from_secs(1),
        ..KafkaSettings::new(format!("127.0.0.1:{port}"))
    };
    let producer = KafkaProducer::new(&settings).unwrap();
    let h = start(config(), memory_store(), Arc::new(producer)).await;
    h.register("n1", "sh").await;
    assert_eq!(
        h.sessions("n1", vec![connect("k", 1, 1, now(), "")])
            .await
            .0,
        200
    );

    let started = Instant::now();
    let (status, body) = Harness::call(
        h.with_key(
            Method::POST,
            "/goim/push/keys?operation=1000&keys=k",
            ADMIN_KEY,
        )
        .body("x"),
    )
    .await;
    assert_eq!((status, body["code"].as_i64()), (503, Some(-500)), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nothing was sent"),
        "{body}"
    );
    assert!(
        body.get("data").is_none(),
        "a failed push reported data: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the push hung for {:?}",
        started.elapsed()
    );
    let (status, body) = Harness::call(
        h.with_key(Method::POST, "/v1/push/keys", ADMIN_KEY)
            .json(&serde_json::json!({"operation": 1000, "keys": ["k"], "body_text": "x"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert!(body.get("message_id").is_none());
    h.control.shutdown().await.unwrap();
}
