//! Every row of PROTOCOL.md over real sockets, on TCP and WebSocket.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Kind, broadcast_push, hex, key_push, room_push, start, tokens};
use parking_lot::Mutex;
use rim_edge::EdgeHooks;
use rim_edge::channel::Channel;
use rim_edge::config::AuthMode;
use rim_edge::hooks::{ConnectAck, EdgeEvents, UpstreamMessage, UpstreamReply, UpstreamSink};
use rim_proto::{Packet, op};

both_transports!(
    heartbeat_reports_room_online,
    room_change_moves_pushes,
    watch_set_filters_key_and_broadcast_pushes,
    upstream_ops_are_echoed_and_sunk,
    same_key_replaces_the_older_connection,
    handshake_timeout_closes_silent_sockets,
    heartbeat_timeout_closes_idle_connections,
    heartbeat_deadline_is_kept_to_its_bound,
    packets_before_auth_are_ignored,
    pushes_queued_together_leave_as_one_batch,
);

#[tokio::test]
async fn byte_examples_over_tcp() {
    let edge = start(|_| {}).await;
    let mut client = edge.connect(Kind::Tcp).await;
    let auth = Packet::new(1, op::AUTH, 1, tokens::body_for("k1", "live://1000", &[]));
    client.send(&auth).await;
    assert_eq!(
        client.recv_bytes(16).await,
        hex("00000010 0010 0001 00000008 00000001")
    );
    client
        .send_raw(&hex("00000010 0010 0001 00000002 00000001"))
        .await;
    assert_eq!(
        client.recv_bytes(20).await,
        hex("00000014 0010 0001 00000003 00000001 00000001")
    );
    let delivered = edge
        .push(vec![room_push("m1", 1000, b"hello", "live://1000")])
        .await;
    assert_eq!(delivered, [1]);
    assert_eq!(
        client.recv_bytes(21).await,
        hex("00000015 0010 0001 000003e8 00000000 68656c6c6f")
    );
    let change = hex("0000001b 0010 0001 0000000c 00000002 6c6976653a2f2f31303031");
    client.send_raw(&change).await;
    let mut reply = change.clone();
    reply[11] = 0x0d;
    assert_eq!(client.recv_bytes(change.len()).await, reply);
}

#[tokio::test]
async fn byte_examples_over_websocket() {
    let edge = start(|_| {}).await;
    let mut client = edge.connect(Kind::Ws).await;
    let auth = Packet::new(1, op::AUTH, 1, tokens::body_for("k1", "live://1000", &[]));
    client.send(&auth).await;
    assert_eq!(
        client.recv_message().await[..],
        hex("00000010 0010 0001 00000008 00000001")
    );
    client
        .send_raw(&hex("00000010 0010 0001 00000002 00000001"))
        .await;
    assert_eq!(
        client.recv_message().await[..],
        hex("00000014 0010 0001 00000003 00000001 00000001")
    );
    let delivered = edge
        .push(vec![room_push("m1", 1000, b"hello", "live://1000")])
        .await;
    assert_eq!(delivered, [1]);
    let mut expected = hex("00000025 0010 0001 00000009 00000000");
    expected.extend(hex("00000015 0010 0001 000003e8 00000000 68656c6c6f"));
    assert_eq!(client.recv_message().await[..], expected);
    let change = hex("0000001b 0010 0001 0000000c 00000002 6c6976653a2f2f31303031");
    client.send_raw(&change).await;
    let mut reply = change.clone();
    reply[11] = 0x0d;
    assert_eq!(client.recv_message().await[..], reply);
}

async fn pushes_queued_together_leave_as_one_batch(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut client = edge.client(kind, "k1", "", &[1000, 1001]).await;
    // In-process pushes on this single-threaded runtime all queue before the writer runs.
    let pushes = [(1000, "a"), (1001, "bb"), (1000, "ccc")];
    for (i, (op_code, body)) in pushes.iter().enumerate() {
        let push = key_push(&format!("m{i}"), *op_code, body.as_bytes(), &["k1"]);
        assert_eq!(edge.handle.push(&push).await, 1);
    }
    let inner: Vec<u8> = pushes
        .iter()
        .flat_map(|(op_code, body)| {
            Packet::new(1, *op_code, 0, body.as_bytes().to_vec()).to_bytes()
        })
        .collect();
    if kind == Kind::Ws {
        let message = client.recv_message().await;
        let mut expected = Packet::new(1, op::RAW, 0, Vec::new()).to_bytes().to_vec();
        expected[..4].copy_from_slice(&(16 + inner.len() as i32).to_be_bytes());
        expected.extend(&inner);
        assert_eq!(
            message[..],
            expected[..],
            "one op-9 message with all three packets"
        );
    } else {
        assert_eq!(
            client.recv_bytes(inner.len()).await,
            inner,
            "inner packets only"
        );
    }
}

