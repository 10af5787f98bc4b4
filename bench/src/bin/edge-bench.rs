//! edge-bench: what one rim edge costs per idle connection and per delivered message.
//!
//! The edge runs alone in a child process (`edge-under-test`, insecure auth, per-IP and total limits
//! off), so `/proc/<pid>` shows its memory and CPU and nothing else. This process opens `--connections`
//! goim clients (TCP or WebSocket) that authenticate into one room, then:
//!
//! 1. idle memory: the edge's resident set (VmRSS) before connecting and once every client has its
//!    op-8 reply; the difference divided by the connections is the memory per idle connection;
//! 2. room pushes, once per `--modes` entry, `--messages` messages each, to every connection in the room
//!    through `POST /internal/push`:
//!    - `single`: one message per push, one push per HTTP request (goim's unbatched case);
//!    - `request`: `--batch` pushes of one message each in one request (how rim-job sends): each is a
//!      separate frame; the edge may coalesce what is queued into one write per connection;
//!    - `raw`: one push per request whose operation is 9 and whose body is `--batch` complete goim
//!      packets (goim's batched room push: one frame carrying the batch).
//!
//!    Clients count every op-1000 packet they receive (op 9 is treated as a container, so packets inside a
//!    batch are counted one by one) by walking packet headers only, a few runtime threads serving all
//!    sockets. Pushing is flow-controlled (`--window`) so no send queue overflows. A phase reports
//!    deliveries (messages received, checked per connection), deliveries per second, the edge's CPU
//!    seconds per million deliveries and deliveries per edge CPU-second, and what the edge itself
//!    counted on `/metrics` (drops, closes, writes and frames per write).
//!
//! Results are compared with goim's comet measured on the same machine (`--goim-*`). The machine is
//! shared and noisy: compare figures from one run, and repeat (`--runs`).
//! Run with `cargo build --release -p rim-bench && target/release/edge-bench --help`. `rim-bench room`
//! and `rim-bench idle` measure the same and more (worker processes, latency, any goim server);
//! this program stays for its `request`/`raw` comparison with goim's op-9 batching.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use rim_bench::procfs;
use rim_bench::wire::ws_binary_frame;
use rim_proto::schema::{EdgePush, EdgePushRequest, edge_push::Target};
use rim_proto::{Packet, op};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// The room every client joins.
const ROOM: &str = "live://bench";
/// The business operation of pushed messages.
const PUSH_OP: i32 = 1000;
/// Each client's read buffer.
const READ_BUF: usize = 4096;
/// Source addresses used per run and connection count (each has ~28000 ephemeral ports).
const CONNS_PER_SOURCE: usize = 14_000;
/// How often waiting loops look at the clients' counters.
const POLL: Duration = Duration::from_millis(1);

/// Benchmark parameters.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Authenticated connections, all in one room (≤ ~15000: 20000 open files per process).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Messages pushed to the room in each mode.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Body size of each message, in bytes.
    #[arg(long, default_value_t = 64)]
    body: usize,
    /// Messages per request (`request` mode) or per op-9 push (`raw` mode).
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Push modes to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Single, Mode::Request, Mode::Raw])]
    modes: Vec<Mode>,
    /// Client transport.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Messages in flight: the next request waits until clients, on average, miss at most this many.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// How many bytes a connection may fall behind before the edge treats it as a slow consumer
    /// (`--edge-queue-max-bytes` of the edge under test).
    #[arg(long, default_value_t = 4 << 20)]
    queue_max_bytes: usize,
    /// Whole runs, each with a fresh edge.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Connection attempts in progress at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds without progress after which a phase is given up (and its missing deliveries reported).
    #[arg(long, default_value_t = 10)]
    stall_secs: u64,
    /// Seconds to let the edge settle before each memory reading.
    #[arg(long, default_value_t = 2)]
    settle_secs: u64,
    /// The edge binary (default: `edge-under-test` next to this program).
    #[arg(long)]
    edge_binary: Option<PathBuf>,
    /// goim comet memory per idle connection on this machine, KB.
    #[arg(long, default_value_t = 46.0)]
    goim_kb_per_connection: f64,
    /// goim comet unbatched frames per CPU-second on this machine.
    #[arg(long, default_value_t = 120_000.0)]
    goim_frames_per_cpu_second: f64,
}

/// How messages are grouped into pushes and requests.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One message per push, one push per request.
    Single,
    /// `--batch` one-message pushes per request.
    Request,
    /// One op-9 push carrying `--batch` packets per request.
    Raw,
}

