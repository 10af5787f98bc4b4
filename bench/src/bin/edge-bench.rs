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
//!      separate frame; the edge may coalesce what is queued into one write per connection. (An
//!      earlier `raw` mode pushed goim-style op-9 batches; the edge now refuses pushes with operations
//!      below 1000, and merges consecutive queued pushes into one op-9 frame itself.)
//!
//!    Clients count every op-1000 packet they receive (op 9 is treated as a container, so packets inside a
//!    batch are counted one by one) by walking packet headers only, a few runtime threads serving all
//!    sockets. Pushing is flow-controlled (`--window`) so no send queue overflows. A phase reports
//!    deliveries (messages received, checked per connection), deliveries per second, the edge's CPU
//!    seconds per million deliveries and deliveries per edge CPU-second, and what the edge itself
//!    counted on `/metrics` (drops, closes, writes and frames per write).
//!
//! **The durable extension's cost** (`--durable-share P`, TCP): that share of the connections opts in
//! to rim's extension (`"rim":{"v":1}` in its auth body, `docs/rim-protocol-extension.md`) and joins
//! a room of its own. Such a client first reads its op-21 resume answers (one for its user stream, one
//! for its room; `edge-under-test` has no control plane, so both say "not resumed: unavailable") and
//! only then counts as authenticated. Each `single` and `request` mode then runs three phases on the
//! same edge, one after the other: `plain` (the goim clients' room, pushes without a position),
//! `+pos` (the same room, every push carrying a room position with increasing seq: goim clients get
//! the plain frame, and must not pay for the extension) and `rim` (the rim-aware room, the same
//! positioned pushes, delivered as op 20). A rim-aware client decodes every op-20 header with
//! `rim_proto::durable` and checks it: a live room push of the pushed operation and body size, the
//! run's epoch, the message id the benchmark gave that seq, and a seq exactly one above the last one
//! (none missing, none reordered). The edge's CPU per delivery of the three phases is compared at the
//! end. Any wrong count makes the program exit with an error.
//!
//! Results are compared with goim's comet measured on the same machine (`--goim-*`). The machine is
//! shared and noisy: compare figures from one run, and repeat (`--runs`).
//! Run with `cargo build --release -p rim-bench && target/release/edge-bench --help`. `rim-bench room`
//! and `rim-bench idle` measure the same and more (worker processes, latency, any goim server);
//! this program stays for its `single`/`request` comparison with goim and its durable phases.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use rim_bench::procfs;
use rim_bench::wire::ws_binary_frame;
use rim_proto::durable::MessageId;
use rim_proto::schema::{EdgePush, EdgePushRequest, StreamPosition, edge_push::Target};
use rim_proto::{Packet, op};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// The room every goim (plain) client joins.
const ROOM: &str = "live://bench";
/// The room of the rim-aware clients (`--durable-share`).
const RIM_ROOM: &str = "live://bench-rim";
/// The epoch of the room positions pushed (any non-zero one: the floor a rim-aware connection gets
/// from an "unavailable" answer is the origin, epoch 0, which covers nothing in another epoch).
const EPOCH: u64 = 1_764_590_400_000;
/// Op-21 answers a rim-aware client gets after its auth reply: its user stream and its room.
const RESUME_ANSWERS: u64 = 2;
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
    /// Messages per request (`request` mode).
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Push modes to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Single, Mode::Request])]
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
    /// Share of the connections (0 to 1, exclusive) that opt in to rim's durable extension, in a room
    /// of their own; adds the `+pos` and `rim` phases to each `single` and `request` mode (TCP only).
    #[arg(long, default_value_t = 0.0)]
    durable_share: f64,
}

/// Who a phase pushes to, and whether its pushes carry a room position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// The goim clients' room, pushes without a position (goim's delivery).
    Plain,
    /// The goim clients' room, every push with a room position: they still get the plain frame.
    Positioned,
    /// The rim-aware clients' room, every push with a room position: they get op 20.
    Rim,
}

