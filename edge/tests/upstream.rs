//! Upstream messages at the edge: without a configured upstream a goim client gets exactly today's
//! bytes; a sink that answers later does so through the outbox while the connection goes on (pushes
//! and heartbeats keep flowing), with the message's op, ver and seq echoed.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::{Kind, hex, key_push, start, start_with};
use parking_lot::Mutex;
use rim_edge::EdgeHooks;
use rim_edge::config::AuthMode;
use rim_edge::hooks::{ReplyTo, UpstreamMessage, UpstreamReply, UpstreamSink};
use rim_proto::{Packet, op};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A goim TCP client without any upstream configured: op 4 and a business op are answered with
/// the same op, an empty body and ver and seq echoed, byte for byte (PROTOCOL.md).
#[tokio::test]
async fn without_an_upstream_a_goim_client_sees_todays_bytes() {
    let edge = start_with(AuthMode::Insecure, EdgeHooks::default(), |_| {}).await;
    let mut tcp = tokio::net::TcpStream::connect(edge.tcp()).await.unwrap();
    let auth = br#"{"mid":123,"key":"goim","room_id":"","platform":"web","accepts":[1000]}"#;
    tcp.write_all(&Packet::new(1, op::AUTH, 1, auth.to_vec()).to_bytes())
        .await
        .unwrap();
    let mut reply = [0u8; 16];
    tcp.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply.to_vec(), hex("00000010 0010 0001 00000008 00000001"));

    // op 4, ver 1, seq 2, body "hi"; then business op 2000 with ver 3, seq 9.
    tcp.write_all(&hex("00000012 0010 0001 00000004 00000002 6869"))
        .await
        .unwrap();
    tcp.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply.to_vec(), hex("00000010 0010 0001 00000004 00000002"));
    tcp.write_all(&hex("00000011 0010 0003 000007d0 00000009 78"))
        .await
        .unwrap();
    tcp.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply.to_vec(), hex("00000010 0010 0003 000007d0 00000009"));
    drop(edge);
}

/// Keeps every message's reply address, answering nothing now.
#[derive(Default)]
struct Later {
    held: Mutex<Vec<(UpstreamMessage, ReplyTo)>>,
}

#[async_trait]
impl UpstreamSink for Later {
    async fn deliver(&self, message: UpstreamMessage) -> UpstreamReply {
        let reply_to = message.reply_to();
        self.held.lock().push((message, reply_to));
        UpstreamReply::Later
    }
}

#[tokio::test]
async fn a_later_reply_leaves_through_the_outbox_while_pushes_flow() {
    for kind in [Kind::Tcp, Kind::Ws] {
        let sink = Arc::new(Later::default());
        let hooks = EdgeHooks {
            upstream: sink.clone(),
            ..EdgeHooks::default()
        };
        let edge = start_with(AuthMode::Jwt, hooks, |_| {}).await;
        let mut client = edge.client(kind, "waiting", "", &[1000]).await;
        client
            .send(&Packet::new(2, op::SEND_MSG, 41, b"question".to_vec()))
            .await;
        common::wait_until(|| sink.held.lock().len() == 1).await;
        {
            let held = sink.held.lock();
            let (message, _) = &held[0];
            assert_eq!(message.channel.key().as_ref(), "waiting");
            assert_eq!(&message.packet.body[..], b"question");
        }
        assert!(client.silent_for(100).await, "no reply before the sink's");

        // The connection is not held up: pushes and heartbeats go on.
        assert_eq!(
            edge.push(vec![key_push("p1", 1000, b"push", &["waiting"])])
                .await,
            [1]
        );
        let push = client.recv().await;
        assert_eq!((push.op, &push.body[..]), (1000, &b"push"[..]));
        client.heartbeat().await;

        let (_, reply_to) = sink.held.lock().pop().unwrap();
        assert!(reply_to.send(Bytes::from_static(b"answer")));
        assert_eq!(
            client.recv().await,
            Packet::new(2, op::SEND_MSG, 41, b"answer".to_vec()),
            "the message's op, ver and seq echoed with the sink's body"
        );
        drop(client);
        edge.wait_connections(0).await;
        assert!(
            !reply_to.send(Bytes::from_static(b"too late")),
            "a closed connection's reply is dropped"
        );
    }
}

/// The default sink answers goim's empty echo even on an edge with JWT auth (the sink, not the
/// auth mode, decides).
#[tokio::test]
async fn the_default_sink_answers_at_once() {
    let edge = start(|_| {}).await;
    let mut client = edge.client(Kind::Ws, "plain", "", &[]).await;
    client
        .send(&Packet::new(1, 3000, 5, b"business".to_vec()))
        .await;
    assert_eq!(client.recv().await, Packet::new(1, 3000, 5, Vec::new()));
}