/// How clients talk to the edge.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// goim over plain TCP.
    Tcp,
    /// goim over WebSocket (`/sub`), binary messages.
    Ws,
}

mod fleet {
    //! The client connections and their shared counters.

    use super::*;
    use rim_bench::wire::{Packets, Tally, WsFrames};

    /// Counters every client task updates; read by the benchmark while it pushes.
    pub struct Fleet {
        /// Messages received, per connection.
        pub received: Vec<AtomicU64>,
        /// Messages received by all connections.
        pub total: AtomicU64,
        /// Connections that got their auth reply.
        pub authed: AtomicUsize,
        /// Connections the edge closed (EOF, error or WebSocket close).
        pub closed: AtomicUsize,
        /// Packets that were not what was sent.
        pub malformed: AtomicU64,
        /// Connections that failed to open, with the first error.
        pub failed: AtomicUsize,
        first_error: std::sync::Mutex<Option<String>>,
    }

    impl Fleet {
        /// Counters for `connections` clients.
        pub fn new(connections: usize) -> Arc<Self> {
            Arc::new(Self {
                received: (0..connections).map(|_| AtomicU64::new(0)).collect(),
                total: AtomicU64::new(0),
                authed: AtomicUsize::new(0),
                closed: AtomicUsize::new(0),
                malformed: AtomicU64::new(0),
                failed: AtomicUsize::new(0),
                first_error: Default::default(),
            })
        }

        /// The first connection error, if any.
        pub fn first_error(&self) -> Option<String> {
            self.first_error.lock().ok().and_then(|first| first.clone())
        }

        /// Keeps `error` if it is the first connection error.
        fn record_error(&self, error: String) {
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert(error);
            }
        }

        /// Messages received per connection right now.
        pub fn snapshot(&self) -> Vec<u64> {
            self.received
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect()
        }
    }

    /// Where and how one client connects.
    #[derive(Clone, Copy)]
    pub struct Target {
        /// The edge listener for the transport.
        pub addr: SocketAddr,
        /// TCP or WebSocket.
        pub transport: Transport,
        /// Expected body size of pushed messages.
        pub body: usize,
    }

    /// Runs client `index` from connect to close; the permit is released once it is authenticated.
    pub async fn client(
        index: usize,
        source: IpAddr,
        target: Target,
        fleet: Arc<Fleet>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let mut permit = Some(permit);
        let (mut stream, leftover) = match open(index, source, target).await {
            Ok(opened) => opened,
            Err(error) => {
                fleet.failed.fetch_add(1, Ordering::Relaxed);
                fleet.record_error(format!("client {index}: {error:#}"));
                return;
            }
        };
        let mut packets = Packets::new(PUSH_OP, Some(target.body));
        let mut frames = WsFrames::default();
        let mut tally = Tally::default();
        let mut buf = vec![0u8; READ_BUF];
        let mut data_len = leftover.len();
        buf[..data_len].copy_from_slice(&leftover);
        loop {
            let data = &buf[..data_len];
            match target.transport {
                Transport::Tcp => packets.feed(data, &mut tally),
                Transport::Ws => frames.feed(data, &mut packets, &mut tally),
            }
            if tally.messages > 0 {
                fleet.received[index].fetch_add(tally.messages, Ordering::Relaxed);
                fleet.total.fetch_add(tally.messages, Ordering::Relaxed);
                tally.messages = 0;
            }
            if tally.malformed > 0 {
                fleet
                    .malformed
                    .fetch_add(tally.malformed, Ordering::Relaxed);
                tally.malformed = 0;
            }
            if tally.authed && permit.take().is_some() {
                fleet.authed.fetch_add(1, Ordering::Relaxed);
            }
            if frames.closed {
                break;
            }
            data_len = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
        }
        fleet.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Connects from `source`, upgrades (WebSocket) and sends the auth packet; returns the stream and
    /// any bytes read past the upgrade response.
    async fn open(
        index: usize,
        source: IpAddr,
        target: Target,
    ) -> anyhow::Result<(TcpStream, Vec<u8>)> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let mut stream = socket.connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let auth = auth_body(index);
        let auth = Packet::new(1, op::AUTH, 1, auth.into_bytes()).to_bytes();
        match target.transport {
            Transport::Tcp => {
                stream.write_all(&auth).await?;
                Ok((stream, Vec::new()))
            }
            Transport::Ws => {
                let leftover = rim_bench::client::upgrade(&mut stream, target.addr, "/sub").await?;
                stream.write_all(&ws_binary_frame(&auth)).await?;
                Ok((stream, leftover))
            }
        }
    }

    /// The goim auth body of client `index` (insecure mode trusts it).
    fn auth_body(index: usize) -> String {
        format!(
            r#"{{"mid":{},"key":"bench-{index}","room_id":"{ROOM}","platform":"bench","accepts":[{PUSH_OP}]}}"#,
            index + 1
        )
    }
}

