//! A rim-aware client written at the byte level over TCP, for tests of the protocol extension
//! (`docs/rim-protocol-extension.md`): it sends the goim auth packet (op 7) with a `rim` field,
//! and reports every packet the edge sends as it came (durable pushes, resume answers, plain
//! packets), with nothing of the real client library's deduplication or bookkeeping in between,
//! so a test sees exactly what the edge put on the wire. Packets inside a goim batch (op 9) are
//! reported one by one.

use bytes::BytesMut;
use rim_proto::durable::{self, Ack, DurablePush, Position, ResumeAnswer};
use rim_proto::op;
use rim_proto::packet::Packet;
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest packet body the client accepts (a batch of pushes).
const MAX_BODY: usize = 16 << 20;

/// One packet from the edge.
#[derive(Debug, Clone)]
pub enum Frame {
    /// Op 20.
    Push(DurablePush),
    /// Op 21.
    Resume(ResumeAnswer),
    /// Anything else (a plain goim push, a room-change reply, ...).
    Plain(Packet),
}

/// A raw rim-aware TCP connection.
pub struct WireClient {
    stream: TcpStream,
    buf: BytesMut,
    pending: VecDeque<Packet>,
    seq: i32,
}

impl WireClient {
    /// Connects to `addr` and authenticates with `auth` (a JSON auth body); answers the client and
    /// the auth reply (op 8), or what went wrong.
    pub async fn connect(addr: &str, auth: &Value) -> Result<(WireClient, Packet), String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let mut client = WireClient {
            stream,
            buf: BytesMut::new(),
            pending: VecDeque::new(),
            seq: 0,
        };
        client.send(op::AUTH, auth.to_string().into_bytes()).await?;
        let reply = client
            .packet(Duration::from_secs(30))
            .await?
            .ok_or_else(|| "no auth reply within 30 s".to_owned())?;
        if reply.op != op::AUTH_REPLY {
            return Err(format!("expected the auth reply, got {reply:?}"));
        }
        Ok((client, reply))
    }

    /// Sends one packet.
    async fn send(&mut self, op: i32, body: Vec<u8>) -> Result<(), String> {
        self.seq += 1;
        let packet = Packet::new(rim_proto::packet::VERSION, op, self.seq, body);
        self.stream
            .write_all(&packet.to_bytes())
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Acks the user stream through `position` (op 22).
    pub async fn ack(&mut self, position: Position) -> Result<(), String> {
        self.seq += 1;
        let packet = Ack { position }.to_packet(self.seq);
        self.stream
            .write_all(&packet.to_bytes())
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Sends a goim heartbeat (op 2).
    pub async fn heartbeat(&mut self) -> Result<(), String> {
        self.send(op::HEARTBEAT, Vec::new()).await
    }

    /// The next packet within `within` (`None` when nothing came), batches unpacked.
    async fn packet(&mut self, within: Duration) -> Result<Option<Packet>, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(packet) = self.pending.pop_front() {
                return Ok(Some(packet));
            }
            match rim_proto::stream::decode(&mut self.buf, MAX_BODY) {
                Ok(Some(packet)) if packet.op == op::RAW => {
                    let mut inner = BytesMut::from(&packet.body[..]);
                    while let Some(packet) = rim_proto::stream::decode(&mut inner, MAX_BODY)
                        .map_err(|e| format!("malformed batch: {e}"))?
                    {
                        self.pending.push_back(packet);
                    }
                    continue;
                }
                Ok(Some(packet)) => return Ok(Some(packet)),
                Ok(None) => {}
                Err(e) => return Err(format!("malformed packet: {e}")),
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err("the edge closed the connection".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("read: {e}")),
            }
        }
    }

    /// The next frame within `within`, heartbeat replies skipped; `None` when nothing came.
    pub async fn next(&mut self, within: Duration) -> Result<Option<Frame>, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(packet) = self.packet(left).await? else {
                return Ok(None);
            };
            return Ok(Some(match packet.op {
                op::HEARTBEAT_REPLY => continue,
                durable::PUSH => Frame::Push(
                    DurablePush::decode(packet.body).map_err(|e| format!("op 20: {e}"))?,
                ),
                durable::RESUME => Frame::Resume(
                    ResumeAnswer::decode(&packet.body).map_err(|e| format!("op 21: {e}"))?,
                ),
                _ => Frame::Plain(packet),
            }));
        }
    }

    /// The next frame, failing the test with `what` when none comes within `within`.
    pub async fn expect(&mut self, within: Duration, what: &str) -> Frame {
        match self.next(within).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("{what}: nothing arrived within {within:?}"),
            Err(error) => panic!("{what}: {error}"),
        }
    }
}
