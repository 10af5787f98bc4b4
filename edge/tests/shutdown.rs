//! Graceful shutdown: stop accepting, flush queued pushes, tell clients why, finish in bounded time.

mod common;

use common::client::Ended;
use common::{Kind, key_push, start};

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
