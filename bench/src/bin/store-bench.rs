//! store-bench: how many session events per second the PostgreSQL store ingests.
//!
//! Edges report connects, renewals and disconnects in batches; the control plane must keep up with
//! every edge of a region at once. This starts a throwaway PostgreSQL (rim-testkit), registers one
//! node per writer task and has the tasks send batches concurrently, in three phases that stress
//! different writes: connects of new keys (inserts), renewals (updates) and churn (a disconnect and
//! a reconnect of each key, i.e. deletes plus inserts). The in-memory store runs the same phases as a
//! baseline. Run with `cargo run --release -p rim-bench --bin store-bench -- --help`.

use clap::Parser;
use rim_proto::schema::SessionEvent;
use rim_proto::schema::session_event::Kind;
use rim_store::memory::MemoryStore;
use rim_store::postgres::{PoolSettings, PostgresStore};
use rim_store::{SessionApplyReport, Store, StoreSettings};
use rim_testkit::postgres::TestPostgres;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Benchmark parameters.
#[derive(Parser, Debug)]
struct Args {
    /// Concurrent writer tasks, each acting as one edge node.
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// Session events per batch (one store call).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Distinct connection keys per task; every phase touches each key once.
    #[arg(long, default_value_t = 50_000)]
    keys_per_task: usize,
    /// Pool connections of the PostgreSQL store.
    #[arg(long, default_value_t = 8)]
    pool: u32,
}

/// One kind of load.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Connect,
    Renew,
    Churn,
    Disconnect,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect (insert)",
            Phase::Renew => "renew (update)",
            Phase::Churn => "disconnect+reconnect",
            Phase::Disconnect => "disconnect (delete)",
        }
    }

    /// The events of this phase for one key; `generation` makes reconnects newer than what is stored.
    fn events(self, key: &str, mid: i64, generation: u64, at: i64) -> Vec<SessionEvent> {
        let event = |kind: Kind, connection_id: u64| SessionEvent {
            kind: kind.into(),
            key: key.to_owned(),
            mid,
            room: format!("live://{}", mid % 1000),
            platform: "android".into(),
            accepts: vec![1000, 1001, 1002],
            connection_id,
            at_unix_ms: at,
            ip: "198.51.100.7".into(),
        };
        match self {
            Phase::Connect => vec![event(Kind::Connect, generation)],
            Phase::Renew => vec![event(Kind::Renew, generation)],
            Phase::Churn => vec![
                event(Kind::Disconnect, generation),
                event(Kind::Connect, generation + 1),
            ],
            Phase::Disconnect => vec![event(Kind::Disconnect, generation)],
        }
    }

    /// Whether the store applied every event of the phase (none was ignored).
    fn all_applied(self, report: &SessionApplyReport, events: u64) -> bool {
        let applied = match self {
            Phase::Connect => report.connected,
            Phase::Renew => report.renewed,
            Phase::Churn => report.connected + report.disconnected,
            Phase::Disconnect => report.disconnected,
        };
        applied == events && report.ignored == 0
    }
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Runs one phase on every task at once, checking that no event was ignored; returns (events,
/// elapsed, batch latencies).
async fn run_phase(
    store: Arc<dyn Store>,
    args: &Args,
    phase: Phase,
    generation: u64,
) -> anyhow::Result<(usize, Duration, Vec<Duration>)> {
    // Events are built before the clock starts: only the store's work is timed.
    let now = now_ms();
    let workloads: Vec<Vec<SessionEvent>> = (0..args.tasks)
        .map(|task| {
            (0..args.keys_per_task)
                .flat_map(|k| {
                    let mid = (task * args.keys_per_task + k) as i64;
                    let key = format!("key-{task}-{k}");
                    phase.events(&key, mid, generation, now + generation as i64)
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (task, events) in workloads.into_iter().enumerate() {
        let store = Arc::clone(&store);
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let node = format!("bench-node-{task}");
            let mut latencies = Vec::new();
            let mut total = SessionApplyReport::default();
            for chunk in events.chunks(batch) {
                let sent = Instant::now();
                let report = store.apply_session_events(&node, chunk, now).await?;
                latencies.push(sent.elapsed());
                total.connected += report.connected;
                total.disconnected += report.disconnected;
                total.renewed += report.renewed;
                total.ignored += report.ignored;
            }
            anyhow::ensure!(
                phase.all_applied(&total, events.len() as u64),
                "{node}: not every {phase:?} event applied: {total:?}"
            );
            anyhow::Ok((events.len(), latencies))
        }));
    }
    let (mut total, mut latencies) = (0, Vec::new());
    for task in tasks {
        let (events, task_latencies) = task.await??;
        total += events;
        latencies.extend(task_latencies);
    }
    Ok((total, started.elapsed(), latencies))
}

async fn bench(label: &str, store: Arc<dyn Store>, args: &Args) -> anyhow::Result<()> {
    let now = now_ms();
    for task in 0..args.tasks {
        let registration = rim_proto::schema::NodeRegistration {
            node_id: format!("bench-node-{task}"),
            region: "bench".into(),
            latitude: 31.2,
            longitude: 121.5,
            hostname: "bench.local".into(),
            tcp_port: 3101,
            ws_port: 3102,
            weight: 1,
            ..Default::default()
        };
        store.register_node(&registration, now).await?;
    }
    println!("\n{label}");
    println!(
        "  {:<22} {:>10} {:>9} {:>14} {:>12} {:>12}",
        "phase", "events", "seconds", "events/s", "batch p50", "batch p99"
    );
    let phases = [
        (Phase::Connect, 1),
        (Phase::Renew, 1),
        (Phase::Churn, 1),
        (Phase::Renew, 2),
        (Phase::Disconnect, 2),
    ];
    let (mut all_events, mut all_elapsed) = (0, Duration::ZERO);
    for (phase, generation) in phases {
        let (events, elapsed, mut latencies) =
            run_phase(Arc::clone(&store), args, phase, generation).await?;
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        println!(
            "  {:<22} {:>10} {:>9.2} {:>14.0} {:>10.1}ms {:>10.1}ms",
            phase.name(),
            events,
            elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
        );
        all_events += events;
        all_elapsed += elapsed;
    }
    println!(
        "  {:<22} {:>10} {:>9.2} {:>14.0}",
        "all phases",
        all_events,
        all_elapsed.as_secs_f64(),
        all_events as f64 / all_elapsed.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.tasks > 0 && args.batch > 0 && args.keys_per_task > 0,
        "all sizes must be positive"
    );
    println!(
        "store-bench: {} tasks x {} keys, batches of {} events (2 events per key in the churn phase)",
        args.tasks, args.keys_per_task, args.batch
    );
    // The machine may be shared: the load average says how much of it the numbers had.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "cores: {}, load average before start: {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let settings = StoreSettings::default();
    bench("memory store", Arc::new(MemoryStore::new(settings)), &args).await?;

    let pg = TestPostgres::start();
    let pool = PoolSettings {
        max_connections: args.pool,
        ..PoolSettings::default()
    };
    let store = PostgresStore::connect_with(&pg.fresh_database(), settings, pool).await?;
    bench(
        "PostgreSQL store (throwaway local cluster, fsync=off)",
        Arc::new(store),
        &args,
    )
    .await?;
    Ok(())
}
