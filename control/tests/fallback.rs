//! The receipt webhook and the fallback webhook of real control instances on a real PostgreSQL
//! store, calling a real HTTP receiver (axum on a free port) that records every call.
//!
//! Receipts are written through the inbox API (appends, receipts, acks) as the push path and the
//! edges write them, so these tests do not depend on those parts. Each test first registers the
//! feed consumers at the feed's current end with an already expired lease (as a control instance
//! does on its first round), so what the test writes next is what the instances must handle.

mod common;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use base64::Engine;
use common::{config, start};
use parking_lot::Mutex;
use rim_bus::memory::MemoryBus;
use rim_control::ControlConfig;
use rim_proto::durable::MessageId;
use rim_store::inbox::{AckEntry, Inbox, Receipt, ReceiptState, ReceiptTarget, UserEntry};
use rim_store::postgres::PostgresStore;
use rim_store::{Store, StoreSettings};
use rim_testkit::postgres::TestPostgres;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// An HTTP receiver that records each call's JSON body and answers 500 to the first `failures`.
#[derive(Clone, Default)]
struct Receiver {
    /// Every call, in arrival order, with the status it was answered.
    calls: Arc<Mutex<Vec<(u16, Value)>>>,
    failures: Arc<AtomicUsize>,
    url: String,
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        let mut receiver = Receiver {
            failures: Arc::new(AtomicUsize::new(failures)),
            ..Receiver::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        receiver.url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", post(record))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    /// The bodies of calls answered 2xx.
    fn accepted(&self) -> Vec<Value> {
        self.calls
            .lock()
            .iter()
            .filter(|(status, _)| *status < 300)
            .map(|(_, body)| body.clone())
            .collect()
    }

    fn attempts(&self) -> usize {
        self.calls.lock().len()
    }

    /// Waits until `done` holds for the accepted calls (at most 20 s).
    async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(&self.accepted()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; got {:?}",
                self.calls.lock()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn record(State(receiver): State<Receiver>, body: axum::body::Bytes) -> StatusCode {
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fail = receiver
        .failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    receiver.calls.lock().push((status.as_u16(), value));
    status
}

const SCAN_MS: u64 = 100;
const TIMEOUT_MS: u64 = 1_000;

/// A control configuration calling `fallback` (deadline `deadline_ms`) and/or posting receipt
/// events to `receipts` in batches of `batch`, scanning every 100 ms.
fn hooks(
    fallback: Option<&Receiver>,
    deadline_ms: u64,
    receipts: Option<&Receiver>,
    batch: usize,
) -> ControlConfig {
    ControlConfig {
        control_fallback_webhook_url: fallback.map(|r| r.url.clone()),
        control_fallback_deadline_ms: deadline_ms,
        control_fallback_scan_interval_ms: SCAN_MS,
        control_fallback_timeout_ms: TIMEOUT_MS,
        control_fallback_retry_ms: 5_000,
        control_fallback_batch: 7,
        control_receipt_webhook_url: receipts.map(|r| r.url.clone()),
        control_receipt_webhook_batch: batch,
        control_receipt_webhook_interval_ms: SCAN_MS,
        control_receipt_webhook_timeout_ms: TIMEOUT_MS,
        ..config()
    }
}

/// A fresh PostgreSQL database with its store and inbox; the feed consumers registered at its end.
async fn database() -> (String, Arc<dyn Store>, Arc<dyn Inbox>) {
    let url = TestPostgres::shared().fresh_database();
    let store = connect(&url).await;
    let inbox = store.inbox(config().inbox_settings()).unwrap();
    let feed = store.receipt_feed(config().inbox_settings()).unwrap();
    for consumer in [
        rim_control::receipt_events::CONSUMER,
        rim_control::fallback::OFFLINE_CONSUMER,
        rim_control::fallback::UNACKED_CONSUMER,
    ] {
        // Lease of 0 ms: the consumer exists from here on, and the first instance takes it at once.
        feed.lease(consumer, "test-setup", 0, rim_control::now_ms())
            .await
            .unwrap()
            .unwrap();
    }
    (url, store, inbox)
}

async fn connect(url: &str) -> Arc<dyn Store> {
    Arc::new(
        PostgresStore::connect(url, StoreSettings::default())
            .await
            .unwrap(),
    )
}

async fn control(config: ControlConfig, store: Arc<dyn Store>) -> common::Harness {
    start(config, store, Arc::new(MemoryBus::new(1_000))).await
}

fn push(mid: i64, key: Option<&str>, body: &str) -> UserEntry {
    UserEntry {
        mid,
        key: key.map(str::to_owned),
        message_id: MessageId(*uuid::Uuid::now_v7().as_bytes()),
        operation: 1000,
        body: body.as_bytes().to_vec(),
    }
}

fn target_of(entry: &UserEntry) -> ReceiptTarget {
    ReceiptTarget::of_entry(entry.mid, entry.key.as_deref())
}

/// Stores pushes as the push path does: `accepted` for each target, then the append (`stored`).
async fn store_pushes(inbox: &dyn Inbox, pushes: &[UserEntry]) {
    let now = rim_control::now_ms();
    let accepted: Vec<Receipt> = pushes
        .iter()
        .map(|p| receipt(p.message_id, target_of(p), ReceiptState::Accepted, now))
        .collect();
    inbox.record_receipts(&accepted).await.unwrap();
    inbox.append_user(pushes, now).await.unwrap();
}

fn receipt(message_id: MessageId, target: ReceiptTarget, state: ReceiptState, at: i64) -> Receipt {
    Receipt {
        message_id,
        target,
        state,
        at,
    }
}

/// Fallback calls per (message id, target).
fn calls_by_push(calls: &[Value]) -> BTreeMap<(String, String), Vec<Value>> {
    let mut by_push: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for call in calls {
        let key = (
            call["message_id"].as_str().unwrap_or_default().to_owned(),
            call["target"].as_str().unwrap_or_default().to_owned(),
        );
        by_push.entry(key).or_default().push(call.clone());
    }
    by_push
}

fn key_of(entry: &UserEntry) -> (String, String) {
    (entry.message_id.to_string(), target_of(entry).to_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unacked_push_falls_back_once_and_an_acked_one_never() {
    let relay = Receiver::start(0).await;
    let (_url, store, inbox) = database().await;
    let h = control(hooks(Some(&relay), 1_500, None, 1), store).await;
    let unacked = push(1, None, "for the phone");
    let acked = push(2, None, "seen");
    let key_push = push(3, Some("tablet-3"), "for the tablet");
    store_pushes(
        inbox.as_ref(),
        &[unacked.clone(), acked.clone(), key_push.clone()],
    )
    .await;
    let head = inbox.user_head(2).await.unwrap();
    inbox
        .record_acks(
            &[AckEntry {
                mid: 2,
                key: "phone-2".into(),
                position: head,
            }],
            rim_control::now_ms(),
        )
        .await
        .unwrap();
    let stored_at = std::time::Instant::now();

    relay
        .wait_for("two fallbacks", |calls| calls.len() >= 2)
        .await;
    assert!(
        stored_at.elapsed() >= Duration::from_millis(1_400),
        "not before the deadline"
    );
    // Several more scans: still once each, never for the acked push.
    tokio::time::sleep(Duration::from_millis(SCAN_MS * 8)).await;
    let by_push = calls_by_push(&relay.accepted());
    assert_eq!(by_push.len(), 2, "{by_push:?}");
    assert!(!by_push.contains_key(&key_of(&acked)));
    let call = &by_push[&key_of(&unacked)];
    assert_eq!(call.len(), 1);
    let call = &call[0];
    assert_eq!(call["reason"], "unacked");
    assert_eq!(call["operation"], 1000);
    assert_eq!(
        call["body"],
        base64::engine::general_purpose::STANDARD.encode("for the phone")
    );
    assert_eq!(call["position"], serde_json::json!({"epoch": 0, "seq": 1}));
    let call = &by_push[&key_of(&key_push)][0];
    assert_eq!(call["target"], "key:tablet-3");
    assert_eq!(
        call["body"],
        base64::engine::general_purpose::STANDARD.encode("for the tablet")
    );
    // The claim is a receipt of the push.
    let states: Vec<ReceiptState> = inbox
        .receipts(unacked.message_id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(
        states,
        [
            ReceiptState::Accepted,
            ReceiptState::Stored,
            ReceiptState::Fallback
        ]
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_target_falls_back_within_a_scan_interval() {
    let relay = Receiver::start(0).await;
    let (_url, store, inbox) = database().await;
    // A deadline far away: only the offline receipts can explain a call.
    let h = control(hooks(Some(&relay), 60_000, None, 1), store).await;
    // A user without a session is still stored (and offline); a key without one is offline only.
    let stored = push(5, None, "kept for later");
    store_pushes(inbox.as_ref(), std::slice::from_ref(&stored)).await;
    let unplaced = MessageId(*uuid::Uuid::now_v7().as_bytes());
    let now = rim_control::now_ms();
    let sent = std::time::Instant::now();
    inbox
        .record_receipts(&[
            receipt(
                stored.message_id,
                ReceiptTarget::Mid(5),
                ReceiptState::Offline,
                now,
            ),
            receipt(
                unplaced,
                ReceiptTarget::Key("gone".into()),
                ReceiptState::Offline,
                now,
            ),
        ])
        .await
        .unwrap();
    relay
        .wait_for("two offline fallbacks", |calls| calls.len() >= 2)
        .await;
    assert!(
        sent.elapsed() < Duration::from_millis(SCAN_MS * 10),
        "offline falls back at once, took {:?}",
        sent.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(SCAN_MS * 5)).await;
    let by_push = calls_by_push(&relay.accepted());
    assert_eq!(by_push.len(), 2);
    let user_call = &by_push[&key_of(&stored)];
    assert_eq!(user_call.len(), 1);
    assert_eq!(user_call[0]["reason"], "offline");
    assert_eq!(user_call[0]["position"]["seq"], 1);
    let key_call = &by_push[&(unplaced.to_string(), "key:gone".to_owned())];
    assert_eq!(key_call.len(), 1);
    assert_eq!(key_call[0]["reason"], "offline");
    assert_eq!(key_call[0]["body"], Value::Null, "never stored");
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_and_a_restart_call_each_fallback_once() {
    let relay = Receiver::start(0).await;
    let (url, store, inbox) = database().await;
    let settings = hooks(Some(&relay), 800, None, 1);
    let first = control(settings.clone(), store).await;
    let second = control(settings.clone(), connect(&url).await).await;
    let pushes: Vec<UserEntry> = (1..=40).map(|mid| push(mid, None, "p")).collect();
    store_pushes(inbox.as_ref(), &pushes[..20]).await;
    let offline: Vec<Receipt> = pushes[..20]
        .iter()
        .step_by(4)
        .map(|p| {
            receipt(
                p.message_id,
                target_of(p),
                ReceiptState::Offline,
                rim_control::now_ms(),
            )
        })
        .collect();
    inbox.record_receipts(&offline).await.unwrap();
    relay
        .wait_for("the first 20 fallbacks", |calls| calls.len() >= 20)
        .await;

    // The first instance stops; the next pushes are stored while only the second runs, and a third
    // instance starts on the same database.
    first.control.shutdown().await.unwrap();
    store_pushes(inbox.as_ref(), &pushes[20..]).await;
    let third = control(settings, connect(&url).await).await;
    relay
        .wait_for("all 40 fallbacks", |calls| calls.len() >= 40)
        .await;
    second.control.shutdown().await.unwrap();
    // And after the second stops too, the third takes over the leases without calling again.
    tokio::time::sleep(Duration::from_millis(
        3 * SCAN_MS + TIMEOUT_MS + 10 * SCAN_MS,
    ))
    .await;
    let by_push = calls_by_push(&relay.accepted());
    assert_eq!(by_push.len(), 40);
    for entry in &pushes {
        let calls = &by_push[&key_of(entry)];
        assert_eq!(calls.len(), 1, "{calls:?}");
    }
    let offline_calls = by_push
        .values()
        .filter(|calls| calls[0]["reason"] == "offline")
        .count();
    assert_eq!(offline_calls, 5);
    assert_eq!(relay.attempts(), 40);
    third.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_relay_is_retried_for_a_bounded_time() {
    // The first two attempts fail: the third gets through, and nothing more is sent.
    let relay = Receiver::start(2).await;
    let (_url, store, inbox) = database().await;
    let h = control(hooks(Some(&relay), 300, None, 1), store).await;
    let entry = push(9, None, "retry me");
    store_pushes(inbox.as_ref(), std::slice::from_ref(&entry)).await;
    relay
        .wait_for("the fallback", |calls| !calls.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(SCAN_MS * 5)).await;
    assert_eq!(relay.attempts(), 3);
    assert_eq!(relay.accepted().len(), 1);
    h.control.shutdown().await.unwrap();

    // A relay that always fails is given up after the retry time (here 5 s), not called forever.
    let broken = Receiver::start(usize::MAX).await;
    let (_url, store, inbox) = database().await;
    let h = control(hooks(Some(&broken), 100, None, 1), store).await;
    store_pushes(inbox.as_ref(), &[push(9, None, "lost")]).await;
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let attempts = broken.attempts();
    assert!(attempts >= 3, "retried: {attempts}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(broken.attempts(), attempts, "given up");
    h.control.shutdown().await.unwrap();
}

/// The events the receiver accepted, flattened in arrival order.
fn events(batches: &[Value]) -> Vec<Value> {
    batches
        .iter()
        .flat_map(|batch| batch.as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipt_events_arrive_in_order_batched_and_again_after_a_500() {
    // The first post is answered 500: its events must come again, before anything newer.
    let receiver = Receiver::start(1).await;
    let relay = Receiver::start(0).await;
    let (_url, store, inbox) = database().await;
    let h = control(hooks(Some(&relay), 60_000, Some(&receiver), 4), store).await;
    let pushes: Vec<UserEntry> = (1..=3).map(|mid| push(mid, None, "p")).collect();
    store_pushes(inbox.as_ref(), &pushes).await;
    let now = rim_control::now_ms();
    inbox
        .record_receipts(&[receipt(
            pushes[0].message_id,
            ReceiptTarget::Mid(1),
            ReceiptState::Written,
            now,
        )])
        .await
        .unwrap();
    inbox
        .record_acks(
            &[AckEntry {
                mid: 1,
                key: "phone".into(),
                position: inbox.user_head(1).await.unwrap(),
            }],
            now,
        )
        .await
        .unwrap();
    // Last, so the fallback it causes is the last receipt.
    inbox
        .record_receipts(&[receipt(
            pushes[2].message_id,
            ReceiptTarget::Mid(3),
            ReceiptState::Offline,
            now,
        )])
        .await
        .unwrap();
    // 3 accepted, 3 stored, written, acked, offline, and the offline push's fallback: 10 events.
    receiver
        .wait_for("10 receipt events", |batches| events(batches).len() >= 10)
        .await;
    tokio::time::sleep(Duration::from_millis(SCAN_MS * 5)).await;
    let batches = receiver.accepted();
    assert!(
        batches
            .iter()
            .all(|b| b.as_array().is_some_and(|a| !a.is_empty() && a.len() <= 4))
    );
    let got = events(&batches);
    assert_eq!(got.len(), 10, "{got:?}");
    let ids: Vec<u64> = got.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {ids:?}"
    );
    // The failed post held the first events; they came again, unchanged.
    let calls = receiver.calls.lock().clone();
    assert_eq!(calls[0].0, 500);
    assert_eq!(calls[1], (204, calls[0].1.clone()));
    let states: Vec<(String, String)> = got
        .iter()
        .map(|e| {
            (
                e["target"].as_str().unwrap().to_owned(),
                e["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = |target: &str, state: &str| (target.to_owned(), state.to_owned());
    assert_eq!(
        states,
        [
            expect("mid:1", "accepted"),
            expect("mid:2", "accepted"),
            expect("mid:3", "accepted"),
            expect("mid:1", "stored"),
            expect("mid:2", "stored"),
            expect("mid:3", "stored"),
            expect("mid:1", "written"),
            expect("mid:1", "acked"),
            expect("mid:3", "offline"),
            expect("mid:3", "fallback"),
        ]
    );
    assert_eq!(got[0]["message_id"], pushes[0].message_id.to_string());
    assert_eq!(got[6]["at_unix_ms"], now);
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipt_events_survive_a_restart_and_a_second_instance() {
    let receiver = Receiver::start(0).await;
    let (url, store, inbox) = database().await;
    let settings = hooks(None, 0, Some(&receiver), 5);
    let first = control(settings.clone(), store).await;
    let second = control(settings.clone(), connect(&url).await).await;
    let pushes: Vec<UserEntry> = (1..=12).map(|mid| push(mid, None, "p")).collect();
    inbox
        .append_user(&pushes[..6], rim_control::now_ms())
        .await
        .unwrap();
    receiver
        .wait_for("6 events", |batches| events(batches).len() >= 6)
        .await;
    // Both instances stop; receipts recorded meanwhile are posted by the next instance.
    first.control.shutdown().await.unwrap();
    second.control.shutdown().await.unwrap();
    inbox
        .append_user(&pushes[6..], rim_control::now_ms())
        .await
        .unwrap();
    let third = control(settings, connect(&url).await).await;
    receiver
        .wait_for("12 events", |batches| events(batches).len() >= 12)
        .await;
    tokio::time::sleep(Duration::from_millis(SCAN_MS * 5)).await;
    let got = events(&receiver.accepted());
    let messages: Vec<String> = got
        .iter()
        .map(|e| e["message_id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = pushes.iter().map(|p| p.message_id.to_string()).collect();
    assert_eq!(messages, expected, "each stored receipt once, in order");
    third.control.shutdown().await.unwrap();
}

/// The whole path: pushes through the push API to users with and without sessions, an ack through
/// the edge API, and what the relay and the receipt receiver are told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_pushes_fall_back_and_report_their_receipts() {
    use rim_proto::schema::{AckBatch, DeviceAck};
    let relay = Receiver::start(0).await;
    let receiver = Receiver::start(0).await;
    let (_url, store, _inbox) = database().await;
    let h = control(hooks(Some(&relay), 1_000, Some(&receiver), 50), store).await;
    h.register("n1", "sh").await;
    let (status, _) = h
        .sessions(
            "n1",
            vec![
                common::connect("phone-7", 7, 1, common::now(), ""),
                common::connect("tablet-9", 9, 2, common::now(), ""),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let push_to = |kind: &'static str, body: Value| {
        let request = h
            .with_key(
                reqwest::Method::POST,
                &format!("/v1/push/{kind}"),
                common::ADMIN_KEY,
            )
            .json(&body);
        async move {
            let (status, report) = common::Harness::call(request).await;
            assert_eq!(status, 202, "{report}");
            report["message_id"].as_str().unwrap().to_owned()
        }
    };
    // 7 online (never acks), 8 offline, 9 online and acks; a key nobody holds.
    let to_users = push_to(
        "users",
        serde_json::json!({"operation": 1000, "mids": [7, 8, 9], "body_text": "hello"}),
    )
    .await;
    let to_key = push_to(
        "keys",
        serde_json::json!({"operation": 1001, "keys": ["nobody"], "body_text": "hi"}),
    )
    .await;
    let credential = h.enroll("edge", "n1", "sh").await;
    let acks = AckBatch {
        node_id: "n1".into(),
        acks: vec![DeviceAck {
            mid: 9,
            key: "tablet-9".into(),
            epoch: 0,
            seq: 1,
        }],
    };
    let response = h.edge_with(&credential.token, "/edge/v1/acks", &acks).await;
    assert_eq!(response.status(), 204);

    relay
        .wait_for("three fallbacks", |calls| calls.len() >= 3)
        .await;
    tokio::time::sleep(Duration::from_millis(SCAN_MS * 8)).await;
    let by_push = calls_by_push(&relay.accepted());
    let reason = |id: &str, target: &str| -> Vec<String> {
        by_push
            .get(&(id.to_owned(), target.to_owned()))
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(by_push.len(), 3, "{by_push:?}");
    assert_eq!(reason(&to_users, "mid:7"), ["unacked"]);
    assert_eq!(reason(&to_users, "mid:8"), ["offline"]);
    assert_eq!(reason(&to_key, "key:nobody"), ["offline"]);
    let offline = &by_push[&(to_users.clone(), "mid:8".to_owned())][0];
    assert_eq!(offline["operation"], 1000);
    assert_eq!(
        offline["body"],
        base64::engine::general_purpose::STANDARD.encode("hello")
    );
    assert_eq!(
        offline["position"],
        serde_json::json!({"epoch": 0, "seq": 1})
    );

    // The receipt receiver saw each state of each target once.
    receiver
        .wait_for("the fallback receipts", |batches| {
            events(batches)
                .iter()
                .filter(|e| e["state"] == "fallback")
                .count()
                >= 3
        })
        .await;
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in events(&receiver.accepted()) {
        seen.entry(event["target"].as_str().unwrap().to_owned())
            .or_default()
            .push(event["state"].as_str().unwrap().to_owned());
    }
    let sorted = |mut states: Vec<String>| {
        states.sort();
        states
    };
    let expect = |states: &[&str]| sorted(states.iter().map(|s| (*s).to_owned()).collect());
    assert_eq!(
        sorted(seen["mid:7"].clone()),
        expect(&["accepted", "stored", "fallback"])
    );
    assert_eq!(
        sorted(seen["mid:8"].clone()),
        expect(&["offline", "stored", "fallback"])
    );
    assert_eq!(
        sorted(seen["mid:9"].clone()),
        expect(&["accepted", "stored", "acked"])
    );
    assert_eq!(
        sorted(seen["key:nobody"].clone()),
        expect(&["offline", "fallback"])
    );
    h.control.shutdown().await.unwrap();
}
