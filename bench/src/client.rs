//! One simulated goim client: connect from a chosen source address, upgrade (WebSocket), send the
//! auth packet, then read and count until the server closes, sending heartbeats on a timer.
//!
//! Each connection is one task on its worker's runtime and owns a fixed read buffer; everything it
//! counts goes into its worker's [`Shared`] counters (one relaxed atomic add per read, not per
//! packet), and the send times found in message bodies into the worker's latency histograms.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rim_proto::{Packet, op};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::wire::{Packets, Tally, WsFrames, unix_nanos, ws_binary_frame};

/// Each client's read buffer.
const READ_BUF: usize = 4096;
/// Latency histograms per worker, so connections rarely wait for each other's lock.
const SHARDS: usize = 8;
/// How long connecting and upgrading may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How clients talk to the server.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    /// goim over plain TCP.
    Tcp,
    /// goim over WebSocket, binary messages.
    Ws,
}

/// What every connection of a load needs to know; the same for all workers but for the slice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSpec {
    /// Servers to connect to; connection `i` goes to `targets[i % len]`.
    pub targets: Vec<SocketAddr>,
    /// TCP or WebSocket.
    pub transport: Transport,
    /// WebSocket path (`/sub` for goim and rim).
    pub ws_path: String,
    /// First source address; connection `i` binds to this + `i / per_source`.
    pub source_base: Ipv4Addr,
    /// Connections per source address (~14,000 ports each per destination).
    pub per_source: usize,
    /// Auth body template: `{mid}`, `{key}` and `{room}` are replaced per connection.
    pub auth: String,
    /// Rooms the connections are spread over (connection `i` joins room `i % rooms`).
    pub rooms: usize,
    /// The business operation counted as a message.
    pub operation: i32,
    /// Expected message body size, checked when given.
    pub body: Option<usize>,
    /// Seconds between heartbeats (0: none).
    pub heartbeat_secs: u64,
}

/// The room id connection `index` joins (goim's `type://id`).
pub fn room_of(index: usize, rooms: usize) -> String {
    room_id(index % rooms.max(1))
}

/// The id of room `n` (goim's `type://id`, type `live`).
pub fn room_id(n: usize) -> String {
    format!("live://{}", room_name(n))
}

/// Name of room `n` without its type (what goim's room push takes as `room`).
pub fn room_name(n: usize) -> String {
    format!("bench-{n}")
}

/// The user id of connection `index` (unique per connection).
pub fn mid_of(index: usize) -> u64 {
    index as u64 + 1
}

/// The connection key of connection `index`.
pub fn key_of(index: usize) -> String {
    format!("bench-{index}")
}

/// goim's auth body, which rim's insecure auth mode and goim's comet (with its logic) accept.
pub const GOIM_AUTH: &str =
    r#"{"mid":{mid},"key":"{key}","room_id":"{room}","platform":"bench","accepts":[1000]}"#;

impl ClientSpec {
    /// The auth body of connection `index`.
    fn auth_body(&self, index: usize) -> String {
        self.auth
            .replace("{mid}", &mid_of(index).to_string())
            .replace("{key}", &key_of(index))
            .replace("{room}", &room_of(index, self.rooms))
    }

    /// The source address of connection `index`.
    fn source(&self, index: usize) -> anyhow::Result<IpAddr> {
        let offset = u32::try_from(index / self.per_source.max(1))?;
        let ip = u32::from(self.source_base)
            .checked_add(offset)
            .context("out of source addresses")?;
        Ok(IpAddr::V4(Ipv4Addr::from(ip)))
    }
}

/// Cumulative counters of a worker's connections (and, summed, of a whole load).
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Connection attempts begun.
    pub started: u64,
    /// TCP connections established (and upgraded, for WebSocket).
    pub connected: u64,
    /// Connections that got their auth reply.
    pub authed: u64,
    /// Attempts that failed before the auth reply (connect, upgrade or closed early).
    pub failed: u64,
    /// Authenticated connections that ended (server closed, error).
    pub closed: u64,
    /// Business messages received (op-9 contents included).
    pub messages: u64,
    /// Op-9 containers received.
    pub batches: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Heartbeat replies received.
    pub heartbeat_replies: u64,
    /// Packets not shaped as expected.
    pub malformed: u64,
}

impl Counters {
    /// Field-by-field sum.
    pub fn add(&mut self, other: &Counters) {
        self.started += other.started;
        self.connected += other.connected;
        self.authed += other.authed;
        self.failed += other.failed;
        self.closed += other.closed;
        self.messages += other.messages;
        self.batches += other.batches;
        self.heartbeats += other.heartbeats;
        self.heartbeat_replies += other.heartbeat_replies;
        self.malformed += other.malformed;
    }

