//! The scenarios `rim-bench` runs, one per command: what each sets up, pushes and checks.
//!
//! - `idle`: memory per idle connection, and after a burst of large pushes;
//! - `room`: one room, pushes one at a time (goim's unbatched case) and in bursts, flow-controlled,
//!   server CPU per delivery;
//! - `connect`: a connect storm, handshakes per second and their times;
//! - `latency`: a steady push rate through the whole production path (REST -> Kafka -> job ->
//!   edge), to users or to rooms, end-to-end latency;
//! - `scale`: many connections over several `rim edge` processes, held while room pushes flow
//!   through the whole path.
//!
//! `idle`, `room` and `connect` load an `edge-under-test` they start, or any goim-protocol server
//! given with `--target` (its processes named with `--server-pid` to be measured, a goim-compatible
//! REST API with `--push-url` to push through). `latency` and `scale` start a whole cluster
//! ([`crate::cluster`]) unless `--push-url` and `--target` name one. Every count is checked:
//! deliveries against what was pushed, per connection where every connection expects the same.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{ClientSpec, GOIM_AUTH, Transport, mid_of};
use crate::cluster::{self, Broker, Cluster};
use crate::edge::{self, EdgeProcess};
use crate::procfs::{self, ProcessSample, Watched};
use crate::push::{Pusher, Rest};
use crate::report::{ConnectReport, MemoryReport, Phase, Report};
use crate::swarm::{LoadSpec, Percentiles, Swarm, SwarmReport};

/// How the connections are made; shared by every scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Client transport.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// Connections per worker process at most (20,000 open files per process here).
    #[arg(long, default_value_t = 9_000)]
    pub per_worker: usize,
    /// Connections per source address (the kernel hands connect() about half of the 28,000-port
    /// ephemeral range: ~14,000 per source address and destination).
    #[arg(long, default_value_t = 14_000)]
    pub per_source: usize,
    /// First source address; more are taken after it (127.0.0.3, ...).
    #[arg(long, default_value = "127.0.0.2")]
    pub source_base: Ipv4Addr,
    /// New connections per second over all workers (0: as fast as `--concurrency` allows).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Handshakes in progress at once, over all workers.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// Seconds between a connection's heartbeats (0: none).
    #[arg(long, default_value_t = 30)]
    pub heartbeat_secs: u64,
    /// Auth body; `{mid}`, `{key}` and `{room}` are replaced per connection.
    #[arg(long, default_value = GOIM_AUTH)]
    pub auth: String,
    /// WebSocket path.
    #[arg(long, default_value = "/sub")]
    pub ws_path: String,
    /// Body size of pushed messages, bytes (at least 20: the send time).
    #[arg(long, default_value_t = 64)]
    pub body: usize,
    /// Business operation of pushed messages.
    #[arg(long, default_value_t = 1000)]
    pub operation: i32,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seconds without a delivery after which a phase gives up waiting.
    #[arg(long, default_value_t = 10)]
    pub stall_secs: u64,
    /// Seconds to let the server settle before each memory reading.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// Seconds the connections may take to authenticate.
    #[arg(long, default_value_t = 180)]
    pub connect_timeout_secs: u64,
}

/// Which server is loaded, for the scenarios that load one server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// A goim-protocol listener to load (repeat for several); without it an `edge-under-test` is
    /// started.
    #[arg(long)]
    pub target: Vec<SocketAddr>,
    /// Pid of a server process to measure (repeat), with `--target`.
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// goim-compatible REST API to push through (`http://host:port`: rim control or goim's logic).
    #[arg(long)]
    pub push_url: Option<String>,
    /// API key for `--push-url`.
    #[arg(long, env = "RIM_BENCH_PUSH_KEY")]
    pub push_key: Option<String>,
    /// The `edge-under-test` binary (default: next to this program).
    #[arg(long)]
    pub edge_binary: Option<PathBuf>,
    /// An extra flag for the started edge, e.g. `--edge-arg=--edge-queue-max-bytes=8388608`.
    #[arg(long, allow_hyphen_values = true)]
    pub edge_arg: Vec<String>,
}

/// The server of a one-server scenario.
enum Server {
    Local(Box<EdgeProcess>),
    External {
        targets: Vec<SocketAddr>,
        pids: Vec<u32>,
        rest: Option<Rest>,
    },
}

