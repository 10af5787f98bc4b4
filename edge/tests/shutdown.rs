//! Graceful shutdown: refuse pushes, stop accepting, flush queued pushes, tell clients why, finish in
//! bounded time.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::client::Ended;
use common::{Kind, key_push, start, start_with};
use prost::Message;
use rim_edge::EdgeHooks;
use rim_edge::config::AuthMode;
use rim_edge::hooks::{UpstreamMessage, UpstreamReply, UpstreamSink};
use rim_proto::op;
use rim_proto::schema::EdgePushRequest;
use tokio::sync::Notify;

#[tokio::test]
async fn clients_are_flushed_and_told() {
    let edge = start(|_| {}).await;
    let mut tcp = edge.client(Kind::Tcp, "tcp", "", &[1000]).await;
    let mut ws = edge.client(Kind::Ws, "ws", "", &[1000]).await;
    let mut handshaking = edge.connect(Kind::Ws).await;
    let tcp_addr = edge.tcp();
    assert_eq!(
        edge.handle
            .push(&key_push("last", 1000, b"last", &["tcp", "ws"]))
            .await,
        2
    );
    let common::TestEdge { handle, dir } = edge;
    let started = tokio::time::Instant::now();
    assert!(handle.shutdown().await, "every connection finished in time");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(
        tcp.recv().await.body,
        &b"last"[..],
        "queued push flushed before the close"
    );
    assert_eq!(tcp.ended().await, Ended::Stream);
    assert_eq!(ws.recv().await.body, &b"last"[..]);
    assert_eq!(
        ws.ended().await,
        Ended::Ws(1001, "server shutting down".into())
    );
    assert_eq!(
        handshaking.ended().await,
        Ended::Ws(1001, "server shutting down".into())
    );
    assert!(
        tokio::net::TcpStream::connect(tcp_addr).await.is_err(),
        "no longer accepting"
    );
    drop(dir);
}

/// Holds the first upstream message until released, keeping its connection (and so the edge's
/// shutdown) open meanwhile; upstream messages are delivered in full before a connection closes.
#[derive(Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl UpstreamSink for Gate {
    async fn deliver(&self, _message: UpstreamMessage) -> UpstreamReply {
        self.entered.notify_one();
        self.release.notified().await;
        UpstreamReply::Now(bytes::Bytes::new())
    }
}

/// From the moment shutdown begins the internal endpoint refuses pushes with 503 (the edge will not
/// write them, the job must settle or retry them) and health says draining, until the connections
/// are closed.
#[tokio::test]
async fn a_stopping_edge_refuses_pushes() {
    let gate = Arc::new(Gate::default());
    let hooks = EdgeHooks {
        upstream: gate.clone(),
        ..EdgeHooks::default()
    };
    let edge = start_with(AuthMode::Jwt, hooks, |_| {}).await;
    let mut held = edge.client(Kind::Tcp, "held", "", &[1000]).await;
    held.send_op(op::SEND_MSG, b"hold the close").await;
    gate.entered.notified().await;

    let common::TestEdge { handle, dir } = edge;
    let internal = handle.addrs().internal;
    let stopping = tokio::spawn(handle.shutdown());
    let http = reqwest::Client::new();
    common::wait_until_async(|| async {
        let health = http
            .get(format!("http://{internal}/healthz"))
            .send()
            .await
            .unwrap();
        health.status() == 503
    })
    .await;
    let body = EdgePushRequest {
        pushes: vec![key_push("late", 1000, b"never written", &["held"])],
    }
    .encode_to_vec();
    let refused = http
        .post(format!("http://{internal}/internal/push"))
        .bearer_auth(common::SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.text().await.unwrap().contains("edge stopping"));

    gate.release.notify_one();
    assert!(stopping.await.unwrap(), "shutdown finished in time");
    assert!(
        http.get(format!("http://{internal}/healthz"))
            .send()
            .await
            .is_err(),
        "the internal endpoint stopped with the edge"
    );
    drop(dir);
}
