//! One goim v2 connection over TCP, as a client holds it.
//!
//! [`Connection::connect`] opens the socket, sends the auth packet (op 7) and waits for the reply
//! (op 8): an empty body means accepted; a body means refused (rim sends a JSON reason, then
//! closes). After that, [`Connection::recv`] yields what the server sends: pushes (op-9 batches are
//! unpacked into their packets, so a caller never sees op 9), replies to room changes and
//! subscriptions, and the online count from heartbeat replies. Heartbeats are sent from inside
//! `recv` on the [`AdaptiveHeartbeat`]'s period, so a connection stays alive as long as its owner
//! keeps reading, the way goim's clients do it; a heartbeat still unanswered when the next one is
//! due ends the connection (and teaches the heartbeat a shorter period).
//!
//! Room changes are matched to their replies in order (the server answers op 12s in the order it
//! gets them). An op-13 reply that echoes the room asked for is a confirmation and is passed on as
//! a [`Push`]; any other body is rim's refusal (the connection stays in its old room), and `recv`
//! returns it as [`ClientError::RoomRefused`] without ending the connection.
//!
//! A connection that opted in to rim's durable delivery (its auth body made by
//! [`crate::durable::opt_in`]) receives op-20 pushes and op-21 resume answers as [`Push`]es with
//! those ops (decode them with [`rim_proto::durable`]) and acks with [`Connection::ack`]; a
//! durable [`Session`](crate::Session) does all of that itself.

use crate::error::{ClientError, RoomRefused};
use crate::heartbeat::AdaptiveHeartbeat;
use bytes::{Bytes, BytesMut};
use rim_proto::durable::{self, Ack, Position};
use rim_proto::message::Packets;
use rim_proto::{Packet, op, stream};
use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// goim's protocol version, sent in every packet header.
const PROTOCOL_VERSION: i16 = 1;

/// Largest packet body the client accepts from a server: a client-side sanity bound (servers set
/// their own push limits, 1 MiB by default on rim), large enough for any op-9 batch of them.
const MAX_BODY: usize = 16 << 20;

/// How long the server may take to answer the auth packet.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server said to the auth packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthReply {
    /// The reply's body (empty from goim and rim when accepted).
    pub body: Bytes,
}

/// Something the server sent after auth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The packet's operation: a business op (>= 1000) for pushes, or a protocol reply (13, 15, 17, 4).
    pub op: i32,
    /// The body, unchanged.
    pub body: Bytes,
}

/// An authenticated connection.
pub struct Connection {
    socket: TcpStream,
    read_buf: BytesMut,
    /// Received and not yet returned by `recv`: pushes and refused room changes, in arrival order.
    pending: VecDeque<Result<Push, RoomRefused>>,
    heartbeat: AdaptiveHeartbeat,
    /// When the next heartbeat is due.
    next_beat: Pin<Box<Sleep>>,
    /// A heartbeat was sent and its reply has not arrived.
    unanswered: bool,
    seq: i32,
    online: Option<i32>,
    /// Rooms asked for (op 12) whose op-13 reply has not arrived yet, oldest first.
    unanswered_rooms: VecDeque<String>,
}

