//! [`PostgresReceiptFeed`]: the receipt feed in PostgreSQL (migration
//! `20261202093100_receipt_feed.sql`, which explains the cursor), by the rules of
//! [`crate::receipt_feed`].
//!
//! Every call is one statement. A read is an index range scan of `push_receipts_feed` from the
//! cursor, bounded by the oldest running transaction (so what it returns is final); a claim inserts
//! the `fallback` receipts with `ON CONFLICT DO NOTHING` and joins what it inserted to the inbox
//! through `inbox_messages_receipt_target`, so concurrent claimers of one candidate get it once
//! between them.

use super::PostgresStore;
use super::errors::{corrupt, store_error};
use crate::error::StoreError;
use crate::inbox::{ReceiptState, ReceiptTarget};
use crate::model::UnixMillis;
use crate::receipt_feed::{
    ClaimedFallback, FallbackCandidate, FallbackPush, FeedCursor, FeedEvent, ReceiptFeed,
    check_consumer, check_read_limit, unique_candidates,
};
use async_trait::async_trait;
use rim_proto::durable::{MessageId, Position};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};

/// A [`ReceiptFeed`] in PostgreSQL, sharing its store's connection pool.
#[derive(Clone, Debug)]
pub struct PostgresReceiptFeed {
    pool: PgPool,
}

impl PostgresStore {
    /// The receipt feed of this store's database, on the same pool.
    pub fn postgres_receipt_feed(&self) -> PostgresReceiptFeed {
        PostgresReceiptFeed {
            pool: self.pool.clone(),
        }
    }
}

/// Takes or renews a lease (a new consumer starts at the oldest running transaction: everything
/// final before it is behind its cursor) and answers the cursor while held.
const LEASE: &str = "
    INSERT INTO receipt_feed_consumers AS c (consumer, feed_txn, feed_id, holder, lease_until)
    VALUES ($1, pg_snapshot_xmin(pg_current_snapshot()), 0, $2, rim_now_ms() + $3)
    ON CONFLICT (consumer) DO UPDATE SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until
    WHERE c.holder = EXCLUDED.holder OR c.lease_until <= rim_now_ms()
    RETURNING c.feed_txn::text::int8, c.feed_id";

/// Moves a cursor forward for its lease holder (answers a row while `$2` holds the consumer).
const ADVANCE: &str = "
    UPDATE receipt_feed_consumers
    SET (feed_txn, feed_id) = (
        CASE WHEN (feed_txn, feed_id) < ($3::int8::text::xid8, $4) THEN $3::int8::text::xid8
             ELSE feed_txn END,
        CASE WHEN (feed_txn, feed_id) < ($3::int8::text::xid8, $4) THEN $4 ELSE feed_id END)
    WHERE consumer = $1 AND holder = $2";

/// A page of the feed after a cursor: only transactions older than every running one.
const READ: &str = "
    SELECT feed_txn::text::int8, feed_id, message_id::text, target, state, at FROM push_receipts
    WHERE (feed_txn, feed_id) > ($1::int8::text::xid8, $2)
      AND feed_txn < pg_snapshot_xmin(pg_current_snapshot())
      AND state = ANY($3)
    ORDER BY push_receipts.feed_txn, push_receipts.feed_id -- the index's order, not the output's
    LIMIT $4";

/// Claims the fallback of candidates not acked and not claimed, and answers each claimed one with
/// its push (the receipt-target expression is the index's, see the migration).
const CLAIM: &str = "
    WITH input AS (
        SELECT * FROM unnest($1::text[]::uuid[], $2::text[]) AS t(message_id, target)
    ), claimed AS (
        INSERT INTO push_receipts (message_id, target, state, at)
        SELECT i.message_id, i.target, 7, $3 FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM push_receipts r
                          WHERE r.message_id = i.message_id AND r.target = i.target AND r.state = 4)
        ON CONFLICT DO NOTHING
        RETURNING message_id, target
    )
    SELECT c.message_id::text, c.target, h.epoch, m.seq, m.operation, m.body
    FROM claimed c
    LEFT JOIN inbox_messages m ON m.message_id = c.message_id
         AND (CASE WHEN m.key IS NULL THEN 'mid:' || m.mid::text ELSE 'key:' || m.key END)
             COLLATE \"C\" = c.target
    LEFT JOIN inbox_heads h ON h.mid = m.mid";