    /// Connections authenticated and still open.
    pub fn open(&self) -> u64 {
        self.authed - self.closed
    }
}

/// The atomics behind [`Counters`].
#[derive(Default)]
struct AtomicCounters {
    started: AtomicU64,
    connected: AtomicU64,
    authed: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
    messages: AtomicU64,
    batches: AtomicU64,
    heartbeats: AtomicU64,
    heartbeat_replies: AtomicU64,
    malformed: AtomicU64,
}

/// A histogram of microseconds from 1 µs to an hour, three significant digits.
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// What one worker's connections share: counters, per-connection message counts, histograms.
pub struct Shared {
    counters: AtomicCounters,
    /// Messages received per connection.
    received: Vec<AtomicU64>,
    /// `received` at the last [`Shared::mark`].
    marks: Vec<AtomicU64>,
    /// Send-to-receive latency of stamped messages since the last mark, µs.
    latency: Vec<Mutex<Histogram<u64>>>,
    /// Connect-to-auth-reply time, µs.
    connect: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    /// Counters for `connections` clients.
    pub fn new(connections: usize) -> Arc<Self> {
        Arc::new(Self {
            counters: AtomicCounters::default(),
            received: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            marks: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..SHARDS)
                .map(|_| Mutex::new(micros_histogram()))
                .collect(),
            connect: Mutex::new(micros_histogram()),
            first_error: Mutex::new(None),
        })
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            started: get(&c.started),
            connected: get(&c.connected),
            authed: get(&c.authed),
            failed: get(&c.failed),
            closed: get(&c.closed),
            messages: get(&c.messages),
            batches: get(&c.batches),
            heartbeats: get(&c.heartbeats),
            heartbeat_replies: get(&c.heartbeat_replies),
            malformed: get(&c.malformed),
        }
    }

    /// The first connection error, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }

    fn record_error(&self, error: String) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }

    /// Starts a measurement: per-connection counts are taken from here, latencies recorded anew.
    pub fn mark(&self) {
        for (mark, received) in self.marks.iter().zip(&self.received) {
            mark.store(received.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        for shard in &self.latency {
            if let Ok(mut histogram) = shard.lock() {
                histogram.reset();
            }
        }
    }

    /// Messages each connection received since the last mark.
    pub fn since_mark(&self) -> impl Iterator<Item = u64> + '_ {
        self.received
            .iter()
            .zip(&self.marks)
            .map(|(received, mark)| received.load(Ordering::Relaxed) - mark.load(Ordering::Relaxed))
    }

    /// Latencies since the last mark, merged.
    pub fn latency(&self) -> Histogram<u64> {
        let mut merged = micros_histogram();
        for shard in &self.latency {
            if let Ok(histogram) = shard.lock() {
                // Same bounds everywhere: adding cannot fail.
                let _ = merged.add(&*histogram);
            }
        }
        merged
    }

    /// Connect-to-auth times of every connection so far.
    pub fn connect_times(&self) -> Histogram<u64> {
        self.connect
            .lock()
            .map(|histogram| histogram.clone())
            .unwrap_or_else(|_| micros_histogram())
    }

    /// Adds what one read counted for connection `local`.
    fn count(&self, local: usize, tally: &mut Tally) {
        let c = &self.counters;
        if tally.messages > 0 {
            self.received[local].fetch_add(tally.messages, Ordering::Relaxed);
            c.messages.fetch_add(tally.messages, Ordering::Relaxed);
            tally.messages = 0;
        }
        for (counter, value) in [
            (&c.batches, &mut tally.batches),
            (&c.heartbeat_replies, &mut tally.heartbeat_replies),
            (&c.malformed, &mut tally.malformed),
        ] {
            if *value > 0 {
                counter.fetch_add(*value, Ordering::Relaxed);
                *value = 0;
            }
        }
        if !tally.stamps.is_empty() {
            let now = unix_nanos();
            if let Ok(mut histogram) = self.latency[local % SHARDS].lock() {
                for sent in tally.stamps.drain(..) {
                    histogram.saturating_record(now.saturating_sub(sent) / 1_000);
                }
            }
            tally.stamps.clear();
        }
    }
}

