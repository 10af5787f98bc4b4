//! What a push may target and what its answer says, on both business APIs (memory store and bus):
//! user 0 is refused, records per push and sessions per user are bounded, records are numbered,
//! and room and broadcast answers count the connections targeted.

mod common;

use common::*;
use reqwest::Method;
use rim_bus::BusConsumer;
use rim_bus::memory::MemoryBus;
use rim_control::ControlConfig;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

async fn harness(config: ControlConfig) -> (Harness, MemoryBus) {
    let bus = MemoryBus::new(10_000);
    (
        start(config, memory_store(), Arc::new(bus.clone())).await,
        bus,
    )
}

/// A goim push: status and envelope.
async fn goim(h: &Harness, query: &str) -> (u16, Value) {
    Harness::call(
        h.with_key(Method::POST, &format!("/goim/push/{query}"), ADMIN_KEY)
            .body("x"),
    )
    .await
}

/// A `/v1` push: status and body.
async fn v1(h: &Harness, route: &str, body: Value) -> (u16, Value) {
    Harness::call(
        h.with_key(Method::POST, &format!("/v1/push/{route}"), ADMIN_KEY)
            .json(&body),
    )
    .await
}

#[tokio::test]
async fn mid_zero_is_no_push_target() {
    let (h, _bus) = harness(config()).await;
    h.register("n1", "sh").await;
    // Anonymous sessions are all "user 0".
    let events = (0..5)
        .map(|i| connect(&format!("anon{i}"), 0, i, now(), ""))
        .collect();
    h.sessions("n1", events).await;
    let (status, body) = goim(&h, "mids?operation=1000&mids=1&mids=0").await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(-400)), "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("mid 0"),
        "{body}"
    );
    let (status, body) = v1(
        &h,
        "users",
        json!({"operation": 1000, "mids": [0], "body_text": "x"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn records_per_push_are_bounded_and_numbered() {
    let config = ControlConfig {
        control_max_records_per_push: 3,
        ..config()
    };
    let (h, bus) = harness(config).await;
    h.register("n1", "sh").await;
    let t = now();
    let events = (1..=4)
        .map(|mid| connect(&format!("k{mid}"), mid, mid as u64, t, ""))
        .collect();
    h.sessions("n1", events).await;
    // Four users online: four records, one more than allowed; nothing is sent.
    let (status, body) = goim(&h, "mids?operation=1000&mids=1,2,3,4").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("at most 3"),
        "{body}"
    );
    let (status, body) = v1(
        &h,
        "keys",
        json!({"operation": 1000, "keys": ["k1", "k2", "k3", "k4"], "body_text": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Offline targets make no records: three of the four keys are within the bound.
    let (status, body) = v1(
        &h,
        "keys",
        json!({"operation": 1000, "keys": ["k1", "k2", "k3", "gone"], "body_text": "x"}),
    )
    .await;
    assert_eq!((status, body["records"].as_u64()), (202, Some(3)), "{body}");
    let mut consumer = bus.consumer("sh", "test");
    let records = tokio::time::timeout(Duration::from_secs(2), consumer.next_batch(100))
        .await
        .unwrap()
        .unwrap();
    let mut numbered: Vec<(String, u32)> = records
        .iter()
        .map(|r| (r.partition_key.clone(), r.message.record))
        .collect();
    numbered.sort();
    assert_eq!(
        numbered,
        vec![
            // Stored key pushes are keyed by their user (the user stream's partition).
            ("mid:1".into(), 0),
            ("mid:2".into(), 1),
            ("mid:3".into(), 2)
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.message.message_id == body["message_id"])
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_user_with_too_many_sessions_gets_the_newest() {
    let config = ControlConfig {
        control_max_sessions_per_user: 2,
        ..config()
    };
    let (h, bus) = harness(config).await;
    h.register("n1", "sh").await;
    let t = now();
    let events = vec![
        connect("old", 5, 1, t, ""),
        connect("newer", 5, 2, t + 10, ""),
        connect("newest", 5, 3, t + 20, ""),
        connect("only", 6, 4, t, ""),
    ];
    h.sessions("n1", events).await;
    let (status, body) = v1(
        &h,
        "users",
        json!({"operation": 1000, "mids": [5, 6], "body_text": "x"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["sessions"].as_u64(), body["capped_mids"].clone()),
        (Some(3), json!([5])),
        "{body}"
    );
    let mut consumer = bus.consumer("sh", "test");
    let records = tokio::time::timeout(Duration::from_secs(2), consumer.next_batch(100))
        .await
        .unwrap()
        .unwrap();
    let mut keys: Vec<String> = records
        .iter()
        .flat_map(|r| match &r.message.target {
            Some(rim_proto::schema::push_message::Target::Keys(keys)) => {
                keys.keys.iter().map(|k| k.key.clone()).collect::<Vec<_>>()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["newer", "newest", "only"]);
    // Exactly at the bound is not capped.
    let (_, body) = v1(
        &h,
        "users",
        json!({"operation": 1000, "mids": [6], "body_text": "x"}),
    )
    .await;
    assert!(body.get("capped_mids").is_none(), "{body}");
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn room_and_broadcast_answers_count_the_connections_targeted() {
    let (h, _bus) = harness(config()).await;
    h.register("n1", "sh").await;
    h.register("n2", "bj").await;
    h.register("n3", "bj").await;
    assert_eq!(
        h.heartbeat("n1", 120, &[("live://1000", 100), ("live://7", 3)])
            .await,
        204
    );
    assert_eq!(h.heartbeat("n2", 40, &[("live://1000", 25)]).await, 204);
    assert_eq!(h.heartbeat("n3", 9, &[("live://1000", 9)]).await, 204);
    // A dead node's connections are not targeted.
    let (status, _) =
        Harness::call(h.with_key(Method::POST, "/v1/admin/nodes/n3/drain", ADMIN_KEY)).await;
    assert_eq!(status, 204);
    h.store
        .set_node_state("n3", rim_store::NodeState::Dead)
        .await
        .unwrap();

    let (status, body) = goim(&h, "room?operation=1000&type=live&room=1000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["sessions"], 125, "{body}");
    assert_eq!(body["data"]["regions"], json!(["bj", "sh"]));
    let (_, body) = v1(
        &h,
        "room",
        json!({"operation": 1000, "room": "live://7", "body_text": "x"}),
    )
    .await;
    assert_eq!(body["sessions"], 3, "{body}");
    let (_, body) = goim(&h, "all?operation=1000").await;
    assert_eq!(body["data"]["sessions"], 160, "{body}");
    let (_, body) = v1(&h, "all", json!({"operation": 1000, "body_text": "x"})).await;
    assert_eq!(body["sessions"], 160, "{body}");
    h.control.shutdown().await.unwrap();
}
