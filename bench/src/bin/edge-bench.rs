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
//! Run with `cargo build --release -p rim-bench && target/release/edge-bench --help`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use prost::Message;
use rim_proto::schema::{EdgePush, EdgePushRequest, EdgePushResponse, edge_push::Target};
use rim_proto::{HEADER_LEN, Packet, op};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
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

mod procfs {
    //! The child's resident memory and CPU time, from `/proc`.

    use anyhow::Context;

    /// CPU ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
    pub fn clock_ticks() -> f64 {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    }

    /// Resident set size in bytes (VmRSS).
    pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .context("no VmRSS in /proc status")?;
        Ok(kb * 1024)
    }

    /// CPU seconds of a whole process (exited threads included), split as the kernel accounts them.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Cpu {
        /// In the process's own code.
        pub user: f64,
        /// In the kernel on its behalf (on loopback this includes the peer's TCP receive path).
        pub system: f64,
    }

    impl Cpu {
        /// User + system.
        pub fn total(&self) -> f64 {
            self.user + self.system
        }
    }

    impl std::ops::Sub for Cpu {
        type Output = Self;
        fn sub(self, before: Self) -> Self {
            Self {
                user: self.user - before.user,
                system: self.system - before.system,
            }
        }
    }

    /// The CPU time `pid` has used so far.
    pub fn cpu(pid: u32, ticks: f64) -> anyhow::Result<Cpu> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start at field 3 (state).
        let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> anyhow::Result<f64> {
            let value = fields.get(n - 3).context("short /proc stat")?;
            Ok(value.parse::<u64>()? as f64 / ticks)
        };
        Ok(Cpu {
            user: field(14)?,
            system: field(15)?,
        })
    }
}

mod wire {
    //! Client-side goim parsing that looks at headers only, and WebSocket framing by hand.
    //!
    //! Counting packets must cost the load generator little, or it, not the edge, sets the pace: bytes
    //! are walked once, bodies skipped, nothing allocated. Op 9 is a container (its body is packets back
    //! to back), so a batch's packets are counted like any other.

    use super::{HEADER_LEN, PUSH_OP, op};

    /// What one connection has seen so far.
    #[derive(Debug, Default)]
    pub struct Tally {
        /// Op-1000 packets.
        pub messages: u64,
        /// An op-8 auth reply arrived.
        pub authed: bool,
        /// Packets whose length or body size was not what the benchmark sent.
        pub malformed: u64,
    }

    /// Walks a stream of goim packets across reads.
    #[derive(Debug)]
    pub struct Packets {
        head: [u8; HEADER_LEN],
        have: usize,
        skip: usize,
        body: usize,
    }

    impl Packets {
        /// Expects pushed messages to carry `body` bytes.
        pub fn new(body: usize) -> Self {
            Self {
                head: [0; HEADER_LEN],
                have: 0,
                skip: 0,
                body,
            }
        }

        /// Consumes `data`, counting into `tally`.
        pub fn feed(&mut self, mut data: &[u8], tally: &mut Tally) {
            while !data.is_empty() {
                if self.skip > 0 {
                    let n = self.skip.min(data.len());
                    self.skip -= n;
                    data = &data[n..];
                    continue;
                }
                let n = (HEADER_LEN - self.have).min(data.len());
                self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have < HEADER_LEN {
                    return;
                }
                self.have = 0;
                let len =
                    i32::from_be_bytes([self.head[0], self.head[1], self.head[2], self.head[3]]);
                let code =
                    i32::from_be_bytes([self.head[8], self.head[9], self.head[10], self.head[11]]);
                let Some(body) = usize::try_from(len)
                    .ok()
                    .and_then(|l| l.checked_sub(HEADER_LEN))
                else {
                    tally.malformed += 1;
                    continue;
                };
                match code {
                    op::RAW => continue, // the inner packets follow
                    PUSH_OP => {
                        tally.messages += 1;
                        tally.malformed += u64::from(body != self.body);
                    }
                    op::AUTH_REPLY => tally.authed = true,
                    _ => {}
                }
                self.skip = body;
            }
        }
    }

