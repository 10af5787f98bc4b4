//! control-bench: how much the control plane takes, measured over real HTTP against a control
//! instance in a process of its own.
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
//! **Whose CPU.** The control instance runs in a child process (this binary with `--serve`, as
//! `rim control` would run: its own runtime, the Prometheus recorder installed with rim's upkeep),
//! so its CPU is its own: each figure gives the child's utime + stime over the measured window
//! (from `/proc/<pid>/stat`, every thread included, librdkafka's too) per push, and so pushes per
//! control CPU-second, beside the wall rate and the load generator's own CPU. The pushes come from
//! a lean load generator: `--concurrency` keep-alive HTTP/1.1 connections, each writing one
//! pre-built request and reading its answer before the next (no pipelining), so the load costs
//! little beside the server. The measured window starts after `--warmup-secs` of the same load.
//! On loopback the kernel charges part of the client's TCP receive (and its wake-ups) to the
//! server's writes, so the server's figure is pessimistic against remote callers.
//!
//! Both processes share the machine's cores, so the wall rate is a floor for what a dedicated
//! control instance does. Run in release:
//! `cargo run --release -p rim-bench --bin control-bench`.

use anyhow::{Context, bail};
use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rim_bench::child::spawn_announced;
use rim_bench::httpdns::Responses;
use rim_bench::procfs::{self, Cpu, Watched};
use rim_bus::kafka::KafkaOptions;
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, BusProducer};
use rim_control::ControlConfig;
use rim_proto::schema::session_event::Kind;
use rim_proto::schema::{NodeRegistration, SessionBatch, SessionEvent};
use rim_store::Store;
use rim_store::memory::MemoryStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The allocator `rim` itself runs with (see the `rim` binary's `src/main.rs`), so that what this
/// benchmark measures is what a deployment runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cluster secret of the benchmark instance.
const SECRET: &str = "bench-secret";
/// Admin key the load generator pushes with.
const ADMIN_KEY: &str = "bench-admin";
/// The body of every push.
const PAYLOAD: &str = "bench payload";
/// Users per session batch when the users are connected (and per key prefix, see [`key_of`]).
const CHUNK: usize = 10_000;

/// Command-line options.
#[derive(Parser, Debug)]
struct Args {
    /// How long each measurement runs, in seconds (after its warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of the same load before each measurement starts (connections open, caches warm).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Concurrent HTTP requests in flight (keep-alive connections, one request each at a time).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Users online during the push measurements (user ids 1..=N).
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Session events per edge batch in the ingest measurement.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Edge nodes sending batches in the ingest measurement.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Skip the Kafka push measurement.
    #[arg(long)]
    no_kafka: bool,
    /// Skip the memory-bus push measurement.
    #[arg(long)]
    no_memory_bus: bool,
    /// Skip the PostgreSQL measurements.
    #[arg(long)]
    no_postgres: bool,
    /// Keys per push: 1 pushes to one user (`/goim/push/mids`), more pushes to the keys of that
    /// many users (`/goim/push/keys`).
    #[arg(long, default_value_t = 1)]
    keys_per_push: usize,
    /// librdkafka properties (`KEY=VALUE`) for the Kafka producer, after rim's own.
    #[arg(long)]
    kafka_option: Vec<KafkaOptions>,
    /// Internal: run as the control instance under test (started by the bench itself), print
    /// `addr=<address>`, serve until stdin closes.
    #[arg(long, hide = true)]
    serve: bool,
    /// Internal (`--serve`): the PostgreSQL store's URL; the memory store without it.
    #[arg(long, hide = true)]
    store_url: Option<String>,
    /// Internal (`--serve`): the Kafka bootstrap servers; the in-process bus without it.
    #[arg(long, hide = true)]
    bootstrap: Option<String>,
}

impl Args {
    /// Kafka settings of the producer under test, for the broker at `bootstrap`.
    fn kafka_settings(&self, bootstrap: &str) -> rim_bus::kafka::KafkaSettings {
        rim_bus::kafka::KafkaSettings {
            client_options: self.kafka_option.iter().cloned().collect(),
            ..rim_bus::kafka::KafkaSettings::new(bootstrap)
        }
    }
}

/// `--serve`: the control instance under test, as `rim control` runs one (the Prometheus recorder
/// installed, so the metrics record), until stdin closes.
async fn serve(args: &Args) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = match &args.store_url {
        Some(url) => Arc::new(
            rim_store::postgres::PostgresStore::connect(url, rim_store::StoreSettings::default())
                .await?,
        ),
        None => Arc::new(MemoryStore::new(rim_store::StoreSettings::default())),
    };
    let mut drainer = None;
    let bus: Arc<dyn BusProducer> = match &args.bootstrap {
        Some(bootstrap) => Arc::new(rim_bus::kafka::KafkaProducer::new(
            &args.kafka_settings(bootstrap),
        )?),
        None => {
            let bus = MemoryBus::new(1_000_000);
            drainer = Some(drain_memory_bus(&bus));
            Arc::new(bus)
        }
    };
    let config = ControlConfig {
        control_admin_key: Some(ADMIN_KEY.into()),
        control_max_session_batch: 100_000,
        ..ControlConfig::default()
    };
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    // As `rim` runs it (`src/telemetry.rs`): histogram samples drained every 5 s, so they cost
    // what they cost in production.
    let upkeep = {
        let prometheus = prometheus.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(5));
            loop {
                ticks.tick().await;
                prometheus.run_upkeep();
            }
        })
    };
    let control = rim_control::start(config, SECRET, store, bus, prometheus).await?;
    println!("addr={}", control.local_addr());
    let mut sink = [0u8; 64];
    let mut stdin = tokio::io::stdin();
    while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    control.shutdown().await?;
    upkeep.abort();
    if let Some(drainer) = drainer {
        drainer.abort();
    }
    Ok(())
}