impl Audience {
    /// The phase name's suffix.
    fn suffix(self) -> &'static str {
        match self {
            Audience::Plain => "",
            Audience::Positioned => "+pos",
            Audience::Rim => " rim",
        }
    }
}

/// The phases of a run, in order: every mode plain, and with `--durable-share` the `single` and
/// `request` modes positioned and rim-aware too.
fn plan(args: &Args) -> Vec<(Mode, Audience)> {
    let durable = args.durable_share > 0.0;
    args.modes
        .iter()
        .flat_map(|&mode| {
            let audiences: &[Audience] = if durable {
                &[Audience::Plain, Audience::Positioned, Audience::Rim]
            } else {
                &[Audience::Plain]
            };
            audiences.iter().map(move |&audience| (mode, audience))
        })
        .collect()
}

/// How messages are grouped into pushes and requests.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One message per push, one push per request.
    Single,
    /// `--batch` one-message pushes per request.
    Request,
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
        /// Connections that got their auth reply (and, rim-aware, their resume answers).
        pub authed: AtomicUsize,
        /// Connections the edge closed (EOF, error or WebSocket close).
        pub closed: AtomicUsize,
        /// Packets that were not what was sent.
        pub malformed: AtomicU64,
        /// Op-20 pushes whose seq was not the one after the connection's previous push.
        pub out_of_order: AtomicU64,
        /// Op-21 resume answers received, and how many of them said "not resumed: unavailable".
        pub answers: AtomicU64,
        pub unavailable: AtomicU64,
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
                out_of_order: AtomicU64::new(0),
                answers: AtomicU64::new(0),
                unavailable: AtomicU64::new(0),
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

        /// Clients that are done opening: authenticated, failed or closed.
        pub fn settled(&self) -> usize {
            self.authed.load(Ordering::Relaxed)
                + self.failed.load(Ordering::Relaxed)
                + self.closed.load(Ordering::Relaxed)
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
        /// Whether the client opts in to rim's extension (then it joins [`RIM_ROOM`]).
        pub rim: bool,
    }

    /// How a client reads: a goim client counts op-1000 packets, a rim-aware one checks op 20.
    enum Reader {
        Plain { packets: Packets, frames: WsFrames },
        Rim(rim_wire::Walker),
    }

    /// Runs client `index` of `fleet` (user `user`) from connect to close; the permit is released
    /// once it is authenticated.
    pub async fn client(
        index: usize,
        user: usize,
        source: IpAddr,
        target: Target,
        fleet: Arc<Fleet>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let mut permit = Some(permit);
        let (mut stream, leftover) = match open(user, source, target).await {
            Ok(opened) => opened,
            Err(error) => {
                fleet.failed.fetch_add(1, Ordering::Relaxed);
                fleet.record_error(format!("client {user}: {error:#}"));
                return;
            }
        };
        let mut reader = if target.rim {
            Reader::Rim(rim_wire::Walker::new(target.body))
        } else {
            Reader::Plain {
                packets: Packets::new(PUSH_OP, Some(target.body)),
                frames: WsFrames::default(),
            }
        };
        let mut tally = Tally::default();
        let mut buf = vec![0u8; READ_BUF];
        let mut data_len = leftover.len();
        buf[..data_len].copy_from_slice(&leftover);
        loop {
            let data = &buf[..data_len];
            let (ready, closed) = match &mut reader {
                Reader::Plain { packets, frames } => {
                    match target.transport {
                        Transport::Tcp => packets.feed(data, &mut tally),
                        Transport::Ws => frames.feed(data, packets, &mut tally),
                    }
                    (tally.authed, frames.closed)
                }
                Reader::Rim(walker) => {
                    walker.feed(data, &mut tally);
                    let counts = walker.take();
                    fleet
                        .out_of_order
                        .fetch_add(counts.out_of_order, Ordering::Relaxed);
                    fleet.answers.fetch_add(counts.answers, Ordering::Relaxed);
                    fleet
                        .unavailable
                        .fetch_add(counts.unavailable, Ordering::Relaxed);
                    (tally.authed && walker.answered() >= RESUME_ANSWERS, false)
                }
            };
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
            if ready && permit.take().is_some() {
                fleet.authed.fetch_add(1, Ordering::Relaxed);
            }
            if closed {
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
        user: usize,
        source: IpAddr,
        target: Target,
    ) -> anyhow::Result<(TcpStream, Vec<u8>)> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let mut stream = socket.connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let auth = auth_body(user, target.rim);
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

    /// The goim auth body of client `user` (insecure mode trusts it); a rim-aware one opts in with
    /// no position (a first start: it is told where the streams stand, not sent history).
    fn auth_body(user: usize, rim: bool) -> String {
        let (room, opt_in) = if rim {
            (RIM_ROOM, r#","rim":{"v":1}"#)
        } else {
            (ROOM, "")
        };
        format!(
            r#"{{"mid":{},"key":"bench-{user}","room_id":"{room}","platform":"bench","accepts":[{PUSH_OP}]{opt_in}}}"#,
            user + 1
        )
    }
}

mod rim_wire {
    //! What a rim-aware client reads: packet headers walked by [`rim_bench::wire::PacketWalk`], as
    //! a goim client's are (op 9 is a container), with op-20 headers and op-21 bodies captured and
    //! decoded by `rim_proto::durable`, and every other body skipped. Nothing else is kept.

    use super::*;
    use rim_bench::wire::{BodyPlan, PacketVisitor, PacketWalk, Tally};
    use rim_proto::durable::{
        self, DurablePush, NotResumedReason, PUSH_HEADER_LEN, RESUME_LEN, ResumeAnswer,
        ResumeOutcome, StreamKind,
    };

    /// What a [`Walker`] counted beyond a [`Tally`] since it was last taken.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct Counts {
        /// Op-20 pushes whose seq was not the previous one's plus one.
        pub out_of_order: u64,
        /// Op-21 answers.
        pub answers: u64,
        /// Of which "not resumed: unavailable".
        pub unavailable: u64,
    }

    /// Walks a rim-aware connection's stream across reads; see the module docs.
    #[derive(Debug)]
    pub struct Walker {
        walk: PacketWalk<PUSH_HEADER_LEN>,
        checker: Checker,
    }

    /// What a [`Walker`] checks the captured op-20 headers and op-21 bodies against, and counts.
    #[derive(Debug)]
    struct Checker {
        /// Expected payload size of pushes.
        payload: usize,
        /// The seq of the last op-20 push (the room's seqs start at 1).
        last_seq: u64,
        answered: u64,
        counts: Counts,
    }

    impl Walker {
        /// A walker expecting push payloads of `payload` bytes.
        pub fn new(payload: usize) -> Self {
            Self {
                walk: PacketWalk::default(),
                checker: Checker {
                    payload,
                    last_seq: 0,
                    answered: 0,
                    counts: Counts::default(),
                },
            }
        }

        /// Op-21 answers received so far.
        pub fn answered(&self) -> u64 {
            self.checker.answered
        }

        /// The counts since the last call.
        pub fn take(&mut self) -> Counts {
            std::mem::take(&mut self.checker.counts)
        }

        /// Consumes `data`: op-20 pushes go to `tally.messages` (bad ones to `tally.malformed`), the
        /// auth reply to `tally.authed`.
        pub fn feed(&mut self, data: &[u8], tally: &mut Tally) {
            self.walk.feed(data, &mut self.checker, tally);
        }
    }

    impl PacketVisitor for Checker {
        fn header(&mut self, code: i32, body: Option<usize>, tally: &mut Tally) -> BodyPlan {
            let Some(body) = body else {
                tally.malformed += 1;
                return BodyPlan::Skip;
            };
            match code {
                op::RAW => BodyPlan::Enter,
                durable::PUSH if body >= PUSH_HEADER_LEN => BodyPlan::Capture(PUSH_HEADER_LEN),
                durable::RESUME if body == RESUME_LEN => BodyPlan::Capture(RESUME_LEN),
                durable::PUSH | durable::RESUME | PUSH_OP => {
                    tally.malformed += 1; // too short, or a plain push to the rim room
                    BodyPlan::Skip
                }
                op::AUTH_REPLY => {
                    tally.authed = true;
                    BodyPlan::Skip
                }
                _ => BodyPlan::Skip,
            }
        }

        /// Checks the captured op-20 header or op-21 body.
        fn captured(&mut self, code: i32, body: usize, captured: &[u8], tally: &mut Tally) {
            if code == durable::RESUME {
                match ResumeAnswer::decode(captured) {
                    Ok(answer) => {
                        self.answered += 1;
                        self.counts.answers += 1;
                        let unavailable = ResumeOutcome::NotResumed(NotResumedReason::Unavailable);
                        self.counts.unavailable += u64::from(answer.outcome == unavailable);
                    }
                    Err(_) => tally.malformed += 1,
                }
                return;
            }
            tally.messages += 1;
            let Ok(push) = DurablePush::decode(captured.to_vec().into()) else {
                tally.malformed += 1;
                return;
            };
            let seq = push.position.seq;
            let expected = push.kind == StreamKind::Room
                && !push.replay
                && push.operation == PUSH_OP
                && push.position.epoch == EPOCH
                && push.message_id.0[8..] == seq.to_be_bytes()
                && body - PUSH_HEADER_LEN == self.payload;
            tally.malformed += u64::from(!expected);
            self.counts.out_of_order += u64::from(seq != self.last_seq + 1);
            self.last_seq = seq;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use rim_proto::durable::{Position, ResumeAnswer};

        fn packet(code: i32, body: &[u8]) -> Vec<u8> {
            Packet::new(1, code, 0, body.to_vec()).to_bytes().to_vec()
        }

        fn push(seq: u64, payload: usize) -> Vec<u8> {
            let push = DurablePush {
                kind: StreamKind::Room,
                replay: false,
                operation: PUSH_OP,
                message_id: super::super::message_id([7; 8], seq),
                position: Position { epoch: EPOCH, seq },
                body: vec![b'x'; payload].into(),
            };
            push.to_packet().to_bytes().to_vec()
        }

        fn unavailable(kind: StreamKind) -> Vec<u8> {
            let answer = ResumeAnswer {
                kind,
                outcome: ResumeOutcome::NotResumed(NotResumedReason::Unavailable),
                position: Position::ORIGIN,
            };
            answer.to_packet().to_bytes().to_vec()
        }

        /// Feeds `stream` in pieces of `step` bytes to a walker expecting 32-byte payloads.
        fn walk(stream: &[u8], step: usize) -> (Tally, Counts) {
            let mut walker = Walker::new(32);
            let mut tally = Tally::default();
            let mut counts = Counts::default();
            for piece in stream.chunks(step) {
                walker.feed(piece, &mut tally);
                let more = walker.take();
                counts.out_of_order += more.out_of_order;
                counts.answers += more.answers;
                counts.unavailable += more.unavailable;
            }
            (tally, counts)
        }

        #[test]
        fn counts_op20_pushes_checks_their_seq_and_reads_the_answers_across_any_split() {
            let mut stream = packet(op::AUTH_REPLY, b"");
            stream.extend(unavailable(StreamKind::User));
            stream.extend(unavailable(StreamKind::Room));
            stream.extend(push(1, 32));
            let batch: Vec<u8> = (2..=4).flat_map(|seq| push(seq, 32)).collect();
            stream.extend(packet(op::RAW, &batch));
            stream.extend(packet(op::HEARTBEAT_REPLY, &[0, 0, 0, 1]));
            for step in [1, 3, 16, 17, 41, 100, stream.len()] {
                let (tally, counts) = walk(&stream, step);
                assert!(tally.authed, "step {step}");
                assert_eq!(tally.messages, 4, "step {step}");
                assert_eq!(tally.malformed, 0, "step {step}");
                let want = Counts {
                    out_of_order: 0,
                    answers: 2,
                    unavailable: 2,
                };
                assert_eq!(counts, want, "step {step}");
            }
        }

        #[test]
        fn a_gap_a_repeat_a_wrong_payload_or_a_plain_push_is_reported() {
            let mut stream = push(1, 32);
            stream.extend(push(3, 32)); // 2 is missing
            stream.extend(push(3, 32)); // 3 twice
            stream.extend(push(4, 31)); // wrong payload size
            stream.extend(packet(PUSH_OP, &[b'x'; 32])); // plain push
            let (tally, counts) = walk(&stream, 5);
            assert_eq!(tally.messages, 4);
            assert_eq!(counts.out_of_order, 2);
            assert_eq!(tally.malformed, 2);
        }
    }
}

/// The message id of push `counter` of a phase whose ids start with `prefix` (the counter of a
/// positioned push is its seq, which a rim-aware client checks against the id).
fn message_id(prefix: [u8; 8], counter: u64) -> MessageId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&prefix);
    id[8..].copy_from_slice(&counter.to_be_bytes());
    MessageId(id)
}

