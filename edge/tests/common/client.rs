//! A goim test client over TCP, TLS, WebSocket or WSS, with strict checks of what the edge sends.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use rim_proto::message::{self, Packets};
use rim_proto::{Packet, op};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::PATIENCE;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

enum Wire {
    Stream { io: BoxIo, buf: BytesMut },
    Ws(Box<WebSocketStream<BoxIo>>),
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// EOF or reset on a byte stream.
    Stream,
    /// A WebSocket close frame with code and reason.
    Ws(u16, String),
    /// The WebSocket ended without a close frame.
    WsNoFrame,
}

pub struct Client {
    wire: Wire,
    pending: VecDeque<Packet>,
    seq: i32,
}

impl Client {
    fn new(wire: Wire) -> Self {
        Self {
            wire,
            pending: VecDeque::new(),
            seq: 1,
        }
    }

    pub async fn tcp(addr: SocketAddr) -> Self {
        Self::stream(Box::new(TcpStream::connect(addr).await.unwrap()))
    }

    pub fn stream(io: BoxIo) -> Self {
        Self::new(Wire::Stream {
            io,
            buf: BytesMut::new(),
        })
    }

    pub async fn ws(addr: SocketAddr, path: &str) -> Self {
        let io: BoxIo = Box::new(TcpStream::connect(addr).await.unwrap());
        Self::ws_over(io, &format!("ws://{addr}{path}")).await
    }

    pub async fn ws_over(io: BoxIo, url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::client_async(url, io).await.unwrap();
        Self::new(Wire::Ws(Box::new(ws)))
    }

    /// TLS to `addr`, trusting `cert_der` for the name "localhost".
    pub async fn tls_io(addr: SocketAddr, cert_der: &[u8]) -> BoxIo {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert_der.to_vec().into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        Box::new(connector.connect(name, tcp).await.unwrap())
    }

    pub fn is_ws(&self) -> bool {
        matches!(self.wire, Wire::Ws(_))
    }