    /// Strips server-to-client WebSocket framing (unmasked), handing binary payloads to [`Packets`].
    #[derive(Debug)]
    pub struct WsFrames {
        head: [u8; 10],
        have: usize,
        payload: usize,
        binary: bool,
        /// The server sent a close frame.
        pub closed: bool,
    }

    impl WsFrames {
        /// A deframer at a frame boundary.
        pub fn new() -> Self {
            Self {
                head: [0; 10],
                have: 0,
                payload: 0,
                binary: false,
                closed: false,
            }
        }

        /// Consumes `data`, passing message payloads to `packets`.
        pub fn feed(&mut self, mut data: &[u8], packets: &mut Packets, tally: &mut Tally) {
            while !data.is_empty() {
                if self.payload > 0 {
                    let n = self.payload.min(data.len());
                    if self.binary {
                        packets.feed(&data[..n], tally);
                    }
                    self.payload -= n;
                    data = &data[n..];
                    continue;
                }
                if self.have < 2 {
                    let n = (2 - self.have).min(data.len());
                    self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
                    self.have += n;
                    data = &data[n..];
                    continue;
                }
                let extended = match self.head[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let need = 2 + extended;
                let n = (need - self.have).min(data.len());
                self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have < need {
                    continue;
                }
                let opcode = self.head[0] & 0x0f;
                self.payload = match self.head[1] & 0x7f {
                    126 => usize::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                    127 => {
                        let mut len = [0u8; 8];
                        len.copy_from_slice(&self.head[2..10]);
                        usize::try_from(u64::from_be_bytes(len)).unwrap_or(usize::MAX)
                    }
                    short => usize::from(short),
                };
                self.have = 0;
                self.binary = matches!(opcode, 0 | 2);
                self.closed |= opcode == 8;
            }
        }
    }

    /// A masked client binary frame holding `payload` (clients must mask; the key is arbitrary).
    pub fn ws_binary_frame(payload: &[u8]) -> Vec<u8> {
        const MASK: [u8; 4] = [0x5a, 0xa5, 0x3c, 0xc3];
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x82);
        match payload.len() {
            len if len < 126 => frame.push(0x80 | len as u8),
            len => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        frame
    }
}

mod fleet {
    //! The client connections and their shared counters.

    use super::*;
    use wire::{Packets, Tally, WsFrames};

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
        let mut packets = Packets::new(target.body);
        let mut frames = WsFrames::new();
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
                let upgrade = format!(
                    "GET /sub HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    target.addr
                );
                stream.write_all(upgrade.as_bytes()).await?;
                let mut head = Vec::with_capacity(512);
                let end = loop {
                    if stream.read_buf(&mut head).await? == 0 {
                        bail!("closed during the WebSocket upgrade");
                    }
                    if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                    if head.len() > 8192 {
                        bail!("oversized upgrade response");
                    }
                };
                if !head.starts_with(b"HTTP/1.1 101") {
                    bail!(
                        "upgrade refused: {}",
                        String::from_utf8_lossy(&head[..end])
                            .lines()
                            .next()
                            .unwrap_or("")
                    );
                }
                stream.write_all(&wire::ws_binary_frame(&auth)).await?;
                Ok((stream, head.split_off(end)))
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

mod edge {
    //! The edge child process: start, addresses, `/metrics`, push requests, stop.

    use super::*;

    /// A running `edge-under-test`.
    pub struct EdgeProcess {
        child: Child,
        stdin: Option<ChildStdin>,
        /// Its process id (for `/proc`).
        pub pid: u32,
        /// TCP listener.
        pub tcp: SocketAddr,
        /// WebSocket listener.
        pub ws: SocketAddr,
        internal: SocketAddr,
        http: reqwest::Client,
        secret: String,
    }

    /// Counters the edge exposes on `/metrics`, summed over labels.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct EdgeCounters {
        /// `rim_edge_deliveries_total`: frames queued to connections.
        pub deliveries: f64,
        /// `rim_edge_drops_total`: frames not queued (full queue, closing).
        pub drops: f64,
        /// `rim_edge_closes_total`: connections closed, any reason.
        pub closes: f64,
        /// Writes made by connection writers.
        pub writes: f64,
        /// Frames those writes carried.
        pub written_frames: f64,
    }