mod phase {
    //! One push mode against a room: flow-controlled pushing, waiting, measuring.

    use super::*;
    use fleet::Fleet;
    use rim_bench::edge::{EdgeCounters, EdgeProcess};

    /// What one phase measured.
    pub struct PhaseReport {
        pub mode: Mode,
        pub audience: Audience,
        pub requests: usize,
        pub expected: u64,
        pub delivered: u64,
        pub reached: u64,
        pub elapsed: Duration,
        pub cpu: procfs::Cpu,
        pub bench_cpu: procfs::Cpu,
        pub short_connections: usize,
        /// Messages the other fleet (not pushed to) received meanwhile: must be 0.
        pub strays: u64,
        pub edge: EdgeCounters,
    }

    impl PhaseReport {
        /// The phase's name: the mode, and the audience when not plain.
        pub fn name(&self) -> String {
            format!("{:?}{}", self.mode, self.audience.suffix()).to_lowercase()
        }

        /// Deliveries per wall-clock second.
        pub fn per_second(&self) -> f64 {
            self.delivered as f64 / self.elapsed.as_secs_f64()
        }

        /// Deliveries per edge CPU-second.
        pub fn per_cpu_second(&self) -> f64 {
            self.delivered as f64 / self.cpu.total().max(f64::EPSILON)
        }

