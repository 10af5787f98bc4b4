//! The durable edge API over real sockets and a real PostgreSQL: resume pages a user's inbox and a
//! room's log for an edge, with the op-21 reason codes for what cannot be resumed; acks and
//! `written` receipts reach the receipts of the pushes; node-token auth and field validation are
//! those of the other edge routes; the store being down is a 503.
//!
//! The inbox is filled through the store's own `Inbox` (the same database the instance uses), so
//! these tests depend only on the edge API, not on the push path.

mod common;

use common::*;
use prost::Message;
use rim_bus::memory::MemoryBus;
use rim_control::ControlConfig;
use rim_proto::durable::{MAX_POSITION, MAX_RECEIPT_BATCH, MAX_RESUME_REPLAY, MessageId};
use rim_proto::schema::{
    AckBatch, DeviceAck, EdgeReceipt, PositionValue, ReceiptBatch, ResumeRequest, ResumeResponse,
    StreamResume,
};
use rim_store::Store;
use rim_store::inbox::{Inbox, ReceiptState, ReceiptTarget, RoomEntry, UserEntry};
use rim_store::postgres::{PoolSettings, PostgresStore};
use rim_testkit::postgres::TestPostgres;
use std::sync::Arc;
use std::time::Duration;

const NODE: &str = "edge-1";
const REGION: &str = "sh";

/// A control instance on a fresh PostgreSQL database, its inbox, and an edge token for [`NODE`].
struct Setup {
    h: Harness,
    inbox: Arc<dyn Inbox>,
    token: String,
}

async fn setup_with(config: ControlConfig, database: &str) -> Setup {
    let store = PostgresStore::connect_with(
        database,
        rim_store::StoreSettings::default(),
        PoolSettings {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(1),
            ..PoolSettings::default()
        },
    )
    .await
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let inbox = store.inbox(config.inbox_settings()).unwrap();
    let h = start(config, store, Arc::new(MemoryBus::new(1_000))).await;
    h.register(NODE, REGION).await;
    let token = h.enroll("edge", NODE, REGION).await.token;
    Setup { h, inbox, token }
}

async fn setup(config: ControlConfig) -> Setup {
    setup_with(config, &TestPostgres::shared().fresh_database()).await
}

/// Message id number `n`.
fn id(n: u64) -> MessageId {
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    MessageId(bytes)
}

/// Entries `from..to` for user `mid`, the key of each chosen by `key`.
fn entries(
    mid: i64,
    from: u64,
    to: u64,
    key: impl Fn(u64) -> Option<&'static str>,
) -> Vec<UserEntry> {
    (from..to)
        .map(|n| UserEntry {
            mid,
            key: key(n).map(str::to_owned),
            message_id: id(n),
            operation: 1000,
            body: format!("push:{n}").into_bytes(),
        })
        .collect()
}

fn at(epoch: u64, seq: u64) -> Option<PositionValue> {
    Some(PositionValue { epoch, seq })
}

