//! bus-latency: how long one push waits in the bus, produce to consume, at a steady rate.
//!
//! `rim-bench latency` measures REST -> control -> Kafka -> job -> edge -> client; this isolates
//! the Kafka hop, to tell the broker's share from rim's. Records are produced on a fixed schedule
//! (`--rate` per second for `--seconds`, keys round robin over `--keys`), each carrying its send
//! time, and one consumer in its own group reads them back. Two histograms come out: the produce
//! call (send until the delivery report: what control waits for before answering a push) and the
//! round trip (send until the consumer holds the record: what a job worker adds to a push).
//!
//! - `--via raw` (default): librdkafka alone (rdkafka's `FutureProducer` and `StreamConsumer`),
//!   no rim code in between, configured with exactly rim's producer and consumer settings
//!   ([`KafkaSettings::producer_config`], [`KafkaSettings::consumer_config`]); `-X KEY=VALUE` is
//!   applied to both clients after them, like `--control-kafka-option`/`--job-kafka-option`.
//! - `--via rim`: rim's own [`KafkaProducer`] (its producer task and push groups) and
//!   [`KafkaConsumer`] (decoding, background commits), as control and job use them.
//!
//! Brokers (`--broker`): a throwaway tansu (rim-testkit, memory storage: the test broker of the
//! full-path benchmarks), librdkafka's own mock cluster (in process; it answers a fetch at once
//! when it holds records and waits `fetch.wait.max.ms` only when it has none, as a Kafka broker
//! does, though Kafka also answers a waiting fetch as soon as records arrive; `--via raw` only,
//! since the mock has no CreateTopics), or `--brokers` naming a cluster. Run in release:
//! `cargo run --release -p rim-bench --bin bus-latency -- --help`.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rim_bus::kafka::{KafkaConsumer, KafkaOptions, KafkaProducer, KafkaSettings};
use rim_bus::{BusConsumer, BusProducer, OutgoingPush};
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{PushMessage, RoomTarget};
use rim_testkit::kafka::TestKafka;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Which clients carry the records.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// librdkafka with rim's settings, no rim code.
    Raw,
    /// rim-bus's producer and consumer.
    Rim,
}

/// The broker to measure, unless `--brokers` names one.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Broker {
    /// tansu 0.6 with memory storage (rim-testkit).
    Tansu,
    /// librdkafka's mock cluster, one broker, in this process.
    Mock,
}

/// Benchmark parameters.
#[derive(Parser, Debug)]
struct Args {
    /// Records per second, on a fixed schedule.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Seconds of producing.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Distinct record keys, round robin (spread over the partitions).
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Record value size in bytes (at least the 8-byte send time).
    #[arg(long, default_value_t = 64)]
    body: usize,
    /// The clients.
    #[arg(long, value_enum, default_value_t = Via::Raw)]
    via: Via,
    /// A librdkafka property for both clients, applied after rim's (repeatable).
    #[arg(short = 'X', long = "option")]
    options: Vec<KafkaOptions>,
    /// The broker started for the run.
    #[arg(long, value_enum, default_value_t = Broker::Tansu)]
    broker: Broker,
    /// Existing Kafka cluster instead of a started broker.
    #[arg(long)]
    brokers: Option<String>,
    /// Seconds to wait for the last records before counting them lost.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
}

/// The region (topic suffix) benchmarked.
const REGION: &str = "latency";

/// A histogram of microseconds, 1 µs to 1 h, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

/// Nanoseconds since the Unix epoch (the clock producer and consumer share).
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// A record value: its send time, then padding to `len`.
fn stamped(len: usize) -> Vec<u8> {
    let mut value = unix_nanos().to_le_bytes().to_vec();
    value.resize(len.max(8), b'x');
    value
}

