//! Durable pushes through the control plane (issue 9, item 2): user, key and room pushes are stored
//! in PostgreSQL (rim-testkit) before the caller is answered, their bus records carry positions
//! and receipt targets, positions reach a partition in order even from two control instances
//! (through the Kafka-protocol broker, rim-testkit), a failing bus leaves nothing readable,
//! `GET /v1/pushes/{id}` answers the receipts, and the sweeper's retention removes expired pushes.

mod common;

use common::*;
use reqwest::Method;
use rim_bus::kafka::{KafkaConsumer, KafkaProducer, KafkaSettings};
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, IncomingPush};
use rim_proto::durable::{MessageId, NotResumedReason, Position};
use rim_proto::schema::StreamPosition;
use rim_store::Store;
use rim_store::inbox::{Inbox, ReadOutcome, StoredPush};
use rim_store::postgres::PostgresStore;
use rim_testkit::kafka::TestKafka;
use rim_testkit::postgres::TestPostgres;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// A store on a fresh PostgreSQL database.
async fn postgres() -> Arc<dyn Store> {
    let url = TestPostgres::shared().fresh_database();
    Arc::new(
        PostgresStore::connect(&url, rim_store::StoreSettings::default())
            .await
            .unwrap(),
    )
}

/// The inbox of a running instance's database.
fn inbox_of(h: &Harness) -> Arc<dyn Inbox> {
    h.store.inbox(config().inbox_settings()).unwrap()
}

/// Pushes through `/v1/push/{kind}` with the admin key; answers status and body.
async fn push(h: &Harness, kind: &str, body: Value) -> (u16, Value) {
    Harness::call(
        h.with_key(Method::POST, &format!("/v1/push/{kind}"), ADMIN_KEY)
            .json(&body),
    )
    .await
}

/// A push that must be accepted; answers its report.
async fn accepted(h: &Harness, kind: &str, body: Value) -> Value {
    let (status, report) = push(h, kind, body).await;
    assert_eq!(status, 202, "{report}");
    report
}

/// Everything on a region's memory log so far (from its start: a new consumer group each time).
async fn drain(bus: &MemoryBus, region: &str) -> Vec<IncomingPush> {
    let mut consumer = bus.consumer(region, "durable-test");
    tokio::time::timeout(Duration::from_secs(2), consumer.next_batch(1000))
        .await
        .unwrap()
        .unwrap()
}

/// All pushes of a user's stream a reader with `key` gets from the origin.
async fn stored(inbox: &dyn Inbox, mid: i64, key: Option<&str>) -> (Vec<StoredPush>, Position) {
    match inbox
        .read_user(mid, key, Position::ORIGIN, 1000)
        .await
        .unwrap()
    {
        ReadOutcome::Page { pushes, head } => (pushes, head),
        other => panic!("expected a page, got {other:?}"),
    }
}

fn user_position(seq: u64) -> Option<StreamPosition> {
    Some(StreamPosition {
        stream: 1,
        epoch: 0,
        seq,
    })
}

/// `GET /v1/pushes/{id}`: status and body.
async fn receipts(h: &Harness, id: &str) -> (u16, Value) {
    Harness::call(h.with_key(Method::GET, &format!("/v1/pushes/{id}"), ADMIN_KEY)).await
}

/// The state names of each target of a receipts answer.
fn states(answer: &Value) -> Vec<(String, Vec<String>)> {
    answer["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|target| {
            let states = target["states"].as_object().unwrap();
            for at in states.values() {
                assert!(at.as_i64().unwrap() > 0, "{answer}");
            }
            (
                target["target"].as_str().unwrap().to_owned(),
                states.keys().cloned().collect(),
            )
        })
        .collect()
}