        /// Edge CPU microseconds per delivery, (user + system, user).
        pub fn micros_per_delivery(&self) -> (f64, f64) {
            let per = |seconds: f64| seconds * 1e6 / self.delivered.max(1) as f64;
            (per(self.cpu.total()), per(self.cpu.user))
        }

        /// True when every count is what was sent.
        pub fn complete(&self) -> bool {
            self.delivered == self.expected
                && self.reached == self.expected
                && self.short_connections == 0
                && self.strays == 0
        }
    }

    /// Where a phase pushes, and the room stream's last seq (`Some` when its pushes carry a
    /// position: each takes the next seq).
    pub struct Stream<'a> {
        pub room: &'static str,
        pub seq: Option<&'a mut u64>,
    }

    /// The requests of one phase: `messages` messages grouped as the mode says, with message ids
    /// starting with `prefix`.
    fn requests(
        mode: Mode,
        args: &Args,
        prefix: [u8; 8],
        mut stream: Stream<'_>,
    ) -> Vec<(usize, EdgePushRequest)> {
        let body = vec![b'x'; args.body];
        let batch = args.batch.max(1);
        let mut push = |n: u64, operation: i32, body: Vec<u8>| {
            let (counter, position) = match stream.seq.as_deref_mut() {
                Some(seq) => {
                    *seq += 1;
                    let position = StreamPosition {
                        stream: 2,
                        epoch: EPOCH,
                        seq: *seq,
                    };
                    (*seq, Some(position))
                }
                None => (n, None),
            };
            EdgePush {
                message_id: message_id(prefix, counter).to_string(),
                operation,
                body: body.into(),
                target: Some(Target::Room(stream.room.into())),
                position,
                ..EdgePush::default()
            }
        };
        let mut out = Vec::new();
        let mut sent = 0;
        while sent < args.messages {
            let count = match mode {
                Mode::Single => 1,
                Mode::Request => batch.min(args.messages - sent),
            };
            let pushes = (sent..sent + count)
                .map(|n| push(n as u64, PUSH_OP, body.clone()))
                .collect();
            out.push((count, EdgePushRequest { pushes }));
            sent += count;
        }
        out
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

    /// The fleets of a run: the one a phase pushes to, and the other one (which must get nothing).
    pub struct Audiences<'a> {
        pub pushed: &'a Fleet,
        pub other: Option<&'a Fleet>,
    }

    /// Runs `mode` for `audience` on `stream`: pushes, waits for every delivery (or a stall),
    /// measures the edge.
    pub async fn run(
        (mode, audience): (Mode, Audience),
        args: &Args,
        prefix: [u8; 8],
        stream: Stream<'_>,
        edge: &EdgeProcess,
        fleets: Audiences<'_>,
        ticks: f64,
    ) -> anyhow::Result<PhaseReport> {
        let fleet = fleets.pushed;
        let other_total = || {
            fleets
                .other
                .map_or(0, |other| other.total.load(Ordering::Relaxed))
        };
        let connections = fleet.received.len() as u64;
        let requests = requests(mode, args, prefix, stream);
        let stall = Duration::from_secs(args.stall_secs);
        let window = args.window as u64;
        let per_client_before = fleet.snapshot();
        let base = fleet.total.load(Ordering::Relaxed);
        let other_base = other_total();
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
            reached += per_push.iter().map(|n| u64::from(*n)).sum::<u64>();
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
            audience,
            requests: requests.len(),
            expected,
            delivered: fleet.total.load(Ordering::Relaxed) - base,
            reached,
            elapsed,
            cpu,
            bench_cpu,
            short_connections,
            strays: other_total() - other_base,
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
    /// The rim-aware clients (0 without `--durable-share`), their op-21 answers and how many of
    /// those said "unavailable".
    rim_connections: usize,
    answers: u64,
    unavailable: u64,
    /// Every count that was not what was sent.
    problems: Vec<String>,
}

