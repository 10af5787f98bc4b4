//! The whole control path against real infrastructure: PostgreSQL (rim-testkit) for the store and a
//! Kafka-protocol broker (tansu, rim-testkit) for the bus. An edge registers and reports sessions
//! over the edge API; a goim push produces exactly the expected record, read back from the broker.

mod common;

use common::*;
use reqwest::Method;
use rim_bus::BusConsumer;
use rim_bus::kafka::{KafkaConsumer, KafkaProducer, KafkaSettings};
use rim_proto::schema::push_message::Target;
use rim_store::postgres::PostgresStore;
use rim_testkit::kafka::TestKafka;
use rim_testkit::postgres::TestPostgres;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_reports_sessions_and_a_goim_push_reaches_kafka() {
    let database = TestPostgres::shared().fresh_database();
    let store = Arc::new(
        PostgresStore::connect(&database, rim_store::StoreSettings::default())
            .await
            .unwrap(),
    );
    let broker = TestKafka::start();
    let settings = KafkaSettings {
        partitions: 3,
        ..KafkaSettings::new(broker.bootstrap())
    };
    let producer = Arc::new(KafkaProducer::new(&settings).unwrap());
    let h = start(config(), store, producer).await;

    h.register("edge-sh-1", "sh").await;
    let t = now();
    let (status, report) = h
        .sessions(
            "edge-sh-1",
            vec![
                connect("phone", 100, 1, t, "live://1"),
                connect("laptop", 100, 2, t, ""),
                connect("other", 200, 3, t, ""),
                // The phone reconnects (new connection 10) ...
                connect("phone", 100, 10, t + 20, "live://1"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{report}");
    // ... and the old connection's disconnect arrives late: it must not remove the new session.
    let (status, report) = h
        .sessions("edge-sh-1", vec![disconnect("phone", 100, 1, t + 10)])
        .await;
    assert_eq!(
        (status, report["ignored"].as_u64()),
        (200, Some(1)),
        "{report}"
    );

    let (status, body) = Harness::call(
        h.with_key(
            Method::POST,
            "/goim/push/mids?operation=1000&mids=100&mids=300",
            ADMIN_KEY,
        )
        .body("hello"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], 0);
    assert_eq!(body["data"]["sessions"], 2);
    assert_eq!(body["data"]["records"], 1);
    assert_eq!(body["data"]["offline_mids"], json!([300]));
    let message_id = body["data"]["message_id"].as_str().unwrap().to_owned();

    let mut consumer = KafkaConsumer::new(&settings, "sh", "control-e2e")
        .await
        .unwrap();
    let records = tokio::time::timeout(Duration::from_secs(30), consumer.next_batch(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record.partition_key, "mid:100");
    assert_eq!(record.message.message_id, message_id);
    assert_eq!(record.message.operation, 1000);
    assert_eq!(&record.message.body[..], b"hello");
    assert!(record.message.accepted_at_unix_ms >= t);
    let Some(Target::Keys(keys)) = &record.message.target else {
        panic!("not a keys push: {record:?}")
    };
    let mut targets: Vec<(&str, &str)> = keys
        .keys
        .iter()
        .map(|k| (k.key.as_str(), k.node_id.as_str()))
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![("laptop", "edge-sh-1"), ("phone", "edge-sh-1")]
    );
    // Nothing else was produced.
    let more = tokio::time::timeout(Duration::from_secs(2), consumer.next_batch(10)).await;
    assert!(more.is_err(), "unexpected extra records: {more:?}");
    h.control.shutdown().await.unwrap();
}