impl Server {
    async fn start(args: &ServerArgs) -> anyhow::Result<Server> {
        if !args.target.is_empty() {
            return Ok(Server::External {
                targets: args.target.clone(),
                pids: args.server_pid.clone(),
                rest: args
                    .push_url
                    .as_deref()
                    .map(|url| Rest::new(url, args.push_key.clone())),
            });
        }
        let binary = match &args.edge_binary {
            Some(path) => path.clone(),
            None => edge::default_binary()?,
        };
        let edge = EdgeProcess::start(&binary, &args.edge_arg).await?;
        Ok(Server::Local(Box::new(edge)))
    }

    fn targets(&self, transport: Transport) -> Vec<SocketAddr> {
        match (self, transport) {
            (Server::Local(edge), Transport::Tcp) => vec![edge.tcp],
            (Server::Local(edge), Transport::Ws) => vec![edge.ws],
            (Server::External { targets, .. }, _) => targets.clone(),
        }
    }

    fn watched(&self) -> Watched {
        Watched::new(match self {
            Server::Local(edge) => vec![("edge".into(), edge.pid)],
            Server::External { pids, .. } => pids
                .iter()
                .map(|pid| (format!("server-{pid}"), *pid))
                .collect(),
        })
    }

    fn pusher(&self) -> Option<Pusher<'_>> {
        match self {
            Server::Local(edge) => Some(Pusher::Edge(edge.as_ref())),
            Server::External { rest, .. } => rest.clone().map(Pusher::Rest),
        }
    }

    async fn stop(self) {
        if let Server::Local(edge) = self {
            edge.stop().await;
        }
    }
}

/// A report being filled in.
struct Run {
    report: Report,
    watched: Watched,
    bench: Watched,
}

impl Run {
    fn new(scenario: &str, load: &LoadArgs, watched: Watched) -> anyhow::Result<Run> {
        Ok(Run {
            report: Report {
                scenario: scenario.into(),
                command: std::env::args().collect::<Vec<_>>().join(" "),
                load_average_before: procfs::load_average()?,
                load_average_after: [0.0; 3],
                connections: load.connections,
                connect: None,
                memory: None,
                phases: Vec::new(),
                counters: Default::default(),
                servers: Vec::new(),
                ok: true,
                problems: Vec::new(),
            },
            watched,
            bench: Watched::new(Vec::new()),
        })
    }

    fn problem(&mut self, problem: String) {
        self.report.ok = false;
        self.report.problems.push(problem);
    }

    /// Connects the swarm of `load` to `targets` in `rooms` rooms, recording how it went; message
    /// bodies are checked to be `--body` bytes when `check_body`.
    async fn connect(
        &mut self,
        load: &LoadArgs,
        targets: Vec<SocketAddr>,
        rooms: usize,
        check_body: bool,
    ) -> anyhow::Result<Swarm> {
        let spec = LoadSpec {
            client: ClientSpec {
                targets,
                transport: load.transport,
                ws_path: load.ws_path.clone(),
                source_base: load.source_base,
                per_source: load.per_source,
                auth: load.auth.clone(),
                rooms,
                operation: load.operation,
                body: check_body.then_some(load.body.max(crate::wire::STAMP_LEN)),
                heartbeat_secs: load.heartbeat_secs,
            },
            connections: load.connections,
            per_worker: load.per_worker,
            connect_rate: load.connect_rate,
            concurrency: load.concurrency,
        };
        let before = self.watched.sample()?;
        let mut swarm = Swarm::start(&spec).await?;
        self.bench = Watched::new(
            swarm
                .pids()
                .into_iter()
                .map(|p| (format!("worker-{p}"), p))
                .collect(),
        );
        let elapsed = swarm
            .wait_connected(Duration::from_secs(load.connect_timeout_secs))
            .await?;
        let after = self.watched.sample()?;
        let report = swarm.report(0).await?;
        self.report.connect = Some(ConnectReport {
            seconds: elapsed.as_secs_f64(),
            per_second: load.connections as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
            handshake: Percentiles::of(&report.connect),
            server_cpu: procfs::cpu_between(&before, &after),
            failed: swarm.counters().failed,
        });
        Ok(swarm)
    }

