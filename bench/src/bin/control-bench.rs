//! control-bench: how much the control plane takes, measured over real HTTP against an in-process
//! instance on a loopback port.
//!
//! - Pushes accepted per second: concurrent `POST /goim/push/mids` (one online user each, so every
//!   push resolves a session and publishes one record) with the memory store, once with the
//!   in-process bus and once with Kafka (a tansu broker from rim-testkit, when installed). With
//!   `--keys-per-push N`, each push goes to `POST /goim/push/keys` with the keys of N online users
//!   instead (one bus push per key, which the Kafka producer groups by partition), and the Kafka
//!   measurement also says how many Kafka records the broker got per push (`--kafka-option
//!   partitioner=random` turns the grouping off, for comparison).
//! - The same pushes with the PostgreSQL store, so every push is also stored in the user's inbox
//!   before it is answered (durable delivery: the push path's append-publish-commit), with both
//!   buses.
//! - Session events ingested per second: concurrent `POST /edge/v1/sessions` batches of connects,
//!   from several edge nodes, into PostgreSQL (a throwaway cluster from rim-testkit).
//!
//! The load generator shares the machine (and its cores) with the server, so the numbers are a
//! floor for what a dedicated control instance does. Run in release:
//! `cargo run --release -p rim-bench --bin control-bench`.

use anyhow::Context;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rim_bus::kafka::KafkaOptions;
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, BusProducer};
use rim_control::ControlConfig;
use rim_proto::schema::session_event::Kind;
use rim_proto::schema::{NodeRegistration, SessionBatch, SessionEvent};
use rim_store::Store;
use rim_store::memory::MemoryStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Cluster secret of the benchmark instance.
const SECRET: &str = "bench-secret";
/// Admin key the load generator pushes with.
const ADMIN_KEY: &str = "bench-admin";

/// Command-line options.
#[derive(Parser, Debug)]
struct Args {
    /// How long each measurement runs, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent HTTP requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Users online during the push measurements.
    #[arg(long, default_value_t = 10_000)]
    users: i64,
    /// Session events per edge batch in the ingest measurement.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Edge nodes sending batches in the ingest measurement.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Talk HTTP/2 without TLS (h2c, many requests over one connection) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Skip the Kafka push measurement.
    #[arg(long)]
    no_kafka: bool,
    /// Skip the PostgreSQL ingest measurement.
    #[arg(long)]
    no_postgres: bool,
    /// Keys per push: 1 pushes to one user (`/goim/push/mids`), more pushes to the keys of that
    /// many users (`/goim/push/keys`).
    #[arg(long, default_value_t = 1)]
    keys_per_push: usize,
    /// librdkafka properties (`KEY=VALUE`) for the Kafka producer, after rim's own.
    #[arg(long)]
    kafka_option: Vec<KafkaOptions>,
}

impl Args {
    /// Kafka settings of the producer under test, for this broker.
    fn kafka_settings(
        &self,
        broker: &rim_testkit::kafka::TestKafka,
    ) -> rim_bus::kafka::KafkaSettings {
        rim_bus::kafka::KafkaSettings {
            client_options: self.kafka_option.iter().cloned().collect(),
            ..rim_bus::kafka::KafkaSettings::new(broker.bootstrap())
        }
    }
}

