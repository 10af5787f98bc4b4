//! rim's durable delivery between a real edge and the real control plane on PostgreSQL: resume
//! after auth (paged, in order, then the op-21 answer, then live pushes, none twice even when live
//! pushes race the replay), the not-resumed reasons, the room stream and room changes, "unavailable"
//! when control cannot be reached, and acks and `written` receipts reaching the store.
//!
//! The inbox is filled through the store (the same PostgreSQL database control reads), and live
//! pushes are executed on the edge in-process with the positions control would have given them, so
//! each test controls exactly what raced what.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    GoimClient, PATIENCE, SECRET, control_config, edge_credentials, eventually, link_config,
    start_control_with, unused_addr,
};
use rim_bus::memory::MemoryBus;
use rim_control::{ControlConfig, RunningControl};
use rim_edge::config::AuthMode;
use rim_edge::{Edge, EdgeConfig, EdgeHandle, EdgeHooks};
use rim_edgelink::{DurableReporter, LinkConfig, NodeCredentials, SessionReporter};
use rim_proto::durable::{
    Ack, DurablePush, MessageId, NotResumedReason, PUSH, Position, RESUME, ResumeAnswer,
    ResumeOutcome, StreamKind,
};
use rim_proto::schema::{EdgeKeys, EdgePush, StreamPosition, edge_push::Target};
use rim_proto::{Packet, op};
use rim_store::Store;
use rim_store::inbox::{Inbox, ReceiptState, ReceiptTarget, RoomEntry, UserEntry};
use serde_json::json;

/// The user of every test client.
const MID: i64 = 42;

/// Control on a fresh PostgreSQL database, and the inbox it reads.
struct Durable {
    inbox: Arc<dyn Inbox>,
    control: RunningControl,
}

impl Durable {
    async fn start() -> Self {
        let database = rim_testkit::postgres::TestPostgres::shared().fresh_database();
        let store: Arc<dyn Store> = Arc::new(
            rim_store::postgres::PostgresStore::connect(&database, Default::default())
                .await
                .unwrap(),
        );
        let config = ControlConfig {
            control_inbox_max_per_user: 2_000,
            ..control_config()
        };
        let inbox = store.inbox(config.inbox_settings()).unwrap();
        let control =
            start_control_with(config, store.clone(), Arc::new(MemoryBus::new(100))).await;
        Self { inbox, control }
    }

    /// Stores `count` user pushes for [`MID`] (bodies `n<i>`); returns their ids and positions.
    async fn append_user(&self, count: usize) -> Vec<(MessageId, Position)> {
        let mut stored = Vec::new();
        for chunk in (0..count).collect::<Vec<_>>().chunks(1_000) {
            let entries: Vec<UserEntry> = chunk
                .iter()
                .map(|i| UserEntry {
                    mid: MID,
                    key: None,
                    message_id: new_id(),
                    operation: 1000,
                    body: format!("n{i}").into_bytes(),
                })
                .collect();
            let positions = self.inbox.append_user(&entries, now_ms()).await.unwrap();
            stored.extend(entries.iter().map(|e| e.message_id).zip(positions));
        }
        stored
    }

    async fn append_room(&self, room: &str, count: usize) -> Vec<(MessageId, Position)> {
        let entries: Vec<RoomEntry> = (0..count)
            .map(|i| RoomEntry {
                room: room.into(),
                message_id: new_id(),
                operation: 1001,
                body: format!("r{i}").into_bytes(),
            })
            .collect();
        let positions = self.inbox.append_room(&entries, now_ms()).await.unwrap();
        entries
            .iter()
            .map(|e| e.message_id)
            .zip(positions)
            .collect()
    }

    /// An edge whose durable link reports to `control_url` (this control when `None`).
    async fn edge(&self, node_id: &str, control_url: Option<String>) -> TestEdge {
        let link = link_config(self.control.local_addr(), node_id);
        TestEdge::start(link, control_url).await
    }
}

/// An edge with the session reporter and the durable reporter of the real link.
struct TestEdge {
    handle: EdgeHandle,
    reporter: Arc<SessionReporter>,
    durable: Arc<DurableReporter>,
    _credentials: Arc<NodeCredentials>,
}