    /// Closes the report: final counters, server samples, checks of what every scenario promises.
    fn finish(mut self, swarm: &Swarm, load: &LoadArgs) -> anyhow::Result<Report> {
        let counters = swarm.counters();
        if counters.closed > 0 {
            self.problem(format!(
                "{} connections were closed by the server",
                counters.closed
            ));
        }
        if counters.malformed > 0 {
            self.problem(format!("{} malformed packets", counters.malformed));
        }
        if counters.heartbeats > counters.heartbeat_replies + counters.open() {
            self.problem(format!(
                "{} heartbeats sent but only {} answered",
                counters.heartbeats, counters.heartbeat_replies
            ));
        }
        self.report.counters = counters;
        self.report.servers = self.watched.sample()?;
        self.report.load_average_after = procfs::load_average()?;
        self.report.print();
        if let Some(path) = &load.json {
            std::fs::write(path, serde_json::to_string_pretty(&self.report)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(self.report)
    }
}

/// Measures from the swarm's mark to the end of a phase.
struct PhaseClock {
    started: Instant,
    server: Vec<ProcessSample>,
    bench: Vec<ProcessSample>,
    batches: u64,
    messages: u64,
}

impl PhaseClock {
    async fn start(run: &Run, swarm: &mut Swarm) -> anyhow::Result<PhaseClock> {
        swarm.mark().await?;
        let counters = swarm.counters();
        Ok(PhaseClock {
            started: Instant::now(),
            server: run.watched.sample()?,
            bench: run.bench.sample()?,
            batches: counters.batches,
            messages: counters.messages,
        })
    }

    /// The phase as measured; `expected_each` is the per-connection expectation, when uniform.
    #[allow(clippy::too_many_arguments)]
    async fn phase(
        &self,
        run: &mut Run,
        swarm: &mut Swarm,
        name: String,
        requests: u64,
        messages: u64,
        expected: u64,
        expected_each: Option<u64>,
        server_reached: Option<u64>,
        late_pushes: u64,
    ) -> anyhow::Result<()> {
        let seconds = self.started.elapsed().as_secs_f64();
        let server = run.watched.sample()?;
        let bench = run.bench.sample()?;
        let counters = swarm.counters();
        let report: SwarmReport = swarm.report(expected_each.unwrap_or(0)).await?;
        let delivered = counters.messages - self.messages;
        let phase = Phase {
            name: name.clone(),
            requests,
            messages,
            expected,
            delivered,
            server_reached,
            per_connection: (report.min_per_connection, report.max_per_connection),
            short_connections: expected_each.map(|_| report.short),
            seconds,
            deliveries_per_second: 0.0,
            server_cpu: procfs::cpu_between(&self.server, &server),
            server_us_per_delivery: 0.0,
            server_user_us_per_delivery: 0.0,
            server_system_us_per_delivery: 0.0,
            bench_cpu: procfs::cpu_between(&self.bench, &bench),
            latency: Percentiles::of(&report.latency),
            batches: counters.batches - self.batches,
            late_pushes,
        }
        .finish();
        if delivered != expected {
            run.problem(format!(
                "{name}: {delivered} of {expected} deliveries arrived"
            ));
        }
        if expected_each.is_some() && (report.short > 0 || report.extra > 0) {
            run.problem(format!(
                "{name}: {} connections got fewer and {} more than {} messages",
                report.short,
                report.extra,
                expected_each.unwrap_or(0)
            ));
        }
        if server_reached.is_some_and(|r| r != expected) {
            run.problem(format!(
                "{name}: the server queued {} deliveries, {expected} expected",
                server_reached.unwrap_or(0)
            ));
        }
        if report.latency.len() != delivered {
            run.problem(format!(
                "{name}: {} of {delivered} deliveries carried their send time",
                report.latency.len()
            ));
        }
        run.report.phases.push(phase);
        Ok(())
    }
}

/// `idle`: the options.
#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Large pushes to the room after the idle reading (0: none), delivered one at a time.
    #[arg(long, default_value_t = 4)]
    burst_pushes: usize,
    /// Body size of those pushes, bytes.
    #[arg(long, default_value_t = 65_536)]
    burst_body: usize,
}

/// `idle`: server memory per idle connection, then after large pushes.
pub async fn idle(args: IdleArgs) -> anyhow::Result<Report> {
    let load = &args.load;
    let server = Server::start(&args.server).await?;
    let mut run = Run::new("idle", load, server.watched())?;
    settle(load).await;
    let before = procfs::total_rss(&run.watched.sample()?);
    let mut swarm = run
        .connect(load, server.targets(load.transport), 1, false)
        .await?;
    settle(load).await;
    let idle = procfs::total_rss(&run.watched.sample()?);
    let n = load.connections as u64;
    let mut after = None;
    if let Some(pusher) = server.pusher().filter(|_| args.burst_pushes > 0) {
        let clock = PhaseClock::start(&run, &mut swarm).await?;
        let mut reached = Some(0);
        for sent in 1..=args.burst_pushes as u64 {
            let queued = pusher
                .room_burst(load.operation, 0, 1, args.burst_body)
                .await?;
            reached = reached.zip(queued).map(|(a, b)| a + b);
            let target = clock.messages + sent * n;
            swarm.wait_messages(target, stall(load), "delivered").await;
        }
        let pushes = args.burst_pushes as u64;
        let name = format!("{pushes} pushes of {} B", args.burst_body);
        clock
            .phase(
                &mut run,
                &mut swarm,
                name,
                pushes,
                pushes,
                pushes * n,
                Some(pushes),
                reached,
                0,
            )
            .await?;
        settle(load).await;
        after = Some(procfs::total_rss(&run.watched.sample()?));
    }
    let per = |bytes: u64| bytes.saturating_sub(before) as f64 / n as f64;
    run.report.memory = Some(MemoryReport {
        before,
        idle,
        after,
        idle_per_connection: per(idle),
        after_per_connection: after.map(per),
    });
    let report = run.finish(&swarm, load);
    swarm.stop().await;
    server.stop().await;
    report
}

/// `room`: how pushes are grouped.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomMode {
    /// One push per call (goim's unbatched case).
    Single,
    /// `--burst` pushes per call, queued at the server together.
    Burst,
}