fn names(states: &[&str]) -> Vec<String> {
    states.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_pushes_are_stored_with_positions_and_receipts() {
    let bus = MemoryBus::new(10_000);
    let h = start(config(), postgres().await, Arc::new(bus.clone())).await;
    let inbox = inbox_of(&h);
    h.register("n1", "sh").await;
    let (status, _) = h
        .sessions("n1", vec![connect("phone", 7, 1, now(), "")])
        .await;
    assert_eq!(status, 200);

    // User 8 is offline: stored all the same, nothing published, `offline` + `stored`.
    let report = accepted(
        &h,
        "users",
        json!({"operation": 1000, "mids": [8], "body_text": "for later"}),
    )
    .await;
    assert_eq!(
        (report["records"].as_u64(), &report["offline_mids"]),
        (Some(0), &json!([8])),
        "{report}"
    );
    let offline_id = report["message_id"].as_str().unwrap().to_owned();
    let (pushes, head) = stored(inbox.as_ref(), 8, None).await;
    assert_eq!(head, Position::new(0, 1).unwrap());
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].body, b"for later");
    assert_eq!(
        pushes[0].message_id,
        offline_id.parse::<MessageId>().unwrap()
    );
    let (status, answer) = receipts(&h, &offline_id).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["message_id"], offline_id.as_str());
    assert_eq!(
        states(&answer),
        [("mid:8".to_owned(), names(&["offline", "stored"]))]
    );

    // Users 7 (online) and 8 in one push: one record, for 7, with 7's position.
    let report = accepted(
        &h,
        "users",
        json!({"operation": 1001, "mids": [7, 8], "body_text": "both"}),
    )
    .await;
    let id = report["message_id"].as_str().unwrap().to_owned();
    let records = drain(&bus, "sh").await;
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0].message;
    assert_eq!(record.message_id, id);
    assert_eq!(record.receipt_target, "mid:7");
    assert_eq!(record.position, user_position(1));
    let (pushes, _) = stored(inbox.as_ref(), 8, None).await;
    assert_eq!(pushes.len(), 2, "8 stored its second push");
    assert_eq!(pushes[1].position, Position::new(0, 2).unwrap());
    let (status, answer) = receipts(&h, &id).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        states(&answer),
        [
            ("mid:7".to_owned(), names(&["accepted", "stored"])),
            ("mid:8".to_owned(), names(&["offline", "stored"])),
        ]
    );

    // The receipts route: a malformed id is a 400, an unknown one a 404, and it needs a key.
    let (status, _) = receipts(&h, "not-a-uuid").await;
    assert_eq!(status, 400);
    let (status, _) = receipts(&h, &uuid_like()).await;
    assert_eq!(status, 404);
    let (status, _) = Harness::call(h.http.get(h.url(&format!("/v1/pushes/{id}")))).await;
    assert_eq!(status, 401);
    h.control.shutdown().await.unwrap();
}

