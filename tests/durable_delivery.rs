//! Durable delivery end to end, through the production path: real `rim control` on PostgreSQL and
//! the Kafka-protocol broker, a real `rim job` per region, real edges in two regions, and a
//! rim-aware client written at the byte level ([`cluster::rim_wire`]), so every assertion is about
//! what the edge put on the wire.
//!
//! - A client away while 1,000 pushes are sent to its user reconnects to an edge of the other
//!   region with its last position and receives all 1,000, replayed, in order, none twice, then the
//!   "resumed 1000" answer, then live pushes; presence follows it from region to region, and the
//!   pushes' receipts say what it did (offline and stored while away, written by the replay, acked;
//!   live ones written).
//! - A room connection resumes the room's pushes it missed within the room window.
//! - A position whose pushes retention removed gets "not resumed: expired" (and one ahead of the
//!   stream "not resumed: ahead"), with the head to continue from, before any push; the removed
//!   pushes' receipts say `expired`.

mod cluster;

use cluster::rim_wire::{Frame, WireClient};
use cluster::{Cluster, OPERATION, PATIENCE};
use rim_proto::durable::{
    DurablePush, MessageId, NotResumedReason, Position, ResumeAnswer, ResumeOutcome, StreamKind,
};
use serde_json::{Value, json};
use std::time::Duration;

/// Pushes sent while the client is away.
const AWAY: usize = 1_000;

/// How long a test waits for "nothing more arrives" before judging.
const QUIET: Duration = Duration::from_millis(700);

/// A rim-aware auth body: the cluster's signed token for `mid`/`key`/`room`, with the `rim` field.
fn auth(mid: i64, key: &str, room: &str, rim: Value) -> Value {
    let mut body: Value =
        serde_json::from_slice(&Cluster::token(mid, key, room)).expect("the token auth body");
    body["rim"] = rim;
    body
}

/// A JSON position.
fn at(position: Position) -> Value {
    json!({"epoch": position.epoch, "seq": position.seq})
}

/// Connects a rim-aware client to `edge` and checks that the edge accepted its auth.
async fn connect(cluster: &Cluster, edge: &str, auth: &Value) -> WireClient {
    let (client, reply) = WireClient::connect(&cluster.tcp_of(edge), auth)
        .await
        .unwrap_or_else(|error| panic!("connecting to {edge}: {error}\n{}", cluster.logs()));
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("error"),
        "auth refused by {edge}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    client
}

/// Reads frames until the answer of `kind` arrives: the durable pushes before it, and the answer.
/// Any other answer met on the way is returned too.
async fn until_answer(
    cluster: &Cluster,
    client: &mut WireClient,
    kind: StreamKind,
) -> (Vec<DurablePush>, ResumeAnswer, Vec<ResumeAnswer>) {
    let mut pushes = Vec::new();
    let mut others = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.next(left).await {
            Ok(Some(Frame::Push(push))) => pushes.push(push),
            Ok(Some(Frame::Resume(answer))) if answer.kind == kind => {
                return (pushes, answer, others);
            }
            Ok(Some(Frame::Resume(answer))) => others.push(answer),
            Ok(Some(Frame::Plain(packet))) => panic!(
                "a plain packet (op {}) on a rim-aware connection while waiting for the {kind:?} answer",
                packet.op
            ),
            Ok(None) => panic!(
                "no {kind:?} answer within {PATIENCE:?} ({} pushes came)\n{}",
                pushes.len(),
                cluster.logs()
            ),
            Err(error) => panic!(
                "waiting for the {kind:?} answer: {error}\n{}",
                cluster.logs()
            ),
        }
    }
}

/// The next `n` durable pushes (failing on anything else, or on silence).
async fn pushes(cluster: &Cluster, client: &mut WireClient, n: usize) -> Vec<DurablePush> {
    let mut got = Vec::new();
    while got.len() < n {
        match client.expect(PATIENCE, "a durable push").await {
            Frame::Push(push) => got.push(push),
            other => panic!("expected a durable push, got {other:?}\n{}", cluster.logs()),
        }
    }
    got
}

/// Fails if anything arrives within [`QUIET`].
async fn nothing_more(client: &mut WireClient, what: &str) {
    match client.next(QUIET).await {
        Ok(None) => {}
        Ok(Some(frame)) => panic!("{what}: unexpected {frame:?}"),
        Err(error) => panic!("{what}: {error}"),
    }
}

/// Pushes `body` to user `mid`; answers the push's message id.
async fn push_user(cluster: &Cluster, mid: i64, body: &str) -> MessageId {
    let (status, answer) = cluster
        .v1(
            "/v1/push/users",
            json!({"mids": [mid], "operation": OPERATION, "body_text": body}),
        )
        .await;
    assert_eq!(status, 202, "push {body}: {answer}");
    message_id(&answer)
}

