//! The behavioural suite of the receipt feed ([`rim_store::receipt_feed`]), run against the memory
//! store and the PostgreSQL store (a real server from rim-testkit, a fresh database per test), both
//! through [`Store::receipt_feed`] beside [`Store::inbox`].
//!
//! Receipts are written only through the inbox API (appends, receipts, acks), as the roles write
//! them; the feed must hand them out in order, never skip one (also while many writers commit
//! concurrently), and claim each fallback once.

mod backends;

use rim_proto::durable::{MAX_RECEIPT_BATCH, MessageId, Position};
use rim_store::inbox::{
    AckEntry, Inbox, InboxSettings, Receipt, ReceiptState, ReceiptTarget, UserEntry,
};
use rim_store::memory::MemoryStore;
use rim_store::postgres::PostgresStore;
use rim_store::receipt_feed::{
    FallbackCandidate, FallbackReason, FeedCursor, FeedEvent, ReceiptFeed,
};
use rim_store::{Store, StoreSettings};
use rim_testkit::postgres::TestPostgres;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fixed "now" for receipt times (the feed does not judge them).
const T0: i64 = 1_800_000_000_000;

/// What a test gets: an inbox and the feed over its receipts.
struct Opened {
    inbox: Arc<dyn Inbox>,
    feed: Arc<dyn ReceiptFeed>,
    /// The PostgreSQL database, to connect again as a restarted instance would; `None` in memory.
    url: Option<String>,
}

type Opening = Pin<Box<dyn Future<Output = Opened>>>;

fn open_store(store: &dyn Store, url: Option<String>) -> Opened {
    Opened {
        inbox: store.inbox(InboxSettings::default()).unwrap(),
        feed: store.receipt_feed(InboxSettings::default()).unwrap(),
        url,
    }
}

fn memory() -> Opening {
    Box::pin(async {
        let store = MemoryStore::new(StoreSettings::default());
        open_store(&store, None)
    })
}

fn postgres() -> Opening {
    Box::pin(async {
        let url = TestPostgres::shared().fresh_database();
        let store = PostgresStore::connect(&url, StoreSettings::default())
            .await
            .unwrap();
        open_store(&store, Some(url))
    })
}

backends::backend_suite!(
    a_new_consumer_starts_at_the_end_and_reads_in_recording_order,
    pages_follow_the_cursor_and_filter_by_state,
    only_the_lease_holder_moves_the_cursor,
    concurrent_writers_are_never_skipped,
    fallback_is_claimed_once_and_never_for_an_acked_push,
    concurrent_claimers_get_each_candidate_once,
    bad_input_is_refused,
);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh message id (distinct within the test process).
fn id() -> MessageId {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    bytes[6] = 0x70;
    MessageId(bytes)
}

fn user(mid: i64, key: Option<&str>, body: &str) -> UserEntry {
    UserEntry {
        mid,
        key: key.map(str::to_owned),
        message_id: id(),
        operation: 1000,
        body: body.as_bytes().to_vec(),
    }
}

fn receipt(message_id: MessageId, target: ReceiptTarget, state: ReceiptState, at: i64) -> Receipt {
    Receipt {
        message_id,
        target,
        state,
        at,
    }
}

/// Milliseconds since the Unix epoch (leases are judged by a clock: the database's, or this one
/// for the memory store).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What a test compares of an event.
fn summary(events: &[FeedEvent]) -> Vec<(MessageId, ReceiptTarget, ReceiptState)> {
    events
        .iter()
        .map(|e| (e.message_id, e.target.clone(), e.state))
        .collect()
}

