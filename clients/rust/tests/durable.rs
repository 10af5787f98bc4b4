//! Durable sessions against a scripted edge on a real socket that speaks rim's protocol extension
//! (bodies encoded with `rim_proto::durable`): the auth's `rim` field, resume from what was
//! processed, duplicates dropped, coalesced cumulative acks (never for rooms), "not resumed"
//! adopted, manual acks, room changes.

use bytes::{Bytes, BytesMut};
use rim_client::{
    AdaptiveHeartbeat, ClientError, Durable, DurablePush, MemoryPositions, Position, Positions,
    ResumeAnswer, ResumeOutcome, RoomPosition, Session, SessionConfig, SessionEvent, StreamKind,
};
use rim_proto::durable::{self, Ack, MessageId, NotResumedReason};
use rim_proto::{Packet, op, stream};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(10);

fn at(epoch: u64, seq: u64) -> Position {
    Position::new(epoch, seq).unwrap()
}

/// One side of a scripted connection.
struct Peer {
    socket: TcpStream,
    buf: BytesMut,
}

impl Peer {
    /// Accepts a connection, answers its auth, and returns it with the auth's `rim` field.
    async fn accept(listener: &TcpListener) -> (Peer, Value) {
        let (socket, _) = listener.accept().await.unwrap();
        let mut peer = Peer {
            socket,
            buf: BytesMut::new(),
        };
        let auth = peer.read().await;
        assert_eq!(auth.op, op::AUTH);
        let body: Value = serde_json::from_slice(&auth.body).unwrap();
        assert_eq!(body["mid"], 7, "goim's fields are kept: {body}");
        peer.write(auth.reply(op::AUTH_REPLY, Bytes::new())).await;
        (peer, body["rim"].clone())
    }

    async fn read(&mut self) -> Packet {
        loop {
            if let Some(packet) = stream::decode(&mut self.buf, 1 << 20).unwrap() {
                return packet;
            }
            let read = tokio::time::timeout(PATIENCE, self.socket.read_buf(&mut self.buf))
                .await
                .expect("the client sent something")
                .unwrap();
            assert!(read > 0, "client closed");
        }
    }

    async fn write(&mut self, packet: Packet) {
        self.socket.write_all(&packet.to_bytes()).await.unwrap();
    }

    async fn push(&mut self, kind: StreamKind, replay: bool, position: Position) {
        let push = DurablePush {
            kind,
            replay,
            operation: 1000,
            message_id: MessageId([position.seq as u8; 16]),
            position,
            body: Bytes::from(format!("{kind:?} {}", position.seq)),
        };
        self.write(push.to_packet()).await;
    }

    async fn resume(&mut self, kind: StreamKind, outcome: ResumeOutcome, position: Position) {
        let answer = ResumeAnswer {
            kind,
            outcome,
            position,
        };
        self.write(answer.to_packet()).await;
    }

    /// Reads acks (skipping heartbeats) until one acks `until`; returns all of them.
    async fn acks_until(&mut self, until: Position) -> Vec<Position> {
        let mut acks = Vec::new();
        loop {
            let packet = self.read().await;
            match packet.op {
                op::HEARTBEAT => continue,
                durable::ACK => {
                    let ack = Ack::decode(&packet.body).unwrap().position;
                    acks.push(ack);
                    if ack == until {
                        return acks;
                    }
                }
                other => panic!("unexpected op {other} from the client"),
            }
        }
    }

    /// Reads until a packet of `op` arrives (skipping heartbeats).
    async fn expect(&mut self, wanted: i32) -> Packet {
        loop {
            let packet = self.read().await;
            if packet.op != op::HEARTBEAT {
                assert_eq!(packet.op, wanted, "unexpected op from the client");
                return packet;
            }
        }
    }
}

fn config(addr: String, auth: Value) -> SessionConfig {
    let body = auth.to_string().into_bytes();
    SessionConfig {
        addresses: vec![addr],
        auth_body: Arc::new(move || body.clone()),
        heartbeat: AdaptiveHeartbeat::fixed(Duration::from_secs(30)),
        httpdns: None,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    }
}

/// What the app saw, in a compact form.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Push(StreamKind, u64, bool),
    Resumed(StreamKind, ResumeOutcome, Position),
    Connected,
    Disconnected,
}