/// A control instance in a child process, for one measurement.
struct Instance {
    server: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    base: String,
    /// For the setup calls and the ingest load (not the push load, see [`push`]).
    http: reqwest::Client,
    /// Node tokens by node id, from `/edge/v1/enroll` (the edge API takes no cluster secret).
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Instance {
    /// Starts `control-bench --serve` with the PostgreSQL store at `store_url` (else the memory
    /// store) and the Kafka broker at `bootstrap` (else the in-process bus).
    async fn start(
        args: &Args,
        store_url: Option<&str>,
        bootstrap: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.arg("--serve");
        if let Some(url) = store_url {
            command.arg(format!("--store-url={url}"));
        }
        if let Some(bootstrap) = bootstrap {
            command.arg(format!("--bootstrap={bootstrap}"));
        }
        for option in &args.kafka_option {
            for (key, value) in option.pairs() {
                command.arg(format!("--kafka-option={key}={value}"));
            }
        }
        let (server, announced) = spawn_announced(
            &mut command,
            "control-bench --serve",
            Duration::from_secs(60),
        )
        .await?;
        let addr = announced.addr("addr")?;
        let pid = server.id().context("the control instance exited")?;
        Ok(Self {
            server,
            pid,
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()?,
            tokens: std::sync::Mutex::default(),
        })
    }

    /// Closes the child's stdin and waits for its graceful shutdown.
    async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.server.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(30), self.server.wait())
            .await
            .context("the control instance did not stop")??;
        anyhow::ensure!(
            status.success(),
            "the control instance exited with {status}"
        );
        Ok(())
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

    /// Connects `users` users (ids 1..=users, one session each, keys by [`key_of`]) on one edge.
    async fn connect_users(&self, users: usize) -> anyhow::Result<()> {
        self.register("edge-1").await?;
        for chunk_start in (0..users).step_by(CHUNK) {
            let count = (users - chunk_start).min(CHUNK);
            let batch = SessionBatch {
                node_id: "edge-1".into(),
                events: connects(&format!("u{chunk_start}"), chunk_start as i64 + 1, count),
            };
            self.edge("edge-1", "/edge/v1/sessions", &batch).await?;
        }
        Ok(())
    }
}

/// The key of the session of user `mid` (1-based) that [`Instance::connect_users`] connects.
fn key_of(mid: usize) -> String {
    let index = mid - 1;
    format!("u{}-{}", index / CHUNK * CHUNK, index % CHUNK)
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

/// What the load's tasks count.
#[derive(Default)]
struct Counts {
    /// Units (pushes, events) done.
    done: AtomicU64,
    /// Requests that failed (not answered success, or the connection broke).
    failed: AtomicU64,
}

/// What one measurement saw, over its measured window.
struct Measured {
    /// Units done in the window.
    done: u64,
    /// Units done in all, warm-up included.
    total: u64,
    /// Units per wall-clock second.
    rate: f64,
    /// Requests that failed (warm-up included).
    failed: u64,
    /// The control instance's CPU.
    server: Cpu,
    /// This process's CPU (the load generator).
    load: Cpu,
    /// Wall seconds of the window.
    seconds: f64,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = |cpu: f64| cpu * 1e6 / self.done.max(1) as f64;
        write!(
            f,
            "{:>8.0}/s, failed requests: {}; control CPU {:.2} cores, {:.1} us per unit (user {:.1}, \
             sys {:.1}) = {:.0} per control CPU-second; load generator {:.2} cores",
            self.rate,
            self.failed,
            self.server.total() / self.seconds,
            per(self.server.total()),
            per(self.server.user),
            per(self.server.system),
            self.done as f64 / self.server.total().max(f64::EPSILON),
            self.load.total() / self.seconds,
        )
    }
}