mod phase {
    //! One push mode against the room: flow-controlled pushing, waiting, measuring.

    use super::*;
    use fleet::Fleet;
    use rim_bench::edge::{EdgeCounters, EdgeProcess};

    /// What one push mode measured.
    pub struct PhaseReport {
        pub mode: Mode,
        pub requests: usize,
        pub expected: u64,
        pub delivered: u64,
        pub reached: u64,
        pub elapsed: Duration,
        pub cpu: procfs::Cpu,
        pub bench_cpu: procfs::Cpu,
        pub short_connections: usize,
        pub edge: EdgeCounters,
    }

    impl PhaseReport {
        /// Deliveries per wall-clock second.
        pub fn per_second(&self) -> f64 {
            self.delivered as f64 / self.elapsed.as_secs_f64()
        }

        /// Deliveries per edge CPU-second.
        pub fn per_cpu_second(&self) -> f64 {
            self.delivered as f64 / self.cpu.total().max(f64::EPSILON)
        }
    }

    /// The requests of one mode: `messages` messages grouped as the mode says.
    fn requests(mode: Mode, args: &Args, tag: &str) -> Vec<(usize, EdgePushRequest)> {
        let body = vec![b'x'; args.body];
        let batch = args.batch.max(1);
        let push = |id: String, operation: i32, body: Vec<u8>| EdgePush {
            message_id: id,
            operation,
            body: body.into(),
            target: Some(Target::Room(ROOM.into())),
            ..EdgePush::default()
        };
        let mut out = Vec::new();
        let mut sent = 0;
        while sent < args.messages {
            let count = match mode {
                Mode::Single => 1,
                Mode::Request | Mode::Raw => batch.min(args.messages - sent),
            };
            let ids = (sent..sent + count).map(|n| format!("{tag}-{n}"));
            let pushes = match mode {
                Mode::Single | Mode::Request => {
                    ids.map(|id| push(id, PUSH_OP, body.clone())).collect()
                }
                Mode::Raw => {
                    let inner = packets_back_to_back(count, &body);
                    vec![push(format!("{tag}-raw-{sent}"), op::RAW, inner)]
                }
            };
            out.push((count, EdgePushRequest { pushes }));
            sent += count;
        }
        out
    }

    /// `count` op-1000 packets with `body`, back to back (an op-9 body).
    fn packets_back_to_back(count: usize, body: &[u8]) -> Vec<u8> {
        let packet = Packet::new(1, PUSH_OP, 0, body.to_vec()).to_bytes();
        packet
            .iter()
            .copied()
            .cycle()
            .take(packet.len() * count)
            .collect()
    }

