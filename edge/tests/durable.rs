//! rim's durable-delivery extension at the edge, over real sockets, without a control plane: plain
//! goim clients see today's bytes for durable pushes, rim-aware ones get op 20 with the right header
//! and an op-21 answer after auth ("not resumed: unavailable" at their own position when the edge
//! has no link to control), pushes at or below that position are not sent, a malformed `rim` field
//! refuses the auth, and acks are taken silently while a malformed one closes only its connection.
//! The resume itself against the real control plane is tested in rim-edgelink (`tests/durable.rs`).

mod common;

use common::{Kind, TestEdge, hex, key_push, room_push, start, tokens};
use rim_proto::durable::{
    Ack, DurablePush, NotResumedReason, PUSH, Position, RESUME, ResumeAnswer, ResumeOutcome,
    StreamKind,
};
use rim_proto::schema::{EdgePush, StreamPosition};
use serde_json::json;

const ID: &str = "0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c4d";

both_transports!(
    plain_clients_get_todays_bytes_for_durable_pushes,
    rim_aware_clients_get_op_20_after_their_answers,
    a_malformed_ack_closes_only_its_connection,
);

/// `push` with a position in stream `stream` (1 user, 2 room) at `(epoch, seq)` and a receipt
/// target.
fn positioned(mut push: EdgePush, stream: u32, epoch: u64, seq: u64) -> EdgePush {
    push.message_id = ID.into();
    push.record = u32::try_from(seq).unwrap();
    push.position = Some(StreamPosition { stream, epoch, seq });
    push.receipt_target = "mid:42".into();
    push
}

/// An auth body with a valid token for `key` in `room` and the `rim` field `rim`.
fn rim_body(key: &str, room: &str, rim: serde_json::Value) -> Vec<u8> {
    let token = tokens::hs256(&tokens::claims(key, room, &[1000], 3600));
    json!({"platform": "web", "token": token, "rim": rim})
        .to_string()
        .into_bytes()
}

async fn rim_client(
    edge: &TestEdge,
    kind: Kind,
    key: &str,
    room: &str,
    rim: serde_json::Value,
) -> common::Client {
    let mut client = edge.connect(kind).await;
    client.auth_ok(&rim_body(key, room, rim)).await;
    client
}

/// The next packet, asserted to be an op-21 answer.
async fn answer(client: &mut common::Client) -> ResumeAnswer {
    let packet = client.recv().await;
    assert_eq!((packet.op, packet.seq), (RESUME, 0), "{packet:?}");
    ResumeAnswer::decode(&packet.body).unwrap()
}

async fn plain_clients_get_todays_bytes_for_durable_pushes(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut plain = edge.client(kind, "plain", "live://1", &[1000]).await;
    let pushes = vec![
        positioned(key_push("", 1000, b"hello", &["plain"]), 1, 0, 42),
        positioned(room_push("", 1000, b"room", "live://1"), 2, 9, 7),
    ];
    // Exactly what a push without position gives: goim's packet (inside op 9 on WebSocket).
    let user = hex("00000015 0010 0001 000003e8 00000000 68656c6c6f");
    let room = hex("00000014 0010 0001 000003e8 00000000 726f6f6d");
    for (push, expected) in pushes.into_iter().zip([user, room]) {
        assert_eq!(edge.push(vec![push]).await, [1]);
        let got = match kind {
            Kind::Tcp => plain.recv_bytes(expected.len()).await,
            Kind::Ws => {
                let message = plain.recv_message().await.to_vec();
                let mut outer = hex("00000000 0010 0001 00000009 00000000");
                outer[..4].copy_from_slice(&(16 + expected.len() as u32).to_be_bytes());
                assert_eq!(message[..16], outer[..], "op-9 header");
                message[16..].to_vec()
            }
        };
        assert_eq!(got, expected);
    }
    // Op 22 from a plain connection is an ordinary upstream message: goim's echo.
    let seq = plain
        .send_op(22, &hex("01 000000 0000000000000000 000000000000002d"))
        .await;
    let reply = plain.reply_to(seq).await;
    assert_eq!((reply.op, reply.body.len()), (22, 0));
    assert!(plain.silent_for(100).await);
}

