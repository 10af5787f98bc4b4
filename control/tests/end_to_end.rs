//! The whole control path against real infrastructure: PostgreSQL (rim-testkit) for the store and a
//! Kafka-protocol broker (tansu, rim-testkit) for the bus. Edges register and report sessions over
//! the edge API; pushes and takeovers produce exactly the expected records, read back from the
//! broker.

mod common;

use common::*;
use reqwest::Method;
use rim_bus::kafka::{KafkaConsumer, KafkaProducer, KafkaSettings};
use rim_bus::{BusConsumer, IncomingPush};
use rim_proto::schema::SupersededSession;
use rim_proto::schema::push_message::Target;
use rim_store::postgres::PostgresStore;
use rim_testkit::kafka::TestKafka;
use rim_testkit::postgres::TestPostgres;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// A control instance on a fresh PostgreSQL database and its own broker (3 partitions per topic).
struct Infra {
    h: Harness,
    settings: KafkaSettings,
    _broker: TestKafka,
}

async fn infra() -> Infra {
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
    Infra {
        h: start(config(), store, producer).await,
        settings,
        _broker: broker,
    }
}

impl Infra {
    /// Exactly `count` records from a region's topic: waits for them, then checks that nothing
    /// else follows for two seconds. Sorted by partition key, then record index.
    async fn consume(&self, region: &str, count: usize) -> Vec<IncomingPush> {
        let mut consumer = KafkaConsumer::new(&self.settings, region, "control-e2e")
            .await
            .unwrap();
        let mut records = Vec::new();
        while records.len() < count {
            let batch = tokio::time::timeout(Duration::from_secs(30), consumer.next_batch(100))
                .await
                .unwrap_or_else(|_| panic!("only {records:?} of {count} records on {region}"))
                .unwrap();
            records.extend(batch);
        }
        let more = tokio::time::timeout(Duration::from_secs(2), consumer.next_batch(10)).await;
        assert!(more.is_err(), "unexpected extra records: {more:?}");
        assert_eq!(records.len(), count, "{records:?}");
        records.sort_by(|a, b| {
            (&a.partition_key, a.message.record).cmp(&(&b.partition_key, b.message.record))
        });
        records
    }

    /// A goim push with the admin key; answers the envelope's `data`.
    async fn goim_push(&self, query: &str, body: &'static str) -> Value {
        let (status, answer) = Harness::call(
            self.h
                .with_key(Method::POST, &format!("/goim/push/{query}"), ADMIN_KEY)
                .body(body),
        )
        .await;
        assert_eq!(
            (status, answer["code"].as_i64()),
            (200, Some(0)),
            "{answer}"
        );
        answer["data"].clone()
    }
}

/// The (key, node) pairs of a keys record, sorted.
fn keys_of(record: &IncomingPush) -> Vec<(String, String)> {
    let Some(Target::Keys(keys)) = &record.message.target else {
        panic!("not a keys push: {record:?}")
    };
    let mut targets: Vec<_> = keys
        .keys
        .iter()
        .map(|k| (k.key.clone(), k.node_id.clone()))
        .collect();
    targets.sort();
    targets
}