async fn a_new_consumer_starts_at_the_end_and_reads_in_recording_order(open: fn() -> Opening) {
    let Opened { inbox, feed, .. } = open().await;
    let before = user(9, None, "before");
    inbox
        .append_user(std::slice::from_ref(&before), T0)
        .await
        .unwrap();
    let start = feed
        .lease("webhook", "a", 60_000, now_ms())
        .await
        .unwrap()
        .expect("a free lease");
    // What the consumer never asked for is not replayed.
    assert!(
        feed.read(start, &ReceiptState::ALL, 100)
            .await
            .unwrap()
            .is_empty()
    );

    let push = user(1, None, "p");
    let mid = ReceiptTarget::Mid(1);
    inbox
        .record_receipts(&[receipt(
            push.message_id,
            mid.clone(),
            ReceiptState::Accepted,
            T0,
        )])
        .await
        .unwrap();
    let positions = inbox
        .append_user(std::slice::from_ref(&push), T0 + 1)
        .await
        .unwrap();
    inbox
        .record_receipts(&[receipt(
            push.message_id,
            mid.clone(),
            ReceiptState::Written,
            T0 + 2,
        )])
        .await
        .unwrap();
    let report = inbox
        .record_acks(
            &[AckEntry {
                mid: 1,
                key: "phone".into(),
                position: positions[0],
            }],
            T0 + 3,
        )
        .await
        .unwrap();
    assert_eq!(report.acked_pushes, 1);
    // A repeat records nothing, so it is not an event.
    inbox
        .record_receipts(&[receipt(
            push.message_id,
            mid.clone(),
            ReceiptState::Written,
            T0 + 9,
        )])
        .await
        .unwrap();

    let events = feed.read(start, &ReceiptState::ALL, 100).await.unwrap();
    assert_eq!(
        summary(&events),
        [
            (push.message_id, mid.clone(), ReceiptState::Accepted),
            (push.message_id, mid.clone(), ReceiptState::Stored),
            (push.message_id, mid.clone(), ReceiptState::Written),
            (push.message_id, mid.clone(), ReceiptState::Acked),
        ]
    );
    assert_eq!(
        events.iter().map(|e| e.at).collect::<Vec<_>>(),
        [T0, T0 + 1, T0 + 2, T0 + 3]
    );
    let cursors: Vec<FeedCursor> = events.iter().map(|e| e.cursor).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    let ids: BTreeSet<u64> = events.iter().map(|e| e.cursor.id).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    assert!(events.iter().all(|e| e.cursor > start));
}

