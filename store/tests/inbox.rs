//! The behavioural suite of the durable inbox ([`rim_store::inbox`]), run against the memory inbox
//! and the PostgreSQL inbox (a real server from rim-testkit, a fresh database per test).
//!
//! Each behaviour is one `async fn` taking an opener (settings → a fresh, empty inbox);
//! `backends::backend_suite!` turns the list into one `#[tokio::test]` per implementation.

mod backends;

use rim_proto::durable::{MAX_APPEND_BATCH, MessageId, NotResumedReason, Position};
use rim_store::StoreSettings;
use rim_store::inbox::{
    AckEntry, AckReport, BatchPositions, CleanupReport, DurableBatch, Inbox, InboxSettings,
    PublishError, PublishStep, PublishedAppendError, ReadOutcome, Receipt, ReceiptState,
    ReceiptTarget, RoomEntry, StoredPush, UserEntry,
};
use rim_store::memory::MemoryInbox;
use rim_store::postgres::PostgresStore;
use rim_testkit::postgres::TestPostgres;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed "now" the tests count from.
const T0: i64 = 1_800_000_000_000;

type Opened = Pin<Box<dyn Future<Output = Arc<dyn Inbox>>>>;

fn memory(settings: InboxSettings) -> Opened {
    Box::pin(async move { Arc::new(MemoryInbox::new(settings).unwrap()) as Arc<dyn Inbox> })
}

fn postgres(settings: InboxSettings) -> Opened {
    Box::pin(async move {
        let url = TestPostgres::shared().fresh_database();
        let store = PostgresStore::connect(&url, StoreSettings::default())
            .await
            .unwrap();
        Arc::new(store.postgres_inbox(settings).unwrap()) as Arc<dyn Inbox>
    })
}

backends::backend_suite!(
    numbers_are_per_user_in_batch_order,
    reads_are_paged_and_see_user_and_own_key_pushes,
    unreadable_positions_say_why,
    count_retention_trims_the_oldest,
    age_retention_runs_in_bounded_batches,
    acks_are_cumulative_per_device_and_epoch,
    receipts_keep_their_first_time,
    room_log_resumes_within_the_window,
    concurrent_appends_of_one_user_are_gap_free,
    bad_input_is_refused,
    a_published_append_is_kept_only_after_its_publish,
    a_failed_publish_keeps_nothing_and_burns_its_numbers,
    published_appends_reach_the_publish_in_number_order,
);

