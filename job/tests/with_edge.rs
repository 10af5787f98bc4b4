//! End to end through real edges: goim clients connected to real `rim_edge` instances receive the
//! pushes that went through the bus and the job worker (the edge's `/internal/push` with the cluster
//! secret), and the worker commits them.
//!
//! Isolation: when one edge of the region is down, swallows requests, refuses the cluster secret or
//! is stopping, a client on the region's other edge keeps receiving, each push within about the
//! lane deadline of its publish, although the worker's in-flight bound is tiny (every push its own
//! batch, two batches in flight).

use prost::bytes::BytesMut;
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, BusProducer, OutgoingPush};
use rim_edge::auth::insecure::InsecureVerifier;
use rim_edge::{Edge, EdgeConfig, EdgeHandle, EdgeHooks};
use rim_job::{JobConfig, StoreDirectory};
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{KeyOnNode, KeysTarget, NodeRegistration, PushMessage, RoomTarget};
use rim_proto::{Packet, op, stream};
use rim_store::memory::MemoryStore;
use rim_store::{NodeState, Store, StoreSettings};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const SECRET: &str = "cluster-secret";
const WAIT: Duration = Duration::from_secs(10);
const BUSINESS_OP: i32 = 1000;

/// Reads the next packet from the connection, failing after [`WAIT`].
async fn read_packet(socket: &mut TcpStream, buf: &mut BytesMut) -> Packet {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(packet) = stream::decode(buf, 1 << 20).unwrap() {
                return packet;
            }
            assert!(
                socket.read_buf(buf).await.unwrap() > 0,
                "the edge closed the connection"
            );
        }
    })
    .await
    .expect("no packet from the edge in time")
}

/// The business messages in a packet: itself, or the packets inside an op-9 batch.
fn business_bodies(packet: Packet) -> Vec<Vec<u8>> {
    match packet.op {
        BUSINESS_OP => vec![packet.body.to_vec()],
        op::RAW => {
            let mut inner = BytesMut::from(&packet.body[..]);
            let mut bodies = Vec::new();
            while let Some(packet) = stream::decode(&mut inner, 1 << 20).unwrap() {
                bodies.extend(business_bodies(packet));
            }
            bodies
        }
        _ => Vec::new(),
    }
}

fn push(key: &str, id: &str, body: &str, target: Target) -> OutgoingPush {
    OutgoingPush {
        region: "sh".into(),
        partition_key: key.into(),
        message: PushMessage {
            message_id: id.into(),
            operation: BUSINESS_OP,
            body: body.as_bytes().to_vec().into(),
            accepted_at_unix_ms: 1,
            record: 0,
            position: None,
            receipt_target: String::new(),
            target: Some(target),
        },
    }
}

/// Starts a real edge that accepts `secret` on its internal push endpoint.
async fn start_edge(secret: &str) -> EdgeHandle {
    Edge::start(
        EdgeConfig::local().unwrap(),
        secret.into(),
        Arc::new(InsecureVerifier::new()),
        EdgeHooks::default(),
    )
    .await
    .unwrap()
}

/// The base URL of an edge's internal push endpoint.
fn push_url(edge: &EdgeHandle) -> String {
    format!("http://{}", edge.addrs().internal)
}

/// Registers an edge node of `region` whose push endpoint is `push_url`.
async fn register(store: &MemoryStore, node_id: &str, region: &str, push_url: String) {
    let registration = NodeRegistration {
        node_id: node_id.into(),
        region: region.into(),
        push_url,
        hostname: "localhost".into(),
        weight: 1,
        ..NodeRegistration::default()
    };
    store.register_node(&registration, 1).await.unwrap();
}