impl TestEdge {
    async fn start(link: LinkConfig, durable_url: Option<String>) -> Self {
        let mut config = EdgeConfig::local().unwrap();
        config.edge_auth = AuthMode::Insecure;
        let verifier = rim_edge::auth::from_config(&config).unwrap();
        let credentials = edge_credentials(&link);
        credentials.ready().await;
        let durable_link = LinkConfig {
            edge_control_url: durable_url.unwrap_or_else(|| link.edge_control_url.clone()),
            ..link.clone()
        };
        let durable = DurableReporter::start(&durable_link, &credentials).unwrap();
        let reporter = SessionReporter::new(link);
        let hooks = EdgeHooks {
            events: reporter.clone(),
            push_authority: Some(credentials.clone()),
            durable: Some(durable.clone()),
            ..EdgeHooks::default()
        };
        let handle = Edge::start(config, SECRET.into(), verifier, hooks)
            .await
            .unwrap();
        reporter.start(&credentials, handle.addrs()).unwrap();
        Self {
            handle,
            reporter,
            durable,
            _credentials: credentials,
        }
    }

    /// A rim-aware client of [`MID`] with `key`, in `room`, with the `rim` field `rim`.
    async fn client(&self, key: &str, room: &str, rim: serde_json::Value) -> GoimClient {
        let mut client = GoimClient::connect(self.handle.addrs().tcp).await;
        let body = json!({"mid": MID, "key": key, "room_id": room, "accepts": [1000], "rim": rim});
        let reply = client.auth(body.to_string().as_bytes()).await;
        assert!(reply.body.is_empty(), "auth refused: {:?}", reply.body);
        client
    }

    async fn stop(self) {
        self.reporter.drain().await;
        self.handle.shutdown().await;
        self.reporter.shutdown(PATIENCE).await;
        assert!(
            self.durable.shutdown(PATIENCE).await,
            "acks or receipts left unsent"
        );
    }
}