/// Settings with a generous count, so only the tests about retention meet it.
fn settings() -> InboxSettings {
    InboxSettings {
        max_per_user: 100_000,
        // Receipts outlive the pushes, so retention of pushes can be seen in them.
        receipt_max_age_ms: 30 * 24 * 60 * 60 * 1000,
        ..InboxSettings::default()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh message id (distinct within the test process).
fn id() -> MessageId {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    bytes[6] = 0x70;
    MessageId(bytes)
}

fn user(mid: i64, body: &str) -> UserEntry {
    UserEntry {
        mid,
        key: None,
        message_id: id(),
        operation: 1000,
        body: body.as_bytes().to_vec(),
    }
}

fn keyed(mid: i64, key: &str, body: &str) -> UserEntry {
    UserEntry {
        key: Some(key.into()),
        ..user(mid, body)
    }
}

fn at(epoch: u64, seq: u64) -> Position {
    Position::new(epoch, seq).unwrap()
}

/// The page of a read that must be readable.
fn page(outcome: ReadOutcome) -> (Vec<StoredPush>, Position) {
    match outcome {
        ReadOutcome::Page { pushes, head } => (pushes, head),
        other => panic!("expected a page, got {other:?}"),
    }
}

fn bodies(pushes: &[StoredPush]) -> Vec<String> {
    pushes
        .iter()
        .map(|p| String::from_utf8(p.body.clone()).unwrap())
        .collect()
}

fn refused(outcome: ReadOutcome) -> (NotResumedReason, Position) {
    match outcome {
        ReadOutcome::NotResumable { reason, head } => (reason, head),
        other => panic!("expected not resumable, got {other:?}"),
    }
}

async fn numbers_are_per_user_in_batch_order(open: fn(InboxSettings) -> Opened) {
    let inbox = open(settings()).await;
    assert_eq!(inbox.user_head(1).await.unwrap(), Position::ORIGIN);
    let batch = [user(1, "a"), user(2, "x"), user(1, "b"), user(1, "c")];
    let positions = inbox.append_user(&batch, T0).await.unwrap();
    assert_eq!(positions, [at(0, 1), at(0, 1), at(0, 2), at(0, 3)]);
    let next = inbox.append_user(&[user(1, "d")], T0 + 1).await.unwrap();
    assert_eq!(next, [at(0, 4)]);
    assert_eq!(inbox.user_head(1).await.unwrap(), at(0, 4));
    let (pushes, head) = page(
        inbox
            .read_user(1, None, Position::ORIGIN, 100)
            .await
            .unwrap(),
    );
    assert_eq!(head, at(0, 4));
    assert_eq!(bodies(&pushes), ["a", "b", "c", "d"]);
    let first = &pushes[0];
    assert_eq!(
        (
            first.position,
            first.message_id,
            first.operation,
            first.stored_at
        ),
        (at(0, 1), batch[0].message_id, 1000, T0)
    );
    assert_eq!(first.key, None);
}

async fn reads_are_paged_and_see_user_and_own_key_pushes(open: fn(InboxSettings) -> Opened) {
    let inbox = open(settings()).await;
    let batch = [
        user(7, "u1"),
        keyed(7, "phone", "p1"),
        keyed(7, "tablet", "t1"),
        user(7, "u2"),
        keyed(7, "phone", "p2"),
    ];
    inbox.append_user(&batch, T0).await.unwrap();
    let (phone, head) = page(
        inbox
            .read_user(7, Some("phone"), Position::ORIGIN, 100)
            .await
            .unwrap(),
    );
    assert_eq!(head, at(0, 5));
    assert_eq!(bodies(&phone), ["u1", "p1", "u2", "p2"]);
    assert_eq!(phone[1].key.as_deref(), Some("phone"));
    let (anyone, _) = page(
        inbox
            .read_user(7, None, Position::ORIGIN, 100)
            .await
            .unwrap(),
    );
    assert_eq!(bodies(&anyone), ["u1", "u2"]);
    // Paged: two at a time, each page continuing after the last position read.
    let mut read = Vec::new();
    let mut after = Position::ORIGIN;
    loop {
        let (pushes, _) = page(inbox.read_user(7, Some("tablet"), after, 2).await.unwrap());
        let Some(last) = pushes.last() else { break };
        assert!(pushes.len() <= 2);
        after = last.position;
        read.extend(bodies(&pushes));
    }
    assert_eq!(read, ["u1", "t1", "u2"]);
    // Up to date: an empty page.
    let (none, _) = page(
        inbox
            .read_user(7, Some("phone"), at(0, 5), 10)
            .await
            .unwrap(),
    );
    assert!(none.is_empty());
    // A user without anything stored reads an empty page from the origin.
    let (empty, head) = page(
        inbox
            .read_user(8, None, Position::ORIGIN, 10)
            .await
            .unwrap(),
    );
    assert!(empty.is_empty());
    assert_eq!(head, Position::ORIGIN);
}

async fn unreadable_positions_say_why(open: fn(InboxSettings) -> Opened) {
    let inbox = open(settings()).await;
    inbox
        .append_user(&[user(3, "a"), user(3, "b")], T0)
        .await
        .unwrap();
    let (reason, head) = refused(inbox.read_user(3, None, at(0, 3), 10).await.unwrap());
    assert_eq!((reason, head), (NotResumedReason::Ahead, at(0, 2)));
    let (reason, _) = refused(inbox.read_user(3, None, at(9, 1), 10).await.unwrap());
    assert_eq!(reason, NotResumedReason::EpochChanged);
    let (reason, _) = refused(inbox.read_user(4, None, at(0, 1), 10).await.unwrap());
    assert_eq!(
        reason,
        NotResumedReason::Ahead,
        "nothing was ever handed out"
    );

    // A reset starts a new, later epoch: old positions are foreign, the history is gone.
    let reset = inbox.reset_user(3, T0 + 5).await.unwrap();
    assert_eq!(reset, at(T0 as u64 + 5, 0));
    let (reason, head) = refused(inbox.read_user(3, None, at(0, 2), 10).await.unwrap());
    assert_eq!((reason, head), (NotResumedReason::EpochChanged, reset));
    let next = inbox.append_user(&[user(3, "c")], T0 + 6).await.unwrap();
    assert_eq!(next, [at(reset.epoch, 1)]);
    let (pushes, _) = page(inbox.read_user(3, None, reset, 10).await.unwrap());
    assert_eq!(bodies(&pushes), ["c"]);
    // A second reset in the same millisecond still moves the epoch on.
    let again = inbox.reset_user(3, T0 + 5).await.unwrap();
    assert_eq!(again.epoch, reset.epoch + 1);
}

async fn count_retention_trims_the_oldest(open: fn(InboxSettings) -> Opened) {
    let inbox = open(InboxSettings {
        max_per_user: 5,
        ..settings()
    })
    .await;
    let first: Vec<UserEntry> = (1..=4).map(|n| user(5, &n.to_string())).collect();
    inbox.append_user(&first, T0).await.unwrap();
    let second: Vec<UserEntry> = (5..=8).map(|n| user(5, &n.to_string())).collect();
    inbox.append_user(&second, T0).await.unwrap();
    // Three went: 1, 2, 3. A client that saw 2 missed 3: expired; one that saw 3 is served.
    let (reason, head) = refused(inbox.read_user(5, None, at(0, 2), 10).await.unwrap());
    assert_eq!((reason, head), (NotResumedReason::Expired, at(0, 8)));
    let (pushes, _) = page(inbox.read_user(5, None, at(0, 3), 10).await.unwrap());
    assert_eq!(bodies(&pushes), ["4", "5", "6", "7", "8"]);
    // A batch bigger than the count keeps only its newest.
    let big: Vec<UserEntry> = (9..=20).map(|n| user(5, &n.to_string())).collect();
    let positions = inbox.append_user(&big, T0).await.unwrap();
    assert_eq!(positions.last(), Some(&at(0, 20)));
    let (pushes, _) = page(inbox.read_user(5, None, at(0, 15), 10).await.unwrap());
    assert_eq!(bodies(&pushes), ["16", "17", "18", "19", "20"]);
    // What was trimmed unacked is expired, what is kept is stored.
    let expired = inbox.receipts(first[0].message_id).await.unwrap();
    assert!(expired.iter().any(|r| r.state == ReceiptState::Expired));
    let never_kept = inbox.receipts(big[0].message_id).await.unwrap();
    assert_eq!(never_kept.len(), 1);
    assert_eq!(never_kept[0].state, ReceiptState::Expired);
    let kept = inbox.receipts(big[11].message_id).await.unwrap();
    assert_eq!(
        kept,
        [Receipt {
            message_id: big[11].message_id,
            target: ReceiptTarget::Mid(5),
            state: ReceiptState::Stored,
            at: T0,
        }]
    );
}

async fn age_retention_runs_in_bounded_batches(open: fn(InboxSettings) -> Opened) {
    let inbox = open(settings()).await;
    let old: Vec<UserEntry> = (0..10).map(|n| user(6, &format!("old{n}"))).collect();
    inbox.append_user(&old, T0).await.unwrap();
    let fresh_at = T0 + settings().max_age_ms;
    inbox
        .append_user(&[user(6, "fresh")], fresh_at)
        .await
        .unwrap();
    inbox
        .record_acks(
            &[AckEntry {
                mid: 6,
                key: "phone".into(),
                position: at(0, 1),
            }],
            T0,
        )
        .await
        .unwrap();
    let now = T0 + settings().max_age_ms + 1;
    let mut rounds = Vec::new();
    loop {
        let report = inbox.cleanup(now, 4).await.unwrap();
        rounds.push(report.messages);
        if !report.is_full(4) {
            break;
        }
    }
    assert_eq!(rounds, [4, 4, 2]);
    let (reason, head) = refused(inbox.read_user(6, None, at(0, 9), 10).await.unwrap());
    assert_eq!((reason, head), (NotResumedReason::Expired, at(0, 11)));
    let (pushes, _) = page(inbox.read_user(6, None, at(0, 10), 10).await.unwrap());
    assert_eq!(bodies(&pushes), ["fresh"]);
    // The acked push is not reported expired; the others are.
    let states = |receipts: Vec<Receipt>| -> Vec<ReceiptState> {
        receipts.into_iter().map(|r| r.state).collect()
    };
    assert_eq!(
        states(inbox.receipts(old[0].message_id).await.unwrap()),
        [ReceiptState::Stored, ReceiptState::Acked]
    );
    assert_eq!(
        states(inbox.receipts(old[1].message_id).await.unwrap()),
        [ReceiptState::Stored, ReceiptState::Expired]
    );
    assert_eq!(
        inbox.cleanup(now, 4).await.unwrap(),
        CleanupReport::default()
    );
}

async fn acks_are_cumulative_per_device_and_epoch(open: fn(InboxSettings) -> Opened) {
    let inbox = open(settings()).await;
    let batch = [
        user(9, "u1"),
        keyed(9, "tablet", "t1"),
        user(9, "u2"),
        keyed(9, "phone", "p1"),
    ];
    inbox.append_user(&batch, T0).await.unwrap();
    let ack = |key: &str, position: Position| AckEntry {
        mid: 9,
        key: key.into(),
        position,
    };
    let report = inbox
        .record_acks(&[ack("phone", at(0, 2)), ack("phone", at(0, 4))], T0 + 1)
        .await
        .unwrap();
    // The phone acked u1, u2 and p1, never the tablet's key push.
    assert_eq!(
        report,
        AckReport {
            applied: 1,
            stale: 0,
            acked_pushes: 3
        }
    );
    let acked = |receipts: Vec<Receipt>| receipts.iter().any(|r| r.state == ReceiptState::Acked);
    assert!(acked(inbox.receipts(batch[0].message_id).await.unwrap()));
    assert!(!acked(inbox.receipts(batch[1].message_id).await.unwrap()));
    assert!(acked(inbox.receipts(batch[3].message_id).await.unwrap()));
    // Backwards, again, another epoch, beyond the head, an unknown user: nothing new.
    let report = inbox
        .record_acks(
            &[
                ack("phone", at(0, 1)),
                ack("tablet", at(7, 2)),
                ack("laptop", at(0, 5)),
                AckEntry {
                    mid: 10,
                    key: "x".into(),
                    position: at(0, 1),
                },
            ],
            T0 + 2,
        )
        .await
        .unwrap();
    assert_eq!(
        report,
        AckReport {
            applied: 1,
            stale: 3,
            acked_pushes: 0
        }
    );
    // The tablet acks in its own right: its key push, the user pushes were acked already.
    let report = inbox
        .record_acks(&[ack("tablet", at(0, 4))], T0 + 3)
        .await
        .unwrap();
    assert_eq!(report.acked_pushes, 1);
    let receipts = inbox.receipts(batch[1].message_id).await.unwrap();
    assert_eq!(receipts[1].target, ReceiptTarget::Key("tablet".into()));
    assert_eq!(
        (receipts[1].state, receipts[1].at),
        (ReceiptState::Acked, T0 + 3)
    );
}

async fn receipts_keep_their_first_time(open: fn(InboxSettings) -> Opened) {
    let inbox = open(settings()).await;
    let push = id();
    let receipt = |target: ReceiptTarget, state: ReceiptState, at: i64| Receipt {
        message_id: push,
        target,
        state,
        at,
    };
    let batch = [
        receipt(ReceiptTarget::Mid(12), ReceiptState::Accepted, T0),
        receipt(ReceiptTarget::Mid(9), ReceiptState::Offline, T0),
        receipt(ReceiptTarget::Mid(12), ReceiptState::Written, T0 + 5),
        receipt(ReceiptTarget::Mid(12), ReceiptState::Written, T0 + 9),
        receipt(
            ReceiptTarget::Key("k".into()),
            ReceiptState::Written,
            T0 + 1,
        ),
    ];
    assert_eq!(inbox.record_receipts(&batch).await.unwrap(), 4);
    assert_eq!(inbox.record_receipts(&batch[..1]).await.unwrap(), 0);
    let other = Receipt {
        message_id: id(),
        ..batch[0].clone()
    };
    inbox.record_receipts(&[other]).await.unwrap();
    assert_eq!(
        inbox.receipts(push).await.unwrap(),
        [
            batch[1].clone(),
            batch[0].clone(),
            batch[2].clone(),
            batch[4].clone()
        ]
    );
    assert!(inbox.receipts(id()).await.unwrap().is_empty());
}

async fn room_log_resumes_within_the_window(open: fn(InboxSettings) -> Opened) {
    let inbox = open(settings()).await;
    let window = settings().room_window_ms;
    let room = |name: &str, body: &str| RoomEntry {
        room: name.into(),
        message_id: id(),
        operation: 1001,
        body: body.as_bytes().to_vec(),
    };
    let a = "live://1";
    assert_eq!(inbox.room_head(a).await.unwrap(), Position::ORIGIN);
    let positions = inbox
        .append_room(&[room(a, "a1"), room("live://2", "b1"), room(a, "a2")], T0)
        .await
        .unwrap();
    let epoch = positions[0].epoch;
    assert!(epoch > 0);
    assert_eq!(positions, [at(epoch, 1), at(epoch, 1), at(epoch, 2)]);
    inbox
        .append_room(&[room(a, "a3")], T0 + window / 2)
        .await
        .unwrap();
    assert_eq!(inbox.room_head(a).await.unwrap(), at(epoch, 3));
    // Within the window: everything after the position; from the origin, all of the log.
    let now = T0 + window / 2;
    let (pushes, head) = page(inbox.read_room(a, at(epoch, 1), 10, now).await.unwrap());
    assert_eq!(
        (bodies(&pushes), head),
        (vec!["a2".into(), "a3".into()], at(epoch, 3))
    );
    let (pushes, _) = page(inbox.read_room(a, Position::ORIGIN, 10, now).await.unwrap());
    assert_eq!(bodies(&pushes), ["a1", "a2", "a3"]);
    let (reason, _) = refused(inbox.read_room(a, at(epoch + 1, 1), 10, now).await.unwrap());
    assert_eq!(reason, NotResumedReason::EpochChanged);
    let (reason, _) = refused(inbox.read_room(a, at(epoch, 4), 10, now).await.unwrap());
    assert_eq!(reason, NotResumedReason::Ahead);
    // Past the window of a1 and a2 (even before any cleanup): resuming after 1 misses a2.
    let later = T0 + window + 1;
    let (reason, head) = refused(inbox.read_room(a, at(epoch, 1), 10, later).await.unwrap());
    assert_eq!((reason, head), (NotResumedReason::Expired, at(epoch, 3)));
    let (pushes, _) = page(inbox.read_room(a, at(epoch, 2), 10, later).await.unwrap());
    assert_eq!(bodies(&pushes), ["a3"]);
    let (pushes, _) = page(inbox.read_room(a, at(epoch, 3), 10, later).await.unwrap());
    assert!(pushes.is_empty());
    // Cleanup drops the old entries, then (once idle) the logs; a new log is a new epoch.
    let report = inbox.cleanup(later, 100).await.unwrap();
    assert_eq!((report.room_entries, report.room_heads), (3, 0));
    let idle = T0 + settings().room_idle_ms + window;
    let report = inbox.cleanup(idle, 100).await.unwrap();
    assert_eq!((report.room_entries, report.room_heads), (1, 2));
    assert_eq!(inbox.room_head(a).await.unwrap(), Position::ORIGIN);
    let reborn = inbox.append_room(&[room(a, "new")], idle).await.unwrap();
    assert_ne!(reborn[0].epoch, epoch);
    let (reason, _) = refused(inbox.read_room(a, at(epoch, 3), 10, idle).await.unwrap());
    assert_eq!(reason, NotResumedReason::EpochChanged);
}

async fn concurrent_appends_of_one_user_are_gap_free(open: fn(InboxSettings) -> Opened) {
    const TASKS: usize = 16;
    const ROUNDS: usize = 20;
    const BATCH: usize = 5;
    let inbox = open(settings()).await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let inbox = Arc::clone(&inbox);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for round in 0..ROUNDS {
                // Each batch names the shared user between two others, in varying order.
                let mut batch = vec![user(100 + task as i64, "own")];
                batch.extend((0..BATCH).map(|n| user(1, &format!("{task}-{round}-{n}"))));
                batch.push(user(200 + (round % 3) as i64, "other"));
                let positions = inbox.append_user(&batch, T0).await.unwrap();
                mine.extend_from_slice(&positions[1..=BATCH]);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0].seq < w[1].seq),
            "one task's numbers increase"
        );
        all.extend(mine);
    }
    let numbers: BTreeSet<u64> = all.iter().map(|p| p.seq).collect();
    let total = (TASKS * ROUNDS * BATCH) as u64;
    assert_eq!(numbers.len() as u64, total, "no number handed out twice");
    assert_eq!(numbers, (1..=total).collect(), "no gap");
    // Stored in the order of the numbers: each task's pushes appear in its own order.
    let mut after = Position::ORIGIN;
    let mut read = Vec::new();
    loop {
        let (pushes, _) = page(inbox.read_user(1, None, after, 1000).await.unwrap());
        let Some(last) = pushes.last() else { break };
        after = last.position;
        read.extend(bodies(&pushes));
    }
    assert_eq!(read.len() as u64, total);
    for task in 0..TASKS {
        let prefix = format!("{task}-");
        let order: Vec<&String> = read.iter().filter(|b| b.starts_with(&prefix)).collect();
        let expected: Vec<String> = (0..ROUNDS)
            .flat_map(|round| (0..BATCH).map(move |n| format!("{task}-{round}-{n}")))
            .collect();
        assert_eq!(order, expected.iter().collect::<Vec<_>>());
    }
}