/// Pushes `body` to `room`; answers the push's message id.
async fn push_room(cluster: &Cluster, room: &str, body: &str) -> MessageId {
    let (status, answer) = cluster
        .v1(
            "/v1/push/room",
            json!({"room": room, "operation": OPERATION, "body_text": body}),
        )
        .await;
    assert_eq!(status, 202, "push {body}: {answer}");
    message_id(&answer)
}

fn message_id(answer: &Value) -> MessageId {
    answer["message_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("an answer without a message id: {answer}"))
}

/// Checks pushes against what was sent: stream, replay flag, consecutive positions from `first`
/// in `epoch`, the ids and bodies in order.
fn check_run(
    got: &[DurablePush],
    kind: StreamKind,
    replay: bool,
    epoch: u64,
    first: u64,
    sent: &[(MessageId, String)],
) {
    assert_eq!(
        got.len(),
        sent.len(),
        "count of {kind:?} pushes (replay {replay})"
    );
    for (index, (push, (id, body))) in got.iter().zip(sent).enumerate() {
        let what = format!("{kind:?} push {index} (replay {replay})");
        assert_eq!(push.kind, kind, "{what}");
        assert_eq!(push.replay, replay, "{what}");
        assert_eq!(push.operation, OPERATION, "{what}");
        assert_eq!(
            push.position,
            Position {
                epoch,
                seq: first + index as u64
            },
            "{what}: out of order, missing or twice"
        );
        assert_eq!(push.message_id, *id, "{what}");
        assert_eq!(String::from_utf8_lossy(&push.body), *body, "{what}");
    }
}

/// A session as presence lists it: key, node, region.
type SessionRow = (String, String, String);

/// The online users with their sessions, and the offline ones.
type Presence = (Vec<(i64, Vec<SessionRow>)>, Vec<i64>);

/// `/v1/presence?mids=` as `mid → [(key, node, region)]` for the online ones, and the offline list.
async fn presence(cluster: &Cluster, mids: &str) -> Presence {
    let answer = cluster
        .get(&format!("/v1/presence?mids={mids}"))
        .await
        .unwrap_or_else(|| panic!("no presence answer\n{}", cluster.logs()));
    let online = answer["online"]
        .as_array()
        .expect("online list")
        .iter()
        .map(|user| {
            let sessions = user["sessions"]
                .as_array()
                .expect("sessions")
                .iter()
                .map(|s| {
                    let field = |name: &str| s[name].as_str().unwrap_or_default().to_owned();
                    (field("key"), field("node"), field("region"))
                })
                .collect();
            (user["mid"].as_i64().expect("mid"), sessions)
        })
        .collect();
    let offline = answer["offline"]
        .as_array()
        .expect("offline list")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    (online, offline)
}

/// Waits until `/v1/presence?mids=` answers `expected`.
async fn wait_presence(cluster: &Cluster, mids: &str, expected: Presence) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = presence(cluster, mids).await;
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence of {mids} is {now:?}, expected {expected:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn session(key: &str, node: &str, region: &str) -> SessionRow {
    (key.into(), node.into(), region.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_for_1000_pushes_resumes_them_on_another_region_then_goes_live() {
    let cluster = Cluster::two_regions().await;
    let (mid, key) = (900, "phone");

    // First start: no position. The user stream is answered "resumed 0" at its head.
    let mut client = connect(&cluster, "east-1", &auth(mid, key, "", json!({"v": 1}))).await;
    let (replayed, answer, others) = until_answer(&cluster, &mut client, StreamKind::User).await;
    assert!(
        replayed.is_empty() && others.is_empty(),
        "{replayed:?} {others:?}"
    );
    assert_eq!(answer.outcome, ResumeOutcome::Resumed(0));
    let epoch = answer.position.epoch;
    let start = answer.position.seq;
    wait_presence(
        &cluster,
        "900,901",
        (vec![(mid, vec![session(key, "east-1", "east")])], vec![901]),
    )
    .await;

    // Live: op 20, not replayed, the next positions, acked.
    let mut before = Vec::new();
    for n in 0..3 {
        let body = format!("before:{n}");
        before.push((push_user(&cluster, mid, &body).await, body));
    }
    let live = pushes(&cluster, &mut client, before.len()).await;
    check_run(&live, StreamKind::User, false, epoch, start + 1, &before);
    let processed = live.last().expect("live pushes").position;
    client.ack(processed).await.expect("ack");
    drop(client);
    wait_presence(&cluster, "900", (vec![], vec![mid])).await;

    // Away: 1,000 pushes, each stored before it is answered.
    let pushing = std::time::Instant::now();
    let mut away = Vec::with_capacity(AWAY);
    for n in 0..AWAY {
        let body = format!("away:{n}");
        away.push((push_user(&cluster, mid, &body).await, body));
    }

    // Back, on the other region's edge, from the last processed position: the 1,000 replayed in
    // order, none twice, then the answer, then live pushes.
    println!(
        "{AWAY} pushes stored and published one by one in {:?}",
        pushing.elapsed()
    );
    let rim = json!({"v": 1, "user": at(processed)});
    let resuming = std::time::Instant::now();
    let mut client = connect(&cluster, "west-1", &auth(mid, key, "", rim)).await;
    let (replayed, answer, others) = until_answer(&cluster, &mut client, StreamKind::User).await;
    println!(
        "connect, auth and resume of {} pushes on west-1 in {:?}",
        replayed.len(),
        resuming.elapsed()
    );
    assert!(others.is_empty(), "{others:?}");
    check_run(
        &replayed,
        StreamKind::User,
        true,
        epoch,
        processed.seq + 1,
        &away,
    );
    let head = Position {
        epoch,
        seq: processed.seq + AWAY as u64,
    };
    assert_eq!(answer.outcome, ResumeOutcome::Resumed(AWAY as u32));
    assert_eq!(answer.position, head);
    wait_presence(
        &cluster,
        "900",
        (vec![(mid, vec![session(key, "west-1", "west")])], vec![]),
    )
    .await;
    // The client acks what it processed: the replayed pushes become acked.
    client.ack(head).await.expect("ack");
    // Receipts say what the client did: pushed while it was away (offline, stored), written to its
    // socket by the replay, acked once replayed (checked before more pushes, which would let count
    // retention expire the oldest).
    let target = format!("mid:{mid}");
    for (id, _) in [&away[0], &away[AWAY - 1]] {
        let states = wait_receipts(&cluster, id, &target, &["written", "acked"]).await;
        for state in ["stored", "offline", "written", "acked"] {
            assert!(states.contains(&state.to_owned()), "{id}: {states:?}");
        }
    }
    let mut after = Vec::new();
    for n in 0..5 {
        let body = format!("after:{n}");
        after.push((push_user(&cluster, mid, &body).await, body));
    }
    let live = pushes(&cluster, &mut client, after.len()).await;
    check_run(&live, StreamKind::User, false, epoch, head.seq + 1, &after);
    nothing_more(&mut client, "after the live pushes").await;

    // The live ones: accepted for a user online, stored, written to its socket, not acked.
    let (id, _) = &after[after.len() - 1];
    let states = wait_receipts(&cluster, id, &target, &["written"]).await;
    for state in ["accepted", "stored", "written"] {
        assert!(states.contains(&state.to_owned()), "{id}: {states:?}");
    }
    assert!(!states.contains(&"acked".to_owned()), "{id}: {states:?}");
    assert!(!states.contains(&"offline".to_owned()), "{id}: {states:?}");
}

/// Waits until push `id` has every state of `wanted` for `target` (`GET /v1/pushes/{id}`);
/// answers all its states for that target.
async fn wait_receipts(
    cluster: &Cluster,
    id: &MessageId,
    target: &str,
    wanted: &[&str],
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = cluster.get(&format!("/v1/pushes/{id}")).await;
        let states: Vec<String> = answer
            .as_ref()
            .and_then(|answer| answer["targets"].as_array())
            .and_then(|targets| targets.iter().find(|t| t["target"] == target))
            .and_then(|t| t["states"].as_object())
            .map(|states| states.keys().cloned().collect())
            .unwrap_or_default();
        if wanted
            .iter()
            .all(|state| states.contains(&(*state).to_owned()))
        {
            return states;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "push {id} never reached {wanted:?} for {target}: {answer:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_connection_resumes_what_the_room_got_while_it_was_away() {
    let cluster = Cluster::two_regions().await;
    let (mid, key, room) = (910, "room-watcher", "live://durable");
    let mut client = connect(&cluster, "east-2", &auth(mid, key, room, json!({"v": 1}))).await;
    let (_, room_answer, others) = until_answer(&cluster, &mut client, StreamKind::Room).await;
    let user_answer = match others.as_slice() {
        [user] => *user,
        [] => {
            until_answer(&cluster, &mut client, StreamKind::User)
                .await
                .1
        }
        more => panic!("more answers than streams: {more:?}"),
    };
    assert_eq!(user_answer.kind, StreamKind::User);
    assert_eq!(room_answer.outcome, ResumeOutcome::Resumed(0));

    let mut before = Vec::new();
    for n in 0..2 {
        let body = format!("room-before:{n}");
        before.push((push_room(&cluster, room, &body).await, body));
    }
    let live = pushes(&cluster, &mut client, before.len()).await;
    let room_epoch = live[0].position.epoch;
    let first = live[0].position.seq;
    check_run(&live, StreamKind::Room, false, room_epoch, first, &before);
    let processed = live.last().expect("room pushes").position;
    drop(client);
    wait_presence(&cluster, "910", (vec![], vec![mid])).await;

    let mut away = Vec::new();
    for n in 0..20 {
        let body = format!("room-away:{n}");
        away.push((push_room(&cluster, room, &body).await, body));
    }
    let rim = json!({"v": 1, "user": at(user_answer.position), "room": at(processed)});
    let mut client = connect(&cluster, "west-1", &auth(mid, key, room, rim)).await;
    let (replayed, answer, _) = until_answer(&cluster, &mut client, StreamKind::Room).await;
    check_run(
        &replayed,
        StreamKind::Room,
        true,
        room_epoch,
        processed.seq + 1,
        &away,
    );
    assert_eq!(answer.outcome, ResumeOutcome::Resumed(away.len() as u32));
    assert_eq!(
        answer.position,
        Position {
            epoch: room_epoch,
            seq: processed.seq + away.len() as u64
        }
    );
    // Live again: the next room push follows the replay.
    let next = vec![(
        push_room(&cluster, room, "room-after").await,
        "room-after".to_owned(),
    )];
    let mut live = Vec::new();
    while live.is_empty() {
        match client.expect(PATIENCE, "the live room push").await {
            Frame::Push(push) => live.push(push),
            // The user stream's answer, if it came after the room's.
            Frame::Resume(answer) if answer.kind == StreamKind::User => {}
            other => panic!("expected the live room push, got {other:?}"),
        }
    }
    check_run(
        &live,
        StreamKind::Room,
        false,
        room_epoch,
        answer.position.seq + 1,
        &next,
    );
    nothing_more(&mut client, "after the live room push").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_retention_removed_is_not_resumed_and_says_why() {
    let cluster = Cluster::start_with(
        &["east"],
        &[("east-1", "east"), ("east-2", "east")],
        &["--control-inbox-max-per-user=10"],
    )
    .await;
    let (mid, key) = (920, "tablet");
    let mut client = connect(&cluster, "east-1", &auth(mid, key, "", json!({"v": 1}))).await;
    let (_, answer, _) = until_answer(&cluster, &mut client, StreamKind::User).await;
    let epoch = answer.position.epoch;
    let sent = vec![(push_user(&cluster, mid, "first").await, "first".to_owned())];
    let live = pushes(&cluster, &mut client, 1).await;
    check_run(
        &live,
        StreamKind::User,
        false,
        epoch,
        answer.position.seq + 1,
        &sent,
    );
    let processed = live[0].position;
    drop(client);
    wait_presence(&cluster, "920", (vec![], vec![mid])).await;
    let mut gone = Vec::new();
    for n in 0..30 {
        gone.push(push_user(&cluster, mid, &format!("gone:{n}")).await);
    }
    // The oldest ones were pushed out by the count before anyone acked them: expired.
    let target = format!("mid:{mid}");
    let states = wait_receipts(&cluster, &gone[0], &target, &["expired"]).await;
    for state in ["stored", "offline", "expired"] {
        assert!(states.contains(&state.to_owned()), "{states:?}");
    }
    assert!(!states.contains(&"acked".to_owned()), "{states:?}");
    let head = Position {
        epoch,
        seq: processed.seq + 30,
    };

    // Retention kept the last 10: the position's successors are gone. Not resumed, nothing
    // replayed, the head to continue from; then live.
    let rim = json!({"v": 1, "user": at(processed)});
    let mut client = connect(&cluster, "east-2", &auth(mid, key, "", rim)).await;
    let (replayed, answer, _) = until_answer(&cluster, &mut client, StreamKind::User).await;
    assert!(replayed.is_empty(), "{} pushes replayed", replayed.len());
    assert_eq!(
        answer.outcome,
        ResumeOutcome::NotResumed(NotResumedReason::Expired)
    );
    assert_eq!(answer.position, head);
    let sent = vec![(push_user(&cluster, mid, "live").await, "live".to_owned())];
    let live = pushes(&cluster, &mut client, 1).await;
    check_run(&live, StreamKind::User, false, epoch, head.seq + 1, &sent);
    drop(client);
    wait_presence(&cluster, "920", (vec![], vec![mid])).await;

    // A position never handed out: not resumed, ahead.
    let ahead = Position {
        epoch,
        seq: head.seq + 1_000,
    };
    let rim = json!({"v": 1, "user": at(ahead)});
    let mut client = connect(&cluster, "east-1", &auth(mid, key, "", rim)).await;
    let (replayed, answer, _) = until_answer(&cluster, &mut client, StreamKind::User).await;
    assert!(replayed.is_empty());
    assert_eq!(
        answer.outcome,
        ResumeOutcome::NotResumed(NotResumedReason::Ahead)
    );
    assert_eq!(answer.position.seq, head.seq + 1);
}
