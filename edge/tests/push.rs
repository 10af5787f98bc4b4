//! The internal push endpoint: cluster-secret auth, delivered counts, dedup by delivery, superseded
//! connections, slow consumers judged by bytes behind, metrics.

mod common;

use std::sync::OnceLock;

use common::client::Ended;
use common::{Client, Kind, broadcast_push, key_push, room_push, start, start_with};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use prost::Message;
use rim_edge::EdgeHooks;
use rim_edge::config::{AuthMode, SlowConsumerPolicy};
use rim_proto::message::{self, Packets};
use rim_proto::op;
use rim_proto::schema::{EdgePush, EdgePushRequest, EdgeSuperseded, edge_push::Target};

#[tokio::test]
async fn push_requires_the_cluster_secret() {
    let edge = start(|_| {}).await;
    let mut client = edge.client(Kind::Tcp, "k1", "", &[1000]).await;
    let body = EdgePushRequest {
        pushes: vec![key_push("m", 1000, b"x", &["k1"])],
    }
    .encode_to_vec();
    assert_eq!(edge.post_push(None, body.clone()).await.status(), 401);
    assert_eq!(
        edge.post_push(Some("wrong"), body.clone()).await.status(),
        401
    );
    assert_eq!(
        edge.post_push(Some(&format!("{}x", common::SECRET)), body.clone())
            .await
            .status(),
        401
    );
    assert!(
        client.silent_for(100).await,
        "nothing delivered without the secret"
    );
    assert_eq!(
        edge.post_push(Some(common::SECRET), body).await.status(),
        200
    );
    assert_eq!(client.recv().await.body, &b"x"[..]);
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused() {
    let edge = start(|c| c.edge_max_push_body = 1024).await;
    let garbage = vec![0xff; 16];
    assert_eq!(
        edge.post_push(Some(common::SECRET), garbage).await.status(),
        400
    );
    let big = EdgePushRequest {
        pushes: vec![key_push("m", 1000, &[b'x'; 2048], &["k1"])],
    }
    .encode_to_vec();
    assert_eq!(
        edge.post_push(Some(common::SECRET), big).await.status(),
        413
    );
    edge.assert_unaffected(&mut []).await;
}

#[tokio::test]
async fn delivered_counts_per_push() {
    let edge = start(|_| {}).await;
    let mut a = edge.client(Kind::Tcp, "a", "live://1", &[1000]).await;
    let mut b = edge.client(Kind::Ws, "b", "live://1", &[1000, 2000]).await;
    let mut c = edge.client(Kind::Tcp, "c", "live://2", &[2000]).await;
    let delivered = edge
        .push(vec![
            key_push("1", 1000, b"keys", &["a", "b", "c", "nobody"]),
            room_push("2", 1500, b"room", "live://1"),
            room_push("3", 1500, b"empty", "live://404"),
            broadcast_push("4", 2000, b"all", 0),
        ])
        .await;
    assert_eq!(delivered, [2, 2, 0, 2]);
    for (client, expected) in [
        (&mut a, &["keys", "room"][..]),
        (&mut b, &["keys", "room", "all"][..]),
        (&mut c, &["all"][..]),
    ] {
        for body in expected {
            assert_eq!(client.recv().await.body, body.as_bytes());
        }
        assert!(client.silent_for(50).await);
    }
}

/// A request's pushes are all queued before the writer wakes, so a WebSocket client gets them as ONE
/// op-9 message (one write), in order, with watch-set filtering still applied to key pushes. Runs on
/// several worker threads so a writer woken early could really write while pushes are still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_of_pushes_reaches_a_connection_in_one_write() {
    let edge = start(|_| {}).await;
    let mut client = edge.client(Kind::Ws, "k", "live://1", &[1000]).await;
    // Other room members make each push's walk long enough that a writer woken before the request
    // is fully queued (the old per-push wake) can write early; with the fix it never can.
    let mut others = Vec::new();
    for i in 0..1500 {
        others.push(
            edge.client(Kind::Tcp, &format!("o{i}"), "live://1", &[])
                .await,
        );
    }
    let mut pushes = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20 {
        let body = format!("push {i}");
        if i % 2 == 0 {
            pushes.push(room_push(
                &format!("r{i}"),
                1500,
                body.as_bytes(),
                "live://1",
            ));
        } else {
            pushes.push(key_push(&format!("k{i}"), 1000, body.as_bytes(), &["k"]));
        }
        expected.push(body);
    }
    pushes.push(key_push("unwatched", 2000, b"filtered", &["k"]));
    let delivered = edge.push(pushes).await;
    let room_members = 1 + others.len() as u32;
    let expected_counts: Vec<u32> = (0..20)
        .map(|i| if i % 2 == 0 { room_members } else { 1 })
        .collect();
    assert_eq!(delivered[..20], expected_counts);
    assert_eq!(delivered[20], 0);

    let message = client.recv_message().await;
    let batch = message::decode(message, usize::MAX).unwrap();
    assert_eq!((batch.op, batch.ver, batch.seq), (op::RAW, 1, 0));
    let bodies: Vec<_> = Packets::new(batch.body, usize::MAX)
        .map(|packet| String::from_utf8(packet.unwrap().body.to_vec()).unwrap())
        .collect();
    assert_eq!(bodies, expected);
    assert!(client.silent_for(100).await);
}