/// A valid push id nobody used.
fn uuid_like() -> String {
    MessageId([0x42; 16]).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_pushes_go_to_the_key_owners_stream_and_offline_keys_only_get_a_receipt() {
    let bus = MemoryBus::new(10_000);
    let h = start(config(), postgres().await, Arc::new(bus.clone())).await;
    let inbox = inbox_of(&h);
    h.register("n1", "sh").await;
    let t = now();
    let (status, _) = h
        .sessions(
            "n1",
            vec![
                connect("phone", 7, 1, t, ""),
                connect("laptop", 7, 2, t, ""),
                connect("guest", 0, 3, t, ""),
            ],
        )
        .await;
    assert_eq!(status, 200);
    accepted(
        &h,
        "users",
        json!({"operation": 1000, "mids": [7], "body_text": "user push"}),
    )
    .await;
    let report = accepted(
        &h,
        "keys",
        json!({"operation": 1000, "keys": ["phone", "gone", "guest"], "body_text": "to the phone"}),
    )
    .await;
    assert_eq!(report["offline_keys"], json!(["gone"]), "{report}");
    let id = report["message_id"].as_str().unwrap().to_owned();
    let mut records: Vec<IncomingPush> = drain(&bus, "sh")
        .await
        .into_iter()
        .filter(|r| r.message.message_id == id)
        .collect();
    records.sort_by(|a, b| a.partition_key.cmp(&b.partition_key));
    let seen: Vec<(&str, &str, Option<StreamPosition>)> = records
        .iter()
        .map(|r| {
            (
                r.partition_key.as_str(),
                r.message.receipt_target.as_str(),
                r.message.position,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            // An anonymous connection (user 0) has no inbox: a plain push.
            ("key:guest", "key:guest", None),
            // A stored key push shares its user's partition (the user stream's order).
            ("mid:7", "key:phone", user_position(2)),
        ]
    );
    // The phone reads it in user 7's stream; the laptop (another key) does not.
    let (phone, _) = stored(inbox.as_ref(), 7, Some("phone")).await;
    let (laptop, head) = stored(inbox.as_ref(), 7, Some("laptop")).await;
    assert_eq!(phone.len(), 2);
    assert_eq!(phone[1].key.as_deref(), Some("phone"));
    assert_eq!(laptop.len(), 1);
    assert_eq!(head, Position::new(0, 2).unwrap());
    let (status, answer) = receipts(&h, &id).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        states(&answer),
        [
            ("key:gone".to_owned(), names(&["offline"])),
            ("key:guest".to_owned(), names(&["accepted"])),
            ("key:phone".to_owned(), names(&["accepted", "stored"])),
        ]
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_pushes_carry_one_room_position_in_every_region_and_broadcasts_none() {
    let bus = MemoryBus::new(10_000);
    let h = start(config(), postgres().await, Arc::new(bus.clone())).await;
    let inbox = inbox_of(&h);
    h.register("n-sh", "sh").await;
    h.register("n-bj", "bj").await;
    for body in ["first", "second"] {
        let report = accepted(
            &h,
            "room",
            json!({"operation": 1000, "room": "live://1", "body_text": body}),
        )
        .await;
        assert_eq!(report["records"], 2, "{report}");
    }
    let head = inbox.room_head("live://1").await.unwrap();
    assert_eq!(head.seq, 2);
    assert!(head.epoch > 0, "a room's epoch is when its log started");
    for region in ["sh", "bj"] {
        let records = drain(&bus, region).await;
        let positions: Vec<Option<StreamPosition>> =
            records.iter().map(|r| r.message.position).collect();
        let expected: Vec<Option<StreamPosition>> = [1, 2]
            .map(|seq| {
                Some(StreamPosition {
                    stream: 2,
                    epoch: head.epoch,
                    seq,
                })
            })
            .into();
        assert_eq!(positions, expected, "{region}");
        assert!(records.iter().all(|r| r.message.receipt_target.is_empty()));
    }
    accepted(
        &h,
        "all",
        json!({"operation": 1000, "body_text": "everyone"}),
    )
    .await;
    for region in ["sh", "bj"] {
        let records = drain(&bus, region).await;
        let broadcast = records.last().unwrap();
        assert_eq!(broadcast.partition_key, "broadcast");
        assert_eq!(broadcast.message.position, None);
    }
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_bus_fails_the_push_and_leaves_nothing_readable() {
    // A broker nobody listens on: publishes fail after the delivery timeout.
    let port = rim_testkit::ports::free_port().unwrap();
    let settings = KafkaSettings {
        delivery_timeout: Duration::from_secs(1),
        ..KafkaSettings::new(format!("127.0.0.1:{port}"))
    };
    let bus = Arc::new(KafkaProducer::new(&settings).unwrap());
    let h = start(config(), postgres().await, bus).await;
    let inbox = inbox_of(&h);
    h.register("n1", "sh").await;
    let (status, _) = h
        .sessions("n1", vec![connect("phone", 7, 1, now(), "")])
        .await;
    assert_eq!(status, 200);
    let (status, answer) = push(
        &h,
        "users",
        json!({"operation": 1000, "mids": [7, 8], "body_text": "lost"}),
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("nothing was sent"),
        "{answer}"
    );
    for mid in [7, 8] {
        let (pushes, head) = stored(inbox.as_ref(), mid, None).await;
        assert!(pushes.is_empty(), "user {mid} can read {pushes:?}");
        // The number was burned, not kept for another push.
        assert_eq!(head, Position::new(0, 1).unwrap());
    }
    // A room push fails the same way (its log had answered) and keeps nothing either.
    let (status, _) = push(
        &h,
        "room",
        json!({"operation": 1000, "room": "live://1", "body_text": "lost"}),
    )
    .await;
    assert_eq!(status, 503);
    let head = inbox.room_head("live://1").await.unwrap();
    let now = now();
    match inbox
        .read_room("live://1", Position::new(head.epoch, 0).unwrap(), 10, now)
        .await
        .unwrap()
    {
        ReadOutcome::Page { pushes, .. } => assert!(pushes.is_empty()),
        ReadOutcome::NotResumable { reason, .. } => {
            assert_eq!(reason, NotResumedReason::Expired)
        }
    }
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_pushing_to_one_user_publish_its_positions_in_order() {
    const PER_INSTANCE: usize = 500;
    const CONCURRENCY: usize = 16;
    let url = TestPostgres::shared().fresh_database();
    let broker = TestKafka::start();
    let settings = KafkaSettings {
        partitions: 3,
        ..KafkaSettings::new(broker.bootstrap())
    };
    let mut instances = Vec::new();
    for _ in 0..2 {
        let store = Arc::new(
            PostgresStore::connect(&url, rim_store::StoreSettings::default())
                .await
                .unwrap(),
        );
        let producer = Arc::new(KafkaProducer::new(&settings).unwrap());
        instances.push(Arc::new(start(config(), store, producer).await));
    }
    instances[0].register("n1", "sh").await;
    let (status, _) = instances[0]
        .sessions("n1", vec![connect("phone", 7, 1, now(), "")])
        .await;
    assert_eq!(status, 200);
    let mut tasks = Vec::new();
    for (index, h) in instances.iter().enumerate() {
        for worker in 0..CONCURRENCY {
            let h = Arc::clone(h);
            tasks.push(tokio::spawn(async move {
                for n in (worker..PER_INSTANCE).step_by(CONCURRENCY) {
                    let body = json!({"operation": 1000, "mids": [7], "body_text": format!("{index}-{n}")});
                    let report = accepted(&h, "users", body).await;
                    assert_eq!(report["records"], 1, "{report}");
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = 2 * PER_INSTANCE;
    let mut consumer = KafkaConsumer::new(&settings, "sh", "durable-order")
        .await
        .unwrap();
    let mut records = Vec::new();
    while records.len() < total {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.next_batch(500))
            .await
            .unwrap_or_else(|_| panic!("only {} of {total} records", records.len()))
            .unwrap();
        records.extend(batch);
    }
    assert_eq!(records.len(), total);
    // One partition (the user's key), read in its log order.
    assert!(records.iter().all(|r| r.partition_key == "mid:7"));
    assert!(
        records
            .windows(2)
            .all(|w| w[0].position.partition == w[1].position.partition
                && w[0].position.offset < w[1].position.offset)
    );
    let seqs: Vec<u64> = records
        .iter()
        .map(|r| {
            let position = r.message.position.unwrap();
            assert_eq!((position.stream, position.epoch), (1, 0));
            position.seq
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "positions in partition order: strictly increasing, gap-free"
    );
    // And the inbox holds the same pushes under the same numbers.
    let inbox = inbox_of(&instances[0]);
    let (pushes, head) = stored(inbox.as_ref(), 7, Some("phone")).await;
    assert_eq!(head.seq, total as u64);
    for (push, record) in pushes.iter().zip(&records) {
        assert_eq!(
            push.message_id,
            record.message.message_id.parse::<MessageId>().unwrap()
        );
    }
    for h in instances {
        match Arc::try_unwrap(h) {
            Ok(h) => h.control.shutdown().await.unwrap(),
            Err(_) => panic!("an instance is still shared"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_removes_expired_pushes() {
    let config = rim_control::ControlConfig {
        control_inbox_max_age_ms: 300,
        control_sweep_interval_ms: 100,
        ..config()
    };
    let h = start(
        config.clone(),
        postgres().await,
        Arc::new(MemoryBus::new(100)),
    )
    .await;
    let inbox = h.store.inbox(config.inbox_settings()).unwrap();
    let report = accepted(
        &h,
        "users",
        json!({"operation": 1000, "mids": [9], "body_text": "short-lived"}),
    )
    .await;
    let id = report["message_id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match inbox
            .read_user(9, None, Position::ORIGIN, 10)
            .await
            .unwrap()
        {
            ReadOutcome::NotResumable { reason, head } => {
                assert_eq!(reason, NotResumedReason::Expired);
                assert_eq!(head.seq, 1);
                break;
            }
            ReadOutcome::Page { pushes, .. } => assert_eq!(pushes.len(), 1),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the push was never removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = receipts(&h, &id).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        states(&answer),
        [("mid:9".to_owned(), names(&["expired", "offline", "stored"]))]
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_sharing_session_look_ups_each_get_their_own_sessions() {
    // Odd users are online (one session each, key `k<mid>`; user 1 has three, above the bound of
    // two), even users are not. Many pushes at once share batched look-ups; each report must be
    // what the push's own look-up would have answered.
    let config = rim_control::ControlConfig {
        control_max_sessions_per_user: 2,
        ..config()
    };
    let h = Arc::new(start(config, postgres().await, Arc::new(MemoryBus::new(100_000))).await);
    h.register("n1", "sh").await;
    let mut events = Vec::new();
    for mid in (1..=41).step_by(2) {
        events.push(connect(&format!("k{mid}"), mid, mid as u64, now(), ""));
    }
    for extra in 0..2 {
        events.push(connect(&format!("k1-{extra}"), 1, 100 + extra, now(), ""));
    }
    let (status, _) = h.sessions("n1", events).await;
    assert_eq!(status, 200);
    let mut calls = Vec::new();
    for round in 0..3 {
        for first in 1..=40i64 {
            let h = h.clone();
            calls.push(tokio::spawn(async move {
                let pair = [first, first + 1];
                let (kind, target) = if (first + round) % 2 == 0 {
                    ("users", json!({"mids": pair}))
                } else {
                    let keys: Vec<String> = pair.iter().map(|mid| format!("k{mid}")).collect();
                    ("keys", json!({"keys": keys}))
                };
                let mut body = target;
                body["operation"] = json!(1000);
                body["body_text"] = json!(format!("{round}-{first}"));
                (kind, pair, accepted(&h, kind, body).await)
            }));
        }
    }
    for call in calls {
        let (kind, pair, report) = call.await.unwrap();
        let online: Vec<i64> = pair.iter().copied().filter(|mid| mid % 2 == 1).collect();
        let offline: Vec<i64> = pair.iter().copied().filter(|mid| mid % 2 == 0).collect();
        if kind == "users" {
            // User 1's sessions are capped at two.
            let sessions: usize = online.iter().map(|mid| if *mid == 1 { 2 } else { 1 }).sum();
            let capped: Vec<i64> = online.iter().copied().filter(|mid| *mid == 1).collect();
            assert_eq!(report["sessions"], sessions, "{pair:?}: {report}");
            assert_eq!(report["offline_mids"], json!(offline), "{pair:?}: {report}");
            assert_eq!(
                report.get("capped_mids").cloned().unwrap_or(json!([])),
                json!(capped),
                "{pair:?}: {report}"
            );
            assert_eq!(report["records"], online.len(), "{pair:?}: {report}");
        } else {
            let offline_keys: Vec<String> = offline.iter().map(|mid| format!("k{mid}")).collect();
            assert_eq!(report["sessions"], online.len(), "{pair:?}: {report}");
            assert_eq!(
                report["offline_keys"],
                json!(offline_keys),
                "{pair:?}: {report}"
            );
            assert_eq!(report["records"], online.len(), "{pair:?}: {report}");
        }
    }
    match Arc::try_unwrap(h) {
        Ok(h) => h.control.shutdown().await.unwrap(),
        Err(_) => panic!("the harness is still shared"),
    }
}
