//! bus-bench: how many pushes per second the bus takes (publish) and hands back (consume).
//!
//! Every accepted push goes through `BusProducer::publish`, which waits until the broker holds it,
//! so publish latency is part of the business API's latency and publish throughput bounds the push
//! rate of the whole cluster. This publishes pushes from concurrent tasks (each call carrying
//! `--per-call` pushes, as a multi-key push does), reports throughput and call latency, then reads
//! everything back with one consumer and reports that rate. It runs against a throwaway tansu broker
//! (rim-testkit) unless `--brokers` names a cluster, and against the in-process bus as a baseline.
//! Run with `cargo run --release -p rim-bench --bin bus-bench -- --help`.

use clap::Parser;
use rim_bus::kafka::{KafkaConsumer, KafkaProducer, KafkaSettings};
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, BusProducer, OutgoingPush};
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{PushMessage, RoomTarget};
use rim_testkit::kafka::TestKafka;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Benchmark parameters.
#[derive(Parser, Debug)]
struct Args {
    /// Concurrent publishing tasks (control-plane request handlers).
    #[arg(long, default_value_t = 16)]
    tasks: usize,
    /// Publish calls per task.
    #[arg(long, default_value_t = 500)]
    calls: usize,
    /// Pushes per publish call.
    #[arg(long, default_value_t = 10)]
    per_call: usize,
    /// Push body size in bytes.
    #[arg(long, default_value_t = 256)]
    body: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Existing Kafka cluster to use instead of a throwaway tansu broker.
    #[arg(long)]
    brokers: Option<String>,
}

/// What one publish run measured.
struct PublishReport {
    pushes: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl PublishReport {
    fn print(&mut self, name: &str) {
        self.latencies.sort_unstable();
        let at = |q: f64| {
            let index = ((self.latencies.len() as f64 * q) as usize)
                .min(self.latencies.len().saturating_sub(1));
            self.latencies.get(index).copied().unwrap_or_default()
        };
        println!(
            "{name}: published {} pushes in {:.2?} = {:.0} pushes/s; publish call p50 {:.2?} p99 {:.2?} max {:.2?}",
            self.pushes,
            self.elapsed,
            self.pushes as f64 / self.elapsed.as_secs_f64(),
            at(0.5),
            at(0.99),
            at(1.0),
        );
    }
}

fn push(region: &str, task: usize, n: usize, body: &[u8]) -> OutgoingPush {
    OutgoingPush {
        region: region.to_owned(),
        partition_key: format!("room:bench://{task}-{}", n % 64),
        message: PushMessage {
            message_id: format!("{task}-{n}"),
            operation: 1000,
            body: body.to_vec().into(),
            accepted_at_unix_ms: 0,
            record: 0,
            position: None,
            receipt_target: String::new(),
            target: Some(Target::Room(RoomTarget {
                room: format!("bench://{task}"),
            })),
        },
    }
}

/// Publishes from `args.tasks` concurrent tasks and times every call.
async fn publish_all(
    producer: Arc<dyn BusProducer>,
    args: &Args,
    region: &str,
) -> anyhow::Result<PublishReport> {
    let body = vec![b'x'; args.body];
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..args.tasks {
        let producer = producer.clone();
        let (calls, per_call, body, region) =
            (args.calls, args.per_call, body.clone(), region.to_owned());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(calls);
            for call in 0..calls {
                let pushes = (0..per_call)
                    .map(|n| push(&region, task, call * per_call + n, &body))
                    .collect();
                let sent = Instant::now();
                producer.publish(pushes).await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    Ok(PublishReport {
        pushes: args.tasks * args.calls * args.per_call,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// Reads `count` pushes back and reports the rate (from the first record, so group join is excluded).
async fn consume_all(
    consumer: &mut dyn BusConsumer,
    count: usize,
    name: &str,
) -> anyhow::Result<()> {
    let first = consumer.next_batch(1000).await?;
    let started = Instant::now();
    let mut seen = first.len();
    let mut batches = 1;
    while seen < count {
        let batch =
            tokio::time::timeout(Duration::from_secs(30), consumer.next_batch(1000)).await??;
        seen += batch.len();
        batches += 1;
        consumer.commit(&batch).await?;
    }
    let elapsed = started.elapsed();
    println!(
        "{name}: consumed and committed {seen} pushes in {elapsed:.2?} = {:.0} pushes/s ({batches} batches)",
        seen as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let total = args.tasks * args.calls * args.per_call;

    let memory = MemoryBus::new(total);
    let mut consumer = memory.consumer("bench", "bench");
    publish_all(Arc::new(memory.clone()), &args, "bench")
        .await?
        .print("memory bus");
    consume_all(&mut consumer, total, "memory bus").await?;

    let broker = if args.brokers.is_none() {
        Some(TestKafka::start())
    } else {
        None
    };
    let brokers = args
        .brokers
        .clone()
        .or_else(|| broker.as_ref().map(TestKafka::bootstrap))
        .unwrap_or_default();
    let mut settings = KafkaSettings::new(brokers);
    settings.partitions = args.partitions;
    settings.topic_prefix = format!("rim-bench-{}-", std::process::id());
    let producer = Arc::new(KafkaProducer::new(&settings)?);
    // Creates the topic, so the timed run measures publishing only.
    producer
        .publish(vec![push("bench", 0, 0, b"warm-up")])
        .await?;
    let label = if args.brokers.is_some() {
        "kafka"
    } else {
        "kafka (tansu, memory storage)"
    };
    publish_all(producer, &args, "bench").await?.print(label);
    let mut consumer = KafkaConsumer::new(&settings, "bench", "bench").await?;
    consume_all(&mut consumer, total + 1, label).await?;
    Ok(())
}