/// Connects a goim client with `key` in `room` and waits until the edge has it in the room;
/// returns the socket and what was read past the auth reply.
async fn connect(edge: &EdgeHandle, key: &str, room: &str) -> (TcpStream, BytesMut) {
    let mut socket = TcpStream::connect(edge.addrs().tcp).await.unwrap();
    let auth = format!(
        r#"{{"mid":7,"key":"{key}","room_id":"{room}","platform":"web","accepts":[{BUSINESS_OP}]}}"#
    );
    socket
        .write_all(&Packet::new(1, op::AUTH, 1, auth.into_bytes()).to_bytes())
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(read_packet(&mut socket, &mut buf).await.op, op::AUTH_REPLY);
    tokio::time::timeout(WAIT, async {
        while edge.room_online(room) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the client never joined its room");
    (socket, buf)
}

/// Business bodies a client received, with when each arrived.
type Received = Arc<Mutex<Vec<(Vec<u8>, Instant)>>>;

/// A client that records every business body it receives, with when it arrived.
struct RecordingClient {
    received: Received,
    reader: tokio::task::JoinHandle<()>,
}

impl RecordingClient {
    /// Connects (see [`connect`]) and records in the background until the connection ends.
    async fn connect(edge: &EdgeHandle, key: &str, room: &str) -> Self {
        let (mut socket, mut buf) = connect(edge, key, room).await;
        let received = Received::default();
        let log = received.clone();
        let reader = tokio::spawn(async move {
            loop {
                let packet = read_packet(&mut socket, &mut buf).await;
                let now = Instant::now();
                log.lock()
                    .unwrap()
                    .extend(business_bodies(packet).into_iter().map(|body| (body, now)));
            }
        });
        Self { received, reader }
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

impl Drop for RecordingClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_a_real_edge_gets_room_and_key_pushes_through_the_job() {
    let edge = start_edge(SECRET).await;
    let store = Arc::new(MemoryStore::new(StoreSettings::default()));
    register(&store, "edge-1", "sh", push_url(&edge)).await;
    let (mut socket, mut buf) = connect(&edge, "k1", "live://1").await;

    let config = JobConfig {
        job_region: "sh".into(),
        ..JobConfig::default()
    };
    let bus = MemoryBus::new(100);
    let consumer = bus.consumer("sh", &config.group_id());
    let directory = Arc::new(StoreDirectory::new(store.clone(), config.directory_cache()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker_config = config.clone();
    let worker = tokio::spawn(async move {
        rim_job::run(&worker_config, SECRET, consumer, directory, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });

    let to_key = Target::Keys(KeysTarget {
        keys: vec![KeyOnNode {
            key: "k1".into(),
            node_id: "edge-1".into(),
        }],
    });
    bus.publish(vec![
        push(
            "room:live://1",
            "m1",
            "to the room",
            Target::Room(RoomTarget {
                room: "live://1".into(),
            }),
        ),
        push("key:k1", "m2", "to k1", to_key),
    ])
    .await
    .unwrap();

    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        bodies.extend(business_bodies(read_packet(&mut socket, &mut buf).await));
    }
    assert_eq!(bodies, [b"to the room".to_vec(), b"to k1".to_vec()]);

    let _ = stop.send(());
    worker.await.unwrap();
    bus.publish(vec![push(
        "k",
        "marker",
        "",
        Target::Room(RoomTarget {
            room: "none".into(),
        }),
    )])
    .await
    .unwrap();
    let mut after = bus.consumer("sh", &config.group_id());
    let next = tokio::time::timeout(WAIT, after.next_batch(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next[0].message.message_id, "marker",
        "the delivered pushes were committed"
    );
    edge.shutdown().await;
}

/// What is wrong with the region's second edge.
enum OtherEdge {
    /// Registered, but nothing listens at its address (killed).
    Refusing,
    /// Accepts connections and never answers (hung host, black-holing network).
    Swallowing,
    /// A real edge with another cluster secret: answers 401.
    WrongSecret,
    /// A real edge marked draining in the directory, then shut down (a scale-down).
    Stopped,
}

/// Publishes numbered room pushes to a region of two edges, one healthy with a client in the room
/// and one in trouble; returns the longest time a push took from its publish to the client.
async fn healthy_edge_latency(other: OtherEdge, deadline: Duration) -> Duration {
    let store = Arc::new(MemoryStore::new(StoreSettings::default()));
    let healthy = start_edge(SECRET).await;
    register(&store, "healthy", "sh", push_url(&healthy)).await;
    let client = RecordingClient::connect(&healthy, "k1", "live://1").await;

    // Kept alive until the end of the test.
    let mut swallower = None;
    let mut wrong_secret = None;
    match other {
        OtherEdge::Refusing => {
            let port = rim_testkit::ports::free_port().unwrap();
            register(&store, "other", "sh", format!("http://127.0.0.1:{port}")).await;
        }
        OtherEdge::Swallowing => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            register(
                &store,
                "other",
                "sh",
                format!("http://{}", listener.local_addr().unwrap()),
            )
            .await;
            swallower = Some(tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    held.push(socket);
                }
            }));
        }
        OtherEdge::WrongSecret => {
            let edge = start_edge("another-secret").await;
            register(&store, "other", "sh", push_url(&edge)).await;
            wrong_secret = Some(edge);
        }
        OtherEdge::Stopped => {
            let edge = start_edge(SECRET).await;
            register(&store, "other", "sh", push_url(&edge)).await;
            store
                .set_node_state("other", NodeState::Draining)
                .await
                .unwrap();
            edge.shutdown().await;
        }
    }

    let config = JobConfig {
        job_region: "sh".into(),
        job_batch_size: 1,
        job_max_inflight_batches: 2,
        job_edge_deadline_ms: deadline.as_millis() as u64,
        job_retry_initial_ms: 20,
        job_retry_max_ms: 100,
        job_directory_cache_ms: 50,
        ..JobConfig::default()
    };
    let bus = MemoryBus::new(1_000);
    let consumer = bus.consumer("sh", &config.group_id());
    let directory = Arc::new(StoreDirectory::new(store.clone(), config.directory_cache()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        rim_job::run(&config, SECRET, consumer, directory, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });

    const PUSHES: usize = 40;
    let mut published = Vec::new();
    for n in 0..PUSHES {
        let id = format!("p{n}");
        let room = Target::Room(RoomTarget {
            room: "live://1".into(),
        });
        bus.publish(vec![push("room:live://1", &id, &id, room)])
            .await
            .unwrap();
        published.push((id, Instant::now()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Generous: the bound that matters is checked on the latencies below.
    let all_in = Instant::now() + WAIT;
    while client.count() < PUSHES {
        assert!(
            Instant::now() < all_in,
            "the healthy edge's client got {} of {PUSHES} pushes",
            client.count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = client.received.lock().unwrap().clone();
    let latencies = published.iter().map(|(id, at)| {
        let (_, arrived) = received
            .iter()
            .find(|(body, _)| body == id.as_bytes())
            .unwrap_or_else(|| panic!("{id} never arrived"));
        arrived.duration_since(*at)
    });
    let worst = latencies.max().unwrap();

    let _ = stop.send(());
    tokio::time::timeout(WAIT, worker).await.unwrap().unwrap();
    drop(client);
    healthy.shutdown().await;
    if let Some(edge) = wrong_secret {
        edge.shutdown().await;
    }
    if let Some(task) = swallower {
        task.abort();
    }
    worst
}

/// Slack over the deadline for a loaded machine; far below what a stalled lane costs (the region
/// used to wait for the trouble edge forever, or for its whole deadline per batch).
const SLACK: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_edge_delays_the_other_edge_by_at_most_its_deadline() {
    let deadline = Duration::from_secs(1);
    let worst = healthy_edge_latency(OtherEdge::Refusing, deadline).await;
    eprintln!("refusing edge: worst healthy-edge latency {worst:?}");
    assert!(worst <= deadline + SLACK, "{worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_never_answers_delays_the_other_edge_by_at_most_its_deadline() {
    let deadline = Duration::from_secs(1);
    let worst = healthy_edge_latency(OtherEdge::Swallowing, deadline).await;
    eprintln!("swallowing edge: worst healthy-edge latency {worst:?}");
    assert!(worst <= deadline + SLACK, "{worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_refusing_the_secret_delays_the_other_edge_by_at_most_its_deadline() {
    let deadline = Duration::from_secs(1);
    let worst = healthy_edge_latency(OtherEdge::WrongSecret, deadline).await;
    eprintln!("401 edge: worst healthy-edge latency {worst:?}");
    assert!(worst <= deadline + SLACK, "{worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_draining_edge_is_not_waited_for_at_all() {
    // A deadline far beyond the test: only the stopping rule can keep the region moving.
    let deadline = Duration::from_secs(120);
    let worst = healthy_edge_latency(OtherEdge::Stopped, deadline).await;
    eprintln!("stopped draining edge: worst healthy-edge latency {worst:?}");
    assert!(worst <= SLACK, "{worst:?}");
}
