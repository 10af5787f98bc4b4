//! The client against a scripted goim server on a real socket: auth, op-9 unpacking, heartbeat
//! replies, refusals and reconnects.

use bytes::{Bytes, BytesMut};
use rim_client::{
    AdaptiveHeartbeat, ClientError, Connection, Session, SessionConfig, SessionEvent,
};
use rim_proto::batch::Batch;
use rim_proto::{Packet, op, stream};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn heartbeat() -> AdaptiveHeartbeat {
    AdaptiveHeartbeat::fixed(Duration::from_secs(30))
}

async fn read(socket: &mut TcpStream, buf: &mut BytesMut) -> Packet {
    loop {
        if let Some(packet) = stream::decode(buf, 1 << 20).unwrap() {
            return packet;
        }
        assert!(socket.read_buf(buf).await.unwrap() > 0, "client closed");
    }
}

/// Accepts one connection, checks the auth packet, answers with `reply_body`, and returns the
/// socket with what is left of the read buffer.
async fn accept_auth(listener: &TcpListener, reply_body: &[u8]) -> (TcpStream, BytesMut) {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut buf = BytesMut::new();
    let auth = read(&mut socket, &mut buf).await;
    assert_eq!((auth.op, auth.body.as_ref()), (op::AUTH, b"token".as_ref()));
    let reply = auth.reply(op::AUTH_REPLY, Bytes::copy_from_slice(reply_body));
    socket.write_all(&reply.to_bytes()).await.unwrap();
    (socket, buf)
}

#[tokio::test]
async fn batches_are_unpacked_and_heartbeat_replies_absorbed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (mut socket, mut buf) = accept_auth(&listener, b"").await;
        let heartbeat = read(&mut socket, &mut buf).await;
        assert_eq!(heartbeat.op, op::HEARTBEAT);
        let reply = heartbeat.reply(op::HEARTBEAT_REPLY, 7i32.to_be_bytes().to_vec());
        let mut batch = Batch::with_capacity(64);
        batch.push_packet(&Packet::new(1, 1000, 0, &b"one"[..]));
        batch.push_packet(&Packet::new(1, 1001, 0, &b"two"[..]));
        let mut out = reply.to_bytes().to_vec();
        out.extend_from_slice(&batch.finish());
        out.extend_from_slice(&Packet::new(1, 1000, 0, &b"three"[..]).to_bytes());
        socket.write_all(&out).await.unwrap();
        socket
    });
    let (mut connection, reply) = Connection::connect(&addr, b"token", heartbeat())
        .await
        .unwrap();
    assert!(reply.body.is_empty());
    let mut got = Vec::new();
    for _ in 0..3 {
        let push = connection.recv().await.unwrap();
        got.push((push.op, String::from_utf8(push.body.to_vec()).unwrap()));
    }
    assert_eq!(
        got,
        vec![
            (1000, "one".into()),
            (1001, "two".into()),
            (1000, "three".into())
        ]
    );
    assert_eq!(connection.online(), Some(7));
    drop(server.await.unwrap());
    assert!(matches!(connection.recv().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn a_refusal_carries_the_servers_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { accept_auth(&listener, br#"{"error":"expired"}"#).await });
    match Connection::connect(&addr, b"token", heartbeat()).await {
        Err(ClientError::AuthRefused(reason)) => assert!(reason.contains("expired"), "{reason}"),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, got a connection"),
    }
}

#[tokio::test]
async fn a_session_reconnects_to_the_next_address() {
    // The first address refuses connections (nothing listens there); the second serves twice.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        for n in 0..2 {
            let (mut socket, _) = accept_auth(&listener, b"").await;
            let push = Packet::new(1, 1000, 0, Bytes::from(format!("push {n}")));
            socket.write_all(&push.to_bytes()).await.unwrap();
            // Closing ends the connection; the session comes back for the next one.
        }
    });
    let config = SessionConfig {
        addresses: vec![dead_addr, addr.clone()],
        auth_body: Arc::new(|| b"token".to_vec()),
        heartbeat: heartbeat(),
        httpdns: None,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    let mut session = Session::start(config, 16);
    let mut pushes = Vec::new();
    let mut connected = Vec::new();
    while pushes.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), session.next())
            .await
            .expect("session events")
            .expect("session alive")
        {
            SessionEvent::Connected { address } => connected.push(address),
            SessionEvent::Push(push) => pushes.push(push.body),
            SessionEvent::Disconnected { .. }
            | SessionEvent::Resolved { .. }
            | SessionEvent::RoomRefused(_)
            | SessionEvent::Durable(_)
            | SessionEvent::Resume(_) => {}
        }
    }
    assert_eq!(pushes, vec![Bytes::from("push 0"), Bytes::from("push 1")]);
    assert_eq!(connected, vec![addr.clone(), addr]);
}