/// The send time at the start of a value.
fn sent_at(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// Microseconds from a send time until now.
fn since(sent: u64) -> u64 {
    unix_nanos().saturating_sub(sent) / 1_000
}

/// What the consumer side saw.
#[derive(Default)]
struct Received {
    records: u64,
    round_trip: Option<Histogram<u64>>,
}

/// A producer of stamped records, either kind.
#[derive(Clone)]
enum Sender {
    Raw(Arc<FutureProducer>, String),
    Rim(Arc<KafkaProducer>),
}

impl Sender {
    /// Sends one record to `key` and waits for its delivery report.
    async fn send(&self, key: &str, body: usize) -> anyhow::Result<()> {
        match self {
            Sender::Raw(producer, topic) => {
                let value = stamped(body);
                let delivery = producer
                    .send_result(FutureRecord::to(topic).key(key).payload(&value))
                    .map_err(|(err, _)| anyhow::anyhow!("enqueue: {err}"))?;
                delivery
                    .await
                    .context("producer dropped")?
                    .map_err(|(err, _)| anyhow::anyhow!("delivery: {err}"))?;
            }
            Sender::Rim(producer) => {
                producer
                    .publish(vec![OutgoingPush {
                        region: REGION.into(),
                        partition_key: key.to_owned(),
                        message: PushMessage {
                            message_id: format!("{}", unix_nanos()),
                            operation: 1000,
                            body: stamped(body).into(),
                            target: Some(Target::Room(RoomTarget { room: key.into() })),
                            ..PushMessage::default()
                        },
                    }])
                    .await?;
            }
        }
        Ok(())
    }
}

/// Reads records until `stop`, recording each round trip.
enum Reader {
    Raw(StreamConsumer),
    Rim(KafkaConsumer),
}

impl Reader {
    /// Reads the next records; returns their send times.
    async fn next(&mut self) -> anyhow::Result<Vec<u64>> {
        match self {
            Reader::Raw(consumer) => {
                let message = consumer.recv().await?;
                Ok(message.payload().and_then(sent_at).into_iter().collect())
            }
            Reader::Rim(consumer) => {
                let batch = consumer.next_batch(1024).await?;
                consumer.commit(&batch).await?;
                Ok(batch
                    .iter()
                    .filter_map(|push| sent_at(&push.message.body))
                    .collect())
            }
        }
    }
}

/// Prints one histogram line (milliseconds).
fn print(name: &str, histogram: &Histogram<u64>) {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
    println!(
        "{name}: p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2} ({} samples)",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1_000.0,
        histogram.len()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut tansu, mut mock) = (None, None);
    let brokers = match (&args.brokers, args.broker) {
        (Some(brokers), _) => brokers.clone(),
        (None, Broker::Tansu) => tansu
            .insert(tokio::task::spawn_blocking(TestKafka::start).await?)
            .bootstrap(),
        (None, Broker::Mock) => {
            anyhow::ensure!(
                args.via == Via::Raw,
                "the mock cluster has no CreateTopics, which rim's clients need: use --via raw"
            );
            mock.insert(MockCluster::new(1)?).bootstrap_servers()
        }
    };
    let mut settings = KafkaSettings::new(brokers);
    settings.partitions = args.partitions;
    settings.topic_prefix = format!("bus-latency-{}-", std::process::id());
    settings.client_options = args.options.iter().cloned().collect();
    settings.check().map_err(|err| anyhow::anyhow!(err))?;
    let topic = settings.topic(REGION);

    // rim's producer creates the topic (with the partitions asked for), or the mock does.
    let rim_producer = Arc::new(KafkaProducer::new(&settings)?);
    match &mock {
        Some(mock) => mock.create_topic(&topic, args.partitions, 1)?,
        None => rim_producer.create_region_topic(REGION).await?,
    }
    let (sender, mut reader) = match args.via {
        Via::Raw => {
            let producer: FutureProducer = settings.producer_config().create()?;
            let consumer: StreamConsumer =
                settings.consumer_config("bus-latency", None).create()?;
            consumer.subscribe(&[&topic])?;
            (
                Sender::Raw(Arc::new(producer), topic.clone()),
                Reader::Raw(consumer),
            )
        }
        Via::Rim => (
            Sender::Rim(rim_producer.clone()),
            Reader::Rim(KafkaConsumer::new(&settings, REGION, "bus-latency").await?),
        ),
    };

    // One record read back means the consumer joined its group and fetches: the clock starts.
    sender.send("warm-up", args.body).await?;
    tokio::time::timeout(Duration::from_secs(60), reader.next())
        .await
        .context("the consumer did not read the warm-up record within 60 s")??;

    let total = (args.rate * args.seconds).round() as u64;
    let received = Arc::new(Mutex::new(Received {
        round_trip: Some(histogram()),
        ..Received::default()
    }));
    let reading = {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                let sent = match reader.next().await {
                    Ok(sent) => sent,
                    Err(err) => {
                        eprintln!("consumer: {err:#}");
                        continue;
                    }
                };
                let Ok(mut received) = received.lock() else {
                    return;
                };
                received.records += sent.len() as u64;
                if let Some(histogram) = received.round_trip.as_mut() {
                    for sent in sent {
                        histogram.saturating_record(since(sent));
                    }
                }
            }
        })
    };

    let produce = Arc::new(Mutex::new(histogram()));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(0.001)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        pace.tick().await;
        let (sender, produce, failures) = (sender.clone(), produce.clone(), failures.clone());
        let key = format!("key-{}", n as usize % args.keys.max(1));
        let body = args.body;
        tasks.spawn(async move {
            let sent = Instant::now();
            match sender.send(&key, body).await {
                Ok(()) => {
                    if let Ok(mut produce) = produce.lock() {
                        produce.saturating_record(sent.elapsed().as_micros() as u64);
                    }
                }
                Err(err) => {
                    if failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                        eprintln!("produce: {err:#}");
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let produced_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    while received.lock().map_or(0, |r| r.records) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reading.abort();

    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    let (records, round_trip) = {
        let mut received = received
            .lock()
            .map_err(|_| anyhow::anyhow!("consumer state poisoned"))?;
        (received.records, received.round_trip.take())
    };
    let target = match (&args.brokers, args.broker) {
        (Some(brokers), _) => format!("kafka at {brokers}"),
        (None, Broker::Tansu) => "tansu 0.6 (memory storage)".into(),
        (None, Broker::Mock) => "librdkafka's mock cluster".into(),
    };
    println!(
        "bus-latency via {:?} against {target}: {} records at {}/s over {} keys, {} partitions, {:.2?}; options {:?}",
        args.via,
        total,
        args.rate,
        args.keys,
        args.partitions,
        produced_in,
        settings.client_options
    );
    let produce = produce
        .lock()
        .map_err(|_| anyhow::anyhow!("produce histogram poisoned"))?;
    print("produce (send -> delivery report)", &produce);
    if let Some(round_trip) = &round_trip {
        print("round trip (send -> consumer)", round_trip);
    }
    drop((tansu, mock));
    if failed > 0 || records < total {
        anyhow::bail!("{failed} produce failures, {records} of {total} records read back");
    }
    Ok(())
}