/// Lets `tasks` (counting into `counts`, stopping once `stop` is set) run for the warm-up, then
/// measures `seconds` of them against the control instance `server_pid`; stops and joins them.
async fn measure(
    args: &Args,
    server_pid: u32,
    counts: &Counts,
    stop: &AtomicBool,
    mut tasks: JoinSet<()>,
) -> anyhow::Result<Measured> {
    let server = Watched::new(vec![("control".into(), server_pid)]);
    let me = Watched::new(vec![("load".into(), std::process::id())]);
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs)).await;
    let (server_before, me_before) = (server.sample()?, me.sample()?);
    let done_before = counts.done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let done = counts.done.load(Ordering::Relaxed) - done_before;
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = procfs::cpu_between(&server_before, &server.sample()?);
    let load_cpu = procfs::cpu_between(&me_before, &me.sample()?);
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    Ok(Measured {
        done,
        total: counts.done.load(Ordering::Relaxed),
        rate: done as f64 / seconds,
        failed: counts.failed.load(Ordering::Relaxed),
        server: server_cpu,
        load: load_cpu,
        seconds,
    })
}

/// The push requests the load cycles through, in HTTP/1.1, built once: request `i` goes to user
/// `1 + i*k % users` (`k` keys per push), or to the keys of `k` users from there.
fn push_requests(args: &Args, addr: SocketAddr) -> Vec<Vec<u8>> {
    let (users, keys) = (args.users.max(1), args.keys_per_push.max(1));
    (0..users)
        .map(|i| {
            let first = i * keys % users;
            let path = if keys == 1 {
                format!("/goim/push/mids?operation=1000&mids={}", first + 1)
            } else {
                let keys: Vec<String> = (first..first + keys)
                    .map(|index| key_of(index % users + 1))
                    .collect();
                format!("/goim/push/keys?operation=1000&keys={}", keys.join(","))
            };
            format!(
                "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN_KEY}\r\n\
                 content-length: {}\r\n\r\n{PAYLOAD}",
                PAYLOAD.len()
            )
            .into_bytes()
        })
        .collect()
}