/// The records of one push share its message id; each is its own delivery. Several keys on this
/// edge, one record each, in one request: every key's client gets its message once, and the same
/// request again (a job's retry) delivers nothing more.
#[tokio::test]
async fn records_of_one_push_each_reach_their_key_exactly_once() {
    let edge = start(|_| {}).await;
    let kinds = [Kind::Tcp, Kind::Ws, Kind::Tcp, Kind::Ws, Kind::Tcp];
    let mut clients = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        clients.push(edge.client(kind, &format!("user-{i}"), "", &[1000]).await);
    }
    let pushes: Vec<EdgePush> = (0..kinds.len())
        .map(|i| EdgePush {
            record: i as u32,
            ..key_push(
                "one-push",
                1000,
                format!("for {i}").as_bytes(),
                &[&format!("user-{i}")],
            )
        })
        .collect();
    assert_eq!(edge.push(pushes.clone()).await, [1; 5]);
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.recv().await.body, format!("for {i}").as_bytes());
    }
    assert_eq!(
        edge.push(pushes).await,
        [0; 5],
        "the retry is all duplicates"
    );
    for client in &mut clients {
        assert!(client.silent_for(100).await, "delivered twice");
    }
}

#[tokio::test]
async fn duplicate_message_ids_are_dropped() {
    let edge = start(|_| {}).await;
    let mut client = edge.client(Kind::Tcp, "k", "", &[1000]).await;
    let push = key_push("same-id", 1000, b"once", &["k"]);
    assert_eq!(edge.push(vec![push.clone(), push.clone()]).await, [1, 0]);
    assert_eq!(edge.push(vec![push]).await, [0]);
    assert_eq!(client.recv().await.body, &b"once"[..]);
    assert!(client.silent_for(100).await);
}

#[tokio::test]
async fn paced_broadcast_reaches_everyone_in_order() {
    let edge = start(|_| {}).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(edge.client(Kind::Tcp, &format!("k{i}"), "", &[1000]).await);
    }
    // Idle time before the broadcast must not let the pacer burst.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    let delivered = edge
        .push(vec![
            broadcast_push("p1", 1000, b"first", 20),
            broadcast_push("p2", 1000, b"second", 20),
        ])
        .await;
    assert_eq!(delivered, [5, 5], "recipients scheduled");
    for client in &mut clients {
        assert_eq!(client.recv().await.body, &b"first"[..]);
        assert_eq!(client.recv().await.body, &b"second"[..]);
    }
    // Each broadcast's 5 deliveries at 20/s are released two per 100 ms tick (3 ticks each).
    assert!(started.elapsed() >= std::time::Duration::from_millis(350));
}