/// `room`: the options.
#[derive(clap::Args, Debug, Clone)]
pub struct RoomArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Messages pushed in each mode.
    #[arg(long, default_value_t = 200)]
    pushes: usize,
    /// Pushes per call in `burst` mode.
    #[arg(long, default_value_t = 20)]
    burst: usize,
    /// Modes to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [RoomMode::Single, RoomMode::Burst])]
    modes: Vec<RoomMode>,
    /// Messages in flight: the next call waits until the clients, on average, miss at most this many.
    #[arg(long, default_value_t = 64)]
    window: usize,
}

/// `room`: one room, pushes one at a time and in bursts; CPU per delivery and latency.
pub async fn room(args: RoomArgs) -> anyhow::Result<Report> {
    let load = &args.load;
    let server = Server::start(&args.server).await?;
    let pusher = server
        .pusher()
        .context("the room scenario pushes: give --push-url with --target")?;
    let mut run = Run::new("room", load, server.watched())?;
    let mut swarm = run
        .connect(load, server.targets(load.transport), 1, true)
        .await?;
    settle(load).await;
    let n = load.connections as u64;
    for mode in &args.modes {
        let per_call = match mode {
            RoomMode::Single => 1,
            RoomMode::Burst => args.burst.max(1),
        };
        let clock = PhaseClock::start(&run, &mut swarm).await?;
        let (mut sent, mut calls, mut reached) = (0u64, 0u64, Some(0u64));
        let window = args.window as u64;
        let progress = crate::swarm::bar(args.pushes as u64 * n, "delivered");
        while sent < args.pushes as u64 {
            let count = (args.pushes as u64 - sent).min(per_call as u64);
            // Flow control: no more than `window` messages per connection outstanding.
            let allowed = (sent + count).saturating_sub(window) * n + clock.messages;
            if !swarm
                .wait_until(stall(load), |c| c.messages >= allowed, &progress)
                .await
            {
                break;
            }
            let queued = pusher
                .room_burst(load.operation, 0, count as usize, load.body)
                .await?;
            reached = reached.zip(queued).map(|(a, b)| a + b);
            sent += count;
            calls += 1;
        }
        let total = clock.messages + sent * n;
        swarm
            .wait_until(stall(load), |c| c.messages >= total, &progress)
            .await;
        progress.finish_and_clear();
        let name = match mode {
            RoomMode::Single => "single".to_owned(),
            RoomMode::Burst => format!("burst of {per_call}"),
        };
        let pushes = args.pushes as u64;
        clock
            .phase(
                &mut run,
                &mut swarm,
                name,
                calls,
                sent,
                pushes * n,
                Some(pushes),
                reached,
                0,
            )
            .await?;
    }
    let report = run.finish(&swarm, load);
    swarm.stop().await;
    server.stop().await;
    report
}

/// `connect`: the options.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Seconds to hold the connections afterwards (nothing may close).
    #[arg(long, default_value_t = 2)]
    hold_secs: u64,
}

