//! Room changes are authorized by the identity, and room ids and watch sets are bounded, over real
//! sockets on TCP and WebSocket: a refused op 12 gets an op-13 JSON error and the connection stays
//! in its old room; an op 14 past the bound gets an op-15 JSON error and the set is unchanged.

mod common;

use common::{Client, Kind, TestEdge, key_push, room_push, start, start_with, tokens};
use rim_edge::EdgeHooks;
use rim_edge::config::AuthMode;
use rim_proto::limits::{MAX_ROOM_LEN, MAX_WATCH_OPS};
use rim_proto::op;
use serde_json::{Value, json};

both_transports!(
    rooms_outside_the_grant_are_refused_with_a_reason,
    a_token_without_rooms_keeps_its_own_room,
    too_long_room_ids_are_refused,
    the_watch_set_is_bounded,
);

/// A client authenticated with a token for `key` in `room` granting `rooms` (no claim when `None`).
async fn client_with(
    edge: &TestEdge,
    kind: Kind,
    key: &str,
    room: &str,
    rooms: Option<Value>,
) -> Client {
    let mut claims = tokens::claims(key, room, &[1000], 3600);
    match rooms {
        Some(rooms) => claims["rooms"] = rooms,
        None => {
            claims.as_object_mut().unwrap().remove("rooms");
        }
    }
    let mut client = edge.connect(kind).await;
    client
        .auth_ok(&tokens::token_body(&tokens::hs256(&claims)))
        .await;
    client
}

/// Sends op 12 for `room` and returns the op-13 reply body.
async fn change_room(client: &mut Client, room: &str) -> Vec<u8> {
    let seq = client.send_op(op::CHANGE_ROOM, room.as_bytes()).await;
    let reply = client.reply_to(seq).await;
    assert_eq!(reply.op, op::CHANGE_ROOM_REPLY);
    reply.body.to_vec()
}