/// A control instance for one measurement.
struct Instance {
    control: rim_control::RunningControl,
    base: String,
    http: reqwest::Client,
    /// Node tokens by node id, from `/edge/v1/enroll` (the edge API takes no cluster secret).
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Instance {
    async fn start(
        args: &Args,
        store: Arc<dyn Store>,
        bus: Arc<dyn BusProducer>,
    ) -> anyhow::Result<Self> {
        let config = ControlConfig {
            control_admin_key: Some(ADMIN_KEY.into()),
            control_max_session_batch: 100_000,
            ..ControlConfig::default()
        };
        let prometheus = PrometheusBuilder::new().build_recorder().handle();
        let control = rim_control::start(config, SECRET, store, bus, prometheus).await?;
        let base = format!("http://{}", control.local_addr());
        let builder = reqwest::Client::builder().pool_max_idle_per_host(1024);
        let http = if args.http2 {
            builder.http2_prior_knowledge()
        } else {
            builder
        }
        .build()?;
        Ok(Self {
            control,
            base,
            http,
            tokens: std::sync::Mutex::default(),
        })
    }

    /// The node token of `node_id` (enrolled with the cluster secret on first use).
    async fn token(&self, node_id: &str) -> anyhow::Result<String> {
        if let Some(token) = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(node_id).cloned())
        {
            return Ok(token);
        }
        let enrollment = rim_proto::schema::NodeEnrollment {
            role: "edge".into(),
            node_id: node_id.into(),
            region: "sh".into(),
        };
        let response = self
            .http
            .post(format!("{}/edge/v1/enroll", self.base))
            .bearer_auth(SECRET)
            .body(enrollment.encode_to_vec())
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "enroll: {}",
            response.status()
        );
        let token = rim_proto::schema::NodeCredential::decode(response.bytes().await?)?.token;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(node_id.to_owned(), token.clone());
        }
        Ok(token)
    }

    /// POSTs a protobuf message to the edge API as `node_id`; fails unless 2xx.
    async fn edge(&self, node_id: &str, path: &str, message: &impl Message) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token(node_id).await?)
            .body(message.encode_to_vec())
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        Ok(())
    }

    async fn register(&self, node_id: &str) -> anyhow::Result<()> {
        let registration = NodeRegistration {
            node_id: node_id.into(),
            region: "sh".into(),
            latitude: 31.2,
            longitude: 121.5,
            hostname: format!("{node_id}.bench"),
            addresses: vec!["127.0.0.1".into()],
            tcp_port: 3101,
            ws_port: 3102,
            wss_port: 3103,
            push_url: "http://127.0.0.1:3109".into(),
            weight: 10,
            ..NodeRegistration::default()
        };
        self.edge(node_id, "/edge/v1/register", &registration).await
    }
}

/// The key [`push_rate`] gives user `mid`'s session (the prefix is its chunk of 10,000 users).
fn key_of(mid: i64) -> String {
    format!("u{}-{}", mid / 10_000 * 10_000, mid % 10_000)
}

/// Kafka records in every partition of `region`'s topic on `broker` (the sum of the partitions'
/// log sizes: the broker is fresh).
fn kafka_records(broker: &rim_testkit::kafka::TestKafka, region: &str) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()?;
    let topic = rim_bus::kafka::KafkaSettings::new(broker.bootstrap()).topic(region);
    let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let mut records = 0;
    for found in metadata
        .topics()
        .iter()
        .filter(|found| found.name() == topic)
    {
        for partition in found.partitions() {
            let (low, high) =
                consumer.fetch_watermarks(&topic, partition.id(), Duration::from_secs(10))?;
            records += high - low;
        }
    }
    Ok(records)
}

/// `count` connect events with keys `<prefix>-<i>`, users `first_mid + i`.
fn connects(prefix: &str, first_mid: i64, count: usize) -> Vec<SessionEvent> {
    let at = rim_control::now_ms();
    (0..count)
        .map(|i| SessionEvent {
            kind: Kind::Connect as i32,
            key: format!("{prefix}-{i}"),
            mid: first_mid + i as i64,
            room: "live://1".into(),
            platform: "android".into(),
            accepts: vec![1000],
            connection_id: i as u64 + 1,
            at_unix_ms: at,
            ip: "127.0.0.1".into(),
        })
        .collect()
}

/// CPU time this process used so far (user + system), from `/proc/self/stat`; `None` off Linux.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Linux reports in USER_HZ, which is 100 on every mainstream configuration.
    Some(ticks / 100.0)
}