async fn rim_aware_clients_get_op_20_after_their_answers(kind: Kind) {
    let edge = start(|_| {}).await;
    let rim = json!({"v": 1, "user": {"epoch": 0, "seq": 5}, "room": {"epoch": 9, "seq": 7}});
    let mut client = rim_client(&edge, kind, "durable", "live://1", rim).await;
    // Without a link to control: "not resumed: unavailable" at the client's own positions, user
    // stream first.
    for (kind, position) in [
        (StreamKind::User, Position { epoch: 0, seq: 5 }),
        (StreamKind::Room, Position { epoch: 9, seq: 7 }),
    ] {
        let expected = ResumeAnswer {
            kind,
            outcome: ResumeOutcome::NotResumed(NotResumedReason::Unavailable),
            position,
        };
        assert_eq!(answer(&mut client).await, expected);
    }
    // At or below the answered positions: not sent; above: op 20; without a position: plain.
    let pushes = vec![
        positioned(key_push("", 1000, b"old", &["durable"]), 1, 0, 5),
        positioned(room_push("", 1001, b"old room", "live://1"), 2, 9, 7),
        positioned(key_push("", 1000, b"hello", &["durable"]), 1, 0, 42),
    ];
    assert_eq!(
        edge.push(pushes).await,
        [1, 1, 1],
        "the covered ones count as reached"
    );
    // The byte example of the protocol page: a live user push of op 1000, seq 42.
    let live = hex(
        "0000003d 0010 0001 00000014 00000000
         01 01 00 00 000003e8 0192f1c49d3e7b2a8c113f5e9a7b6c4d 0000000000000000 000000000000002a 68656c6c6f",
    );
    match kind {
        Kind::Tcp => assert_eq!(client.recv_bytes(live.len()).await, live),
        Kind::Ws => {
            let message = client.recv_message().await;
            let outer = rim_proto::message::decode(message, usize::MAX).unwrap();
            assert_eq!(outer.op, rim_proto::op::RAW, "inside op 9 on WebSocket");
            assert_eq!(outer.body[..], live[..]);
        }
    }
    let pushes = vec![
        room_push(
            "0192f1c4-0000-7000-8000-000000000001",
            1002,
            b"plain",
            "live://1",
        ),
        positioned(room_push("", 1001, b"{\"n\":1}", "live://1"), 2, 9, 8),
    ];
    assert_eq!(edge.push(pushes).await, [1, 1]);
    let plain = client.recv().await;
    assert_eq!((plain.op, &plain.body[..]), (1002, &b"plain"[..]));
    let room = client.recv().await;
    assert_eq!(room.op, PUSH);
    let room = DurablePush::decode(room.body).unwrap();
    assert_eq!(
        (room.kind, room.replay, room.operation, room.position),
        (StreamKind::Room, false, 1001, Position { epoch: 9, seq: 8 })
    );
    assert_eq!(room.message_id.to_string(), ID);
    assert_eq!(&room.body[..], b"{\"n\":1}");
    assert!(
        client.silent_for(100).await,
        "the covered pushes never come"
    );
}

async fn a_malformed_ack_closes_only_its_connection(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut other = edge.client(kind, "bystander", "", &[]).await;
    let mut client = rim_client(&edge, kind, "acker", "", json!({"v": 1})).await;
    let first = answer(&mut client).await;
    assert_eq!(first.kind, StreamKind::User);
    // A valid ack is taken and not answered.
    let ack = Ack {
        position: Position { epoch: 0, seq: 3 },
    };
    client.send(&ack.to_packet(7)).await;
    assert!(client.silent_for(150).await, "acks are not answered");
    client.heartbeat().await;
    // An ack with a non-zero reserved byte (the protocol page's example) closes the connection.
    client
        .send_raw(&hex(
            "00000024 0010 0001 00000016 00000001 01 000100 0000000000000000 000000000000002d",
        ))
        .await;
    let ended = client.ended().await;
    if kind == Kind::Ws {
        assert!(
            matches!(ended, common::client::Ended::Ws(1002, _)),
            "{ended:?}"
        );
    }
    edge.assert_unaffected(&mut [&mut other]).await;
}

#[tokio::test]
async fn a_malformed_rim_field_refuses_the_auth_with_a_readable_error() {
    let edge = start(|_| {}).await;
    for (rim, says) in [
        (json!({"v": 2}), "version"),
        (
            json!({"v": 1, "user": {"epoch": 0, "seq": 9_007_199_254_740_992_u64}}),
            "2^53",
        ),
        (json!({"v": 1, "resume": {"epoch": 0, "seq": 1}}), "resume"),
        (json!({"v": 1, "user": {"epoch": 0}}), "seq"),
    ] {
        let mut client = edge.connect(Kind::Tcp).await;
        let (error, _) = client.auth_refused(&rim_body("bad", "", rim.clone())).await;
        assert!(
            error.contains("rim field") && error.contains(says),
            "{rim}: {error}"
        );
    }
    // Nothing of it registered; a plain client next to it is fine.
    let mut plain = edge.client(Kind::Tcp, "fine", "", &[]).await;
    edge.assert_unaffected(&mut [&mut plain]).await;
}