#[tokio::test]
async fn a_session_sends_upstream_and_rejoins_its_room_after_a_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for _ in 0..2 {
            let (mut socket, mut buf) = accept_auth(&listener, b"").await;
            loop {
                let packet = read(&mut socket, &mut buf).await;
                if packet.op == op::HEARTBEAT {
                    continue;
                }
                seen_tx.send((packet.op, packet.body.clone())).unwrap();
                if packet.op == op::CHANGE_ROOM {
                    let reply = packet.reply(op::CHANGE_ROOM_REPLY, packet.body.clone());
                    socket.write_all(&reply.to_bytes()).await.unwrap();
                    break; // close: the session must reconnect and join the room again
                }
            }
        }
    });
    let config = SessionConfig {
        addresses: vec![addr],
        auth_body: Arc::new(|| b"token".to_vec()),
        heartbeat: heartbeat(),
        httpdns: None,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    let session = Session::start(config, 16);
    session.send(op::SEND_MSG, Bytes::from("up"));
    session.change_room("live://9");
    let mut got = Vec::new();
    while got.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await;
        got.push(next.expect("server saw a packet").expect("server alive"));
    }
    assert_eq!(
        got,
        vec![
            (op::SEND_MSG, Bytes::from("up")),
            (op::CHANGE_ROOM, Bytes::from("live://9")),
            (op::CHANGE_ROOM, Bytes::from("live://9")),
        ]
    );
}

#[tokio::test]
async fn an_unanswered_heartbeat_ends_the_connection_and_shortens_the_next_period() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // The server authenticates, then reads but never answers a heartbeat.
    tokio::spawn(async move {
        let (mut socket, mut buf) = accept_auth(&listener, b"").await;
        loop {
            read(&mut socket, &mut buf).await;
        }
    });
    let learning = AdaptiveHeartbeat::new(
        Duration::from_millis(100),
        Duration::from_millis(400),
        Duration::from_millis(100),
    );
    let (mut connection, _) = Connection::connect(&addr, b"token", learning)
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), connection.recv())
        .await
        .expect("the connection ends by itself");
    assert!(matches!(ended, Err(ClientError::Timeout(_))), "{ended:?}");
    assert_eq!(connection.heartbeat().period(), Duration::from_millis(100));
}

/// Answers one HTTP request with `body` as JSON.
async fn serve_json_once(listener: TcpListener, body: String) {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut request = vec![0; 4096];
    let _ = socket.read(&mut request).await.unwrap();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await.unwrap();
}

#[tokio::test]
async fn a_session_connects_where_httpdns_says() {
    let edge = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge_port = edge.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut socket, _) = accept_auth(&edge, b"").await;
        let push = Packet::new(1, 1000, 0, Bytes::from("via httpdns"));
        socket.write_all(&push.to_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let dns = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dns_url = format!("http://{}/v1/dns", dns.local_addr().unwrap());
    let answer = format!(r#"{{"answer": {{"nodes": ["127.0.0.1"], "tcp_port": {edge_port}}}}}"#);
    tokio::spawn(serve_json_once(dns, answer));
    let config = SessionConfig {
        addresses: Vec::new(),
        httpdns: Some(dns_url),
        auth_body: Arc::new(|| b"token".to_vec()),
        heartbeat: heartbeat(),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    let mut session = Session::start(config, 16);
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), session.next())
            .await
            .expect("session events")
            .expect("session alive");
        match event {
            SessionEvent::Resolved { addresses } => seen.push(format!("resolved {addresses:?}")),
            SessionEvent::Connected { address } => seen.push(format!("connected {address}")),
            SessionEvent::Push(push) => {
                assert_eq!(push.body, Bytes::from("via httpdns"));
                break;
            }
            SessionEvent::Disconnected { error } => panic!("{error} after {seen:?}"),
            SessionEvent::RoomRefused(refused) => panic!("{refused} after {seen:?}"),
            other @ (SessionEvent::Durable(_) | SessionEvent::Resume(_)) => {
                panic!("a plain session reported {other:?}")
            }
        }
    }
    let addr = format!("127.0.0.1:{edge_port}");
    assert_eq!(
        seen,
        vec![
            format!("resolved [\"{addr}\"]"),
            format!("connected {addr}")
        ]
    );
}