/// The next event the test cares about (room confirmations and HTTPDNS are skipped).
async fn next(session: &mut Session) -> Seen {
    loop {
        let event = tokio::time::timeout(PATIENCE, session.next())
            .await
            .expect("a session event")
            .expect("session alive");
        return match event {
            SessionEvent::Durable(push) => Seen::Push(push.kind, push.position.seq, push.replay),
            SessionEvent::Resume(answer) => {
                Seen::Resumed(answer.kind, answer.outcome, answer.position)
            }
            SessionEvent::Connected { .. } => Seen::Connected,
            SessionEvent::Disconnected { .. } => Seen::Disconnected,
            SessionEvent::Push(_)
            | SessionEvent::Resolved { .. }
            | SessionEvent::RoomRefused(_) => {
                continue;
            }
        };
    }
}

/// Lets the session take the last event as processed (auto acks) without waiting for another.
async fn done_with_last(session: &mut Session) {
    let _ = tokio::time::timeout(Duration::from_millis(20), session.next()).await;
}

#[tokio::test]
async fn a_session_resumes_from_what_it_processed_drops_duplicates_and_acks_the_user_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (report, mut reports) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let (mut first, rim) = Peer::accept(&listener).await;
        report.send((rim, Vec::new())).unwrap();
        let user = StreamKind::User;
        first
            .resume(user, ResumeOutcome::Resumed(0), at(0, 10))
            .await;
        let room = StreamKind::Room;
        first
            .resume(room, ResumeOutcome::Resumed(0), at(5, 2))
            .await;
        first.push(user, false, at(0, 11)).await;
        first.push(user, false, at(0, 12)).await;
        first.push(user, false, at(0, 12)).await; // sent twice
        first.push(user, false, at(0, 11)).await;
        first.push(room, false, at(5, 3)).await;
        let acks = first.acks_until(at(0, 12)).await;
        report.send((Value::Null, acks)).unwrap();
        drop(first); // the connection is lost

        let (mut second, rim) = Peer::accept(&listener).await;
        report.send((rim, Vec::new())).unwrap();
        second.push(user, true, at(0, 12)).await; // replayed and already seen
        second.push(user, true, at(0, 13)).await;
        second
            .resume(user, ResumeOutcome::Resumed(2), at(0, 13))
            .await;
        second.push(room, true, at(5, 3)).await;
        second
            .resume(room, ResumeOutcome::Resumed(1), at(5, 3))
            .await;
        second.push(user, false, at(0, 14)).await;
        let acks = second.acks_until(at(0, 14)).await;
        report.send((Value::Null, acks)).unwrap();
        second
    });
    let store = Arc::new(MemoryPositions::default());
    let auth = json!({"mid": 7, "key": "phone-1", "room_id": "live://1", "accepts": [1000]});
    let durable = Durable::new().store(store.clone());
    let mut session = Session::start_durable(config(addr, auth), durable, 16);

    let mut seen = Vec::new();
    while seen.last() != Some(&Seen::Push(StreamKind::Room, 3, false)) {
        seen.push(next(&mut session).await);
    }
    let (first_rim, _) = reports.recv().await.unwrap();
    assert_eq!(
        first_rim,
        json!({"v": 1}),
        "a fresh client sends no position"
    );
    done_with_last(&mut session).await;
    let (_, acks) = reports.recv().await.unwrap();
    assert!(acks.windows(2).all(|pair| pair[0] < pair[1]), "{acks:?}");
    assert!(
        acks.iter().all(|ack| ack.epoch == 0),
        "room pushes are not acked: {acks:?}"
    );
    assert!(acks.len() <= 2, "coalesced: {acks:?}");

    while seen.last() != Some(&Seen::Push(StreamKind::User, 14, false)) {
        seen.push(next(&mut session).await);
    }
    let (second_rim, _) = reports.recv().await.unwrap();
    assert_eq!(
        second_rim,
        json!({"v": 1, "user": {"epoch": 0, "seq": 12}, "room": {"epoch": 5, "seq": 3}}),
        "the reconnect resumes from what was processed"
    );
    done_with_last(&mut session).await;
    let (_, acks) = reports.recv().await.unwrap();
    assert_eq!(acks.last(), Some(&at(0, 14)));

    use Seen::*;
    use StreamKind::{Room, User};
    assert_eq!(
        seen,
        vec![
            Connected,
            Resumed(User, ResumeOutcome::Resumed(0), at(0, 10)),
            Resumed(Room, ResumeOutcome::Resumed(0), at(5, 2)),
            Push(User, 11, false),
            Push(User, 12, false),
            Push(Room, 3, false),
            Disconnected,
            Connected,
            Push(User, 13, true),
            Resumed(User, ResumeOutcome::Resumed(2), at(0, 13)),
            Resumed(Room, ResumeOutcome::Resumed(1), at(5, 3)),
            Push(User, 14, false),
        ],
        "each push once, in order"
    );
    assert_eq!(
        store.get(),
        Positions {
            user: Some(at(0, 14)),
            room: Some(RoomPosition {
                room: "live://1".into(),
                position: at(5, 3)
            }),
        }
    );
    drop(server);
}