async fn heartbeat_reports_room_online(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut first = edge.client(kind, "k1", "live://7", &[]).await;
    assert_eq!(first.heartbeat().await, 1);
    let _second = edge.client(Kind::Tcp, "k2", "live://7", &[]).await;
    let mut roomless = edge.client(kind, "k3", "", &[]).await;
    assert_eq!(first.heartbeat().await, 2);
    assert_eq!(roomless.heartbeat().await, 0);
    assert_eq!(edge.handle.room_online("live://7"), 2);
}

async fn room_change_moves_pushes(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut client = edge.client(kind, "k1", "live://1", &[]).await;
    assert_eq!(
        edge.push(vec![room_push("a", 1000, b"x", "live://2")])
            .await,
        [0]
    );
    let seq = client.send_op(op::CHANGE_ROOM, b"live://2").await;
    let reply = client.reply_to(seq).await;
    assert_eq!(
        (reply.op, &reply.body[..]),
        (op::CHANGE_ROOM_REPLY, &b"live://2"[..])
    );
    assert_eq!(edge.handle.room_online("live://1"), 0);
    assert_eq!(edge.handle.room_online("live://2"), 1);
    assert_eq!(
        edge.push(vec![room_push("b", 1000, b"in 2", "live://2")])
            .await,
        [1]
    );
    assert_eq!(client.recv().await.body, &b"in 2"[..]);
    let seq = client.send_op(op::CHANGE_ROOM, b"").await;
    assert_eq!(client.reply_to(seq).await.body, &b""[..]);
    assert!(edge.handle.room_counts().is_empty());
    assert_eq!(client.heartbeat().await, 0);
}

async fn watch_set_filters_key_and_broadcast_pushes(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut client = edge.client(kind, "k1", "live://1", &[1000]).await;
    assert_eq!(
        edge.push(vec![key_push("a", 1001, b"no", &["k1"])]).await,
        [0]
    );
    assert_eq!(
        edge.push(vec![broadcast_push("b", 1001, b"no", 0)]).await,
        [0]
    );
    assert_eq!(
        edge.push(vec![key_push("c", 1000, b"yes", &["k1"])]).await,
        [1]
    );
    assert_eq!(client.recv().await.body, &b"yes"[..]);
    let seq = client.send_op(op::SUB, b"1001,1002").await;
    let reply = client.reply_to(seq).await;
    assert_eq!(
        (reply.op, &reply.body[..]),
        (op::SUB_REPLY, &b"1001,1002"[..])
    );
    assert_eq!(
        edge.push(vec![broadcast_push("d", 1001, b"now", 0)]).await,
        [1]
    );
    assert_eq!(client.recv().await.body, &b"now"[..]);
    let seq = client.send_op(op::UNSUB, b"1000").await;
    let reply = client.reply_to(seq).await;
    assert_eq!((reply.op, &reply.body[..]), (op::UNSUB_REPLY, &b"1000"[..]));
    assert_eq!(
        edge.push(vec![key_push("e", 1000, b"gone", &["k1"])]).await,
        [0]
    );
    // Room pushes ignore the watch set.
    assert_eq!(
        edge.push(vec![room_push("f", 3000, b"room", "live://1")])
            .await,
        [1]
    );
    let push = client.recv().await;
    assert_eq!((push.op, &push.body[..]), (3000, &b"room"[..]));
    assert!(client.silent_for(100).await);
}

#[derive(Default)]
struct Recorder {
    upstream: Mutex<Vec<(i32, Vec<u8>)>>,
    events: Mutex<Vec<String>>,
}

#[async_trait]
impl UpstreamSink for Recorder {
    async fn deliver(&self, message: UpstreamMessage) -> UpstreamReply {
        let packet = message.packet;
        self.upstream.lock().push((packet.op, packet.body.to_vec()));
        UpstreamReply::Now(bytes::Bytes::new())
    }
}

impl EdgeEvents for Recorder {
    fn connected(&self, channel: &Channel) -> Option<ConnectAck> {
        self.events
            .lock()
            .push(format!("connect {}", channel.key()));
        None
    }
    fn disconnected(&self, channel: &Channel, still_owned: bool) {
        self.events
            .lock()
            .push(format!("disconnect {} {still_owned}", channel.key()));
    }
    fn room_changed(&self, channel: &Channel, previous: Option<&str>) {
        let now = channel.room();
        self.events
            .lock()
            .push(format!("room {previous:?} -> {now:?}"));
    }
}

async fn upstream_ops_are_echoed_and_sunk(kind: Kind) {
    let recorder = Arc::new(Recorder::default());
    let hooks = EdgeHooks {
        events: recorder.clone(),
        upstream: recorder.clone(),
        ..EdgeHooks::default()
    };
    let edge = common::start_with(AuthMode::Jwt, hooks, |_| {}).await;
    let mut client = edge.client(kind, "k1", "", &[]).await;
    for op_code in [op::SEND_MSG, 2000, 5] {
        client
            .send(&Packet::new(3, op_code, 77, b"up".to_vec()))
            .await;
        let reply = client.recv().await;
        assert_eq!(reply, Packet::new(3, op_code, 77, Vec::new()));
    }
    let seq = client.send_op(op::CHANGE_ROOM, b"live://9").await;
    client.reply_to(seq).await;
    drop(client);
    edge.wait_connections(0).await;
    let upstream = recorder.upstream.lock().clone();
    assert_eq!(
        upstream,
        [
            (op::SEND_MSG, b"up".to_vec()),
            (2000, b"up".to_vec()),
            (5, b"up".to_vec())
        ]
    );
    common::wait_until(|| recorder.events.lock().len() == 3).await;
    assert_eq!(
        recorder.events.lock().clone(),
        [
            "connect k1".to_string(),
            "room None -> Some(\"live://9\")".into(),
            "disconnect k1 true".into()
        ]
    );
}

