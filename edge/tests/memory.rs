//! Memory that returns and pushes that allocate nothing per recipient, measured by this test binary's
//! own allocator (it counts live heap bytes and allocation calls of the whole process: the edge and
//! the minimal clients below, which read into a stack buffer and keep nothing).
//!
//! - After a burst of 64 KiB pushes has been delivered to a room of TCP and WebSocket clients, the
//!   heap holds at most 1 KB per connection more than before it (a writer keeping a copy's capacity,
//!   like tungstenite's write buffer, holds 64 KiB per connection).
//! - In the steady state, one push to N connections costs a fixed number of allocations (the push's
//!   own encoding and bookkeeping), not one or more per connection.
//! - An idle TCP connection holds a bounded amount of heap in the edge (its task, its channel, its
//!   socket's registration and its place in the bucket), counted with clients on blocking sockets
//!   that own no heap.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use common::{room_push, start_with};
use rim_edge::EdgeHooks;
use rim_edge::config::AuthMode;
use rim_proto::{Packet, op};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The system allocator, counting.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the same arguments; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ROOM: &str = "live://memory";
/// Clients per transport.
const PER_TRANSPORT: usize = 100;

/// Opens a goim client (TCP, or WebSocket upgraded and framed by hand) in `ROOM`, waits for its auth
/// reply, then counts every byte it receives into `received`, reading into a stack buffer.
async fn client(edge: &common::TestEdge, index: usize, ws: bool, received: Arc<AtomicU64>) {
    let auth = Packet::new(
        1,
        op::AUTH,
        1,
        common::tokens::goim_body(0, &format!("m{index}"), ROOM, &[]),
    )
    .to_bytes();
    let mut stream;
    if ws {
        stream = TcpStream::connect(edge.ws()).await.unwrap();
        let request = "GET /sub HTTP/1.1\r\nhost: edge\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
                       sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        let mut frame = vec![0x82, 0x80 | auth.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(&auth);
        stream.write_all(&frame).await.unwrap();
        // Auth reply: a 2-byte frame header and a 16-byte packet.
        let mut reply = [0; 18];
        stream.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[2 + 11], op::AUTH_REPLY as u8);
    } else {
        stream = TcpStream::connect(edge.tcp()).await.unwrap();
        stream.write_all(&auth).await.unwrap();
        let mut reply = [0; 16];
        stream.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[11], op::AUTH_REPLY as u8);
    }
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
}

struct Room {
    edge: common::TestEdge,
    received: Vec<Arc<AtomicU64>>,
}

impl Room {
    async fn new() -> Self {
        let edge = start_with(AuthMode::Insecure, EdgeHooks::default(), |c| {
            c.edge_max_push_body = 1 << 20;
        })
        .await;
        let mut received = Vec::new();
        for index in 0..2 * PER_TRANSPORT {
            let counter = Arc::new(AtomicU64::new(0));
            client(&edge, index, index % 2 == 1, counter.clone()).await;
            received.push(counter);
        }
        common::wait_until(|| edge.handle.room_online(ROOM) == 2 * PER_TRANSPORT).await;
        Self { edge, received }
    }