fn pair(key: &str, node: &str) -> (String, String) {
    (key.to_owned(), node.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_reports_sessions_and_a_goim_push_reaches_kafka() {
    let infra = infra().await;
    let h = &infra.h;
    h.register("edge-sh-1", "sh").await;
    let t = now();
    let (status, report) = h
        .sessions(
            "edge-sh-1",
            vec![
                connect("phone", 100, 1, t, "live://1"),
                connect("laptop", 100, 2, t, ""),
                connect("other", 200, 3, t, ""),
                // The phone reconnects (new connection 10): the edge is told to close connection 1.
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

    let data = infra
        .goim_push("mids?operation=1000&mids=100&mids=300", "hello")
        .await;
    assert_eq!(data["sessions"], 2);
    assert_eq!(data["records"], 1);
    assert_eq!(data["offline_mids"], json!([300]));
    let message_id = data["message_id"].as_str().unwrap().to_owned();

    let records = infra.consume("sh", 2).await;
    let notice = &records[0];
    assert_eq!(notice.partition_key, "key:phone");
    assert_eq!(
        notice.message.target,
        Some(Target::Superseded(SupersededSession {
            key: "phone".into(),
            node_id: "edge-sh-1".into(),
            connection_id: 1
        }))
    );
    let record = &records[1];
    assert_eq!(record.partition_key, "mid:100");
    assert_eq!(record.message.message_id, message_id);
    assert_eq!(record.message.record, 0);
    assert_eq!(record.message.operation, 1000);
    assert_eq!(&record.message.body[..], b"hello");
    assert!(record.message.accepted_at_unix_ms >= t);
    assert_eq!(
        keys_of(record),
        vec![pair("laptop", "edge-sh-1"), pair("phone", "edge-sh-1")]
    );
    infra.h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_three_users_is_three_numbered_records_with_distinct_partition_keys() {
    let infra = infra().await;
    let h = &infra.h;
    h.register("edge-sh-1", "sh").await;
    h.register("edge-sh-2", "sh").await;
    let t = now();
    let events = vec![connect("a", 2, 1, t, ""), connect("b", 3, 2, t, "")];
    assert_eq!(h.sessions("edge-sh-1", events).await.0, 200);
    let events = vec![connect("c", 4, 3, t, ""), connect("d", 2, 4, t, "")];
    assert_eq!(h.sessions("edge-sh-2", events).await.0, 200);

    let data = infra
        .goim_push("mids?operation=1000&mids=2&mids=3&mids=4", "to three")
        .await;
    assert_eq!(
        (data["sessions"].as_u64(), data["records"].as_u64()),
        (Some(4), Some(3))
    );
    let message_id = data["message_id"].as_str().unwrap();

    let records = infra.consume("sh", 3).await;
    let keys: Vec<&str> = records.iter().map(|r| r.partition_key.as_str()).collect();
    assert_eq!(keys, vec!["mid:2", "mid:3", "mid:4"]);
    // One message id, every record its own index: (message id, record) names one delivery.
    assert!(records.iter().all(|r| r.message.message_id == message_id));
    let indices: BTreeSet<u32> = records.iter().map(|r| r.message.record).collect();
    assert_eq!(indices, BTreeSet::from([0, 1, 2]));
    assert_eq!(
        keys_of(&records[0]),
        vec![pair("a", "edge-sh-1"), pair("d", "edge-sh-2")]
    );
    assert_eq!(keys_of(&records[1]), vec![pair("b", "edge-sh-1")]);
    assert_eq!(keys_of(&records[2]), vec![pair("c", "edge-sh-2")]);
    infra.h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_on_another_region_closes_the_old_connection_through_its_region() {
    let infra = infra().await;
    let h = &infra.h;
    h.register("edge-sh", "sh").await;
    h.register("edge-bj", "bj").await;
    let t = now();
    assert_eq!(
        h.sessions("edge-sh", vec![connect("dev", 7, 11, t, "")])
            .await
            .0,
        200
    );
    // The device reconnects in bj; its edge's clock is behind, but arrival order decides.
    let (status, report) = h
        .sessions("edge-bj", vec![connect("dev", 7, 22, t - 5_000, "")])
        .await;
    assert_eq!(
        (status, report["connected"].as_u64()),
        (200, Some(1)),
        "{report}"
    );
    let data = infra
        .goim_push("keys?operation=1000&keys=dev", "moved")
        .await;
    assert_eq!(data["regions"], json!(["bj"]));

    // sh gets exactly the notice, keyed like the key's pushes; bj gets the push.
    let notices = infra.consume("sh", 1).await;
    assert_eq!(notices[0].partition_key, "key:dev");
    assert_eq!(
        notices[0].message.target,
        Some(Target::Superseded(SupersededSession {
            key: "dev".into(),
            node_id: "edge-sh".into(),
            connection_id: 11
        }))
    );
    let pushes = infra.consume("bj", 1).await;
    assert_eq!(keys_of(&pushes[0]), vec![pair("dev", "edge-bj")]);
    // The old connection's disconnect, arriving now, does not end the new session.
    let (_, report) = h
        .sessions("edge-sh", vec![disconnect("dev", 7, 11, t + 1)])
        .await;
    assert_eq!(report["ignored"], 1, "{report}");
    let data = infra
        .goim_push("keys?operation=1000&keys=dev", "still")
        .await;
    assert_eq!(data["sessions"], 1);
    infra.h.control.shutdown().await.unwrap();
}