async fn same_key_replaces_the_older_connection(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut old = edge.client(kind, "dup", "live://1", &[1000]).await;
    let mut bystander = edge.client(Kind::Tcp, "other", "live://1", &[]).await;
    let mut new = edge.client(kind, "dup", "live://1", &[1000]).await;
    let ended = old.ended().await;
    if kind == Kind::Ws {
        assert_eq!(
            ended,
            common::client::Ended::Ws(
                4000,
                "replaced by a newer connection with the same key".into()
            )
        );
    }
    edge.wait_connections(2).await;
    assert_eq!(
        edge.handle.room_online("live://1"),
        2,
        "the old one left the room"
    );
    assert_eq!(
        edge.push(vec![key_push("a", 1000, b"to new", &["dup"])])
            .await,
        [1]
    );
    assert_eq!(new.recv().await.body, &b"to new"[..]);
    edge.assert_unaffected(&mut [&mut bystander, &mut new])
        .await;
}

async fn handshake_timeout_closes_silent_sockets(kind: Kind) {
    let edge = start(|c| c.edge_handshake_timeout_ms = 300).await;
    let started = tokio::time::Instant::now();
    let mut silent = edge.connect(kind).await;
    let ended = silent.ended().await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    if kind == Kind::Ws {
        assert_eq!(
            ended,
            common::client::Ended::Ws(1008, "no auth within the handshake timeout".into())
        );
    }
    edge.assert_unaffected(&mut []).await;
}

async fn heartbeat_timeout_closes_idle_connections(kind: Kind) {
    let edge = start(|c| {
        c.edge_heartbeat_interval_ms = 400;
        c.edge_heartbeat_max = 2;
    })
    .await;
    let mut idle = edge.client(kind, "idle", "", &[]).await;
    let mut alive = edge.client(kind, "alive", "", &[]).await;
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        alive.heartbeat().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = idle.ended().await;
    if kind == Kind::Ws {
        assert_eq!(
            ended,
            common::client::Ended::Ws(1008, "heartbeat timeout".into())
        );
    }
    assert_eq!(edge.handle.connection_count(), 1);
    alive.heartbeat().await;
}

/// A silent connection is closed no earlier than its heartbeat deadline after the last heartbeat and
/// at most one sweep period (a sixteenth of the deadline: 50 ms here) later, plus scheduling slack
/// for a loaded machine;
/// heartbeats sent within the deadline keep it open well past one deadline.
async fn heartbeat_deadline_is_kept_to_its_bound(kind: Kind) {
    let edge = start(|c| {
        c.edge_heartbeat_interval_ms = 400;
        c.edge_heartbeat_max = 2;
    })
    .await;
    let mut client = edge.client(kind, "k", "", &[]).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.heartbeat().await;
    }
    let heard = tokio::time::Instant::now();
    let ended = client.ended().await;
    let silent = heard.elapsed();
    if kind == Kind::Ws {
        assert_eq!(
            ended,
            common::client::Ended::Ws(1008, "heartbeat timeout".into())
        );
    }
    // The edge set the deadline just before its reply left, so a little before `heard`.
    assert!(
        silent >= Duration::from_millis(750),
        "closed after {silent:?} of silence, before the 800 ms deadline"
    );
    assert!(
        silent <= Duration::from_millis(800 + 50 + 650),
        "closed after {silent:?} of silence: the deadline is 800 ms, swept every 50 ms"
    );
    assert_eq!(edge.handle.connection_count(), 0);
}

async fn packets_before_auth_are_ignored(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut client = edge.connect(kind).await;
    client
        .send(&Packet::new(1, op::HEARTBEAT, 9, Vec::new()))
        .await;
    client
        .send(&Packet::new(1, op::SEND_MSG, 10, b"early".to_vec()))
        .await;
    client.auth_ok(&tokens::body_for("k1", "", &[])).await;
    assert_eq!(client.heartbeat().await, 0);
}

#[tokio::test]
async fn websocket_path_may_carry_a_query_string() {
    let edge = start(|_| {}).await;
    let mut client = common::Client::ws(edge.ws(), "/sub?platform=web&x=1").await;
    client.auth_ok(&tokens::body_for("k1", "", &[])).await;
    client.heartbeat().await;
}

#[tokio::test]
async fn websocket_pings_are_answered() {
    let edge = start(|_| {}).await;
    let mut client = edge.client(Kind::Ws, "k1", "", &[]).await;
    client.ping(b"are you there").await;
    client.heartbeat().await;
}