    /// Sends raw bytes: on a stream as they are, on WebSocket as one binary message.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.wire {
            Wire::Stream { io, .. } => io.write_all(bytes).await.unwrap(),
            Wire::Ws(ws) => ws.send(Message::binary(bytes.to_vec())).await.unwrap(),
        }
    }

    /// Sends a WebSocket ping and waits for the matching pong.
    pub async fn ping(&mut self, payload: &[u8]) {
        let Wire::Ws(ws) = &mut self.wire else {
            panic!("not a WebSocket client")
        };
        ws.send(Message::Ping(payload.to_vec().into()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(PATIENCE, ws.next())
                .await
                .expect("no pong in time")
                .expect("connection ended")
                .unwrap();
            if let Message::Pong(data) = message {
                assert_eq!(&data[..], payload);
                return;
            }
        }
    }

    /// Sends a WebSocket text message (goim packets must be binary).
    pub async fn send_text(&mut self, text: &str) {
        let Wire::Ws(ws) = &mut self.wire else {
            panic!("not a WebSocket client")
        };
        ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send(&mut self, packet: &Packet) {
        self.send_raw(&packet.to_bytes()).await;
    }

    /// Sends a request with the next sequence number and returns that number.
    pub async fn send_op(&mut self, op_code: i32, body: &[u8]) -> i32 {
        self.seq += 1;
        let seq = self.seq;
        self.send(&Packet::new(1, op_code, seq, body.to_vec()))
            .await;
        seq
    }

    /// Next raw WebSocket binary message.
    pub async fn recv_message(&mut self) -> Bytes {
        let Wire::Ws(ws) = &mut self.wire else {
            panic!("not a WebSocket client")
        };
        loop {
            let message = tokio::time::timeout(PATIENCE, ws.next())
                .await
                .expect("no message in time")
                .expect("connection ended")
                .unwrap();
            match message {
                Message::Binary(bytes) => return bytes,
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Exactly `n` raw bytes from a stream connection.
    pub async fn recv_bytes(&mut self, n: usize) -> Vec<u8> {
        let Wire::Stream { io, buf } = &mut self.wire else {
            panic!("not a stream client")
        };
        while buf.len() < n {
            let read = tokio::time::timeout(PATIENCE, io.read_buf(buf))
                .await
                .expect("no bytes in time")
                .unwrap();
            assert!(read > 0, "connection ended");
        }
        buf.split_to(n).to_vec()
    }

    /// Next packet; WebSocket op-9 batches are unpacked (their inner packets come one by one).
    pub async fn recv(&mut self) -> Packet {
        loop {
            if let Some(packet) = self.pending.pop_front() {
                return packet;
            }
            match &mut self.wire {
                Wire::Ws(_) => {
                    let bytes = self.recv_message().await;
                    let packet = message::decode(bytes, usize::MAX).unwrap();
                    if packet.op == op::RAW {
                        assert_eq!((packet.ver, packet.seq), (1, 0));
                        for inner in Packets::new(packet.body, usize::MAX) {
                            self.pending.push_back(inner.unwrap());
                        }
                    } else {
                        self.pending.push_back(packet);
                    }
                }
                Wire::Stream { io, buf } => {
                    if let Some(packet) = rim_proto::stream::decode(buf, usize::MAX).unwrap() {
                        return packet;
                    }
                    let read = tokio::time::timeout(PATIENCE, io.read_buf(buf))
                        .await
                        .expect("no packet in time")
                        .unwrap();
                    assert!(read > 0, "connection ended");
                }
            }
        }
    }

    /// Sends op 7 with `body` and returns the op-8 reply.
    pub async fn auth(&mut self, body: &[u8]) -> Packet {
        self.send(&Packet::new(1, op::AUTH, 1, body.to_vec())).await;
        let reply = self.recv().await;
        assert_eq!((reply.op, reply.seq), (op::AUTH_REPLY, 1));
        reply
    }

    /// Authenticates and asserts success (empty op-8 body).
    pub async fn auth_ok(&mut self, body: &[u8]) {
        let reply = self.auth(body).await;
        assert!(
            reply.body.is_empty(),
            "auth refused: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }

    /// Authenticates, expects a refusal with a JSON error body, then the close; returns the error text
    /// and how the connection ended.
    pub async fn auth_refused(&mut self, body: &[u8]) -> (String, Ended) {
        let reply = self.auth(body).await;
        let error: serde_json::Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|_| panic!("auth reply body is not JSON: {:?}", reply.body));
        let text = error["error"].as_str().expect("error field").to_owned();
        (text, self.ended().await)
    }

    /// Sends a heartbeat and returns the online count of the reply (skipping pushes queued before it).
    pub async fn heartbeat(&mut self) -> i32 {
        let seq = self.send_op(op::HEARTBEAT, b"").await;
        let reply = self.reply_to(seq).await;
        assert_eq!(reply.op, op::HEARTBEAT_REPLY);
        i32::from_be_bytes(reply.body[..].try_into().expect("4-byte online count"))
    }

    /// Next packet with sequence `seq` that is not a push, skipping pushes (seq 0).
    pub async fn reply_to(&mut self, seq: i32) -> Packet {
        loop {
            let packet = self.recv().await;
            if packet.seq == seq {
                return packet;
            }
            assert_eq!(packet.seq, 0, "unexpected packet {packet:?}");
        }
    }

    /// Waits for the server to end the connection, discarding what arrives before.
    pub async fn ended(&mut self) -> Ended {
        tokio::time::timeout(PATIENCE, self.ended_inner())
            .await
            .expect("connection not closed in time")
    }

    async fn ended_inner(&mut self) -> Ended {
        match &mut self.wire {
            Wire::Stream { io, .. } => {
                let mut sink = [0u8; 1024];
                while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
                Ended::Stream
            }
            Wire::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => {
                        return Ended::Ws(frame.code.into(), frame.reason.to_string());
                    }
                    Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                        return Ended::WsNoFrame;
                    }
                    Some(Ok(_)) => {}
                }
            },
        }
    }

    /// True if nothing arrives within `ms` milliseconds (pushes filtered out stay out).
    pub async fn silent_for(&mut self, ms: u64) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        let wait = std::time::Duration::from_millis(ms);
        match &mut self.wire {
            Wire::Stream { io, buf } => {
                buf.is_empty() && tokio::time::timeout(wait, io.read_buf(buf)).await.is_err()
            }
            Wire::Ws(ws) => tokio::time::timeout(wait, ws.next()).await.is_err(),
        }
    }
}