/// What one measurement saw.
struct Measured {
    /// Units (pushes, events) done.
    done: u64,
    /// Units per wall-clock second.
    rate: f64,
    /// Requests that failed.
    failed: u64,
    /// CPU cores the whole process (server and load generator) kept busy on average.
    cores: Option<f64>,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>9.0}/s  failed requests: {}", self.rate, self.failed)?;
        if let Some(cores) = self.cores {
            write!(
                f,
                "  process CPU: {cores:.2} cores ({:.0}/s per core)",
                self.rate / cores.max(0.01)
            )?;
        }
        Ok(())
    }
}

/// Runs `concurrency` loops of `request` for `seconds`: units per second, failures, CPU used.
async fn load<F, Fut>(seconds: u64, concurrency: usize, request: F) -> Measured
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let workers: Vec<_> = (0..concurrency as u64)
        .map(|worker| {
            let (done, failed, request) = (done.clone(), failed.clone(), request.clone());
            tokio::spawn(async move {
                let mut i = worker;
                while Instant::now() < deadline {
                    match request(i).await {
                        Ok(units) => done.fetch_add(units, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += concurrency as u64;
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    Measured {
        done,
        rate: done as f64 / elapsed,
        failed: failed.load(Ordering::Relaxed),
        cores: cpu_before
            .zip(cpu_seconds())
            .map(|(before, after)| (after - before) / elapsed),
    }
}

/// A fresh memory store.
fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new(rim_store::StoreSettings::default()))
}

/// Pushes to online users as fast as the instance accepts them; answers pushes/s and failures.
async fn push_rate(
    args: &Args,
    store: Arc<dyn Store>,
    bus: Arc<dyn BusProducer>,
) -> anyhow::Result<Measured> {
    let instance = Arc::new(Instance::start(args, store, bus).await?);
    instance.register("edge-1").await?;
    let users = usize::try_from(args.users).context("--users")?;
    for chunk_start in (0..users).step_by(10_000) {
        let count = (users - chunk_start).min(10_000);
        let batch = SessionBatch {
            node_id: "edge-1".into(),
            events: connects(&format!("u{chunk_start}"), chunk_start as i64, count),
        };
        instance.edge("edge-1", "/edge/v1/sessions", &batch).await?;
    }
    let (users, keys) = (args.users, args.keys_per_push.max(1) as i64);
    let target = instance.clone();
    let result = load(args.seconds, args.concurrency, move |i| {
        let instance = target.clone();
        async move {
            let mid = i as i64 * keys % users;
            let url = if keys == 1 {
                format!("{}/goim/push/mids?operation=1000&mids={mid}", instance.base)
            } else {
                let keys: Vec<String> = (mid..mid + keys).map(|m| key_of(m % users)).collect();
                format!(
                    "{}/goim/push/keys?operation=1000&keys={}",
                    instance.base,
                    keys.join(",")
                )
            };
            let response = instance
                .http
                .post(url)
                .bearer_auth(ADMIN_KEY)
                .body("bench payload")
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "push: {}",
                response.status()
            );
            Ok(1)
        }
    })
    .await;
    match Arc::try_unwrap(instance) {
        Ok(instance) => instance.control.shutdown().await?,
        Err(_) => anyhow::bail!("load workers still hold the instance"),
    }
    Ok(result)
}

/// Keeps a memory bus region drained (as job workers would), so it never fills.
fn drain_memory_bus(bus: &MemoryBus) -> tokio::task::JoinHandle<()> {
    let mut consumer = bus.consumer("sh", "bench");
    tokio::spawn(async move {
        while let Ok(batch) = consumer.next_batch(10_000).await {
            if consumer.commit(&batch).await.is_err() {
                return;
            }
        }
    })
}

/// Session events per second into PostgreSQL through the edge API.
async fn ingest_rate(args: &Args) -> anyhow::Result<Measured> {
    let cluster = rim_testkit::postgres::TestPostgres::start();
    let pool = rim_store::postgres::PoolSettings {
        max_connections: 16,
        acquire_timeout: Duration::from_secs(5),
    };
    let store = rim_store::postgres::PostgresStore::connect_with(
        &cluster.fresh_database(),
        rim_store::StoreSettings::default(),
        pool,
    )
    .await?;
    let instance =
        Arc::new(Instance::start(args, Arc::new(store), Arc::new(MemoryBus::new(16))).await?);
    for node in 0..args.nodes {
        instance.register(&format!("edge-{node}")).await?;
    }
    let (batch, nodes) = (args.batch, args.nodes as u64);
    let target = instance.clone();
    let result = load(args.seconds, args.nodes, move |i| {
        let instance = target.clone();
        async move {
            let node = format!("edge-{}", i % nodes);
            let events = connects(&format!("{node}-b{i}"), i as i64 * batch as i64, batch);
            instance
                .edge(
                    &node,
                    "/edge/v1/sessions",
                    &SessionBatch {
                        node_id: node.clone(),
                        events,
                    },
                )
                .await?;
            Ok(batch as u64)
        }
    })
    .await;
    match Arc::try_unwrap(instance) {
        Ok(instance) => instance.control.shutdown().await?,
        Err(_) => anyhow::bail!("load workers still hold the instance"),
    }
    Ok(result)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "control-bench: {} s per measurement, {} concurrent requests over {}, {} users online, \
         {} keys per push",
        args.seconds,
        args.concurrency,
        if args.http2 {
            "HTTP/2 (h2c)"
        } else {
            "HTTP/1.1"
        },
        args.users,
        args.keys_per_push
    );

    let bus = MemoryBus::new(1_000_000);
    let drainer = drain_memory_bus(&bus);
    let measured = push_rate(&args, memory_store(), Arc::new(bus)).await?;
    drainer.abort();
    println!("pushes accepted (memory store, memory bus):  {measured}");

    if args.no_kafka {
        println!("pushes accepted (memory store, Kafka/tansu): skipped (--no-kafka)");
    } else {
        let broker = rim_testkit::kafka::TestKafka::start();
        let producer = rim_bus::kafka::KafkaProducer::new(&args.kafka_settings(&broker))?;
        let measured = push_rate(&args, memory_store(), Arc::new(producer)).await?;
        println!("pushes accepted (memory store, Kafka/tansu): {measured}");
        let records = kafka_records(&broker, "sh")?;
        println!(
            "  Kafka records: {records} for {} pushes to {} keys each ({:.2} per push)",
            measured.done,
            args.keys_per_push,
            records as f64 / measured.done.max(1) as f64
        );
    }

    if args.no_postgres {
        println!("pushes stored and accepted (PostgreSQL): skipped (--no-postgres)");
    } else {
        let cluster = rim_testkit::postgres::TestPostgres::start();
        let broker = (!args.no_kafka).then(rim_testkit::kafka::TestKafka::start);
        let mut buses: Vec<(&str, Arc<dyn BusProducer>)> = Vec::new();
        let memory = MemoryBus::new(1_000_000);
        let drainer = drain_memory_bus(&memory);
        buses.push(("memory bus", Arc::new(memory)));
        if let Some(broker) = &broker {
            let settings = args.kafka_settings(broker);
            buses.push((
                "Kafka/tansu",
                Arc::new(rim_bus::kafka::KafkaProducer::new(&settings)?),
            ));
        }
        for (name, bus) in buses {
            let store = rim_store::postgres::PostgresStore::connect(
                &cluster.fresh_database(),
                rim_store::StoreSettings::default(),
            )
            .await?;
            let measured = push_rate(&args, Arc::new(store), bus).await?;
            println!("pushes stored and accepted (PostgreSQL store and inbox, {name}): {measured}");
        }
        drainer.abort();
    }

    if args.no_postgres {
        println!("session events ingested (PostgreSQL): skipped (--no-postgres)");
    } else {
        let measured = ingest_rate(&args).await?;
        println!(
            "session events ingested (PostgreSQL, {} nodes x {}-event batches): {measured}",
            args.nodes, args.batch
        );
    }
    Ok(())
}
