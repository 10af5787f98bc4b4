//! The durable writer's batching (issue 8): a durable batch holds its users' and rooms' heads in
//! PostgreSQL until the bus acknowledged it, so a batch that shares a head with a running one would
//! only wait for it. The writer starts such pushes together, in one batch, once the running one is
//! done, and keeps starting batches for other heads meanwhile.
//!
//! The store is real PostgreSQL (rim-testkit); the bus is a memory bus behind a gate that holds
//! every publish carrying a record for one room until the test opens it, and counts publishes.

mod common;

use async_trait::async_trait;
use common::*;
use reqwest::Method;
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, BusError, BusHealth, BusProducer, OutgoingPush};
use rim_proto::schema::PushMessage;
use rim_proto::schema::push_message::Target;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The room whose publishes the gate holds.
const HELD_ROOM: &str = "live://held";

/// A memory bus that holds publishes to [`HELD_ROOM`] until `open` has a permit, and counts them.
#[derive(Clone)]
struct GatedBus {
    bus: MemoryBus,
    open: Arc<Semaphore>,
    held_room_publishes: Arc<AtomicUsize>,
}

fn to_held_room(message: &PushMessage) -> bool {
    matches!(&message.target, Some(Target::Room(room)) if room.room == HELD_ROOM)
}

#[async_trait]
impl BusProducer for GatedBus {
    async fn publish(&self, pushes: Vec<OutgoingPush>) -> Result<(), BusError> {
        if pushes.iter().any(|push| to_held_room(&push.message)) {
            self.held_room_publishes.fetch_add(1, Ordering::SeqCst);
            // Opened once for good: every publish after the first permit passes.
            let _ = self.open.acquire().await.map(|permit| permit.forget());
            self.open.add_permits(1);
        }
        self.bus.publish(pushes).await
    }

    async fn health(&self) -> BusHealth {
        self.bus.health().await
    }
}

async fn room_push(h: &Harness, room: &str, text: &str) -> (u16, Value) {
    Harness::call(
        h.with_key(Method::POST, "/v1/push/room", ADMIN_KEY)
            .json(&json!({
                "operation": 1000, "room": room, "body_text": text
            })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_a_room_whose_batch_runs_leave_together_after_it_and_other_rooms_do_not_wait() {
    let store = fresh_postgres().await;
    let memory = MemoryBus::new(10_000);
    let bus = GatedBus {
        bus: memory.clone(),
        open: Arc::new(Semaphore::new(0)),
        held_room_publishes: Arc::default(),
    };
    let config = rim_control::ControlConfig {
        control_publish_timeout_ms: 30_000,
        ..config()
    };
    let h = Arc::new(start(config, store, Arc::new(bus.clone())).await);
    h.register("n1", "sh").await;

    // The first push's batch is held in its publish, its room's head locked.
    let first = {
        let h = h.clone();
        tokio::spawn(async move { room_push(&h, HELD_ROOM, "0").await })
    };
    while bus.held_room_publishes.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Twenty more to that room queue behind it, one after another (so their order is known).
    let mut queued = Vec::new();
    for n in 1..=20 {
        let h = h.clone();
        queued.push(tokio::spawn(async move {
            room_push(&h, HELD_ROOM, &n.to_string()).await
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A push to another room is not held behind them.
    let (status, report) = tokio::time::timeout(
        Duration::from_secs(10),
        room_push(&h, "live://free", "free"),
    )
    .await
    .expect("a push to another room waited for the held room's batch");
    assert_eq!(status, 202, "{report}");
    assert_eq!(bus.held_room_publishes.load(Ordering::SeqCst), 1);

    bus.open.add_permits(1);
    let (status, report) = first.await.unwrap();
    assert_eq!(status, 202, "{report}");
    for call in queued {
        let (status, report) = call.await.unwrap();
        assert_eq!(status, 202, "{report}");
    }
    // The twenty went out in one batch after the first (one per push would be 20; a writer that
    // starts batches regardless of heads sends several that each wait on the room's head).
    assert_eq!(bus.held_room_publishes.load(Ordering::SeqCst), 2);

    // In order, numbered 1..=21 on the bus.
    let mut consumer = memory.consumer("sh", "writer-test");
    let records = tokio::time::timeout(Duration::from_secs(2), consumer.next_batch(1000))
        .await
        .unwrap()
        .unwrap();
    let held: Vec<(String, u64)> = records
        .iter()
        .filter(|record| to_held_room(&record.message))
        .map(|record| {
            let seq = record.message.position.map(|p| p.seq).unwrap_or(0);
            (
                String::from_utf8_lossy(&record.message.body).into_owned(),
                seq,
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = (0..=20).map(|n| (n.to_string(), n + 1)).collect();
    assert_eq!(held, expected);
    match Arc::try_unwrap(h) {
        Ok(h) => h.control.shutdown().await.unwrap(),
        Err(_) => panic!("the harness is still shared"),
    }
}
