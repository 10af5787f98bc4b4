//! End to end through a real edge: a goim client connected to a real `rim_edge` receives a room push
//! and a key push that went through the bus and the job worker (the edge's `/internal/push` with the
//! cluster secret), and the worker commits them.

use prost::bytes::BytesMut;
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, BusProducer, OutgoingPush};
use rim_edge::auth::insecure::InsecureVerifier;
use rim_edge::{Edge, EdgeConfig, EdgeHooks};
use rim_job::{JobConfig, StoreDirectory};
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{KeyOnNode, KeysTarget, NodeRegistration, PushMessage, RoomTarget};
use rim_proto::{Packet, op, stream};
use rim_store::memory::MemoryStore;
use rim_store::{Store, StoreSettings};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
            target: Some(target),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_a_real_edge_gets_room_and_key_pushes_through_the_job() {
    let edge = Edge::start(
        EdgeConfig::local().unwrap(),
        SECRET.into(),
        Arc::new(InsecureVerifier::new()),
        EdgeHooks::default(),
    )
    .await
    .unwrap();
    let store = Arc::new(MemoryStore::new(StoreSettings::default()));
    let registration = NodeRegistration {
        node_id: "edge-1".into(),
        region: "sh".into(),
        push_url: format!("http://{}", edge.addrs().internal),
        hostname: "localhost".into(),
        weight: 1,
        ..NodeRegistration::default()
    };
    store.register_node(&registration, 1).await.unwrap();

    let mut socket = TcpStream::connect(edge.addrs().tcp).await.unwrap();
    let auth = r#"{"mid":7,"key":"k1","room_id":"live://1","platform":"web","accepts":[1000]}"#;
    socket
        .write_all(&Packet::new(1, op::AUTH, 1, auth.as_bytes().to_vec()).to_bytes())
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(read_packet(&mut socket, &mut buf).await.op, op::AUTH_REPLY);
    tokio::time::timeout(WAIT, async {
        while edge.room_online("live://1") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the client never joined its room");

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