/// How many of `n` connections are rim-aware with `--durable-share`: at least one of each kind.
fn rim_connections(args: &Args, n: usize) -> anyhow::Result<usize> {
    let share = args.durable_share;
    anyhow::ensure!(
        (0.0..1.0).contains(&share),
        "--durable-share must be at least 0 and below 1"
    );
    if share == 0.0 {
        return Ok(0);
    }
    anyhow::ensure!(
        args.transport == Transport::Tcp,
        "--durable-share needs --transport tcp"
    );
    anyhow::ensure!(n >= 2, "--durable-share needs at least 2 connections");
    Ok(((n as f64 * share).round() as usize).clamp(1, n - 1))
}

/// One run: fresh edge, connect everyone, measure idle memory, then each phase of [`plan`].
async fn run(
    args: &Args,
    binary: &std::path::Path,
    run: usize,
    ticks: f64,
) -> anyhow::Result<RunReport> {
    let extra = [format!("--edge-queue-max-bytes={}", args.queue_max_bytes)];
    let edge = rim_bench::edge::EdgeProcess::start(binary, &extra).await?;
    let n = args.connections;
    let rim_count = rim_connections(args, n)?;
    let plain_count = n - rim_count;
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let rss_before = procfs::rss_bytes(edge.pid)?;

    let plain = fleet::Fleet::new(plain_count);
    let rim = fleet::Fleet::new(rim_count);
    let target = |rim: bool| fleet::Target {
        addr: match args.transport {
            Transport::Tcp => edge.tcp,
            Transport::Ws => edge.ws,
        },
        transport: args.transport,
        body: args.body,
        rim,
    };
    let sources_per_run = n.div_ceil(CONNS_PER_SOURCE);
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut clients = JoinSet::new();
    let started = Instant::now();
    for user in 0..n {
        let source = 2 + run * sources_per_run + user / CONNS_PER_SOURCE;
        let source = u8::try_from(source).context("too many runs x connections for 127.0.0.x")?;
        let permit = gate.clone().acquire_owned().await?;
        let (fleet, index, is_rim) = match user.checked_sub(plain_count) {
            None => (&plain, user, false),
            Some(index) => (&rim, index, true),
        };
        clients.spawn(fleet::client(
            index,
            user,
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)),
            target(is_rim),
            fleet.clone(),
            permit,
        ));
    }
    while plain.settled() + rim.settled() < n {
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_elapsed = started.elapsed();
    let authed = plain.authed.load(Ordering::Relaxed) + rim.authed.load(Ordering::Relaxed);
    if authed < n {
        bail!(
            "only {authed} of {n} clients authenticated ({} rim-aware of {rim_count}, with {} resume \
             answers; {} failed, {} closed; first error: {:?})",
            rim.authed.load(Ordering::Relaxed),
            rim.answers.load(Ordering::Relaxed),
            plain.failed.load(Ordering::Relaxed) + rim.failed.load(Ordering::Relaxed),
            plain.closed.load(Ordering::Relaxed) + rim.closed.load(Ordering::Relaxed),
            plain.first_error().or_else(|| rim.first_error())
        );
    }
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let rss_idle = procfs::rss_bytes(edge.pid)?;

    let mut phases = Vec::new();
    // The last seq pushed in each room's stream.
    let (mut plain_seq, mut rim_seq) = (0u64, 0u64);
    for (number, (mode, audience)) in plan(args).into_iter().enumerate() {
        let prefix = [b'r', b'i', b'm', b'b', run as u8, number as u8, 0, 0];
        let (stream, fleets) = match audience {
            Audience::Plain | Audience::Positioned => {
                let seq = (audience == Audience::Positioned).then_some(&mut plain_seq);
                let other = (rim_count > 0).then_some(&*rim);
                let stream = phase::Stream { room: ROOM, seq };
                (
                    stream,
                    phase::Audiences {
                        pushed: &plain,
                        other,
                    },
                )
            }
            Audience::Rim => (
                phase::Stream {
                    room: RIM_ROOM,
                    seq: Some(&mut rim_seq),
                },
                phase::Audiences {
                    pushed: &rim,
                    other: Some(&plain),
                },
            ),
        };
        let report = phase::run((mode, audience), args, prefix, stream, &edge, fleets, ticks);
        phases.push(report.await?);
    }
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let rss_after = procfs::rss_bytes(edge.pid)?;
    let mut problems: Vec<String> = phases
        .iter()
        .filter(|phase| !phase.complete())
        .map(|phase| {
            format!(
                "{}: {} of {} deliveries arrived, the edge reported reaching {}, {} connections \
                 short, {} to the other room",
                phase.name(),
                phase.delivered,
                phase.expected,
                phase.reached,
                phase.short_connections,
                phase.strays
            )
        })
        .collect();
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let closed = plain.closed.load(Ordering::Relaxed) + rim.closed.load(Ordering::Relaxed);
    let malformed = load(&plain.malformed) + load(&rim.malformed);
    let out_of_order = load(&rim.out_of_order);
    let (answers, unavailable) = (load(&rim.answers), load(&rim.unavailable));
    if closed > 0 || malformed > 0 || out_of_order > 0 {
        problems.push(format!(
            "{closed} connections closed by the edge, {malformed} malformed packets, \
             {out_of_order} op-20 pushes out of seq order"
        ));
    }
    if answers != RESUME_ANSWERS * rim_count as u64 {
        problems.push(format!(
            "{answers} resume answers for {rim_count} rim-aware connections"
        ));
    }
    clients.abort_all();
    while clients.join_next().await.is_some() {}
    edge.stop().await;
    Ok(RunReport {
        idle_bytes_per_connection: rss_idle.saturating_sub(rss_before) as f64 / n as f64,
        after_bytes_per_connection: rss_after.saturating_sub(rss_before) as f64 / n as f64,
        connect_elapsed,
        phases,
        rim_connections: rim_count,
        answers,
        unavailable,
        problems,
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
    if report.rim_connections > 0 {
        println!(
            "  {} of them rim-aware (room {RIM_ROOM}): {} op-21 resume answers, {} \"not resumed: \
             unavailable\" (no control plane)",
            report.rim_connections, report.answers, report.unavailable
        );
    }
    println!(
        "  {:<12} {:>5} {:>10} {:>7} {:>9} {:>6} {:>6} {:>7} {:>10} {:>6} {:>8} {:>6} {:>5} {:>6} {:>5} {:>7}",
        "phase",
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
            "  {:<12} {:>5} {:>10} {:>7.2} {:>9.0} {:>6.2} {:>6.2} {:>7.3} {:>10.0} {:>6.2} {:>8.0} {:>6.2} {:>5.0} {:>6.0} {:>5} {:>7.2}",
            phase.name(),
            phase.requests,
            phase.delivered,
            phase.elapsed.as_secs_f64(),
            phase.per_second(),
            phase.cpu.user,
            phase.cpu.system,
            phase.micros_per_delivery().0,
            phase.per_cpu_second(),
            phase.per_cpu_second() / args.goim_frames_per_cpu_second,
            edge.writes,
            edge.written_frames / edge.writes.max(1.0),
            edge.drops,
            edge.closes,
            phase.short_connections,
            phase.bench_cpu.total(),
        );
    }
    for problem in &report.problems {
        println!("  !! {problem}");
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
    let plan = plan(args);
    let phases_at = |index: usize| -> Vec<&phase::PhaseReport> {
        reports.iter().filter_map(|r| r.phases.get(index)).collect()
    };
    for (index, (mode, audience)) in plan.iter().enumerate() {
        let phases = phases_at(index);
        let per_cpu = median(phases.iter().map(|p| p.per_cpu_second()).collect());
        let per_second = median(phases.iter().map(|p| p.per_second()).collect());
        println!(
            "  {:<12} {:>10.0} deliveries/s, {:>10.0} deliveries per edge CPU-second = {:.1}x goim's unbatched \
             {} (target >= 4x), {:.3} CPU s per million deliveries",
            format!("{mode:?}{}", audience.suffix()).to_lowercase(),
            per_second,
            per_cpu,
            per_cpu / args.goim_frames_per_cpu_second,
            args.goim_frames_per_cpu_second,
            1e6 / per_cpu,
        );
    }
    // The durable comparison: per mode, µs of edge CPU per delivery of each audience.
    let micros = |mode: Mode, audience: Audience| {
        let index = plan.iter().position(|p| *p == (mode, audience))?;
        let phases = phases_at(index);
        let total = median(phases.iter().map(|p| p.micros_per_delivery().0).collect());
        let user = median(phases.iter().map(|p| p.micros_per_delivery().1).collect());
        Some((total, user))
    };
    for mode in &args.modes {
        let (Some(plain), Some(positioned), Some(rim)) = (
            micros(*mode, Audience::Plain),
            micros(*mode, Audience::Positioned),
            micros(*mode, Audience::Rim),
        ) else {
            continue;
        };
        println!(
            "  durable, {}: edge CPU per delivery (user+sys, user) plain {:.3} µs ({:.3}), plain with \
             positions {:.3} µs ({:.3}) = {:.2}x, rim-aware op 20 {:.3} µs ({:.3}) = {:.2}x plain \
             ({:+.3} µs per delivery)",
            format!("{mode:?}").to_lowercase(),
            plain.0,
            plain.1,
            positioned.0,
            positioned.1,
            positioned.0 / plain.0,
            rim.0,
            rim.1,
            rim.0 / plain.0,
            rim.0 - plain.0,
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // reqwest is built without a TLS provider in this workspace; the pushes are plain HTTP anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    anyhow::ensure!(args.connections > 0, "--connections must be positive");
    rim_connections(&args, args.connections)?;
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
    let problems: usize = reports.iter().map(|r| r.problems.len()).sum();
    if problems > 0 {
        bail!("{problems} counts were not what was sent (see the !! lines)");
    }
    Ok(())
}