/// Runs client `local` of a worker whose first connection is global index `first`, from connect to
/// close; `permit` is released once it is authenticated (or has failed).
pub async fn run(
    first: usize,
    local: usize,
    spec: Arc<ClientSpec>,
    shared: Arc<Shared>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let index = first + local;
    let c = &shared.counters;
    c.started.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let mut permit = Some(permit);
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, open(index, &spec)).await;
    let (mut stream, leftover) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(error)) => return fail(&shared, format!("client {index}: {error:#}")),
        Err(_) => return fail(&shared, format!("client {index}: connect timed out")),
    };
    c.connected.fetch_add(1, Ordering::Relaxed);
    let mut packets = Packets::new(spec.operation, spec.body);
    let mut frames = WsFrames::default();
    let mut tally = Tally::default();
    let mut buf = vec![0u8; READ_BUF.max(leftover.len())];
    let mut data_len = leftover.len();
    buf[..data_len].copy_from_slice(&leftover);
    let mut heartbeat = heartbeat_timer(index, spec.heartbeat_secs);
    let mut seq = 0i32;
    let mut authed = false;
    loop {
        let data = &buf[..data_len];
        match spec.transport {
            Transport::Tcp => packets.feed(data, &mut tally),
            Transport::Ws => frames.feed(data, &mut packets, &mut tally),
        }
        shared.count(local, &mut tally);
        if tally.authed && !authed {
            authed = true;
            permit.take();
            c.authed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut histogram) = shared.connect.lock() {
                histogram.saturating_record(started.elapsed().as_micros() as u64);
            }
        }
        if frames.closed {
            break;
        }
        data_len = tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = tick(&mut heartbeat) => {
                seq = seq.wrapping_add(1);
                let beat = Packet::new(1, op::HEARTBEAT, seq, Vec::new()).to_bytes();
                let written = match spec.transport {
                    Transport::Tcp => stream.write_all(&beat).await,
                    Transport::Ws => stream.write_all(&ws_binary_frame(&beat)).await,
                };
                if written.is_err() {
                    break;
                }
                c.heartbeats.fetch_add(1, Ordering::Relaxed);
                0
            }
        };
    }
    if authed {
        c.closed.fetch_add(1, Ordering::Relaxed);
    } else {
        fail(
            &shared,
            format!("client {index}: closed before its auth reply"),
        );
    }
}

fn fail(shared: &Shared, error: String) {
    shared.counters.failed.fetch_add(1, Ordering::Relaxed);
    shared.record_error(error);
}

/// A heartbeat timer whose first tick is spread over the period by connection index, so a
/// connect storm does not turn into a heartbeat storm; `None` without heartbeats.
fn heartbeat_timer(index: usize, secs: u64) -> Option<tokio::time::Interval> {
    (secs > 0).then(|| {
        let period = Duration::from_secs(secs);
        let offset = period.mul_f64((index % 1000) as f64 / 1000.0);
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    })
}

async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Connects from the connection's source, upgrades (WebSocket) and sends the auth packet; returns
/// the stream and any bytes read past the upgrade response.
pub async fn open(index: usize, spec: &ClientSpec) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let target = *spec
        .targets
        .get(index % spec.targets.len().max(1))
        .context("no target address")?;
    let socket = TcpSocket::new_v4()?;
    let source = spec.source(index)?;
    port_at_connect(&socket)?;
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("binding {source}"))?;
    let mut stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    let auth = Packet::new(1, op::AUTH, 1, spec.auth_body(index).into_bytes()).to_bytes();
    match spec.transport {
        Transport::Tcp => {
            stream.write_all(&auth).await?;
            Ok((stream, Vec::new()))
        }
        Transport::Ws => {
            let leftover = upgrade(&mut stream, target, &spec.ws_path).await?;
            stream.write_all(&ws_binary_frame(&auth)).await?;
            Ok((stream, leftover))
        }
    }
}

/// Lets the kernel choose the source port at connect time, per destination
/// (`IP_BIND_ADDRESS_NO_PORT`): a port picked at bind time must be unused on that address for any
/// destination, and collides with ports other programs hold.
fn port_at_connect(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the descriptor is the socket's own and open; the option value is a c_int of the
    // size passed, read by the kernel only during the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The client side of the WebSocket handshake; returns the bytes read past the response.
pub async fn upgrade(
    stream: &mut TcpStream,
    target: SocketAddr,
    path: &str,
) -> anyhow::Result<Vec<u8>> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
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
        let status = String::from_utf8_lossy(&head[..end]);
        bail!("upgrade refused: {}", status.lines().next().unwrap_or(""));
    }
    Ok(head.split_off(end))
}