fn number(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt("feed number", value))
}

/// A cursor number for the database (they came from it, so they fit).
fn sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn feed_cursor(txn: i64, id: i64) -> Result<FeedCursor, StoreError> {
    Ok(FeedCursor {
        txn: number(txn)?,
        id: number(id)?,
    })
}

fn target(text: &str) -> Result<ReceiptTarget, StoreError> {
    ReceiptTarget::from_text(text).ok_or_else(|| corrupt("receipt target", text))
}

/// A claimed row: message id, target, then the push's epoch, seq, operation and body if stored.
type ClaimRow = (
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<i32>,
    Option<Vec<u8>>,
);

#[async_trait]
impl ReceiptFeed for PostgresReceiptFeed {
    async fn lease(
        &self,
        consumer: &str,
        holder: &str,
        lease_ms: i64,
        _now: UnixMillis,
    ) -> Result<Option<FeedCursor>, StoreError> {
        check_consumer(consumer)?;
        let row: Option<(i64, i64)> = sqlx::query_as(LEASE)
            .bind(consumer)
            .bind(holder)
            .bind(lease_ms)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.map(|(txn, id)| feed_cursor(txn, id)).transpose()
    }

    async fn advance(
        &self,
        consumer: &str,
        holder: &str,
        to: FeedCursor,
    ) -> Result<bool, StoreError> {
        check_consumer(consumer)?;
        let updated = sqlx::query(ADVANCE)
            .bind(consumer)
            .bind(holder)
            .bind(sql(to.txn))
            .bind(sql(to.id))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn read(
        &self,
        after: FeedCursor,
        states: &[ReceiptState],
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        let limit = check_read_limit(limit)?;
        let codes: Vec<i16> = states.iter().map(|state| state.code()).collect();
        let rows: Vec<(i64, i64, String, String, i16, i64)> = sqlx::query_as(READ)
            .bind(sql(after.txn))
            .bind(sql(after.id))
            .bind(codes)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.into_iter()
            .map(|(txn, id, message_id, target_text, state, at)| {
                Ok(FeedEvent {
                    cursor: feed_cursor(txn, id)?,
                    message_id: message_id
                        .parse()
                        .map_err(|_| corrupt("message id", &message_id))?,
                    target: target(&target_text)?,
                    state: ReceiptState::from_code(state)
                        .ok_or_else(|| corrupt("receipt state", state))?,
                    at,
                })
            })
            .collect()
    }

    async fn claim_fallbacks(
        &self,
        candidates: &[FallbackCandidate],
        now: UnixMillis,
    ) -> Result<Vec<ClaimedFallback>, StoreError> {
        let candidates = unique_candidates(candidates)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = candidates
            .iter()
            .map(|c| c.message_id.to_string())
            .collect();
        let targets: Vec<String> = candidates.iter().map(|c| c.target.to_text()).collect();
        let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM)
            .bind(ids)
            .bind(targets)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        // Answered in the candidates' order, each once.
        let order: HashMap<(MessageId, &ReceiptTarget), usize> = candidates
            .iter()
            .enumerate()
            .map(|(index, c)| ((c.message_id, &c.target), index))
            .collect();
        let mut claimed = BTreeMap::new();
        for (message_id, target_text, epoch, seq, operation, body) in rows {
            let message_id: MessageId = message_id
                .parse()
                .map_err(|_| corrupt("message id", &message_id))?;
            let target = target(&target_text)?;
            let Some(&index) = order.get(&(message_id, &target)) else {
                return Err(corrupt("claimed fallback", &target_text));
            };
            let push = match (epoch, seq, operation, body) {
                (Some(epoch), Some(seq), Some(operation), Some(body)) => Some(FallbackPush {
                    position: Position::new(number(epoch)?, number(seq)?)
                        .map_err(|err| corrupt("position", err))?,
                    operation,
                    body,
                }),
                _ => None,
            };
            claimed.entry(index).or_insert_with(|| ClaimedFallback {
                candidate: candidates[index].clone(),
                push,
            });
        }
        Ok(claimed.into_values().collect())
    }
}