#[tokio::test]
async fn not_resumed_adopts_the_answered_head_and_tells_the_app() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (report, mut reports) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let (mut peer, rim) = Peer::accept(&listener).await;
        report.send((rim, Vec::new())).unwrap();
        let expired = ResumeOutcome::NotResumed(NotResumedReason::Expired);
        peer.resume(StreamKind::User, expired, at(0, 900)).await;
        peer.push(StreamKind::User, false, at(0, 900)).await; // at the head: not new
        peer.push(StreamKind::User, false, at(0, 901)).await;
        let acks = peer.acks_until(at(0, 901)).await;
        report.send((Value::Null, acks)).unwrap();
        // A malformed op-20 body ends the connection with a typed error.
        peer.write(Packet::new(1, durable::PUSH, 0, &b"\x01\x03"[..]))
            .await;
        peer
    });
    let saved = Positions {
        user: Some(at(0, 5)),
        room: None,
    };
    let store = Arc::new(MemoryPositions::new(saved));
    let auth = json!({"mid": 7, "key": "phone-1"});
    let durable = Durable::new().store(store.clone());
    let mut session = Session::start_durable(config(addr, auth), durable, 16);
    assert_eq!(next(&mut session).await, Seen::Connected);
    assert_eq!(
        next(&mut session).await,
        Seen::Resumed(
            StreamKind::User,
            ResumeOutcome::NotResumed(NotResumedReason::Expired),
            at(0, 900)
        )
    );
    assert_eq!(
        store.get().user,
        Some(at(0, 900)),
        "the head is adopted at once"
    );
    let (rim, _) = reports.recv().await.unwrap();
    assert_eq!(rim, json!({"v": 1, "user": {"epoch": 0, "seq": 5}}));
    assert_eq!(
        next(&mut session).await,
        Seen::Push(StreamKind::User, 901, false)
    );
    done_with_last(&mut session).await;
    let (_, acks) = reports.recv().await.unwrap();
    assert_eq!(acks.last(), Some(&at(0, 901)));
    assert_eq!(store.get().user, Some(at(0, 901)));
    match tokio::time::timeout(PATIENCE, session.next())
        .await
        .unwrap()
    {
        Some(SessionEvent::Disconnected {
            error: ClientError::Extension(_),
        }) => {}
        other => panic!("expected the malformed push to end the connection, got {other:?}"),
    }
    drop(server);
}

#[tokio::test]
async fn with_manual_acks_positions_move_only_when_the_app_acks() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (report, mut reports) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let (mut first, rim) = Peer::accept(&listener).await;
        report.send((rim, Vec::new())).unwrap();
        first.push(StreamKind::User, false, at(0, 1)).await;
        first.push(StreamKind::User, false, at(0, 2)).await;
        let acks = first.acks_until(at(0, 1)).await;
        report.send((Value::Null, acks)).unwrap();
        drop(first);
        let (mut second, rim) = Peer::accept(&listener).await;
        report.send((rim, Vec::new())).unwrap();
        second.push(StreamKind::User, true, at(0, 2)).await; // handed out already
        second.push(StreamKind::User, true, at(0, 3)).await;
        let acks = second.acks_until(at(0, 3)).await;
        report.send((Value::Null, acks)).unwrap();
        second
    });
    let store = Arc::new(MemoryPositions::default());
    let auth = json!({"mid": 7});
    let durable = Durable::new().store(store.clone()).manual_acks();
    let mut session = Session::start_durable(config(addr, auth), durable, 16);
    let mut pushes = Vec::new();
    while pushes.len() < 2 {
        if let Some(SessionEvent::Durable(push)) = session.next().await {
            pushes.push(push);
        }
    }
    reports.recv().await.unwrap();
    done_with_last(&mut session).await;
    assert_eq!(store.get().user, None, "nothing acked yet");
    session.ack(&pushes[0]);
    let (_, acks) = reports.recv().await.unwrap();
    assert_eq!(acks, vec![at(0, 1)]);
    assert_eq!(store.get().user, Some(at(0, 1)));

    let third = loop {
        match tokio::time::timeout(PATIENCE, session.next())
            .await
            .unwrap()
        {
            Some(SessionEvent::Durable(push)) => break push,
            Some(_) => {}
            None => panic!("session ended"),
        }
    };
    assert_eq!(
        (third.position, third.replay),
        (at(0, 3), true),
        "the replayed push 2 was handed out before: dropped"
    );
    let (rim, _) = reports.recv().await.unwrap();
    assert_eq!(rim, json!({"v": 1, "user": {"epoch": 0, "seq": 1}}));
    session.ack(&pushes[1]);
    session.ack(&third);
    let (_, acks) = reports.recv().await.unwrap();
    assert_eq!(acks.last(), Some(&at(0, 3)));
    drop(server);
}