fn new_id() -> MessageId {
    MessageId(rand::random())
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn position(value: Position) -> serde_json::Value {
    json!({"epoch": value.epoch, "seq": value.seq})
}

/// A live user push of stored push `(id, position)` to `key`, as the job would hand it over.
fn live_user_push(key: &str, (id, at): (MessageId, Position), body: &str) -> EdgePush {
    EdgePush {
        message_id: id.to_string(),
        operation: 1000,
        body: body.as_bytes().to_vec().into(),
        record: 0,
        position: Some(StreamPosition {
            stream: 1,
            epoch: at.epoch,
            seq: at.seq,
        }),
        receipt_target: format!("mid:{MID}"),
        target: Some(Target::Keys(EdgeKeys {
            keys: vec![key.into()],
        })),
    }
}

/// What a rim-aware client read: durable pushes and op-21 answers, in order.
#[derive(Debug)]
enum Seen {
    Push(DurablePush),
    Answer(ResumeAnswer),
}

async fn next(client: &mut GoimClient) -> Seen {
    let packet: Packet = client.recv().await;
    assert_eq!(packet.seq, 0, "{packet:?}");
    match packet.op {
        PUSH => Seen::Push(DurablePush::decode(packet.body).unwrap()),
        RESUME => Seen::Answer(ResumeAnswer::decode(&packet.body).unwrap()),
        other => panic!("unexpected op {other}"),
    }
}

async fn expect_answer(client: &mut GoimClient) -> ResumeAnswer {
    match next(client).await {
        Seen::Answer(answer) => answer,
        other => panic!("expected an op-21 answer, got {other:?}"),
    }
}

/// A proxy to `control` that holds each answer for `delay` before passing it on: a resume that
/// surely takes long enough for live pushes to race it.
async fn slow_proxy(control: std::net::SocketAddr, delay: Duration) -> String {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    let forward = move |State(control): State<std::net::SocketAddr>,
                        uri: Uri,
                        headers: HeaderMap,
                        body: Bytes| async move {
        let mut request = reqwest::Client::new()
            .post(format!("http://{control}{}", uri.path()))
            .body(body);
        if let Some(bearer) = headers.get("authorization") {
            request = request.header("authorization", bearer.as_bytes());
        }
        let answer = request.send().await.unwrap();
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
        let body = answer.bytes().await.unwrap();
        tokio::time::sleep(delay).await;
        (status, body)
    };
    let router = axum::Router::new()
        .fallback(axum::routing::post(forward))
        .with_state(control);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_replays_in_order_then_answers_then_goes_live_with_nothing_twice() {
    let durable = Durable::start().await;
    let stored = durable.append_user(1_500).await;
    let slow = slow_proxy(durable.control.local_addr(), Duration::from_millis(300)).await;
    let edge = durable.edge("edge-resume", Some(slow)).await;
    let from = stored[99].1; // the client processed seq 100
    let mut client = edge
        .client("phone", "", json!({"v": 1, "user": position(from)}))
        .await;
    // Live pushes race the replay: copies of stored ones (already in the replay) and one stored
    // after the client asked.
    for stored in &stored[1_497..] {
        let reached = edge
            .handle
            .push(&live_user_push("phone", *stored, "live copy"))
            .await;
        assert_eq!(reached, 1, "held in the outbox while the resume runs");
    }
    let late = durable.append_user(1).await[0];
    edge.handle
        .push(&live_user_push("phone", late, "late"))
        .await;
    let mut seqs = Vec::new();
    let mut replayed = 0;
    let answer = loop {
        match next(&mut client).await {
            Seen::Push(push) => {
                assert!(push.replay, "nothing live before the answer");
                assert_eq!(push.kind, StreamKind::User);
                seqs.push(push.position.seq);
                replayed += 1;
            }
            Seen::Answer(answer) => break answer,
        }
    };
    assert!(replayed >= 1_400, "two pages at least: {replayed}");
    assert_eq!(
        answer.outcome,
        ResumeOutcome::Resumed(replayed),
        "the count of replayed pushes"
    );
    while seqs.last() != Some(&late.1.seq) {
        match next(&mut client).await {
            Seen::Push(push) => {
                assert!(!push.replay, "live after the answer");
                seqs.push(push.position.seq);
            }
            other => panic!("{other:?}"),
        }
    }
    let expected: Vec<u64> = (from.seq + 1..=late.1.seq).collect();
    assert_eq!(seqs, expected, "every push once, in order");
    assert!(client_silent(&mut client).await, "and nothing after them");
    assert!(answer.position.seq >= seqs[replayed as usize - 1]);
    edge.stop().await;
    durable.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_that_cannot_be_resumed_get_their_reason_and_the_head() {
    let durable = Durable::start().await;
    // 2,100 pushes with 2,000 kept per user: the first 100 are gone.
    let stored = durable.append_user(2_100).await;
    let head = stored.last().unwrap().1;
    let edge = durable.edge("edge-reasons", None).await;
    let ask = |rim: serde_json::Value| {
        let edge = &edge;
        async move {
            let key = format!("k{}", rand::random::<u64>());
            let mut client = edge.client(&key, "", rim).await;
            let answer = expect_answer(&mut client).await;
            assert!(client_silent(&mut client).await, "nothing replayed");
            answer
        }
    };
    let expired = ask(json!({"v": 1, "user": {"epoch": head.epoch, "seq": 10}})).await;
    let ahead = ask(json!({"v": 1, "user": {"epoch": head.epoch, "seq": head.seq + 5}})).await;
    let fresh = ask(json!({"v": 1})).await;
    for (answer, outcome) in [
        (
            expired,
            ResumeOutcome::NotResumed(NotResumedReason::Expired),
        ),
        (ahead, ResumeOutcome::NotResumed(NotResumedReason::Ahead)),
        (fresh, ResumeOutcome::Resumed(0)),
    ] {
        assert_eq!(
            answer,
            ResumeAnswer {
                kind: StreamKind::User,
                outcome,
                position: head,
            }
        );
    }
    let reset = durable.inbox.reset_user(MID, now_ms()).await.unwrap();
    let changed = ask(json!({"v": 1, "user": position(head)})).await;
    assert_eq!(
        (changed.outcome, changed.position),
        (
            ResumeOutcome::NotResumed(NotResumedReason::EpochChanged),
            reset
        )
    );
    edge.stop().await;
    durable.control.shutdown().await.unwrap();
}

/// True when nothing arrives for a moment.
async fn client_silent(client: &mut GoimClient) -> bool {
    tokio::time::timeout(Duration::from_millis(150), client.recv())
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_resume_within_their_window_and_a_room_change_answers_the_new_head() {
    let durable = Durable::start().await;
    let stored = durable.append_user(3).await;
    let room = durable.append_room("live://9", 5).await;
    let other = durable.append_room("live://8", 2).await;
    let edge = durable.edge("edge-rooms", None).await;
    let rim = json!({"v": 1, "user": position(stored[2].1), "room": position(room[1].1)});
    let mut client = edge.client("tablet", "live://9", rim).await;
    let user = expect_answer(&mut client).await;
    assert_eq!(
        (user.kind, user.outcome, user.position),
        (StreamKind::User, ResumeOutcome::Resumed(0), stored[2].1)
    );
    for expected in &room[2..] {
        let Seen::Push(push) = next(&mut client).await else {
            panic!("a replayed room push")
        };
        assert_eq!(
            (push.kind, push.replay, push.position, push.message_id),
            (StreamKind::Room, true, expected.1, expected.0)
        );
    }
    let answer = expect_answer(&mut client).await;
    assert_eq!(
        (answer.kind, answer.outcome, answer.position),
        (StreamKind::Room, ResumeOutcome::Resumed(3), room[4].1)
    );
    client.send(op::CHANGE_ROOM, b"live://8").await;
    let reply = client.recv().await;
    assert_eq!(
        (reply.op, &reply.body[..]),
        (op::CHANGE_ROOM_REPLY, &b"live://8"[..])
    );
    let changed = expect_answer(&mut client).await;
    assert_eq!(
        (changed.kind, changed.outcome, changed.position),
        (StreamKind::Room, ResumeOutcome::Resumed(0), other[1].1)
    );
    edge.stop().await;
    durable.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_control_plane_answers_unavailable_at_the_clients_position() {
    let durable = Durable::start().await;
    let nowhere = format!("http://{}", unused_addr());
    let edge = durable.edge("edge-nowhere", Some(nowhere)).await;
    let at = Position { epoch: 0, seq: 17 };
    let mut client = edge
        .client("lost", "", json!({"v": 1, "user": position(at)}))
        .await;
    assert_eq!(
        expect_answer(&mut client).await,
        ResumeAnswer {
            kind: StreamKind::User,
            outcome: ResumeOutcome::NotResumed(NotResumedReason::Unavailable),
            position: at,
        }
    );
    edge.stop().await;
    durable.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_and_written_receipts_reach_the_store() {
    let durable = Durable::start().await;
    let stored = durable.append_user(3).await;
    let edge = durable.edge("edge-receipts", None).await;
    let mut client = edge
        .client("watch", "", json!({"v": 1, "user": position(stored[0].1)}))
        .await;
    for _ in 0..2 {
        assert!(matches!(next(&mut client).await, Seen::Push(push) if push.replay));
    }
    expect_answer(&mut client).await;
    let live = durable.append_user(1).await[0];
    edge.handle
        .push(&live_user_push("watch", live, "live"))
        .await;
    let Seen::Push(push) = next(&mut client).await else {
        panic!("the live push")
    };
    assert_eq!((push.position, push.replay), (live.1, false));
    let target = ReceiptTarget::Mid(MID);
    let has = |id: MessageId, state: ReceiptState| {
        let inbox = durable.inbox.clone();
        let target = target.clone();
        async move {
            let receipts = inbox.receipts(id).await.unwrap();
            receipts
                .iter()
                .any(|r| r.target == target && r.state == state)
                .then_some(())
        }
    };
    eventually("a written receipt", || has(live.0, ReceiptState::Written)).await;
    let ack = Ack { position: live.1 };
    client.send(rim_proto::durable::ACK, &ack.encode()).await;
    for (id, _) in stored.iter().chain([&live]) {
        eventually("an acked receipt", || has(*id, ReceiptState::Acked)).await;
    }
    assert!(client_silent(&mut client).await, "acks are not answered");
    edge.stop().await;
    durable.control.shutdown().await.unwrap();
}