fn superseded(id: &str, key: &str, connection_id: u64) -> EdgePush {
    EdgePush {
        message_id: id.into(),
        target: Some(Target::Superseded(EdgeSuperseded {
            key: key.into(),
            connection_id,
        })),
        ..EdgePush::default()
    }
}

/// Control tells an edge that a connection lost its key to a newer one elsewhere: that connection
/// (key and id both matching) is closed like a takeover; any other is left alone.
#[tokio::test]
async fn a_superseded_connection_is_closed_only_if_key_and_id_match() {
    let edge = start(|_| {}).await;
    // Connection ids count up from 1 on a fresh edge, in the order connections authenticate.
    let mut old = edge.client(Kind::Ws, "moved", "", &[1000]).await;
    let mut other = edge.client(Kind::Tcp, "stays", "", &[1000]).await;
    let delivered = edge
        .push(vec![
            superseded("s1", "moved", 2),
            superseded("s2", "stays", 1),
            superseded("s3", "nobody", 1),
        ])
        .await;
    assert_eq!(delivered, [0, 0, 0], "key and id must both match");
    // What was queued for the connection before the close still reaches it: it was counted.
    let delivered = edge
        .push(vec![
            key_push("last", 1000, b"last words", &["moved"]),
            superseded("s4", "moved", 1),
        ])
        .await;
    assert_eq!(delivered, [1, 1]);
    assert_eq!(old.recv().await.body, &b"last words"[..]);
    assert_eq!(
        old.ended().await,
        Ended::Ws(
            4000,
            "replaced by a newer connection with the same key".into()
        )
    );
    edge.wait_connections(1).await;
    assert_eq!(edge.push(vec![superseded("s5", "moved", 1)]).await, [0]);
    assert_eq!(
        edge.push(vec![key_push("after", 1000, b"ok", &["stays"])])
            .await,
        [1]
    );
    assert_eq!(other.recv().await.body, &b"ok"[..]);
    edge.assert_unaffected(&mut [&mut other]).await;
}

/// Reads `count` pushes and checks they are `body(0..count)` in order.
async fn read_in_order(mut client: Client, count: usize, body: fn(usize) -> Vec<u8>) -> Client {
    for i in 0..count {
        let packet = client.recv().await;
        assert_eq!(packet.op, 1000);
        assert_eq!(packet.body, body(i), "push {i} missing or out of order");
    }
    client
}

/// A burst far larger than one job batch, to a room of clients that read as fast as they can:
/// nobody is taken for a slow consumer, everybody gets everything, in order (with the old bound of
/// 128 frames every client was closed by the first request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_a_room_of_reading_clients_closes_nobody() {
    const CLIENTS: usize = 60;
    const PUSHES: usize = 1_200;
    const PER_REQUEST: usize = 256;
    fn body(i: usize) -> Vec<u8> {
        let mut body = format!("{i:06}").into_bytes();
        body.resize(512, b'.');
        body
    }
    let edge = start(|_| {}).await;
    let mut readers = Vec::new();
    for i in 0..CLIENTS {
        let kind = if i % 2 == 0 { Kind::Tcp } else { Kind::Ws };
        let client = edge
            .client(kind, &format!("fan-{i}"), "live://burst", &[])
            .await;
        readers.push(tokio::spawn(read_in_order(client, PUSHES, body)));
    }
    let pushes: Vec<EdgePush> = (0..PUSHES)
        .map(|i| room_push(&format!("burst-{i}"), 1000, &body(i), "live://burst"))
        .collect();
    for request in pushes.chunks(PER_REQUEST) {
        let delivered = edge.push(request.to_vec()).await;
        assert!(
            delivered.iter().all(|&n| n as usize == CLIENTS),
            "a push did not reach every client: {delivered:?}"
        );
    }
    let mut clients = Vec::new();
    for reader in readers {
        clients.push(reader.await.unwrap());
    }
    assert_eq!(edge.handle.connection_count(), CLIENTS, "nobody was closed");
    for client in &mut clients {
        assert!(client.silent_for(20).await);
    }
}