async fn pages_follow_the_cursor_and_filter_by_state(open: fn() -> Opening) {
    let Opened { inbox, feed, url } = open().await;
    let start = feed
        .lease("webhook", "a", 60_000, now_ms())
        .await
        .unwrap()
        .unwrap();
    let pushes: Vec<UserEntry> = (0..5).map(|n| user(7, None, &format!("{n}"))).collect();
    inbox.append_user(&pushes, T0).await.unwrap();
    let offline: Vec<Receipt> = pushes
        .iter()
        .map(|p| {
            receipt(
                p.message_id,
                ReceiptTarget::Mid(7),
                ReceiptState::Offline,
                T0,
            )
        })
        .collect();
    inbox.record_receipts(&offline).await.unwrap();

    // Pages of two, each from the last cursor handed out: every receipt once, stored before
    // offline (recording order).
    let mut cursor = start;
    let mut seen = Vec::new();
    loop {
        let page = feed.read(cursor, &ReceiptState::ALL, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = last.cursor;
        seen.extend(page);
    }
    let expected: Vec<_> = pushes
        .iter()
        .map(|p| (p.message_id, ReceiptTarget::Mid(7), ReceiptState::Stored))
        .chain(
            pushes
                .iter()
                .map(|p| (p.message_id, ReceiptTarget::Mid(7), ReceiptState::Offline)),
        )
        .collect();
    assert_eq!(summary(&seen), expected);

    // A state filter skips the rest but keeps the order.
    let only_offline = feed
        .read(start, &[ReceiptState::Offline], 100)
        .await
        .unwrap();
    assert_eq!(summary(&only_offline), expected[5..]);

    // The cursor is the consumer's, kept by the store: a restarted instance (a new connection to
    // the same database) continues from it.
    assert!(feed.advance("webhook", "a", seen[4].cursor).await.unwrap());
    let resumed = match url {
        Some(url) => PostgresStore::connect(&url, StoreSettings::default())
            .await
            .unwrap()
            .receipt_feed(InboxSettings::default())
            .unwrap(),
        None => feed.clone(),
    };
    let cursor = resumed
        .lease("webhook", "a", 60_000, now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cursor, seen[4].cursor);
    let rest = resumed.read(cursor, &ReceiptState::ALL, 100).await.unwrap();
    assert_eq!(summary(&rest), expected[5..]);
}

async fn only_the_lease_holder_moves_the_cursor(open: fn() -> Opening) {
    let Opened { inbox, feed, .. } = open().await;
    let start = feed
        .lease("webhook", "a", 500, now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        feed.lease("webhook", "b", 500, now_ms()).await.unwrap(),
        None
    );
    // Consumers are independent: another name has its own lease.
    assert!(
        feed.lease("fallback", "b", 500, now_ms())
            .await
            .unwrap()
            .is_some()
    );
    let push = user(3, None, "x");
    inbox.append_user(&[push], T0).await.unwrap();
    let events = feed.read(start, &ReceiptState::ALL, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    let end = events[0].cursor;

    assert!(!feed.advance("webhook", "b", end).await.unwrap());
    assert_eq!(
        feed.lease("webhook", "a", 500, now_ms()).await.unwrap(),
        Some(start)
    );
    assert!(feed.advance("webhook", "a", end).await.unwrap());
    // Never backwards.
    assert!(feed.advance("webhook", "a", start).await.unwrap());
    assert_eq!(
        feed.lease("webhook", "a", 500, now_ms()).await.unwrap(),
        Some(end)
    );

    // Once a's lease runs out, b takes over with a's cursor, and a can no longer move it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        feed.lease("webhook", "b", 500, now_ms()).await.unwrap(),
        Some(end)
    );
    assert!(!feed.advance("webhook", "a", end).await.unwrap());
    assert_eq!(
        feed.lease("webhook", "a", 500, now_ms()).await.unwrap(),
        None
    );
}

async fn concurrent_writers_are_never_skipped(open: fn() -> Opening) {
    const WRITERS: u64 = 8;
    const CALLS: u64 = 40;
    const PER_CALL: u64 = 5;
    let Opened { inbox, feed, .. } = open().await;
    let mut cursor = feed
        .lease("webhook", "reader", 60_000, now_ms())
        .await
        .unwrap()
        .unwrap();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let inbox = inbox.clone();
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for call in 0..CALLS {
                let batch: Vec<Receipt> = (0..PER_CALL)
                    .map(|n| {
                        receipt(
                            id(),
                            ReceiptTarget::Mid(1 + (writer * 1000 + call * 10 + n) as i64),
                            ReceiptState::Written,
                            T0,
                        )
                    })
                    .collect();
                inbox.record_receipts(&batch).await.unwrap();
                written.extend(batch.into_iter().map(|r| (r.message_id, r.target)));
            }
            written
        }));
    }
    // Read while they write, advancing after every page as a consumer does.
    let total = (WRITERS * CALLS * PER_CALL) as usize;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "saw {} of {total}",
            seen.len()
        );
        let page = feed.read(cursor, &ReceiptState::ALL, 7).await.unwrap();
        match page.last() {
            Some(last) => {
                cursor = last.cursor;
                assert!(feed.advance("webhook", "reader", cursor).await.unwrap());
            }
            None => tokio::time::sleep(Duration::from_millis(2)).await,
        }
        seen.extend(page.into_iter().map(|e| (e.message_id, e.target)));
    }
    let mut written = BTreeSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    let seen_set: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen_set.len(), seen.len(), "no receipt twice");
    assert_eq!(seen_set, written, "every receipt once");
    assert!(
        feed.read(cursor, &ReceiptState::ALL, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn candidate(
    message_id: MessageId,
    target: ReceiptTarget,
    reason: FallbackReason,
) -> FallbackCandidate {
    FallbackCandidate {
        message_id,
        target,
        reason,
    }
}

async fn fallback_is_claimed_once_and_never_for_an_acked_push(open: fn() -> Opening) {
    let Opened { inbox, feed, .. } = open().await;
    let start = feed
        .lease("fallback", "a", 60_000, now_ms())
        .await
        .unwrap()
        .unwrap();
    // Two pushes for user 1, a key push for user 2's "tablet", a push user 3 acks, and a key push
    // to a key without a session (never stored: offline only).
    let first = user(1, None, "first");
    let second = user(1, None, "second");
    let keyed = user(2, Some("tablet"), "for the tablet");
    let acked = user(3, None, "acked");
    let positions = inbox
        .append_user(
            &[first.clone(), second.clone(), keyed.clone(), acked.clone()],
            T0,
        )
        .await
        .unwrap();
    inbox
        .record_acks(
            &[AckEntry {
                mid: 3,
                key: "phone".into(),
                position: positions[3],
            }],
            T0 + 1,
        )
        .await
        .unwrap();
    let unplaced = id();
    let nowhere = ReceiptTarget::Key("nowhere".into());
    inbox
        .record_receipts(&[receipt(
            unplaced,
            nowhere.clone(),
            ReceiptState::Offline,
            T0,
        )])
        .await
        .unwrap();

    let wanted = [
        candidate(
            second.message_id,
            ReceiptTarget::Mid(1),
            FallbackReason::Unacked,
        ),
        candidate(
            keyed.message_id,
            ReceiptTarget::Key("tablet".into()),
            FallbackReason::Unacked,
        ),
        candidate(
            acked.message_id,
            ReceiptTarget::Mid(3),
            FallbackReason::Unacked,
        ),
        candidate(unplaced, nowhere.clone(), FallbackReason::Offline),
        // Named twice in one claim: once.
        candidate(
            second.message_id,
            ReceiptTarget::Mid(1),
            FallbackReason::Unacked,
        ),
    ];
    let claimed = feed.claim_fallbacks(&wanted, T0 + 5).await.unwrap();
    let got: Vec<_> = claimed
        .iter()
        .map(|c| (c.candidate.clone(), c.push.clone()))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].0, wanted[0]);
    let push = got[0].1.as_ref().expect("stored push");
    assert_eq!(push.position, Position::new(0, 2).unwrap());
    assert_eq!(
        (push.operation, push.body.as_slice()),
        (1000, &b"second"[..])
    );
    assert_eq!(got[1].0, wanted[1]);
    let push = got[1].1.as_ref().expect("stored key push");
    assert_eq!(push.position, positions[2]);
    assert_eq!(push.body, b"for the tablet");
    assert_eq!(got[2].0, wanted[3]);
    assert_eq!(
        got[2].1, None,
        "a key push without a session was never stored"
    );

    // Claimed once: nobody gets them again.
    assert!(
        feed.claim_fallbacks(&wanted, T0 + 6)
            .await
            .unwrap()
            .is_empty()
    );
    // The claim is a receipt like the others: visible per push and in the feed.
    let states: Vec<ReceiptState> = inbox
        .receipts(second.message_id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(states, [ReceiptState::Stored, ReceiptState::Fallback]);
    let fallbacks = feed
        .read(start, &[ReceiptState::Fallback], 100)
        .await
        .unwrap();
    assert_eq!(fallbacks.len(), 3);
    assert!(fallbacks.iter().all(|e| e.at == T0 + 5));
    // An empty claim is nothing to do.
    assert!(feed.claim_fallbacks(&[], T0).await.unwrap().is_empty());
    assert!(first.message_id != second.message_id);
}

async fn concurrent_claimers_get_each_candidate_once(open: fn() -> Opening) {
    let Opened { inbox, feed, .. } = open().await;
    let pushes: Vec<UserEntry> = (1..=50).map(|mid| user(mid, None, "p")).collect();
    inbox.append_user(&pushes, T0).await.unwrap();
    let candidates: Arc<Vec<FallbackCandidate>> = Arc::new(
        pushes
            .iter()
            .map(|p| {
                candidate(
                    p.message_id,
                    ReceiptTarget::Mid(p.mid),
                    FallbackReason::Unacked,
                )
            })
            .collect(),
    );
    let mut claimers = Vec::new();
    for _ in 0..6 {
        let feed = feed.clone();
        let candidates = candidates.clone();
        claimers.push(tokio::spawn(async move {
            feed.claim_fallbacks(&candidates, T0).await.unwrap()
        }));
    }
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(
            claimer
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.candidate.message_id, c.candidate.target)),
        );
    }
    let unique: BTreeSet<_> = claimed.iter().cloned().collect();
    assert_eq!(
        claimed.len(),
        50,
        "each candidate claimed by exactly one claimer"
    );
    assert_eq!(unique.len(), 50);
}