async fn bad_input_is_refused(open: fn(InboxSettings) -> Opened) {
    use rim_store::StoreError::Invalid;
    let inbox = open(settings()).await;
    let invalid = |result: Result<Vec<Position>, rim_store::StoreError>| {
        assert!(matches!(result, Err(Invalid(_))), "{result:?}")
    };
    invalid(inbox.append_user(&[], T0).await);
    invalid(inbox.append_user(&[user(0, "anonymous")], T0).await);
    invalid(inbox.append_user(&[keyed(1, "", "empty key")], T0).await);
    invalid(
        inbox
            .append_user(&[keyed(1, &"k".repeat(257), "long key")], T0)
            .await,
    );
    let too_many: Vec<UserEntry> = (0..=MAX_APPEND_BATCH).map(|_| user(1, "")).collect();
    invalid(inbox.append_user(&too_many, T0).await);
    let no_room = RoomEntry {
        room: String::new(),
        message_id: id(),
        operation: 1000,
        body: Vec::new(),
    };
    invalid(inbox.append_room(&[no_room], T0).await);
    assert!(matches!(
        inbox.read_user(1, None, Position::ORIGIN, 0).await,
        Err(Invalid(_))
    ));
    let beyond = Position {
        epoch: u64::MAX,
        seq: 0,
    };
    assert!(matches!(
        inbox.read_user(1, None, beyond, 1).await,
        Err(Invalid(_))
    ));
    assert!(
        MemoryInbox::new(InboxSettings {
            max_per_user: 0,
            ..settings()
        })
        .is_err()
    );
    // Nothing of the refused batches was stored.
    assert_eq!(inbox.user_head(1).await.unwrap(), Position::ORIGIN);
}