impl Connection {
    /// Connects to `addr`, authenticates with `auth_body` (a token, or goim's auth JSON) and
    /// returns the connection once the server accepted; heartbeats follow `heartbeat`.
    pub async fn connect(
        addr: &str,
        auth_body: &[u8],
        heartbeat: AdaptiveHeartbeat,
    ) -> Result<(Connection, AuthReply), ClientError> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let next_beat = Box::pin(tokio::time::sleep(heartbeat.period()));
        let mut connection = Connection {
            socket,
            read_buf: BytesMut::new(),
            pending: VecDeque::new(),
            heartbeat,
            next_beat,
            unanswered: false,
            seq: 0,
            online: None,
            unanswered_rooms: VecDeque::new(),
        };
        connection
            .send(op::AUTH, Bytes::copy_from_slice(auth_body))
            .await?;
        let reply = tokio::time::timeout(
            AUTH_TIMEOUT,
            read_packet(&mut connection.socket, &mut connection.read_buf),
        )
        .await
        .map_err(|_| ClientError::Timeout("auth reply"))??;
        if reply.op != op::AUTH_REPLY {
            return Err(ClientError::AuthRefused(format!(
                "expected an auth reply (op 8), got op {}",
                reply.op
            )));
        }
        if !reply.body.is_empty() {
            return Err(ClientError::AuthRefused(
                String::from_utf8_lossy(&reply.body).into_owned(),
            ));
        }
        // goim's clients send a first heartbeat right after auth; so does this one.
        connection.beat().await?;
        Ok((connection, AuthReply { body: reply.body }))
    }

    /// The next push or reply from the server; sends heartbeats while waiting.
    /// [`ClientError::RoomRefused`] reports a refused room change and leaves the connection open
    /// (keep reading); every other error means the connection is over.
    pub async fn recv(&mut self) -> Result<Push, ClientError> {
        loop {
            if let Some(received) = self.pending.pop_front() {
                return received.map_err(ClientError::from);
            }
            // Reading is cancel-safe: bytes read stay in `read_buf` when the heartbeat wins.
            tokio::select! {
                packet = read_packet(&mut self.socket, &mut self.read_buf) => self.accept(packet?)?,
                () = &mut self.next_beat => {
                    if self.unanswered {
                        self.heartbeat.failed();
                        return Err(ClientError::Timeout("heartbeat reply"));
                    }
                    self.beat().await?;
                }
            }
        }
    }

    /// What the heartbeat has learnt so far (hand it to the next connection after this one ends).
    pub fn heartbeat(&self) -> &AdaptiveHeartbeat {
        &self.heartbeat
    }

    /// The room's online count from the last heartbeat reply, if one arrived.
    pub fn online(&self) -> Option<i32> {
        self.online
    }

    /// Asks to move to `room` (`type://id`; empty leaves the room). The server's answer arrives
    /// through [`Connection::recv`]: op 13 echoing `room` when it moved the connection, or
    /// [`ClientError::RoomRefused`] when it refused (the connection stays in its old room).
    pub async fn change_room(&mut self, room: &str) -> Result<(), ClientError> {
        self.send(op::CHANGE_ROOM, Bytes::copy_from_slice(room.as_bytes()))
            .await?;
        self.unanswered_rooms.push_back(room.to_owned());
        Ok(())
    }

    /// Rooms asked for whose answer has not arrived, oldest first (a session asks for them again
    /// on its next connection when this one ends).
    pub fn unanswered_rooms(&self) -> impl Iterator<Item = &str> {
        self.unanswered_rooms.iter().map(String::as_str)
    }

    /// Adds operations to the watch set (confirmed as op 15).
    pub async fn subscribe(&mut self, ops: &[i32]) -> Result<(), ClientError> {
        self.send(op::SUB, op_list(ops)).await
    }

    /// Removes operations from the watch set (confirmed as op 17).
    pub async fn unsubscribe(&mut self, ops: &[i32]) -> Result<(), ClientError> {
        self.send(op::UNSUB, op_list(ops)).await
    }

    /// Sends an upstream message (op 4, or a business op) with `body`.
    pub async fn send_message(&mut self, operation: i32, body: Bytes) -> Result<(), ClientError> {
        self.send(operation, body).await
    }

    /// Acks (op 22) every push of the user stream through `position`, on a connection that opted
    /// in to durable delivery ([`crate::durable::opt_in`]). Cumulative and not answered.
    pub async fn ack(&mut self, position: Position) -> Result<(), ClientError> {
        self.send(durable::ACK, Ack { position }.encode()).await
    }

    /// Queues the packets of a server packet: op-9 bodies unpacked, heartbeat replies absorbed.
    fn accept(&mut self, packet: Packet) -> Result<(), ClientError> {
        match packet.op {
            op::RAW => {
                for inner in Packets::new(packet.body, MAX_BODY) {
                    self.accept(inner?)?;
                }
            }
            op::HEARTBEAT_REPLY => {
                if self.unanswered {
                    self.unanswered = false;
                    self.heartbeat.answered();
                }
                if let Ok(count) = <[u8; 4]>::try_from(packet.body.as_ref()) {
                    self.online = Some(i32::from_be_bytes(count));
                }
            }
            op::CHANGE_ROOM_REPLY => {
                // An op 13 nobody asked for (goim sends none) is passed on as it came.
                let received = match self.unanswered_rooms.pop_front() {
                    Some(room) if packet.body != room.as_bytes() => {
                        Err(RoomRefused::parse(&room, &packet.body))
                    }
                    _ => Ok(Push {
                        op: op::CHANGE_ROOM_REPLY,
                        body: packet.body,
                    }),
                };
                self.pending.push_back(received);
            }
            operation => self.pending.push_back(Ok(Push {
                op: operation,
                body: packet.body,
            })),
        }
        Ok(())
    }

    /// Sends a heartbeat and schedules the next one.
    async fn beat(&mut self) -> Result<(), ClientError> {
        self.send(op::HEARTBEAT, Bytes::new()).await?;
        self.unanswered = true;
        let due = Instant::now() + self.heartbeat.period();
        self.next_beat.as_mut().reset(due);
        Ok(())
    }

    async fn send(&mut self, operation: i32, body: Bytes) -> Result<(), ClientError> {
        self.seq = self.seq.wrapping_add(1);
        let packet = Packet::new(PROTOCOL_VERSION, operation, self.seq, body);
        self.socket.write_all(&packet.to_bytes()).await?;
        Ok(())
    }
}

/// Reads until `buf` holds a whole packet and takes it off.
async fn read_packet(socket: &mut TcpStream, buf: &mut BytesMut) -> Result<Packet, ClientError> {
    loop {
        if let Some(packet) = stream::decode(buf, MAX_BODY)? {
            return Ok(packet);
        }
        let wanted = stream::missing(buf, MAX_BODY).max(4096);
        buf.reserve(wanted);
        if socket.read_buf(buf).await? == 0 {
            return Err(ClientError::Closed);
        }
    }
}

/// goim's watch-set body: comma-separated decimal ops.
fn op_list(ops: &[i32]) -> Bytes {
    let text: Vec<String> = ops.iter().map(i32::to_string).collect();
    Bytes::from(text.join(","))
}