    /// Pushes `bodies` to the room, one push per call, and waits until every client has at least
    /// the bytes of every packet.
    async fn push(&self, tag: &str, bodies: &[Vec<u8>]) {
        let before: Vec<u64> = self
            .received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect();
        for (i, body) in bodies.iter().enumerate() {
            let push = room_push(&format!("{tag}-{i}"), 1000, body, ROOM);
            assert_eq!(
                self.edge.handle.push(&push).await as usize,
                2 * PER_TRANSPORT
            );
        }
        let packets: u64 = bodies.iter().map(|b| 16 + b.len() as u64).sum();
        common::wait_until(|| {
            self.received
                .iter()
                .zip(&before)
                .all(|(now, before)| now.load(Ordering::Relaxed) - before >= packets)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_64_kib_pushes_leaves_no_memory_behind() {
    let room = Room::new().await;
    // Warm up: whatever the first small pushes make (buffers of the runtime, the fan-out's
    // bookkeeping) counts as part of the idle figure.
    room.push("warm", &[vec![b'w'; 64], vec![b'w'; 64]]).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let burst: Vec<Vec<u8>> = (0..8).map(|i| vec![b'a' + i; 64 * 1024]).collect();
    let idle = LIVE.load(Ordering::Relaxed);
    room.push("burst", &burst).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let after = LIVE.load(Ordering::Relaxed);
    let connections = 2 * PER_TRANSPORT;
    let grown = after.saturating_sub(idle);
    eprintln!(
        "heap after the burst: {grown} bytes more than idle ({} per connection)",
        grown / connections
    );
    assert!(
        grown <= 1024 * connections,
        "{grown} bytes more after the burst: {} per connection (limit 1024)",
        grown / connections
    );
    assert_eq!(
        room.edge.handle.connection_count(),
        connections,
        "nobody closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_costs_its_recipients_no_allocation() {
    let room = Room::new().await;
    let body = vec![b's'; 100];
    room.push("warm", &[body.clone(), body.clone()]).await;
    const PUSHES: usize = 20;
    let calls_before = CALLS.load(Ordering::Relaxed);
    for i in 0..PUSHES {
        room.push(&format!("steady-{i}"), std::slice::from_ref(&body))
            .await;
    }
    let per_push = (CALLS.load(Ordering::Relaxed) - calls_before) / PUSHES;
    let connections = 2 * PER_TRANSPORT;
    eprintln!("{per_push} allocations per push to {connections} connections");
    assert!(
        per_push < connections / 4,
        "{per_push} allocations per push to {connections} connections"
    );
}

/// Opens `count` blocking TCP clients in `ROOM` (keys `idle-{first}`, ...), each authenticated.
/// Blocking sockets own no heap, so what the process gains is the edge's.
fn idle_clients(
    edge: std::net::SocketAddr,
    first: usize,
    count: usize,
) -> Vec<std::net::TcpStream> {
    use std::io::{Read, Write};
    let mut clients = Vec::with_capacity(count);
    for index in first..first + count {
        let body = common::tokens::goim_body(0, &format!("idle-{index}"), ROOM, &[]);
        let auth = Packet::new(1, op::AUTH, 1, body).to_bytes();
        let mut stream = std::net::TcpStream::connect(edge).unwrap();
        stream.write_all(&auth).unwrap();
        let mut reply = [0; 16];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(reply[11], op::AUTH_REPLY as u8);
        clients.push(stream);
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_holds_little_heap() {
    let edge = start_with(AuthMode::Insecure, EdgeHooks::default(), |_| {}).await;
    let addr = edge.tcp();
    const WARM: usize = 100;
    const MEASURED: usize = 1000;
    // Warm up: the runtime's and the buckets' first allocations are not a connection's.
    let warm = tokio::task::spawn_blocking(move || idle_clients(addr, 0, WARM));
    let warm = warm.await.unwrap();
    common::wait_until(|| edge.handle.connection_count() == WARM).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let before = LIVE.load(Ordering::Relaxed);
    let measured = tokio::task::spawn_blocking(move || idle_clients(addr, WARM, MEASURED));
    let measured = measured.await.unwrap();
    common::wait_until(|| edge.handle.connection_count() == WARM + MEASURED).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let per_connection = LIVE.load(Ordering::Relaxed).saturating_sub(before) / MEASURED;
    eprintln!("heap per idle TCP connection: {per_connection} bytes");
    assert!(
        per_connection <= IDLE_HEAP,
        "an idle TCP connection holds {per_connection} bytes of heap (limit {IDLE_HEAP})"
    );
    drop((warm, measured));
}

/// A little above what the test measured (a debug build: 1,443-1,475 bytes: the task 768, the
/// channel 360, the socket's registration 256, the key and the bucket's sets), so that a connection
/// growing by a timer (about 110 bytes) or a task past its 128-byte size class fails it.
const IDLE_HEAP: usize = 1_536;