/// `connect`: a connect storm; handshakes per second, their times, server CPU.
pub async fn connect(args: ConnectArgs) -> anyhow::Result<Report> {
    let load = &args.load;
    let server = Server::start(&args.server).await?;
    let mut run = Run::new("connect", load, server.watched())?;
    let swarm = run
        .connect(load, server.targets(load.transport), 1, true)
        .await?;
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let report = run.finish(&swarm, load);
    swarm.stop().await;
    server.stop().await;
    report
}

/// Where `latency` and `scale` push.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushTo {
    /// Each push to one user (round robin over the connections).
    Users,
    /// Each push to one room of `--room-size` (round robin over the rooms).
    Rooms,
}

/// `latency` and `scale`: the options.
#[derive(clap::Args, Debug, Clone)]
pub struct PathArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Pushes per second, on a fixed schedule.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Seconds of pushing.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Push targets.
    #[arg(long, value_enum, default_value_t = PushTo::Users)]
    to: PushTo,
    /// Connections per room (`--to rooms`).
    #[arg(long, default_value_t = 200)]
    room_size: usize,
    /// Edges of the started cluster.
    #[arg(long, default_value_t = 1)]
    edges: usize,
    /// The started cluster's Kafka-protocol broker.
    #[arg(long, value_enum, default_value_t = Broker::Tansu)]
    broker: Broker,
    /// Push calls in flight at most; the schedule waits (and counts late pushes) beyond.
    #[arg(long, default_value_t = 512)]
    in_flight: usize,
    /// Seconds to hold the connections before pushing (a memory reading is taken after).
    #[arg(long, default_value_t = 2)]
    hold_secs: u64,
    /// Seconds of pushing at `--rate` before the measured phase (0: none), reported as a phase of
    /// its own: a cold path (connections to open, producer and consumer metadata to fetch)
    /// answers its first pushes slower than it runs.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// The `rim` binary (default: next to this program).
    #[arg(long)]
    rim: Option<PathBuf>,
    /// An existing deployment's goim-compatible REST API instead of starting a cluster (with
    /// `--target` and `--server-pid`).
    #[arg(long)]
    push_url: Option<String>,
    /// API key for `--push-url`.
    #[arg(long, env = "RIM_BENCH_PUSH_KEY")]
    push_key: Option<String>,
    /// The deployment's goim listeners, with `--push-url`.
    #[arg(long)]
    target: Vec<SocketAddr>,
    /// Pids of the deployment's processes to measure, with `--push-url`.
    #[arg(long)]
    server_pid: Vec<u32>,
}

/// `latency`: a steady rate through the whole production path.
pub async fn latency(args: PathArgs) -> anyhow::Result<Report> {
    full_path("latency", args).await
}

/// `scale`: many connections over several edges, held while room pushes flow.
pub async fn scale(args: PathArgs) -> anyhow::Result<Report> {
    full_path("scale", args).await
}

