//! What the end-to-end job tests share: real `rim_edge` instances registered in a memory store, and
//! goim clients on real sockets that record what they receive.

#![allow(dead_code)] // each test binary uses its own subset

use prost::bytes::BytesMut;
use rim_edge::auth::insecure::InsecureVerifier;
use rim_edge::{Edge, EdgeConfig, EdgeHooks};
use rim_proto::schema::NodeRegistration;
use rim_proto::{Packet, op, stream};
use rim_store::Store;
use rim_store::memory::MemoryStore;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const SECRET: &str = "cluster-secret";
pub const WAIT: Duration = Duration::from_secs(10);
pub const BUSINESS_OP: i32 = 1000;

/// Starts a real edge that accepts `secret` on its internal push endpoint.
pub async fn start_edge(secret: &str) -> Edge {
    Edge::start(
        EdgeConfig::local().unwrap(),
        secret.into(),
        Arc::new(InsecureVerifier::new()),
        EdgeHooks::default(),
    )
    .await
    .unwrap()
}

/// Registers a node in `region` whose push endpoint is `push_url`.
pub async fn register(store: &MemoryStore, node_id: &str, region: &str, push_url: String) {
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

/// The base URL of an edge's internal push endpoint.
pub fn push_url(edge: &Edge) -> String {
    format!("http://{}", edge.addrs().internal)
}

/// Reads the next packet from the connection, failing after [`WAIT`].
pub async fn read_packet(socket: &mut TcpStream, buf: &mut BytesMut) -> Packet {
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
pub fn business_bodies(packet: Packet) -> Vec<Vec<u8>> {
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

/// Connects a goim client to `edge` with `key` in `room` and waits until the edge has it in the
/// room. Returns the socket and what was read past the auth reply.
pub async fn connect(edge: &Edge, mid: i64, key: &str, room: &str) -> (TcpStream, BytesMut) {
    let mut socket = TcpStream::connect(edge.addrs().tcp).await.unwrap();
    let auth = format!(
        r#"{{"mid":{mid},"key":"{key}","room_id":"{room}","platform":"web","accepts":[{BUSINESS_OP}]}}"#
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

/// A client that records every business body it receives with the time it arrived.
pub struct RecordingClient {
    pub received: Arc<Mutex<Vec<(Vec<u8>, Instant)>>>,
    reader: JoinHandle<()>,
}

impl RecordingClient {
    /// Connects (see [`connect`]) and records in the background.
    pub async fn connect(edge: &Edge, mid: i64, key: &str, room: &str) -> Self {
        let (mut socket, mut buf) = connect(edge, mid, key, room).await;
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let reader = tokio::spawn(async move {
            loop {
                let mut packet = None;
                while packet.is_none() {
                    packet = stream::decode(&mut buf, 1 << 20).unwrap();
                    if packet.is_none() && socket.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                let bodies = business_bodies(packet.unwrap());
                let now = Instant::now();
                log.lock()
                    .unwrap()
                    .extend(bodies.into_iter().map(|body| (body, now)));
            }
        });
        Self { received, reader }
    }

    /// How many business messages arrived.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

impl Drop for RecordingClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
