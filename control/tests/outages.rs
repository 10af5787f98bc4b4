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
        ..PoolSettings::default()
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
    assert_eq!(h.heartbeat("n1", 5, &[("live://1", 5)]).await, 204);
    let room_push = || {
        h.with_key(
            Method::POST,
            "/goim/push/room?operation=1000&type=live&room=1",
            ADMIN_KEY,
        )
        .body("x")
    };
    let (status, body) = Harness::call(room_push()).await;
    assert_eq!(
        (status, body["data"]["sessions"].as_u64()),
        (200, Some(5)),
        "{body}"
    );

    cluster.stop();
    // Room and broadcast pushes need only the node directory, which serves its last good
    // snapshot: they still go out; the room's count is reported unavailable.
    let (status, body) = Harness::call(room_push()).await;
    assert_eq!(
        (status, body["data"]["records"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    assert!(body["data"]["count_unavailable"].is_string(), "{body}");
    let (status, body) = Harness::call(
        h.with_key(Method::POST, "/goim/push/all?operation=1000", ADMIN_KEY)
            .body("x"),
    )
    .await;
    assert_eq!(
        (status, body["data"]["sessions"].as_u64()),
        (200, Some(5)),
        "{body}"
    );
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
    let (status, health) = healthz(&h).await;
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("store:"), "{health}");

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
    assert_eq!(healthz(&h).await, (200, "ok".to_owned()));
    h.control.shutdown().await.unwrap();
}

/// `GET /healthz`: status and body.
async fn healthz(h: &Harness) -> (u16, String) {
    let response = h.http.get(h.url("/healthz")).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A Kafka producer whose broker cannot be reached: publishes hang for `delivery_timeout`, then
/// fail.
fn unreachable_broker(delivery_timeout: Duration) -> KafkaProducer {
    let port = rim_testkit::ports::free_port().unwrap();
    let settings = KafkaSettings {
        delivery_timeout,
        ..KafkaSettings::new(format!("127.0.0.1:{port}"))
    };
    KafkaProducer::new(&settings).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_does_not_starve_edge_heartbeats() {
    let config = rim_control::ControlConfig {
        control_max_in_flight: 1,
        ..config()
    };
    // Long enough that the calls below surely run while the push waits, even on a loaded machine.
    let broker = unreachable_broker(Duration::from_secs(3));
    let h = start(config, memory_store(), Arc::new(broker)).await;
    h.register("n1", "sh").await;
    h.sessions("n1", vec![connect("k", 1, 1, now(), "")]).await;
    // A push waits for the unreachable broker, holding the business API's only slot.
    let push = Harness::call(
        h.with_key(
            Method::POST,
            "/goim/push/keys?operation=1000&keys=k",
            ADMIN_KEY,
        )
        .body("x"),
    );
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (business, body) =
            Harness::call(h.with_key(Method::GET, "/v1/online/total", ADMIN_KEY)).await;
        let heartbeat = h.heartbeat("n1", 1, &[]).await;
        let (sessions, _) = h.sessions("n1", vec![connect("k2", 2, 2, now(), "")]).await;
        (business, body, heartbeat, sessions)
    };
    let ((pushed, _), (business, body, heartbeat, sessions)) = tokio::join!(push, meanwhile);
    assert_eq!(pushed, 503, "the push did not wait for the broker");
    assert_eq!(business, 503, "the business bound did not hold: {body}");
    assert!(
        body["message"].as_str().unwrap().contains("overloaded"),
        "{body}"
    );
    assert_eq!(
        (heartbeat, sessions),
        (204, 200),
        "edge calls starved by a hung push"
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_gives_503_and_claims_nothing() {
    let broker = unreachable_broker(Duration::from_secs(1));
    let h = start(config(), memory_store(), Arc::new(broker)).await;
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
    // The health check says so, naming the bus.
    let started = Instant::now();
    let (status, health) = healthz(&h).await;
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("bus:"), "{health}");
    assert!(started.elapsed() < Duration::from_secs(10), "healthz hung");
    h.control.shutdown().await.unwrap();
}
