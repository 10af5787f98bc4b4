//! job-bench: how many pushes per second one job worker carries from Kafka to its edges.
//!
//! The region's topic on a throwaway tansu broker (rim-testkit) is filled first with `--pushes`
//! key pushes (each to one key on one of `--edges` edges, as control publishes them, `acks=all`);
//! then one worker (`rim_job::run`, the code `rim job` runs) starts on it with the default
//! settings, and the clock runs until the edges have taken every push. The edges are minimal
//! in-process HTTP servers that decode each `/internal/push` request and answer it, so the figure
//! is the worker's (reading, routing, per-edge pipelines, commits), not an edge's fan-out. The
//! broker, the worker and the edges share the machine's cores. The edges run on their own
//! runtime (threads named `bench-edge`), so the CPU shown is split: the worker's (every other
//! thread of the process: its runtime and librdkafka's) and the edges' (not the broker's).
//!
//! Run in release: `cargo run --release -p rim-bench --bin job-bench -- --help`.

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use clap::Parser;
use prost::Message;
use rim_bus::kafka::{KafkaConsumer, KafkaProducer, KafkaSettings};
use rim_bus::{BusProducer, OutgoingPush};
use rim_job::{DirectoryError, EdgeDirectory, EdgeTarget, JobConfig};
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{EdgePushRequest, EdgePushResponse, KeyOnNode, KeysTarget, PushMessage};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The allocator `rim` itself runs with (see the `rim` binary's `src/main.rs`), so that what this
/// benchmark measures is what a deployment runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command-line options.
#[derive(Parser, Debug)]
struct Args {
    /// Key pushes published before the worker starts.
    #[arg(long, default_value_t = 500_000)]
    pushes: usize,
    /// Edges of the region (the pushes are spread over them).
    #[arg(long, default_value_t = 4)]
    edges: usize,
    /// Partitions of the region topic.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Push body size in bytes.
    #[arg(long, default_value_t = 64)]
    body: usize,
    /// Records read from the bus at once (`job_batch_size`).
    #[arg(long, default_value_t = JobConfig::default().job_batch_size)]
    batch: usize,
}

/// The region benchmarked.
const REGION: &str = "bench";

/// The region's edges, as a fixed list.
struct FixedDirectory(Arc<[EdgeTarget]>);

#[async_trait::async_trait]
impl EdgeDirectory for FixedDirectory {
    async fn live_edges(&self, _region: &str) -> Result<Arc<[EdgeTarget]>, DirectoryError> {
        Ok(self.0.clone())
    }

    async fn refreshed_edges(
        &self,
        _region: &str,
        _node_ids: &[&str],
    ) -> Result<Arc<[EdgeTarget]>, DirectoryError> {
        Ok(self.0.clone())
    }
}

/// `POST /internal/push` of a bench edge: counts the pushes and answers one delivery each.
async fn take(State(taken): State<Arc<AtomicU64>>, body: Bytes) -> Vec<u8> {
    let pushes = EdgePushRequest::decode(body).map_or(0, |request| request.pushes.len());
    taken.fetch_add(pushes as u64, Ordering::Relaxed);
    EdgePushResponse {
        delivered: vec![1; pushes],
    }
    .encode_to_vec()
}

/// Starts `count` bench edges counting into `taken`; answers their directory entries.
async fn start_edges(count: usize, taken: &Arc<AtomicU64>) -> anyhow::Result<Arc<[EdgeTarget]>> {
    let mut edges = Vec::with_capacity(count);
    for index in 0..count {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route(rim_job::PUSH_PATH, post(take))
            .with_state(taken.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        edges.push(EdgeTarget {
            node_id: format!("edge-{index}"),
            push_url: format!("http://{addr}"),
            draining: false,
        });
    }
    Ok(edges.into())
}

/// The name of the edges' runtime threads.
const EDGE_THREADS: &str = "bench-edge";

/// User + system CPU seconds in a `stat` file of `/proc` (a process's or a thread's).
fn stat_cpu_seconds(path: &std::path::Path) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds used so far by the whole process and by the edges' threads; `None` off Linux.
fn cpu_seconds() -> Option<(f64, f64)> {
    let process = stat_cpu_seconds("/proc/self/stat".as_ref())?;
    let mut edges = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let task = task.ok()?.path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if name.trim_end() == EDGE_THREADS {
            edges += stat_cpu_seconds(&task.join("stat")).unwrap_or_default();
        }
    }
    Some((process, edges))
}

/// Publishes the key pushes, in calls of 1,000 records.
async fn fill(producer: &KafkaProducer, args: &Args, edges: &[EdgeTarget]) -> anyhow::Result<()> {
    let body = Bytes::from(vec![b'x'; args.body]);
    let mut published = 0;
    while published < args.pushes {
        let count = (args.pushes - published).min(1_000);
        let records = (published..published + count)
            .map(|index| {
                let key = format!("k{index}");
                OutgoingPush {
                    region: REGION.into(),
                    partition_key: format!("key:{key}"),
                    message: PushMessage {
                        message_id: format!("m{index}"),
                        operation: 1000,
                        body: body.clone(),
                        accepted_at_unix_ms: rim_control::now_ms(),
                        record: 0,
                        position: None,
                        receipt_target: String::new(),
                        target: Some(Target::Keys(KeysTarget {
                            keys: vec![KeyOnNode {
                                key,
                                node_id: edges[index % edges.len()].node_id.clone(),
                            }],
                        })),
                    },
                }
            })
            .collect();
        producer.publish(records).await?;
        published += count;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.edges > 0, "--edges must be at least 1");
    let broker = rim_testkit::kafka::TestKafka::start();
    let settings = KafkaSettings {
        partitions: args.partitions,
        ..KafkaSettings::new(broker.bootstrap())
    };
    let taken = Arc::new(AtomicU64::new(0));
    let edge_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(EDGE_THREADS)
        .enable_all()
        .build()?;
    let edges = edge_runtime
        .spawn({
            let (count, taken) = (args.edges, taken.clone());
            async move { start_edges(count, &taken).await }
        })
        .await??;

    let producer = KafkaProducer::new(&settings)?;
    let started = Instant::now();
    fill(&producer, &args, &edges)
        .await
        .context("filling the topic")?;
    println!(
        "job-bench: {} key pushes on {} partitions (published in {:.2?}), {} edges, batches of {}",
        args.pushes,
        args.partitions,
        started.elapsed(),
        args.edges,
        args.batch
    );

    let config = JobConfig {
        job_region: REGION.into(),
        job_batch_size: args.batch,
        ..JobConfig::default()
    };
    let consumer = KafkaConsumer::new(&settings, REGION, "job-bench").await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let directory = Arc::new(FixedDirectory(edges));
    let worker = tokio::spawn(async move {
        rim_job::run(&config, "bench-secret", consumer, directory, async {
            let _ = stopped.await;
        })
        .await
    });
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let expected = args.pushes as u64;
    let mut first_at = None;
    while taken.load(Ordering::Relaxed) < expected {
        if first_at.is_none() && taken.load(Ordering::Relaxed) > 0 {
            first_at = Some(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {expected} pushes reached the edges in 10 minutes",
            taken.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_before.zip(cpu_seconds()).map(|(before, after)| {
        let edges = after.1 - before.1;
        (after.0 - before.0 - edges, edges)
    });
    // From the first delivery on: the group join before it is no part of the throughput.
    let first = first_at.unwrap_or_default();
    let delivering = elapsed.saturating_sub(first).as_secs_f64().max(1e-6);
    println!(
        "one worker: {expected} pushes to the edges in {elapsed:.2?} ({:.2?} to join and take the first) = {:.0} pushes/s while delivering{}",
        first,
        expected as f64 / delivering,
        cpu.map_or(String::new(), |(worker, edges)| format!(
            "; worker CPU {worker:.2} s ({:.2} cores, {:.0} pushes per worker CPU-second), edges CPU {edges:.2} s",
            worker / elapsed.as_secs_f64(),
            expected as f64 / worker.max(1e-6)
        ))
    );
    let _ = stop.send(());
    worker.await??;
    edge_runtime.shutdown_background();
    Ok(())
}
