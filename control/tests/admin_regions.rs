//! The admin API's region lifecycle, the calls the Terraform provider makes: create (409 when the
//! name is taken), read one, move, delete (409 while live nodes serve the region, 404 once gone),
//! and the bus topic created with the region (no region is stored when its topic cannot be made).

mod common;

use common::*;
use reqwest::Method;
use rim_bus::kafka::{KafkaProducer, KafkaSettings};
use rim_bus::memory::MemoryBus;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

async fn admin_call(h: &Harness, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let request = h.with_key(method, path, ADMIN_KEY);
    Harness::call(match body {
        Some(body) => request.json(&body),
        None => request,
    })
    .await
}

#[tokio::test]
async fn regions_are_created_read_moved_and_deleted() {
    let h = start(config(), memory_store(), Arc::new(MemoryBus::new(100))).await;
    let fra = json!({"name": "fra", "latitude": 50.1, "longitude": 8.7});
    let (status, body) = admin_call(&h, Method::POST, "/v1/admin/regions", Some(fra.clone())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body, fra, "the memory bus has no topics to name");
    let (status, body) = admin_call(&h, Method::POST, "/v1/admin/regions", Some(fra.clone())).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["message"], "region \"fra\" already exists");

    for (bad, message) in [
        (
            json!({"name": "", "latitude": 1.0, "longitude": 1.0}),
            "region name must be 1..=128 bytes",
        ),
        (
            json!({"name": "x", "latitude": 91.0, "longitude": 1.0}),
            "latitude must be in [-90, 90] and longitude in [-180, 180]",
        ),
    ] {
        let (status, body) = admin_call(&h, Method::POST, "/v1/admin/regions", Some(bad)).await;
        assert_eq!((status, body["message"].as_str()), (400, Some(message)));
    }

    let (status, body) = admin_call(
        &h,
        Method::PUT,
        "/v1/admin/regions/fra",
        Some(json!({"latitude": 50.0, "longitude": 8.0})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin_call(&h, Method::GET, "/v1/admin/regions/fra", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"name": "fra", "latitude": 50.0, "longitude": 8.0})
    );
    let (status, _) = admin_call(&h, Method::GET, "/v1/admin/regions/nowhere", None).await;
    assert_eq!(status, 404);

    // A live node keeps its region; once it is dead the region (and the node's record) can go.
    h.register("n1", "fra").await;
    let (status, body) = admin_call(&h, Method::DELETE, "/v1/admin/regions/fra", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["message"],
        "region \"fra\" still has live nodes (n1): drain and stop them first"
    );
    h.store
        .set_node_state("n1", rim_store::NodeState::Dead)
        .await
        .unwrap();
    let (status, body) = admin_call(&h, Method::DELETE, "/v1/admin/regions/fra", None).await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = admin_call(&h, Method::DELETE, "/v1/admin/regions/fra", None).await;
    assert_eq!(status, 404);
    let (_, body) = admin_call(&h, Method::GET, "/v1/admin/regions", None).await;
    assert_eq!(body["regions"], json!([]));
    let (_, body) = admin_call(&h, Method::GET, "/v1/nodes", None).await;
    assert_eq!(body["nodes"], json!([]));

    // Region routes are admin-only.
    let (status, _) = Harness::call(h.http.get(h.url("/v1/admin/regions/fra"))).await;
    assert_eq!(status, 401);
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_region_is_stored_only_once_its_kafka_topic_could_be_created() {
    // A broker nobody listens on: topic creation fails within the delivery timeout.
    let port = rim_testkit::ports::free_port().unwrap();
    let settings = KafkaSettings {
        delivery_timeout: Duration::from_millis(1500),
        ..KafkaSettings::new(format!("127.0.0.1:{port}"))
    };
    let producer = Arc::new(KafkaProducer::new(&settings).unwrap());
    let h = start(config(), memory_store(), producer).await;
    let (status, body) = admin_call(
        &h,
        Method::POST,
        "/v1/admin/regions",
        Some(json!({"name": "usw", "latitude": 37.4, "longitude": -122.1})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message
            .starts_with("creating the topic of region \"usw\" failed, the region was not stored"),
        "{message}"
    );
    let (_, body) = admin_call(&h, Method::GET, "/v1/admin/regions", None).await;
    assert_eq!(body["regions"], json!([]));
    h.control.shutdown().await.unwrap();

    // With a broker, the region is created with its topic and answers its name.
    let broker = rim_testkit::kafka::TestKafka::start();
    let producer = Arc::new(KafkaProducer::new(&KafkaSettings::new(broker.bootstrap())).unwrap());
    let h = start(config(), memory_store(), producer).await;
    let (status, body) = admin_call(
        &h,
        Method::POST,
        "/v1/admin/regions",
        Some(json!({"name": "usw", "latitude": 37.4, "longitude": -122.1})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["topic"], "rim-push-usw");
    let (_, body) = admin_call(&h, Method::GET, "/v1/admin/regions/usw", None).await;
    assert_eq!(body["topic"], "rim-push-usw");
    h.control.shutdown().await.unwrap();
}