async fn full_path(scenario: &str, args: PathArgs) -> anyhow::Result<Report> {
    let load = &args.load;
    let n = load.connections;
    let (cluster, rest, targets, watched) = match &args.push_url {
        Some(url) => {
            let watched = args
                .server_pid
                .iter()
                .map(|pid| (format!("server-{pid}"), *pid))
                .collect();
            (
                None,
                Rest::new(url, args.push_key.clone()),
                args.target.clone(),
                watched,
            )
        }
        None => {
            let rim = match &args.rim {
                Some(path) => path.clone(),
                None => cluster::default_rim()?,
            };
            let cluster = Cluster::start(&rim, args.edges.max(1), args.broker).await?;
            let rest = Rest::new(&cluster.control_url, Some(cluster::ADMIN_KEY.into()));
            let targets = match load.transport {
                Transport::Tcp => cluster.edge_tcp.clone(),
                Transport::Ws => cluster.edge_ws.clone(),
            };
            let watched = cluster.all();
            (Some(cluster), rest, targets, watched)
        }
    };
    let edges: Vec<(String, u32)> = match &cluster {
        Some(cluster) => cluster.edges(),
        None => watched.clone(),
    };
    let rooms = match args.to {
        PushTo::Users => 1,
        PushTo::Rooms => n.div_ceil(args.room_size.max(1)),
    };
    let mut run = Run::new(scenario, load, Watched::new(watched))?;
    let edge_watch = Watched::new(edges);
    settle(load).await;
    let before = procfs::total_rss(&edge_watch.sample()?);
    let mut swarm = run.connect(load, targets, rooms, true).await?;
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let idle = procfs::total_rss(&edge_watch.sample()?);

    if args.warmup_secs > 0.0 {
        let clock = PhaseClock::start(&run, &mut swarm).await?;
        let schedule = steady(&args, args.warmup_secs, &rest, rooms).await;
        swarm
            .wait_messages(clock.messages + schedule.expected, stall(load), "warm-up")
            .await;
        check_schedule(&mut run, &schedule);
        let name = format!("warm-up: {} pushes/s for {} s", args.rate, args.warmup_secs);
        clock
            .phase(
                &mut run,
                &mut swarm,
                name,
                schedule.pushes,
                schedule.pushes,
                schedule.expected,
                None,
                None,
                schedule.late,
            )
            .await?;
    }
    let clock = PhaseClock::start(&run, &mut swarm).await?;
    let schedule = steady(&args, args.seconds, &rest, rooms).await;
    let total = clock.messages + schedule.expected;
    swarm.wait_messages(total, stall(load), "delivered").await;
    check_schedule(&mut run, &schedule);
    let name = match args.to {
        PushTo::Users => format!("{} pushes/s to users for {} s", args.rate, args.seconds),
        PushTo::Rooms => format!(
            "{} pushes/s to rooms of {} for {} s",
            args.rate, args.room_size, args.seconds
        ),
    };
    clock
        .phase(
            &mut run,
            &mut swarm,
            name,
            schedule.pushes,
            schedule.pushes,
            schedule.expected,
            None,
            None,
            schedule.late,
        )
        .await?;
    settle(load).await;
    let after = procfs::total_rss(&edge_watch.sample()?);
    let per = |bytes: u64| bytes.saturating_sub(before) as f64 / n as f64;
    run.report.memory = Some(MemoryReport {
        before,
        idle,
        after: Some(after),
        idle_per_connection: per(idle),
        after_per_connection: Some(per(after)),
    });
    let report = run.finish(&swarm, load);
    swarm.stop().await;
    drop(cluster);
    report
}

/// What a fixed-rate schedule did.
struct Schedule {
    pushes: u64,
    expected: u64,
    late: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Notes the failed pushes of a schedule as a problem of the run.
fn check_schedule(run: &mut Run, schedule: &Schedule) {
    if schedule.errors > 0 {
        run.problem(format!(
            "{} of {} pushes failed (first: {})",
            schedule.errors,
            schedule.pushes,
            schedule.first_error.as_deref().unwrap_or_default()
        ));
    }
}

/// Pushes at `args.rate` for `seconds` through `rest`, round robin over users or rooms.
async fn steady(args: &PathArgs, seconds: f64, rest: &Rest, rooms: usize) -> Schedule {
    let n = args.load.connections;
    let total = (args.rate * seconds).round() as u64;
    let gate = Arc::new(tokio::sync::Semaphore::new(args.in_flight.max(1)));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(0.001)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut expected, mut late) = (0u64, 0u64);
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..total {
        pace.tick().await;
        let permit = match gate.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                late += 1;
                match gate.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => break,
                }
            }
        };
        let k = k as usize;
        let body = crate::wire::stamped_body(crate::wire::unix_nanos(), args.load.body);
        let (rest, errors, first_error) = (rest.clone(), errors.clone(), first_error.clone());
        let operation = args.load.operation;
        let to = args.to;
        let target = match to {
            PushTo::Users => {
                expected += 1;
                mid_of(k % n) as usize
            }
            PushTo::Rooms => {
                let room = k % rooms;
                expected += (n / rooms + usize::from(room < n % rooms)) as u64;
                room
            }
        };
        tasks.spawn(async move {
            let outcome = match to {
                PushTo::Users => rest.user(operation, target as u64, body).await,
                PushTo::Rooms => rest.room(operation, target, body).await,
            };
            drop(permit);
            let Err(error) = outcome else {
                return;
            };
            let error = format!("{error:#}");
            errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = first_error.lock() {
                first.get_or_insert(error);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let first_error = first_error.lock().ok().and_then(|first| first.clone());
    Schedule {
        pushes: total,
        expected,
        late,
        errors: errors.load(Ordering::Relaxed),
        first_error,
    }
}

fn stall(load: &LoadArgs) -> Duration {
    Duration::from_secs(load.stall_secs)
}

async fn settle(load: &LoadArgs) {
    tokio::time::sleep(Duration::from_secs(load.settle_secs)).await;
}