impl Setup {
    /// POSTs a resume request; the status and the decoded answer (on 200).
    async fn resume(&self, request: &ResumeRequest) -> (u16, Option<ResumeResponse>, String) {
        let response = self
            .h
            .edge_with(&self.token, "/edge/v1/resume", request)
            .await;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let answer = (status == 200).then(|| ResumeResponse::decode(bytes.clone()).unwrap());
        (status, answer, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The user part of a successful resume.
    async fn user_part(&self, request: &ResumeRequest) -> StreamResume {
        let (status, answer, body) = self.resume(request).await;
        assert_eq!(status, 200, "{body}");
        answer.unwrap().user.expect("a user part")
    }

    /// The room part of a successful resume.
    async fn room_part(&self, request: &ResumeRequest) -> StreamResume {
        let (status, answer, body) = self.resume(request).await;
        assert_eq!(status, 200, "{body}");
        answer.unwrap().room.expect("a room part")
    }

    /// The status and body of a POST of `message` to `path` with the edge's token.
    async fn post(&self, path: &str, message: &impl Message) -> (u16, String) {
        let response = self.h.edge_with(&self.token, path, message).await;
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// The states recorded for push `n` and `target`.
    async fn states(&self, n: u64, target: &ReceiptTarget) -> Vec<ReceiptState> {
        self.inbox
            .receipts(id(n))
            .await
            .unwrap()
            .into_iter()
            .filter(|receipt| &receipt.target == target)
            .map(|receipt| receipt.state)
            .collect()
    }
}

/// A resume of the user stream of `mid` for connection `key` from `user`.
fn user_request(mid: i64, key: &str, user: Option<PositionValue>) -> ResumeRequest {
    ResumeRequest {
        node_id: NODE.into(),
        mid,
        key: key.into(),
        want_user: true,
        user,
        ..ResumeRequest::default()
    }
}

fn seqs(part: &StreamResume) -> Vec<u64> {
    part.pushes
        .iter()
        .map(|push| push.position.as_ref().unwrap().seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_pages_the_missed_user_pushes_in_order_with_the_connections_key_pushes() {
    let s = setup(ControlConfig {
        control_inbox_max_per_user: 5_000,
        ..config()
    })
    .await;
    // 2,500 pushes: every 5th for this device's key, every 7th for a sibling key.
    let key = |n: u64| match (n % 5, n % 7) {
        (0, _) => Some("phone"),
        (_, 0) => Some("tablet"),
        _ => None,
    };
    s.inbox
        .append_user(&entries(1, 0, 2_500, key), now())
        .await
        .unwrap();
    let mut after = PositionValue { epoch: 0, seq: 0 };
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let part = s.user_part(&user_request(1, "phone", Some(after))).await;
        assert_eq!(part.reason, 0);
        assert_eq!(part.head, at(0, 2_500));
        assert!(part.pushes.len() <= rim_proto::durable::RESUME_PAGE);
        pages += 1;
        got.extend(part.pushes.iter().cloned());
        if !part.more {
            break;
        }
        after = part.pushes.last().unwrap().position.unwrap();
        assert!(pages < 10, "resume never ended");
    }
    let expected: Vec<u64> = (0..2_500).filter(|n| key(*n) != Some("tablet")).collect();
    assert_eq!(got.len(), expected.len());
    assert!(pages >= 3, "{pages} pages for {} pushes", got.len());
    for (push, n) in got.iter().zip(&expected) {
        // Seq n + 1 is push n (numbers start at 1).
        assert_eq!(push.position, at(0, n + 1));
        assert_eq!(push.message_id.as_ref(), &id(*n).0);
        assert_eq!(push.body.as_ref(), format!("push:{n}").as_bytes());
        assert_eq!(push.operation, 1000);
    }
    // A smaller limit pages smaller; a connection without a key sees user pushes only.
    let part = s
        .user_part(&ResumeRequest {
            limit: 3,
            ..user_request(1, "", at(0, 0))
        })
        .await;
    assert_eq!(seqs(&part), vec![2, 3, 4]);
    assert!(part.more);
    // Up to date: nothing, not more.
    let part = s.user_part(&user_request(1, "phone", at(0, 2_500))).await;
    assert!(part.pushes.is_empty() && !part.more && part.reason == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_that_cannot_be_resumed_get_their_reason_and_the_head() {
    let s = setup(ControlConfig {
        control_inbox_max_per_user: 20_000,
        ..config()
    })
    .await;
    // No position: the head, nothing replayed (also for a user who never got anything).
    let part = s.user_part(&user_request(9, "k", None)).await;
    assert_eq!(
        (part.reason, part.head, part.pushes.len()),
        (0, at(0, 0), 0)
    );
    s.inbox
        .append_user(&entries(1, 0, 10, |_| None), now())
        .await
        .unwrap();
    let part = s.user_part(&user_request(1, "k", None)).await;
    assert_eq!(
        (part.reason, part.head, part.pushes.len()),
        (0, at(0, 10), 0)
    );
    // Ahead of the head: 3.
    let part = s.user_part(&user_request(1, "k", at(0, 11))).await;
    assert_eq!(
        (part.reason, part.head, part.pushes.len()),
        (3, at(0, 10), 0)
    );
    // Another epoch: 1.
    let part = s.user_part(&user_request(1, "k", at(7, 3))).await;
    assert_eq!((part.reason, part.pushes.len()), (1, 0));
    // More than one resume replays: 5, up front, nothing replayed; exactly the bound is replayed.
    let total = MAX_RESUME_REPLAY as u64 + 1;
    s.inbox
        .append_user(&entries(2, 0, total / 2, |_| None), now())
        .await
        .unwrap();
    s.inbox
        .append_user(&entries(2, total / 2, total, |_| None), now())
        .await
        .unwrap();
    let part = s.user_part(&user_request(2, "k", at(0, 0))).await;
    assert_eq!(
        (part.reason, part.head, part.pushes.len()),
        (5, at(0, total), 0)
    );
    let part = s.user_part(&user_request(2, "k", at(0, 1))).await;
    assert_eq!(
        (part.reason, part.pushes.len()),
        (0, rim_proto::durable::RESUME_PAGE)
    );
    // A reset starts a new epoch: the old position is epoch-changed, the answer the new head.
    let head = s.inbox.reset_user(1, now()).await.unwrap();
    let part = s.user_part(&user_request(1, "k", at(0, 10))).await;
    assert_eq!(part.reason, 1);
    assert_eq!(part.head, at(head.epoch, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_beyond_count_retention_is_expired() {
    let s = setup(ControlConfig {
        control_inbox_max_per_user: 10,
        ..config()
    })
    .await;
    s.inbox
        .append_user(&entries(1, 0, 25, |_| None), now())
        .await
        .unwrap();
    let part = s.user_part(&user_request(1, "k", at(0, 3))).await;
    assert_eq!(
        (part.reason, part.head, part.pushes.len()),
        (2, at(0, 25), 0)
    );
    // The oldest kept push still follows a position just below it.
    let part = s.user_part(&user_request(1, "k", at(0, 15))).await;
    assert_eq!(part.reason, 0);
    assert_eq!(seqs(&part), (16..=25).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_resumes_within_its_window_and_beside_the_user_stream() {
    let s = setup(config()).await;
    let room = "live://1000";
    let entries: Vec<RoomEntry> = (0..5)
        .map(|n| RoomEntry {
            room: room.into(),
            message_id: id(100 + n),
            operation: 1001,
            body: format!("room:{n}").into_bytes(),
        })
        .collect();
    let positions = s.inbox.append_room(&entries, now()).await.unwrap();
    let head = *positions.last().unwrap();
    let first = positions[0];
    s.inbox
        .append_user(&entries_for_one(), now())
        .await
        .unwrap();
    let request = ResumeRequest {
        room: room.into(),
        room_position: at(first.epoch, first.seq),
        ..user_request(1, "k", at(0, 0))
    };
    let (status, answer, body) = s.resume(&request).await;
    assert_eq!(status, 200, "{body}");
    let answer = answer.unwrap();
    let room_part = answer.room.unwrap();
    assert_eq!(room_part.reason, 0);
    assert_eq!(room_part.head, at(head.epoch, head.seq));
    assert_eq!(
        seqs(&room_part),
        (first.seq + 1..=head.seq).collect::<Vec<_>>()
    );
    assert_eq!(room_part.pushes[0].body.as_ref(), b"room:1");
    assert_eq!(room_part.pushes[0].operation, 1001);
    assert_eq!(seqs(&answer.user.unwrap()), vec![1]);
    // Without a position: the room's head; a room without a log: the origin.
    let part = s
        .room_part(&ResumeRequest {
            node_id: NODE.into(),
            room: room.into(),
            ..ResumeRequest::default()
        })
        .await;
    assert_eq!(
        (part.reason, part.head, part.pushes.len()),
        (0, at(head.epoch, head.seq), 0)
    );
    let part = s
        .room_part(&ResumeRequest {
            node_id: NODE.into(),
            room: "live://empty".into(),
            ..ResumeRequest::default()
        })
        .await;
    assert_eq!(part.head, at(0, 0));
    // Another epoch of the room: 1.
    let part = s
        .room_part(&ResumeRequest {
            node_id: NODE.into(),
            room: room.into(),
            room_position: at(head.epoch + 1, 1),
            ..ResumeRequest::default()
        })
        .await;
    assert_eq!(part.reason, 1);
}

fn entries_for_one() -> Vec<UserEntry> {
    entries(1, 0, 1, |_| None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_position_older_than_the_window_is_expired() {
    let s = setup(ControlConfig {
        control_room_window_ms: 300,
        ..config()
    })
    .await;
    let room = "live://short";
    let entry = |n: u64| RoomEntry {
        room: room.into(),
        message_id: id(n),
        operation: 1000,
        body: vec![],
    };
    let old = s
        .inbox
        .append_room(&[entry(1), entry(2)], now())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.inbox.append_room(&[entry(3)], now()).await.unwrap();
    let part = s
        .room_part(&ResumeRequest {
            node_id: NODE.into(),
            room: room.into(),
            room_position: at(old[0].epoch, old[0].seq),
            ..ResumeRequest::default()
        })
        .await;
    assert_eq!((part.reason, part.pushes.len()), (2, 0));
    // From the last push before the gap, the one push still in the window follows.
    let part = s
        .room_part(&ResumeRequest {
            node_id: NODE.into(),
            room: room.into(),
            room_position: at(old[1].epoch, old[1].seq),
            ..ResumeRequest::default()
        })
        .await;
    assert_eq!((part.reason, seqs(&part)), (0, vec![3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_and_written_receipts_reach_the_receipts_of_the_pushes() {
    let s = setup(config()).await;
    s.inbox
        .append_user(&entries(1, 0, 5, |_| None), now())
        .await
        .unwrap();
    let user = ReceiptTarget::Mid(1);
    let receipts = ReceiptBatch {
        node_id: NODE.into(),
        receipts: (0..3)
            .map(|n| EdgeReceipt {
                message_id: id(n).0.to_vec().into(),
                target: "mid:1".into(),
                at_unix_ms: now(),
            })
            .collect(),
    };
    let (status, body) = s.post("/edge/v1/receipts", &receipts).await;
    assert_eq!(status, 204, "{body}");
    // A receipt for a key target is stored under the key.
    let keyed = ReceiptBatch {
        node_id: NODE.into(),
        receipts: vec![EdgeReceipt {
            message_id: id(4).0.to_vec().into(),
            target: "key:phone".into(),
            at_unix_ms: now(),
        }],
    };
    assert_eq!(s.post("/edge/v1/receipts", &keyed).await.0, 204);
    let acks = AckBatch {
        node_id: NODE.into(),
        acks: vec![DeviceAck {
            mid: 1,
            key: "phone".into(),
            epoch: 0,
            seq: 2,
        }],
    };
    let (status, body) = s.post("/edge/v1/acks", &acks).await;
    assert_eq!(status, 204, "{body}");
    use ReceiptState::*;
    assert_eq!(s.states(0, &user).await, vec![Stored, Written, Acked]);
    assert_eq!(s.states(1, &user).await, vec![Stored, Written, Acked]);
    assert_eq!(s.states(2, &user).await, vec![Stored, Written]);
    assert_eq!(s.states(3, &user).await, vec![Stored]);
    assert_eq!(
        s.states(4, &ReceiptTarget::Key("phone".into())).await,
        vec![Written]
    );
    // Empty batches change nothing and are fine.
    assert_eq!(
        s.post(
            "/edge/v1/acks",
            &AckBatch {
                node_id: NODE.into(),
                acks: vec![]
            }
        )
        .await
        .0,
        204
    );
    assert_eq!(
        s.post(
            "/edge/v1/receipts",
            &ReceiptBatch {
                node_id: NODE.into(),
                receipts: vec![]
            }
        )
        .await
        .0,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_take_only_the_named_nodes_token_and_valid_fields() {
    let s = setup(config()).await;
    let request = user_request(1, "k", at(0, 0));
    // No token, a garbage token, another node's token.
    let response =
        s.h.http
            .post(s.h.url("/edge/v1/resume"))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 401);
    for path in ["/edge/v1/resume", "/edge/v1/acks", "/edge/v1/receipts"] {
        assert_eq!(
            s.h.edge_with("not-a-token", path, &request).await.status(),
            401,
            "{path}"
        );
    }
    let other = s.h.enroll("edge", "edge-2", REGION).await.token;
    assert_eq!(
        s.h.edge_with(&other, "/edge/v1/resume", &request)
            .await
            .status(),
        403
    );
    let acks = AckBatch {
        node_id: NODE.into(),
        acks: vec![],
    };
    assert_eq!(
        s.h.edge_with(&other, "/edge/v1/acks", &acks).await.status(),
        403
    );
    let receipts = ReceiptBatch {
        node_id: NODE.into(),
        receipts: vec![],
    };
    assert_eq!(
        s.h.edge_with(&other, "/edge/v1/receipts", &receipts)
            .await
            .status(),
        403
    );
    // The cluster secret is not a node token here either.
    assert_eq!(
        s.h.edge_with(SECRET, "/edge/v1/resume", &request)
            .await
            .status(),
        401
    );
    // Malformed protobuf.
    let response =
        s.h.http
            .post(s.h.url("/edge/v1/resume"))
            .bearer_auth(&s.token)
            .header("content-type", "application/x-protobuf")
            .body(vec![0xff, 0xff, 0xff])
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 400);

    let too_far = MAX_POSITION + 1;
    let bad_resumes = [
        ("mid 0", user_request(0, "k", at(0, 0))),
        ("seq 2^53", user_request(1, "k", at(0, too_far))),
        ("epoch 2^53", user_request(1, "k", at(too_far, 0))),
        ("long key", user_request(1, &"k".repeat(257), at(0, 0))),
        (
            "nothing asked",
            ResumeRequest {
                node_id: NODE.into(),
                ..ResumeRequest::default()
            },
        ),
        (
            "position without want_user",
            ResumeRequest {
                want_user: false,
                ..user_request(1, "k", at(0, 0))
            },
        ),
        (
            "malformed room",
            ResumeRequest {
                node_id: NODE.into(),
                room: "no-type".into(),
                ..ResumeRequest::default()
            },
        ),
        (
            "room position 2^53",
            ResumeRequest {
                node_id: NODE.into(),
                room: "live://1".into(),
                room_position: at(0, too_far),
                ..ResumeRequest::default()
            },
        ),
        (
            "room position without room",
            ResumeRequest {
                room_position: at(0, 0),
                ..user_request(1, "k", at(0, 0))
            },
        ),
    ];
    for (what, request) in bad_resumes {
        let (status, _, body) = s.resume(&request).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body.contains("message"), "{what}: {body}");
    }

    let ack = |mid: i64, key: &str, epoch: u64, seq: u64| AckBatch {
        node_id: NODE.into(),
        acks: vec![DeviceAck {
            mid,
            key: key.into(),
            epoch,
            seq,
        }],
    };
    for (what, batch) in [
        ("mid 0", ack(0, "k", 0, 1)),
        ("empty key", ack(1, "", 0, 1)),
        ("long key", ack(1, &"k".repeat(257), 0, 1)),
        ("seq 2^53", ack(1, "k", 0, too_far)),
        ("epoch 2^53", ack(1, "k", too_far, 1)),
    ] {
        let (status, body) = s.post("/edge/v1/acks", &batch).await;
        assert_eq!(status, 400, "{what}: {body}");
    }
    let many = AckBatch {
        node_id: NODE.into(),
        acks: (0..=MAX_RECEIPT_BATCH as i64)
            .map(|n| DeviceAck {
                mid: n + 1,
                key: "k".into(),
                epoch: 0,
                seq: 0,
            })
            .collect(),
    };
    assert_eq!(s.post("/edge/v1/acks", &many).await.0, 413);

    let receipt = |message_id: Vec<u8>, target: &str, at_unix_ms: i64| ReceiptBatch {
        node_id: NODE.into(),
        receipts: vec![EdgeReceipt {
            message_id: message_id.into(),
            target: target.into(),
            at_unix_ms,
        }],
    };
    for (what, batch) in [
        ("15-byte id", receipt(vec![1; 15], "mid:1", now())),
        ("17-byte id", receipt(vec![1; 17], "mid:1", now())),
        ("room target", receipt(vec![1; 16], "room:live://1", now())),
        ("mid 0 target", receipt(vec![1; 16], "mid:0", now())),
        ("unparsable mid", receipt(vec![1; 16], "mid:x", now())),
        ("empty key target", receipt(vec![1; 16], "key:", now())),
        ("no time", receipt(vec![1; 16], "mid:1", 0)),
    ] {
        let (status, body) = s.post("/edge/v1/receipts", &batch).await;
        assert_eq!(status, 400, "{what}: {body}");
    }
    let many = ReceiptBatch {
        node_id: NODE.into(),
        receipts: (0..=MAX_RECEIPT_BATCH)
            .map(|_| EdgeReceipt {
                message_id: vec![1; 16].into(),
                target: "mid:1".into(),
                at_unix_ms: now(),
            })
            .collect(),
    };
    assert_eq!(s.post("/edge/v1/receipts", &many).await.0, 413);
    // Nothing of the refused batches was recorded.
    assert!(
        s.inbox
            .receipts(MessageId([1; 16]))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_down_is_a_503_and_the_resume_works_again_once_it_is_back() {
    let cluster = TestPostgres::start();
    let s = setup_with(config(), &cluster.fresh_database()).await;
    s.inbox
        .append_user(&entries(1, 0, 3, |_| None), now())
        .await
        .unwrap();
    let request = user_request(1, "k", at(0, 0));
    assert_eq!(seqs(&s.user_part(&request).await), vec![1, 2, 3]);
    cluster.stop();
    let (status, _, body) = s.resume(&request).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    let acks = AckBatch {
        node_id: NODE.into(),
        acks: vec![DeviceAck {
            mid: 1,
            key: "k".into(),
            epoch: 0,
            seq: 1,
        }],
    };
    assert_eq!(s.post("/edge/v1/acks", &acks).await.0, 503);
    let receipts = ReceiptBatch {
        node_id: NODE.into(),
        receipts: vec![EdgeReceipt {
            message_id: id(0).0.to_vec().into(),
            target: "mid:1".into(),
            at_unix_ms: now(),
        }],
    };
    assert_eq!(s.post("/edge/v1/receipts", &receipts).await.0, 503);
    cluster.start_again();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer, _) = s.resume(&request).await;
        if status == 200 {
            assert_eq!(seqs(&answer.unwrap().user.unwrap()), vec![1, 2, 3]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resume never recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
