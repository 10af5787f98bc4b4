//! The durable writer through a bus outage (issue 9): a bus that stops acknowledging must not wedge
//! the writer. Every durable push waiting meanwhile is answered 503 within a bound
//! (`control_publish_timeout_ms` and a trial batch at a time, see `push`), nothing of them is
//! readable, and the first push after the bus is back is accepted, with positions that keep
//! increasing on the bus and in the inbox (gaps only where a failed batch burned its numbers).
//!
//! The bus is a memory bus behind a switch that, while thrown, takes publishes and never answers
//! them (what a broker that went away looks like to a caller before any timeout); the store is
//! real PostgreSQL (rim-testkit).

mod common;

use async_trait::async_trait;
use common::*;
use reqwest::Method;
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, BusError, BusHealth, BusProducer, OutgoingPush};
use rim_proto::durable::Position;
use rim_store::inbox::{Inbox, ReadOutcome};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The instance's publish timeout in these tests.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(300);

/// Longest any push may wait for its answer during the outage: the batches in flight time out
/// (one publish timeout), then one trial batch at a time runs while the others are refused at
/// once, with a wide margin for a loaded machine.
const ANSWER_BOUND: Duration = Duration::from_secs(3);

/// A memory bus whose publishes hang, never acknowledged, while `hung` is set.
#[derive(Clone)]
struct SwitchedBus {
    bus: MemoryBus,
    hung: Arc<AtomicBool>,
}

#[async_trait]
impl BusProducer for SwitchedBus {
    async fn publish(&self, pushes: Vec<OutgoingPush>) -> Result<(), BusError> {
        if self.hung.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        self.bus.publish(pushes).await
    }

    async fn health(&self) -> BusHealth {
        self.bus.health().await
    }
}

/// A durable push to user 7 (`/v1/push/users`) or to the room: status, answer and how long it
/// took.
async fn push(h: &Harness, kind: &str, text: &str) -> (u16, Value, Duration) {
    let body = match kind {
        "users" => json!({"operation": 1000, "mids": [7], "body_text": text}),
        _ => json!({"operation": 1000, "room": "live://1", "body_text": text}),
    };
    let started = Instant::now();
    let (status, answer) = Harness::call(
        h.with_key(Method::POST, &format!("/v1/push/{kind}"), ADMIN_KEY)
            .json(&body),
    )
    .await;
    (status, answer, started.elapsed())
}

/// The user stream positions of every record on region `sh` so far, in log order.
async fn bus_positions(bus: &MemoryBus) -> Vec<u64> {
    let mut consumer = bus.consumer("sh", "outage-test");
    let records = tokio::time::timeout(Duration::from_secs(2), consumer.next_batch(10_000))
        .await
        .unwrap()
        .unwrap();
    records
        .iter()
        .filter_map(|record| record.message.position)
        .filter(|position| position.stream == 1)
        .map(|position| position.seq)
        .collect()
}

/// The positions of user 7's readable pushes, and its head.
async fn stored(inbox: &dyn Inbox) -> (Vec<u64>, Position) {
    match inbox
        .read_user(7, None, Position::ORIGIN, 1000)
        .await
        .unwrap()
    {
        ReadOutcome::Page { pushes, head } => {
            (pushes.iter().map(|push| push.position.seq).collect(), head)
        }
        other => panic!("expected a page, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_stops_answering_gets_every_push_a_503_in_time_and_recovers_at_once() {
    let store = fresh_postgres().await;
    let memory = MemoryBus::new(10_000);
    let bus = SwitchedBus {
        bus: memory.clone(),
        hung: Arc::default(),
    };
    let config = rim_control::ControlConfig {
        control_publish_timeout_ms: PUBLISH_TIMEOUT.as_millis() as u64,
        ..config()
    };
    let h = Arc::new(start(config.clone(), store, Arc::new(bus.clone())).await);
    let inbox = h.store.inbox(config.inbox_settings()).unwrap();
    h.register("n1", "sh").await;
    let (status, _) = h
        .sessions("n1", vec![connect("phone", 7, 1, now(), "live://1")])
        .await;
    assert_eq!(status, 200);
    for n in 0..2 {
        let (status, answer, _) = push(&h, "users", &format!("before-{n}")).await;
        assert_eq!(status, 202, "{answer}");
    }

    // The bus stops answering: concurrent user and room pushes, started over a few publish
    // timeouts (several batches in flight, more queued behind them, more arriving while a trial
    // batch runs), must all be answered 503, each within the bound.
    bus.hung.store(true, Ordering::Release);
    let mut calls = Vec::new();
    for n in 0..24 {
        let h = h.clone();
        let kind = if n % 3 == 0 { "room" } else { "users" };
        tokio::time::sleep(Duration::from_millis(40)).await;
        calls.push(tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(30),
                push(&h, kind, &format!("lost-{n}")),
            )
            .await
            .unwrap_or_else(|_| panic!("push {n} was not answered within 30 s"))
        }));
    }
    let mut refused_at_once = 0;
    for call in calls {
        let (status, answer, took) = call.await.unwrap();
        assert_eq!(status, 503, "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains("nothing was sent"), "{answer}");
        assert!(
            took <= ANSWER_BOUND,
            "a push waited {took:?} for its 503 ({answer})"
        );
        if message.contains("refused until a trial push gets through") {
            refused_at_once += 1;
        }
    }
    // Some were refused without a try, which is what keeps the wait bounded however many come.
    assert!(refused_at_once > 0, "no push was refused at once");
    // Sequential pushes during the outage: answered within the bound too, none accepted, and
    // a room push is not sent without a position (the store is fine, the bus is what failed).
    for n in 0..3 {
        for kind in ["users", "room"] {
            let (status, answer, took) = push(&h, kind, &format!("still-lost-{n}")).await;
            assert_eq!(status, 503, "{answer}");
            assert!(took <= ANSWER_BOUND, "{kind} push waited {took:?}");
        }
    }
    let (readable, head) = stored(inbox.as_ref()).await;
    assert_eq!(readable, [1, 2], "only the pushes accepted are readable");
    assert!(head.seq > 2, "the failed batches burned their numbers");

    // The bus is back: the very next push is accepted, and so is everything after it.
    bus.hung.store(false, Ordering::Release);
    for n in 0..5 {
        for kind in ["users", "room"] {
            let (status, answer, took) = push(&h, kind, &format!("after-{n}")).await;
            assert_eq!(status, 202, "{kind} push {n} after the outage: {answer}");
            assert!(took <= ANSWER_BOUND, "{kind} push waited {took:?}");
        }
    }
    let (readable, head) = stored(inbox.as_ref()).await;
    let on_bus = bus_positions(&memory).await;
    assert_eq!(
        on_bus, readable,
        "the bus carries exactly the readable pushes"
    );
    assert_eq!(readable.len(), 7, "{readable:?}");
    assert!(
        readable.windows(2).all(|pair| pair[0] < pair[1]),
        "positions strictly increase: {readable:?}"
    );
    assert_eq!(&readable[..2], [1, 2]);
    // After the outage, gap-free again: the five pushes took consecutive numbers, the last of
    // them the head.
    let after: Vec<u64> = (head.seq - 4..=head.seq).collect();
    assert_eq!(readable[2..], after[..], "{readable:?}");
    match Arc::try_unwrap(h) {
        Ok(h) => h.control.shutdown().await.unwrap(),
        Err(_) => panic!("the harness is still shared"),
    }
}