/// What a client has read stops counting against its bound: a client that keeps up receives many
/// times the bound in total and is never refused.
#[tokio::test]
async fn a_client_that_keeps_up_receives_many_times_its_bound() {
    let edge = start(|c| c.edge_queue_max_bytes = 64 * 1024).await;
    let mut client = edge.client(Kind::Tcp, "reader", "", &[1000]).await;
    let body = vec![b'r'; 16 * 1024];
    for i in 0..64 {
        let push = key_push(&format!("read-{i}"), 1000, &body, &["reader"]);
        assert_eq!(edge.push(vec![push]).await, [1], "push {i} refused");
        assert_eq!(client.recv().await.body.len(), body.len());
    }
}

/// Pushes large bodies to `victim` until one is refused; returns how many were accepted.
async fn flood(edge: &common::TestEdge, victim: &str) -> usize {
    let body = vec![b'x'; 256 * 1024];
    for i in 0..400 {
        let push = key_push(&format!("flood-{i}"), 1000, &body, &[victim]);
        if edge.push(vec![push]).await == [0] {
            return i;
        }
    }
    panic!("the queue never filled");
}

/// A client that never reads falls behind by more than the byte bound: it is closed (counted as a
/// slow consumer, by the bound it hit) and the bystander keeps getting its pushes.
#[tokio::test]
async fn slow_consumer_is_closed_and_others_are_fine() {
    let prometheus = prometheus();
    for kind in [Kind::Tcp, Kind::Ws] {
        let edge = start(|c| {
            c.edge_queue_max_bytes = 1 << 20;
            c.edge_max_push_body = 1 << 20;
        })
        .await;
        let mut bystander = edge.client(Kind::Ws, "bystander", "", &[1000]).await;
        let _victim = edge.client(kind, "victim", "", &[1000]).await;
        flood(&edge, "victim").await;
        edge.wait_connections(1).await;
        assert_eq!(
            edge.push(vec![key_push("after", 1000, b"ok", &["bystander"])])
                .await,
            [1]
        );
        assert_eq!(bystander.recv().await.body, &b"ok"[..]);
        edge.assert_unaffected(&mut [&mut bystander]).await;
    }
    let text = prometheus.render();
    for line in [
        r#"rim_edge_closes_total{reason="slow_consumer"}"#,
        r#"rim_edge_drops_total{reason="behind_bytes"}"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[tokio::test]
async fn drop_policy_keeps_the_slow_consumer() {
    let edge = start(|c| {
        c.edge_queue_max_bytes = 2 << 20;
        c.edge_slow_consumer = SlowConsumerPolicy::Drop;
    })
    .await;
    let mut victim = edge.client(Kind::Tcp, "victim", "", &[1000]).await;
    let accepted = flood(&edge, "victim").await;
    assert!(accepted >= 4);
    assert_eq!(edge.handle.connection_count(), 1);
    for _ in 0..accepted {
        assert_eq!(victim.recv().await.op, 1000);
    }
    victim.heartbeat().await;
}

fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
        .clone()
}

#[tokio::test]
async fn metrics_and_health_on_the_internal_port() {
    let hooks = EdgeHooks {
        metrics: Some(prometheus()),
        ..EdgeHooks::default()
    };
    let edge = start_with(AuthMode::Jwt, hooks, |_| {}).await;
    let mut client = edge.client(Kind::Tcp, "k", "", &[1000]).await;
    edge.push(vec![key_push("m", 1000, b"x", &["k"])]).await;
    client.recv().await;
    let http = reqwest::Client::new();
    let health = http
        .get(edge.internal_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let text = http
        .get(edge.internal_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "rim_edge_pushes_total",
        "rim_edge_deliveries_total",
        "rim_edge_auth_total",
        "rim_edge_connections",
        "rim_edge_write_batch_frames",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn metrics_without_a_recorder_is_404() {
    let edge = start(|_| {}).await;
    let response = reqwest::get(edge.internal_url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 404);
}