#[tokio::test]
async fn a_room_change_starts_the_new_room_from_its_head_and_acks_are_coalesced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (report, mut reports) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let (mut first, _) = Peer::accept(&listener).await;
        first
            .resume(StreamKind::Room, ResumeOutcome::Resumed(0), at(5, 2))
            .await;
        first.push(StreamKind::Room, false, at(5, 3)).await;
        let change = first.expect(op::CHANGE_ROOM).await;
        assert_eq!(change.body.as_ref(), b"live://2");
        first
            .write(change.reply(op::CHANGE_ROOM_REPLY, change.body.clone()))
            .await;
        first
            .resume(StreamKind::Room, ResumeOutcome::Resumed(0), at(8, 100))
            .await;
        first.push(StreamKind::Room, false, at(8, 101)).await;
        // 500 user pushes at once: the acks are coalesced.
        let mut burst = Vec::new();
        for seq in 1..=500 {
            let push = DurablePush {
                kind: StreamKind::User,
                replay: false,
                operation: 1000,
                message_id: MessageId([1; 16]),
                position: at(0, seq),
                body: Bytes::new(),
            };
            burst.extend_from_slice(&push.to_packet().to_bytes());
        }
        first.socket.write_all(&burst).await.unwrap();
        let acks = first.acks_until(at(0, 500)).await;
        report.send((Value::Null, acks)).unwrap();
        drop(first);
        let (mut second, rim) = Peer::accept(&listener).await;
        report.send((rim, Vec::new())).unwrap();
        let change = second.expect(op::CHANGE_ROOM).await;
        report
            .send((json!(String::from_utf8_lossy(&change.body)), Vec::new()))
            .unwrap();
        second
    });
    let store = Arc::new(MemoryPositions::default());
    let auth = json!({"mid": 7, "room_id": "live://1"});
    let durable = Durable::new().store(store.clone());
    let mut session = Session::start_durable(config(addr, auth), durable, 1024);
    while next(&mut session).await != Seen::Push(StreamKind::Room, 3, false) {}
    session.change_room("live://2");
    while next(&mut session).await != Seen::Push(StreamKind::Room, 101, false) {}
    let mut last = 0;
    while last < 500 {
        if let Seen::Push(StreamKind::User, seq, _) = next(&mut session).await {
            assert_eq!(seq, last + 1);
            last = seq;
        }
    }
    done_with_last(&mut session).await;
    assert_eq!(
        store.get().room,
        Some(RoomPosition {
            room: "live://2".into(),
            position: at(8, 101)
        })
    );
    let (_, acks) = reports.recv().await.unwrap();
    assert_eq!(acks.last(), Some(&at(0, 500)));
    assert!(acks.len() <= 500 / 64 + 2, "{} acks: {acks:?}", acks.len());

    // The reconnect authenticates into live://1 (its auth body's room): the position of live://2 is
    // not sent for it; the session then moves to live://2 again.
    let (rim, _) = reports.recv().await.unwrap();
    assert_eq!(rim, json!({"v": 1, "user": {"epoch": 0, "seq": 500}}));
    let (rejoined, _) = reports.recv().await.unwrap();
    assert_eq!(rejoined, json!("live://2"));
    drop(server);
}
