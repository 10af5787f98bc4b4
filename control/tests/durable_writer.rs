//! The durable writer's batching (issue 8): a durable batch holds its users' and rooms' heads in
//! PostgreSQL until the bus acknowledged it, so a batch that shares a head with a running one would
//! only wait for it. The writer starts such pushes together, in one batch, once the running one is
//! done, and keeps starting batches for other heads meanwhile.
//!
//! The store is real PostgreSQL (rim-testkit); the bus is a memory bus behind a gate that holds
//! every publish carrying a record for one room until the test opens it, and counts publishes. The
//! tests watch the writer's queue through its gauge, `rim_control_durable_waiting`, in this test
//! binary's global recorder.

mod common;

use async_trait::async_trait;
use common::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use reqwest::Method;
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, BusError, BusHealth, BusProducer, OutgoingPush};
use rim_proto::schema::PushMessage;
use rim_proto::schema::push_message::Target;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The room whose publishes the gate holds.
const HELD_ROOM: &str = "live://held";

/// The body of a push whose publish panics.
const PANIC_BODY: &[u8] = b"panic";

/// Held by each test: the writer's gauge is one per process, so under `cargo test` (one process
/// for the binary) one test's writer must not set it while the other waits on it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test binary's global recorder (installed once, whichever test comes first).
fn recorder() -> &'static PrometheusHandle {
    static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();
    RECORDER.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

/// Waits until the writer holds `count` pushes back (its gauge says so).
async fn writer_holds(count: usize) {
    let line = format!("rim_control_durable_waiting {count}");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !recorder().render().lines().any(|l| l == line) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the writer never held {count} pushes"));
}

/// A memory bus that holds publishes to [`HELD_ROOM`] until `open` has a permit, and counts them.
#[derive(Clone)]
struct GatedBus {
    bus: MemoryBus,
    open: Arc<Semaphore>,
    held_room_publishes: Arc<AtomicUsize>,
}

impl GatedBus {
    /// A gate over a fresh memory bus, open from the start or closed until the test opens it
    /// (once open, it stays open).
    fn new(open: bool) -> Self {
        GatedBus {
            bus: MemoryBus::new(10_000),
            open: Arc::new(Semaphore::new(usize::from(open))),
            held_room_publishes: Arc::default(),
        }
    }
}

fn to_held_room(message: &PushMessage) -> bool {
    matches!(&message.target, Some(Target::Room(room)) if room.room == HELD_ROOM)
}

#[async_trait]
impl BusProducer for GatedBus {
    async fn publish(&self, pushes: Vec<OutgoingPush>) -> Result<(), BusError> {
        assert!(
            !pushes.iter().any(|push| push.message.body == PANIC_BODY),
            "a publish that panics"
        );
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
    let _alone = ONE_AT_A_TIME.lock().await;
    recorder();
    let store = fresh_postgres().await;
    let bus = GatedBus::new(false);
    let memory = bus.bus.clone();
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
        writer_holds(n).await;
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

/// A batch that panics (here in its publish) gives its heads back: the next push to its room goes
/// out, where it would otherwise wait on the panicked batch's head for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_panics_gives_its_heads_back() {
    let _alone = ONE_AT_A_TIME.lock().await;
    recorder();
    let store = fresh_postgres().await;
    let bus = GatedBus::new(true);
    let h = start(config(), store, Arc::new(bus)).await;
    h.register("n1", "sh").await;
    let (status, report) = room_push(&h, HELD_ROOM, "panic").await;
    assert_eq!(status, 503, "the panicked batch's push failed: {report}");
    for round in 0..(2 * rim_control::push::MAX_BATCHES_IN_FLIGHT) {
        let (status, report) = tokio::time::timeout(
            Duration::from_secs(10),
            room_push(&h, HELD_ROOM, &round.to_string()),
        )
        .await
        .expect("a push to the panicked batch's room waited for its head");
        assert_eq!(status, 202, "{report}");
        let (status, report) = room_push(&h, HELD_ROOM, "panic").await;
        assert_eq!(status, 503, "{report}");
    }
    h.control.shutdown().await.unwrap();
}