/// One keep-alive connection pushing until `stop`: request `first`, `first + step`, ... of
/// `requests`, one at a time; a broken connection is counted as a failure and opened again.
async fn pusher(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    first: usize,
    step: usize,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let mut next = first;
    while !stop.load(Ordering::Relaxed) {
        if push_over(addr, &requests, &mut next, step, &counts, &stop)
            .await
            .is_err()
        {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// [`pusher`] over one connection, until `stop` or an I/O error.
async fn push_over(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    next: &mut usize,
    step: usize,
    counts: &Counts,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    const ACCEPTED: &[u8] = b"\"code\":0";
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut responses = Responses::default();
    while !stop.load(Ordering::Relaxed) {
        stream.write_all(&requests[*next % requests.len()]).await?;
        *next += step;
        let (status, body) = loop {
            if let Some(answer) = responses.take()? {
                break answer;
            }
            if stream.read_buf(&mut responses.buf).await? == 0 {
                bail!("closed before an answer");
            }
        };
        let body = &responses.buf[body];
        if status == 200 && body.windows(ACCEPTED.len()).any(|w| w == ACCEPTED) {
            counts.done.fetch_add(1, Ordering::Relaxed);
        } else {
            counts.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Pushes to online users as fast as `instance` accepts them, over `--concurrency` connections.
async fn push(args: &Args, instance: &Instance) -> anyhow::Result<Measured> {
    instance.connect_users(args.users).await?;
    let requests = Arc::new(push_requests(args, instance.addr));
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for first in 0..args.concurrency {
        tasks.spawn(pusher(
            instance.addr,
            requests.clone(),
            first,
            args.concurrency,
            counts.clone(),
            stop.clone(),
        ));
    }
    measure(args, instance.pid, &counts, &stop, tasks).await
}

/// [`push`] against a fresh control instance on the given store and bus; stops it after.
async fn push_rate(
    args: &Args,
    store_url: Option<&str>,
    bootstrap: Option<&str>,
) -> anyhow::Result<Measured> {
    let instance = Instance::start(args, store_url, bootstrap).await?;
    let measured = push(args, &instance).await;
    instance.stop().await?;
    measured
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

/// Session events per second into PostgreSQL through the edge API (`--nodes` edges, one batch in
/// flight each).
async fn ingest_rate(
    args: &Args,
    cluster: &rim_testkit::postgres::TestPostgres,
) -> anyhow::Result<Measured> {
    let instance = Arc::new(Instance::start(args, Some(&cluster.fresh_database()), None).await?);
    for node in 0..args.nodes {
        instance.register(&format!("edge-{node}")).await?;
    }
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for node in 0..args.nodes {
        let (instance, counts, stop) = (instance.clone(), counts.clone(), stop.clone());
        let (batch, nodes) = (args.batch, args.nodes as i64);
        tasks.spawn(async move {
            let node_id = format!("edge-{node}");
            let mut round = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let first_mid = (round * nodes + node as i64) * batch as i64 + 1;
                let batch_events = SessionBatch {
                    node_id: node_id.clone(),
                    events: connects(&format!("{node_id}-b{round}"), first_mid, batch),
                };
                match instance
                    .edge(&node_id, "/edge/v1/sessions", &batch_events)
                    .await
                {
                    Ok(()) => counts.done.fetch_add(batch as u64, Ordering::Relaxed),
                    Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
                };
                round += 1;
            }
        });
    }
    let measured = measure(args, instance.pid, &counts, &stop, tasks).await;
    match Arc::try_unwrap(instance) {
        Ok(instance) => instance.stop().await?,
        Err(_) => bail!("load tasks still hold the instance"),
    }
    measured
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    if args.serve {
        return runtime.block_on(serve(&args));
    }
    runtime.block_on(bench(&args))
}

/// The measurements, each against a control instance of its own.
async fn bench(args: &Args) -> anyhow::Result<()> {
    // reqwest (the setup calls) is built without a bundled TLS crypto provider; an error only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let load_before = procfs::load_average()?;
    println!(
        "control-bench: {} s per measurement after {} s of warm-up, {} keep-alive HTTP/1.1 \
         connections, {} users online, {} keys per push; control in a child process",
        args.seconds, args.warmup_secs, args.concurrency, args.users, args.keys_per_push
    );

    // Requests that failed, over all measurements: the run fails if any did.
    let mut failed = 0;
    if args.no_memory_bus {
        println!("pushes accepted (memory store, memory bus):  skipped (--no-memory-bus)");
    } else {
        let measured = push_rate(args, None, None).await?;
        println!("pushes accepted (memory store, memory bus):  {measured}");
        failed += measured.failed;
    }

    if args.no_kafka {
        println!("pushes accepted (memory store, Kafka/tansu): skipped (--no-kafka)");
    } else {
        let broker = rim_testkit::kafka::TestKafka::start();
        let measured = push_rate(args, None, Some(&broker.bootstrap())).await?;
        println!("pushes accepted (memory store, Kafka/tansu): {measured}");
        failed += measured.failed;
        let records = kafka_records(&broker, "sh")?;
        println!(
            "  Kafka records: {records} for {} pushes to {} keys each ({:.2} per push)",
            measured.total,
            args.keys_per_push,
            records as f64 / measured.total.max(1) as f64
        );
    }

    if args.no_postgres {
        println!("pushes stored and accepted (PostgreSQL): skipped (--no-postgres)");
        println!("session events ingested (PostgreSQL): skipped (--no-postgres)");
    } else {
        let cluster = rim_testkit::postgres::TestPostgres::start();
        let measured = push_rate(args, Some(&cluster.fresh_database()), None).await?;
        println!("pushes stored and accepted (PostgreSQL store and inbox, memory bus): {measured}");
        failed += measured.failed;
        if !args.no_kafka {
            let broker = rim_testkit::kafka::TestKafka::start();
            let measured = push_rate(
                args,
                Some(&cluster.fresh_database()),
                Some(&broker.bootstrap()),
            )
            .await?;
            println!(
                "pushes stored and accepted (PostgreSQL store and inbox, Kafka/tansu): {measured}"
            );
            failed += measured.failed;
        }
        let measured = ingest_rate(args, &cluster).await?;
        println!(
            "session events ingested (PostgreSQL, {} nodes x {}-event batches): {measured}",
            args.nodes, args.batch
        );
        failed += measured.failed;
    }
    println!(
        "load average before {load_before:?}, after {:?}",
        procfs::load_average()?
    );
    anyhow::ensure!(failed == 0, "{failed} requests failed");
    Ok(())
}