    /// Waits until `done()` or until the clients' total stops moving for `stall`; true if done.
    async fn wait_until(fleet: &Fleet, stall: Duration, done: impl Fn(u64) -> bool) -> bool {
        let mut last = fleet.total.load(Ordering::Relaxed);
        let mut moved = Instant::now();
        loop {
            let total = fleet.total.load(Ordering::Relaxed);
            if done(total) {
                return true;
            }
            if total != last {
                last = total;
                moved = Instant::now();
            } else if moved.elapsed() > stall {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `mode`: pushes, waits for every delivery (or a stall), measures the edge.
    pub async fn run(
        mode: Mode,
        args: &Args,
        tag: &str,
        edge: &EdgeProcess,
        fleet: &Fleet,
        ticks: f64,
    ) -> anyhow::Result<PhaseReport> {
        let connections = fleet.received.len() as u64;
        let requests = requests(mode, args, tag);
        let stall = Duration::from_secs(args.stall_secs);
        let window = args.window as u64;
        let per_client_before = fleet.snapshot();
        let base = fleet.total.load(Ordering::Relaxed);
        let counters_before = edge.counters().await?;
        let cpu_before = procfs::cpu(edge.pid, ticks)?;
        let bench_cpu_before = procfs::cpu(std::process::id(), ticks)?;
        let started = Instant::now();
        let mut sent = 0u64;
        let mut reached = 0u64;
        for (count, request) in &requests {
            sent += *count as u64;
            let allowed = |total: u64| (total - base) + window * connections >= sent * connections;
            if !wait_until(fleet, stall, allowed).await {
                bail!("{mode:?}: deliveries stalled after {sent} messages");
            }
            let per_push = edge.push(request).await?;
            let per_message = match mode {
                Mode::Raw => *count as u64,
                Mode::Single | Mode::Request => 1,
            };
            reached += per_push
                .iter()
                .map(|n| u64::from(*n) * per_message)
                .sum::<u64>();
        }
        let expected = sent * connections;
        wait_until(fleet, stall, |total| total - base >= expected).await;
        let elapsed = started.elapsed();
        let cpu = procfs::cpu(edge.pid, ticks)? - cpu_before;
        let bench_cpu = procfs::cpu(std::process::id(), ticks)? - bench_cpu_before;
        let edge_counters = edge.counters().await? - counters_before;
        let short_connections = fleet
            .snapshot()
            .iter()
            .zip(&per_client_before)
            .filter(|(now, before)| *now - *before != sent)
            .count();
        Ok(PhaseReport {
            mode,
            requests: requests.len(),
            expected,
            delivered: fleet.total.load(Ordering::Relaxed) - base,
            reached,
            elapsed,
            cpu,
            bench_cpu,
            short_connections,
            edge: edge_counters,
        })
    }
}

/// What one whole run measured.
struct RunReport {
    idle_bytes_per_connection: f64,
    after_bytes_per_connection: f64,
    connect_elapsed: Duration,
    phases: Vec<phase::PhaseReport>,
}

/// One run: fresh edge, connect everyone, measure idle memory, then each push mode.
async fn run(
    args: &Args,
    binary: &std::path::Path,
    run: usize,
    ticks: f64,
) -> anyhow::Result<RunReport> {
    let extra = [format!("--edge-queue-max-bytes={}", args.queue_max_bytes)];
    let edge = rim_bench::edge::EdgeProcess::start(binary, &extra).await?;
    let n = args.connections;
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let rss_before = procfs::rss_bytes(edge.pid)?;

    let fleet = fleet::Fleet::new(n);
    let target = fleet::Target {
        addr: match args.transport {
            Transport::Tcp => edge.tcp,
            Transport::Ws => edge.ws,
        },
        transport: args.transport,
        body: args.body,
    };
    let sources_per_run = n.div_ceil(CONNS_PER_SOURCE);
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut clients = JoinSet::new();
    let started = Instant::now();
    for index in 0..n {
        let source = 2 + run * sources_per_run + index / CONNS_PER_SOURCE;
        let source = u8::try_from(source).context("too many runs x connections for 127.0.0.x")?;
        let permit = gate.clone().acquire_owned().await?;
        clients.spawn(fleet::client(
            index,
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)),
            target,
            fleet.clone(),
            permit,
        ));
    }
    while fleet.authed.load(Ordering::Relaxed)
        + fleet.failed.load(Ordering::Relaxed)
        + fleet.closed.load(Ordering::Relaxed)
        < n
    {
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_elapsed = started.elapsed();
    let authed = fleet.authed.load(Ordering::Relaxed);
    if authed < n {
        bail!(
            "only {authed} of {n} clients authenticated ({} failed, {} closed; first error: {:?})",
            fleet.failed.load(Ordering::Relaxed),
            fleet.closed.load(Ordering::Relaxed),
            fleet.first_error()
        );
    }
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let rss_idle = procfs::rss_bytes(edge.pid)?;

    let mut phases = Vec::new();
    for mode in &args.modes {
        let tag = format!("r{run}-{mode:?}");
        phases.push(phase::run(*mode, args, &tag, &edge, &fleet, ticks).await?);
    }
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let rss_after = procfs::rss_bytes(edge.pid)?;
    let closed = fleet.closed.load(Ordering::Relaxed);
    let malformed = fleet.malformed.load(Ordering::Relaxed);
    if closed > 0 || malformed > 0 {
        println!(
            "  !! {closed} connections were closed by the edge, {malformed} malformed packets"
        );
    }
    clients.abort_all();
    while clients.join_next().await.is_some() {}
    edge.stop().await;
    Ok(RunReport {
        idle_bytes_per_connection: rss_idle.saturating_sub(rss_before) as f64 / n as f64,
        after_bytes_per_connection: rss_after.saturating_sub(rss_before) as f64 / n as f64,
        connect_elapsed,
        phases,
    })
}

fn print_run(args: &Args, number: usize, report: &RunReport) {
    let kb = report.idle_bytes_per_connection / 1024.0;
    println!(
        "run {number}: {} {:?} connections authenticated in {:.1?}; edge RSS per idle connection {:.0} B \
         ({kb:.2} KB; goim {} KB = {:.1}x ours); after the pushes {:.0} B",
        args.connections,
        args.transport,
        report.connect_elapsed,
        report.idle_bytes_per_connection,
        args.goim_kb_per_connection,
        args.goim_kb_per_connection / kb.max(f64::EPSILON),
        report.after_bytes_per_connection,
    );
    println!(
        "  {:<8} {:>5} {:>10} {:>7} {:>9} {:>6} {:>6} {:>7} {:>10} {:>6} {:>8} {:>6} {:>5} {:>6} {:>5} {:>7}",
        "mode",
        "reqs",
        "delivered",
        "wall s",
        "deliv/s",
        "usr s",
        "sys s",
        "cpu s/M",
        "deliv/cpu-s",
        "x goim",
        "writes",
        "fr/wr",
        "drops",
        "closes",
        "short",
        "bench s"
    );
    for phase in &report.phases {
        let edge = &phase.edge;
        println!(
            "  {:<8} {:>5} {:>10} {:>7.2} {:>9.0} {:>6.2} {:>6.2} {:>7.3} {:>10.0} {:>6.2} {:>8.0} {:>6.2} {:>5.0} {:>6.0} {:>5} {:>7.2}",
            format!("{:?}", phase.mode).to_lowercase(),
            phase.requests,
            phase.delivered,
            phase.elapsed.as_secs_f64(),
            phase.per_second(),
            phase.cpu.user,
            phase.cpu.system,
            phase.cpu.total() * 1e6 / phase.delivered.max(1) as f64,
            phase.per_cpu_second(),
            phase.per_cpu_second() / args.goim_frames_per_cpu_second,
            edge.writes,
            edge.written_frames / edge.writes.max(1.0),
            edge.drops,
            edge.closes,
            phase.short_connections,
            phase.bench_cpu.total(),
        );
        if phase.delivered != phase.expected || phase.reached != phase.expected {
            println!(
                "  !! {:?}: {} of {} deliveries arrived; the edge reported reaching {}",
                phase.mode, phase.delivered, phase.expected, phase.reached
            );
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_summary(args: &Args, reports: &[RunReport]) {
    println!("median of {} runs:", reports.len());
    let kb = median(
        reports
            .iter()
            .map(|r| r.idle_bytes_per_connection)
            .collect(),
    ) / 1024.0;
    println!(
        "  idle memory: {kb:.2} KB per connection (target < 4 KB; goim {} KB: {:.1}x less)",
        args.goim_kb_per_connection,
        args.goim_kb_per_connection / kb.max(f64::EPSILON)
    );
    for (index, mode) in args.modes.iter().enumerate() {
        let phases: Vec<&phase::PhaseReport> =
            reports.iter().filter_map(|r| r.phases.get(index)).collect();
        let per_cpu = median(phases.iter().map(|p| p.per_cpu_second()).collect());
        let per_second = median(phases.iter().map(|p| p.per_second()).collect());
        println!(
            "  {:<8} {:>10.0} deliveries/s, {:>10.0} deliveries per edge CPU-second = {:.1}x goim's unbatched \
             {} (target >= 4x), {:.3} CPU s per million deliveries",
            format!("{mode:?}").to_lowercase(),
            per_second,
            per_cpu,
            per_cpu / args.goim_frames_per_cpu_second,
            args.goim_frames_per_cpu_second,
            1e6 / per_cpu,
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // reqwest is built without a TLS provider in this workspace; the pushes are plain HTTP anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    anyhow::ensure!(args.connections > 0, "--connections must be positive");
    let binary = match &args.edge_binary {
        Some(path) => path.clone(),
        None => rim_bench::edge::default_binary()?,
    };
    let ticks = procfs::clock_ticks();
    let mut reports = Vec::new();
    for number in 1..=args.runs {
        let report = run(&args, &binary, number - 1, ticks).await?;
        print_run(&args, number, &report);
        reports.push(report);
    }
    print_summary(&args, &reports);
    Ok(())
}