/// Asserts `body` is a JSON refusal with `reason` and returns it.
fn refusal(body: &[u8], reason: &str) -> Value {
    let error: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not a JSON refusal: {:?}", String::from_utf8_lossy(body)));
    assert_eq!(error["reason"], reason, "{error}");
    assert!(
        error["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{error}"
    );
    error
}

async fn rooms_outside_the_grant_are_refused_with_a_reason(kind: Kind) {
    let edge = start(|_| {}).await;
    let grant = json!(["live://1000", "chat://team-*"]);
    let mut client = client_with(&edge, kind, "k", "live://1", Some(grant)).await;
    assert_eq!(
        change_room(&mut client, "live://1000").await,
        b"live://1000"
    );
    assert_eq!(
        change_room(&mut client, "chat://team-a").await,
        b"chat://team-a"
    );
    let body = change_room(&mut client, "live://2").await;
    let error = refusal(&body, "room_forbidden");
    assert_eq!(error["room"], "live://2");
    assert!(
        error["error"].as_str().unwrap().contains("not granted"),
        "{error}"
    );
    // Still in its old room, connection open: room pushes there reach it, the other room's do not.
    assert_eq!(edge.handle.room_online("chat://team-a"), 1);
    assert_eq!(edge.handle.room_online("live://2"), 0);
    assert_eq!(
        edge.push(vec![room_push("a", 1000, b"still here", "chat://team-a")])
            .await,
        [1]
    );
    assert_eq!(client.recv().await.body, &b"still here"[..]);
    assert_eq!(client.heartbeat().await, 1);
    // Its own room from the token stays enterable.
    assert_eq!(change_room(&mut client, "live://1").await, b"live://1");
    assert_eq!(edge.handle.room_online("live://1"), 1);
}

async fn a_token_without_rooms_keeps_its_own_room(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut client = client_with(&edge, kind, "k", "live://7", None).await;
    refusal(
        &change_room(&mut client, "live://8").await,
        "room_forbidden",
    );
    assert_eq!(edge.handle.room_online("live://7"), 1);
    assert_eq!(
        change_room(&mut client, "").await,
        b"",
        "leaving is allowed"
    );
    assert_eq!(edge.handle.room_online("live://7"), 0);
    assert_eq!(change_room(&mut client, "live://7").await, b"live://7");
    assert_eq!(edge.handle.room_online("live://7"), 1);
    edge.assert_unaffected(&mut [&mut client]).await;
}

async fn too_long_room_ids_are_refused(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut client = client_with(&edge, kind, "k", "live://1", Some(json!(["*"]))).await;
    let longest = format!("live://{}", "x".repeat(MAX_ROOM_LEN - "live://".len()));
    assert_eq!(change_room(&mut client, &longest).await, longest.as_bytes());
    let too_long = format!("{longest}x");
    let error = refusal(&change_room(&mut client, &too_long).await, "room_too_long");
    assert!(error.get("room").is_none(), "a too-long room is not echoed");
    assert_eq!(edge.handle.room_online(&longest), 1);
    assert_eq!(edge.handle.room_counts().len(), 1);
    // A token naming a too-long room does not authenticate.
    let claims = tokens::claims("long", &too_long, &[], 3600);
    let mut other = edge.connect(kind).await;
    let (error, _) = other
        .auth_refused(&tokens::token_body(&tokens::hs256(&claims)))
        .await;
    assert!(error.contains("longer than 256"), "{error}");
    edge.assert_unaffected(&mut [&mut client]).await;
}

/// `n` distinct ops from `first`, as a goim watch-set body.
fn op_list(first: i32, n: usize) -> Vec<u8> {
    (first..first + n as i32)
        .map(|op| op.to_string())
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

async fn the_watch_set_is_bounded(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut client = edge.client(kind, "k", "", &[1000]).await;
    let half = MAX_WATCH_OPS / 2;
    let first = op_list(2000, half);
    let seq = client.send_op(op::SUB, &first).await;
    assert_eq!(client.reply_to(seq).await.body, first);
    // 1 + 512 + 512 ops would be one too many: refused whole.
    let second = op_list(2000 + half as i32, half);
    let seq = client.send_op(op::SUB, &second).await;
    let reply = client.reply_to(seq).await;
    assert_eq!(reply.op, op::SUB_REPLY);
    let error = refusal(&reply.body, "watch_set_too_large");
    assert!(error["error"].as_str().unwrap().contains("1025"), "{error}");
    let refused_op = 2000 + half as i32;
    assert_eq!(
        edge.push(vec![key_push("a", refused_op, b"no", &["k"])])
            .await,
        [0],
        "the refused ops were not added"
    );
    // Up to the bound exactly fits: 1 + 512 + 511 ops.
    let fits = op_list(2000 + half as i32, half - 1);
    let seq = client.send_op(op::SUB, &fits).await;
    assert_eq!(client.reply_to(seq).await.body, fits);
    assert_eq!(
        edge.push(vec![key_push("b", refused_op, b"yes", &["k"])])
            .await,
        [1]
    );
    assert_eq!(client.recv().await.body, &b"yes"[..]);
    client.heartbeat().await;
}

#[tokio::test]
async fn a_token_with_too_many_accepts_does_not_authenticate() {
    let edge = start(|c| c.edge_max_client_body = 64 * 1024).await;
    let accepts: Vec<i32> = (1000..1000 + MAX_WATCH_OPS as i32 + 1).collect();
    let claims = tokens::claims("many", "", &accepts, 3600);
    let mut client = edge.connect(Kind::Tcp).await;
    let (error, _) = client
        .auth_refused(&tokens::token_body(&tokens::hs256(&claims)))
        .await;
    assert!(error.contains("more than 1024"), "{error}");
    let accepts: Vec<i32> = (1000..1000 + MAX_WATCH_OPS as i32).collect();
    let claims = tokens::claims("enough", "", &accepts, 3600);
    let mut client = edge.connect(Kind::Tcp).await;
    client
        .auth_ok(&tokens::token_body(&tokens::hs256(&claims)))
        .await;
}

#[tokio::test]
async fn insecure_mode_allows_every_room_as_goim_did() {
    let edge = start_with(AuthMode::Insecure, EdgeHooks::default(), |_| {}).await;
    let mut client = edge.connect(Kind::Tcp).await;
    client
        .auth_ok(&tokens::goim_body(1, "k", "live://1", &[]))
        .await;
    assert_eq!(
        change_room(&mut client, "any://where").await,
        b"any://where"
    );
    assert_eq!(edge.handle.room_online("any://where"), 1);
}