fn room_entry(room: &str, body: &str) -> RoomEntry {
    RoomEntry {
        room: room.into(),
        message_id: id(),
        operation: 1000,
        body: body.as_bytes().to_vec(),
    }
}

/// A publish step that answers `outcome` after running `during` on the positions.
fn step<'a, F>(during: F, outcome: Result<(), &'static str>) -> PublishStep<'a>
where
    F: FnOnce(BatchPositions) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> + Send + 'a,
{
    Box::new(move |positions| {
        Box::pin(async move {
            during(positions).await;
            outcome.map_err(PublishError::from)
        })
    })
}

async fn a_published_append_is_kept_only_after_its_publish(open: fn(InboxSettings) -> Opened) {
    let inbox = open(settings()).await;
    inbox.append_user(&[user(1, "before")], T0).await.unwrap();
    let users = vec![user(1, "a"), keyed(1, "phone", "b"), user(2, "c")];
    let accepted = Receipt {
        message_id: users[0].message_id,
        target: ReceiptTarget::Mid(1),
        state: ReceiptState::Accepted,
        at: T0,
    };
    let batch = DurableBatch {
        users,
        rooms: vec![room_entry("live://1", "r")],
        receipts: vec![accepted],
    };
    let reader = Arc::clone(&inbox);
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen_in_step = Arc::clone(&seen);
    let positions = inbox
        .append_published(
            &batch,
            T0 + 1,
            step(
                move |positions| {
                    Box::pin(async move {
                        // While the publish runs, nothing of the batch is readable.
                        let (pushes, head) = page(
                            reader
                                .read_user(1, None, Position::ORIGIN, 10)
                                .await
                                .unwrap(),
                        );
                        *seen_in_step.lock().unwrap() = Some((positions, bodies(&pushes), head));
                    })
                },
                Ok(()),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        positions,
        BatchPositions {
            users: vec![at(0, 2), at(0, 3), at(0, 1)],
            rooms: vec![Position {
                epoch: positions.rooms[0].epoch,
                seq: 1
            }],
        }
    );
    assert!(
        positions.rooms[0].epoch > 0,
        "a room epoch is its log's start"
    );
    let (handed, during, head) = seen.lock().unwrap().take().expect("the step ran");
    assert_eq!(
        handed, positions,
        "the step gets the positions the batch keeps"
    );
    assert_eq!((during, head), (vec!["before".to_owned()], at(0, 1)));
    let (pushes, head) = page(
        inbox
            .read_user(1, Some("phone"), Position::ORIGIN, 10)
            .await
            .unwrap(),
    );
    assert_eq!(
        (bodies(&pushes), head),
        (vec!["before".into(), "a".into(), "b".into()], at(0, 3))
    );
    let (pushes, _) = page(
        inbox
            .read_room("live://1", Position::ORIGIN, 10, T0 + 2)
            .await
            .unwrap(),
    );
    assert_eq!(bodies(&pushes), ["r"]);
    let states: Vec<ReceiptState> = inbox
        .receipts(batch.users[0].message_id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(states, [ReceiptState::Accepted, ReceiptState::Stored]);
    // Receipts alone (a push to offline keys) are recorded without any append.
    let offline = Receipt {
        message_id: id(),
        target: ReceiptTarget::Key("gone".into()),
        state: ReceiptState::Offline,
        at: T0,
    };
    let only_receipts = DurableBatch {
        receipts: vec![offline.clone()],
        ..DurableBatch::default()
    };
    let positions = inbox
        .append_published(&only_receipts, T0, step(|_| Box::pin(async {}), Ok(())))
        .await
        .unwrap();
    assert_eq!(positions, BatchPositions::default());
    assert_eq!(inbox.receipts(offline.message_id).await.unwrap(), [offline]);
    // A refused batch never reaches its publish step.
    let refused = DurableBatch {
        users: vec![user(0, "anonymous")],
        ..DurableBatch::default()
    };
    let result = inbox
        .append_published(
            &refused,
            T0,
            step(
                |_| Box::pin(async { panic!("published a refused batch") }),
                Ok(()),
            ),
        )
        .await;
    assert!(
        matches!(
            result,
            Err(PublishedAppendError::Store(rim_store::StoreError::Invalid(
                _
            )))
        ),
        "{result:?}"
    );
}

async fn a_failed_publish_keeps_nothing_and_burns_its_numbers(open: fn(InboxSettings) -> Opened) {
    let inbox = open(settings()).await;
    inbox.append_user(&[user(1, "kept")], T0).await.unwrap();
    let failed = DurableBatch {
        users: vec![user(1, "lost"), keyed(1, "phone", "lost too")],
        rooms: vec![room_entry("live://1", "lost")],
        receipts: Vec::new(),
    };
    let failed = DurableBatch {
        receipts: vec![Receipt {
            message_id: failed.users[0].message_id,
            target: ReceiptTarget::Mid(1),
            state: ReceiptState::Accepted,
            at: T0,
        }],
        ..failed
    };
    let result = inbox
        .append_published(
            &failed,
            T0,
            step(|_| Box::pin(async {}), Err("the bus is down")),
        )
        .await;
    match result {
        Err(PublishedAppendError::Publish(error)) => {
            assert_eq!(error.to_string(), "the bus is down")
        }
        other => panic!("expected the publish error, got {other:?}"),
    }
    let (pushes, head) = page(
        inbox
            .read_user(1, Some("phone"), Position::ORIGIN, 10)
            .await
            .unwrap(),
    );
    assert_eq!(
        bodies(&pushes),
        ["kept"],
        "nothing of the failed batch is readable"
    );
    assert_eq!(
        head,
        at(0, 3),
        "its numbers are burned, not handed out again"
    );
    for entry in &failed.users {
        assert!(inbox.receipts(entry.message_id).await.unwrap().is_empty());
    }
    let room_head = inbox.room_head("live://1").await.unwrap();
    assert_eq!(room_head.seq, 1);
    // A room reader just before a burned number cannot be served the entry after its position: it
    // is told to reload, as for an entry gone from the window.
    let (reason, _) = refused(
        inbox
            .read_room("live://1", Position::ORIGIN, 10, T0)
            .await
            .unwrap(),
    );
    assert_eq!(reason, NotResumedReason::Expired);
    // The next push comes after the gap.
    let next = inbox.append_user(&[user(1, "next")], T0).await.unwrap();
    assert_eq!(next, [at(0, 4)]);
}

async fn published_appends_reach_the_publish_in_number_order(open: fn(InboxSettings) -> Opened) {
    const TASKS: usize = 8;
    const ROUNDS: usize = 15;
    let inbox = open(settings()).await;
    // What the "bus" saw, in the order the publish steps ran.
    let published = Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::new()));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let inbox = Arc::clone(&inbox);
        let published = Arc::clone(&published);
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                // Each batch names user 1 and a room with one other user, in varying order.
                let mut users = vec![user(1, "shared"), user(100 + task as i64, "own")];
                if round % 2 == 1 {
                    users.reverse();
                }
                let batch = DurableBatch {
                    users,
                    rooms: vec![room_entry("live://shared", "room")],
                    receipts: Vec::new(),
                };
                let published = Arc::clone(&published);
                inbox
                    .append_published(
                        &batch,
                        T0,
                        step(
                            move |positions| {
                                Box::pin(async move {
                                    let shared = batch_user_seq(&positions, round);
                                    // A slow bus widens the window for a wrong order.
                                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                                    published
                                        .lock()
                                        .unwrap()
                                        .push((shared, positions.rooms[0].seq));
                                })
                            },
                            Ok(()),
                        ),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let published = published.lock().unwrap().clone();
    let total = (TASKS * ROUNDS) as u64;
    let users: Vec<u64> = published.iter().map(|(user, _)| *user).collect();
    let rooms: Vec<u64> = published.iter().map(|(_, room)| *room).collect();
    assert_eq!(
        users,
        (1..=total).collect::<Vec<_>>(),
        "user 1 in number order, gap-free"
    );
    assert_eq!(
        rooms,
        (1..=total).collect::<Vec<_>>(),
        "the room in number order, gap-free"
    );
}

/// The position of user 1 in a batch of [`published_appends_reach_the_publish_in_number_order`]
/// (first in even rounds, second in odd ones).
fn batch_user_seq(positions: &BatchPositions, round: usize) -> u64 {
    positions.users[round % 2].seq
}