    impl std::ops::Sub for EdgeCounters {
        type Output = Self;
        fn sub(self, before: Self) -> Self {
            Self {
                deliveries: self.deliveries - before.deliveries,
                drops: self.drops - before.drops,
                closes: self.closes - before.closes,
                writes: self.writes - before.writes,
                written_frames: self.written_frames - before.written_frames,
            }
        }
    }

    impl EdgeProcess {
        /// Starts the binary with limits that fit a benchmark and waits for its address line.
        pub async fn start(binary: &std::path::Path, args: &Args) -> anyhow::Result<Self> {
            let secret = format!("bench-{}", std::process::id());
            let mut child = Command::new(binary)
                .args([
                    "--edge-tcp-listen=127.0.0.1:0",
                    "--edge-ws-listen=127.0.0.1:0",
                    "--edge-internal-listen=127.0.0.1:0",
                    "--edge-auth=insecure",
                    "--edge-max-conns-per-ip=0",
                    "--edge-max-connections=0",
                    "--edge-handshake-timeout-ms=60000",
                ])
                .arg(format!("--edge-queue-max-bytes={}", args.queue_max_bytes))
                .env("RIM_BENCH_SECRET", &secret)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let stdout = child.stdout.take().context("no child stdout")?;
            let mut line = String::new();
            tokio::time::timeout(
                Duration::from_secs(30),
                BufReader::new(stdout).read_line(&mut line),
            )
            .await
            .context("edge-under-test did not print its addresses")??;
            let addr = |name: &str| -> anyhow::Result<SocketAddr> {
                line.split_whitespace()
                    .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
                    .with_context(|| format!("no {name}= in {line:?}"))?
                    .parse()
                    .with_context(|| format!("bad {name} address"))
            };
            Ok(Self {
                pid: child.id().context("edge exited")?,
                stdin: child.stdin.take(),
                tcp: addr("tcp")?,
                ws: addr("ws")?,
                internal: addr("internal")?,
                child,
                http: reqwest::Client::new(),
                secret,
            })
        }

        /// Sends one push request; returns, per push, the connections it reached.
        pub async fn push(&self, request: &EdgePushRequest) -> anyhow::Result<Vec<u32>> {
            let response = self
                .http
                .post(format!("http://{}/internal/push", self.internal))
                .bearer_auth(&self.secret)
                .body(request.encode_to_vec())
                .send()
                .await?;
            let status = response.status();
            let body = response.bytes().await?;
            if !status.is_success() {
                bail!("push: {status} {}", String::from_utf8_lossy(&body));
            }
            Ok(EdgePushResponse::decode(body)?.delivered)
        }

        /// Reads the counters the edge exposes.
        pub async fn counters(&self) -> anyhow::Result<EdgeCounters> {
            let text = self
                .http
                .get(format!("http://{}/metrics", self.internal))
                .send()
                .await?
                .text()
                .await?;
            let sum = |name: &str| -> f64 {
                text.lines()
                    .filter(|line| !line.starts_with('#'))
                    .filter_map(|line| line.rsplit_once(' '))
                    .filter(|(key, _)| {
                        key.strip_prefix(name)
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                    })
                    .filter_map(|(_, value)| value.parse::<f64>().ok())
                    .sum()
            };
            Ok(EdgeCounters {
                deliveries: sum("rim_edge_deliveries_total"),
                drops: sum("rim_edge_drops_total"),
                closes: sum("rim_edge_closes_total"),
                writes: sum("rim_edge_write_batch_frames_count"),
                written_frames: sum("rim_edge_write_batch_frames_sum"),
            })
        }

        /// Closes the child's stdin (it shuts down gracefully) and waits, killing it after a while.
        pub async fn stop(mut self) {
            drop(self.stdin.take());
            if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
    }
}

mod phase {
    //! One push mode against the room: flow-controlled pushing, waiting, measuring.

    use super::*;
    use edge::{EdgeCounters, EdgeProcess};
    use fleet::Fleet;

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
            record: 0,
            target: Some(Target::Room(ROOM.into())),
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
    let edge = edge::EdgeProcess::start(binary, args).await?;
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
        None => std::env::current_exe()?.with_file_name("edge-under-test"),
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