async fn bad_input_is_refused(open: fn() -> Opening) {
    let Opened { feed, .. } = open().await;
    assert!(feed.lease("", "a", 1000, now_ms()).await.is_err());
    assert!(
        feed.lease(&"c".repeat(65), "a", 1000, now_ms())
            .await
            .is_err()
    );
    assert!(
        feed.read(FeedCursor::default(), &ReceiptState::ALL, 0)
            .await
            .is_err()
    );
    let many: Vec<FallbackCandidate> = (0..=MAX_RECEIPT_BATCH)
        .map(|_| candidate(id(), ReceiptTarget::Mid(1), FallbackReason::Offline))
        .collect();
    assert!(feed.claim_fallbacks(&many, T0).await.is_err());
}

/// PostgreSQL hands out feed numbers when a receipt is inserted, not when it commits: a receipt
/// of a transaction that is still open must hold the feed back, not be skipped when it commits
/// after a later receipt was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_postgres_a_late_commit_of_an_older_transaction_is_not_skipped() {
    let Opened { inbox, feed, url } = postgres().await;
    let url = url.expect("a database");
    let start = feed
        .lease("webhook", "a", 60_000, now_ms())
        .await
        .unwrap()
        .unwrap();
    // An instance's transaction records a receipt and stays open (as an append does while its
    // push is published).
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut slow = pool.begin().await.unwrap();
    let early = id();
    sqlx::query("INSERT INTO push_receipts (message_id, target, state, at) VALUES ($1::text::uuid, 'mid:1', 3, $2)")
        .bind(early.to_string())
        .bind(T0)
        .execute(&mut *slow)
        .await
        .unwrap();
    // Meanwhile another receipt commits.
    let late = id();
    inbox
        .record_receipts(&[receipt(
            late,
            ReceiptTarget::Mid(2),
            ReceiptState::Written,
            T0,
        )])
        .await
        .unwrap();
    assert!(
        feed.read(start, &ReceiptState::ALL, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing after a transaction that may still commit is final"
    );
    slow.commit().await.unwrap();
    let events = feed.read(start, &ReceiptState::ALL, 10).await.unwrap();
    assert_eq!(
        summary(&events),
        [
            (early, ReceiptTarget::Mid(1), ReceiptState::Written),
            (late, ReceiptTarget::Mid(2), ReceiptState::Written),
        ]
    );
}
