//! [`PostgresInbox`]: the inbox in PostgreSQL (migration `20261202090900_durable_inbox.sql`), by the
//! rules of [`crate::inbox`].
//!
//! Every call is one statement, so one round trip: batches travel as arrays (`unnest`), and what a
//! call changes in several tables (heads, rows, receipts, trimming) is chained in data-modifying
//! CTEs. Numbering relies on the head row's lock: `INSERT .. ON CONFLICT DO UPDATE` of a user's
//! head waits for a concurrent append of the same user to commit and then adds to its result, so
//! numbers are gap-free and increasing however many instances append. Heads are locked in user (room)
//! order, so two batches naming the same users cannot deadlock.
//!
//! [`Inbox::append_published`] runs the same statements in one transaction (users, then rooms, then
//! receipts: one lock order for everyone), awaits the publish step while the heads stay locked, and
//! commits after it; a failed publish deletes the batch's rows and receipts ([`BURN`]) and commits
//! the advanced heads. A concurrent append of the same user waits on the head's lock for the whole
//! publish, which is what keeps bus order equal to number order across control instances.

use super::PostgresStore;
use super::errors::{corrupt, store_error};
use crate::error::StoreError;
use crate::inbox::{
    AckEntry, AckReport, BatchPositions, CleanupReport, DurableBatch, Inbox, InboxSettings,
    PublishStep, PublishedAppendError, ReadOutcome, Receipt, ReceiptState, ReceiptTarget,
    RoomEntry, StoredPush, UserEntry, check_acks, check_durable_batch, check_limit, check_mid,
    check_position, check_receipts, check_room, check_room_entries, check_user_entries,
    latest_acks, next_epoch, room_verdict, user_verdict,
};
use crate::model::UnixMillis;
use async_trait::async_trait;
use rim_proto::durable::{MessageId, Position};
use sqlx::{PgExecutor, PgPool};
use std::collections::BTreeSet;

/// An [`Inbox`] in PostgreSQL, sharing its store's connection pool.
#[derive(Clone, Debug)]
pub struct PostgresInbox {
    pool: PgPool,
    settings: InboxSettings,
}

impl PostgresStore {
    /// The inbox in this store's database, on the same pool. [`StoreError::Invalid`] for settings
    /// that keep nothing.
    pub fn postgres_inbox(&self, settings: InboxSettings) -> Result<PostgresInbox, StoreError> {
        settings.check()?;
        Ok(PostgresInbox {
            pool: self.pool.clone(),
            settings,
        })
    }
}

/// A number from the database as a position number.
fn number(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt("position number", value))
}

/// A position from the database.
fn position(epoch: i64, seq: i64) -> Result<Position, StoreError> {
    Position::new(number(epoch)?, number(seq)?).map_err(|err| corrupt("position", err))
}

/// A position number for the database (positions are at most 2^53 - 1, checked by the caller).
fn sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn message_id(text: &str) -> Result<MessageId, StoreError> {
    text.parse().map_err(|_| corrupt("message id", text))
}

/// The "receipt target" expression of an inbox row (`mid:<mid>` or `key:<key>`).
macro_rules! target_sql {
    ($alias:literal) => {
        concat!(
            "CASE WHEN ",
            $alias,
            ".key IS NULL THEN 'mid:' || ",
            $alias,
            ".mid ELSE 'key:' || ",
            $alias,
            ".key END"
        )
    };
}

/// The `expired` receipts, at time parameter `$now`, of removed rows (`gone`: message_id, mid,
/// key) not acked before.
macro_rules! expired_sql {
    ($now:literal) => {
        concat!(
            "SELECT g.message_id, ",
            target_sql!("g"),
            ", 6::int2, ",
            $now,
            " FROM gone g WHERE NOT EXISTS (SELECT 1 FROM push_receipts r
               WHERE r.message_id = g.message_id AND r.target = ",
            target_sql!("g"),
            " AND r.state = 4)"
        )
    };
}

/// Appends a batch of user pushes: heads bumped, rows inserted (those beyond the per-user count
/// are never stored), rows the count pushes out removed, `stored` and `expired` receipts written.
const APPEND_USER: &str = concat!(
    "WITH input AS (
        SELECT t.mid, t.key, t.message_id, t.operation, t.body, t.ord
        FROM unnest($1::int8[], $2::text[], $3::text[]::uuid[], $4::int4[], $5::bytea[])
             WITH ORDINALITY AS t(mid, key, message_id, operation, body, ord)
    ), counts AS (
        SELECT mid, count(*)::int8 AS n FROM input GROUP BY mid
    ), heads AS (
        INSERT INTO inbox_heads AS h (mid, epoch, head_seq, trimmed_seq)
        SELECT mid, 0, n, greatest(0, n - $7) FROM counts ORDER BY mid
        ON CONFLICT (mid) DO UPDATE
           SET head_seq = h.head_seq + EXCLUDED.head_seq,
               trimmed_seq = greatest(h.trimmed_seq, h.head_seq + EXCLUDED.head_seq - $7)
        RETURNING h.mid, h.epoch, h.head_seq, h.trimmed_seq
    ), numbered AS (
        SELECT i.*, h.epoch, h.trimmed_seq,
               h.head_seq - c.n + row_number() OVER (PARTITION BY i.mid ORDER BY i.ord) AS seq
        FROM input i JOIN heads h ON h.mid = i.mid JOIN counts c ON c.mid = i.mid
    ), stored AS (
        INSERT INTO inbox_messages (mid, seq, message_id, key, operation, body, created_at)
        SELECT mid, seq, message_id, key, operation, body, $6 FROM numbered WHERE seq > trimmed_seq
    ), gone AS (
        DELETE FROM inbox_messages m USING heads h
        WHERE h.trimmed_seq > 0 AND m.mid = h.mid AND m.seq <= h.trimmed_seq
        RETURNING m.message_id, m.mid, m.key
    ), receipts AS (
        INSERT INTO push_receipts (message_id, target, state, at)
        SELECT n.message_id, ",
    target_sql!("n"),
    ", CASE WHEN n.seq > n.trimmed_seq THEN 2::int2 ELSE 6::int2 END, $6 FROM numbered n
        UNION ALL ",
    expired_sql!("$6"),
    "
        ON CONFLICT DO NOTHING
    )
    SELECT epoch, seq FROM numbered ORDER BY ord"
);

/// Reads a user's head and, if the position is readable, a page of rows after it.
const READ_USER: &str = "
    SELECT h.epoch, h.head_seq, h.trimmed_seq,
           m.seq, m.message_id::text, m.key, m.operation, m.body, m.created_at
    FROM inbox_heads h
    LEFT JOIN LATERAL (
        SELECT seq, message_id, key, operation, body, created_at FROM inbox_messages
        WHERE mid = h.mid AND seq > $2 AND (key IS NULL OR key = $3)
          AND h.epoch = $4 AND $2 BETWEEN h.trimmed_seq AND h.head_seq
        ORDER BY seq LIMIT $5
    ) m ON true
    WHERE h.mid = $1
    ORDER BY m.seq";

/// A row of [`READ_USER`] / [`READ_ROOM`]: head figures, then an optional push.
type ReadRow = (
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<Vec<u8>>,
    Option<i64>,
);

/// The stored push of a read row, if it has one.
fn pushed(epoch: i64, row: ReadRow) -> Result<Option<StoredPush>, StoreError> {
    let (_, _, _, seq, id, key, operation, body, created_at) = row;
    let (Some(seq), Some(id), Some(operation), Some(body), Some(stored_at)) =
        (seq, id, operation, body, created_at)
    else {
        return Ok(None);
    };
    Ok(Some(StoredPush {
        position: position(epoch, seq)?,
        message_id: message_id(&id)?,
        key,
        operation,
        body,
        stored_at,
    }))
}

/// Applies a batch of acks (one per device, deduplicated by the caller): positions moved where
/// they are ahead in the current epoch, `acked` receipts for the rows they newly cover.
const RECORD_ACKS: &str = concat!(
    "WITH input AS (
        SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int8[]) AS t(mid, key, epoch, seq)
    ), valid AS (
        SELECT i.mid, i.key, i.epoch, i.seq FROM input i
        JOIN inbox_heads h ON h.mid = i.mid AND h.epoch = i.epoch AND i.seq <= h.head_seq
    ), prev AS (
        SELECT v.*, coalesce(a.acked_seq, 0) AS from_seq FROM valid v
        LEFT JOIN inbox_acks a ON a.mid = v.mid AND a.key = v.key AND a.epoch = v.epoch
    ), moved AS (
        INSERT INTO inbox_acks AS a (mid, key, epoch, acked_seq, acked_at)
        SELECT mid, key, epoch, seq, $5 FROM prev WHERE seq > from_seq ORDER BY mid, key
        ON CONFLICT (mid, key) DO UPDATE
           SET epoch = EXCLUDED.epoch, acked_seq = EXCLUDED.acked_seq, acked_at = EXCLUDED.acked_at
    ), acked AS (
        INSERT INTO push_receipts (message_id, target, state, at)
        SELECT m.message_id, ",
    target_sql!("m"),
    ", 4::int2, $5 FROM prev p
        JOIN inbox_messages m ON m.mid = p.mid AND m.seq > p.from_seq AND m.seq <= p.seq
                             AND (m.key IS NULL OR m.key = p.key)
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM valid), (SELECT count(*) FROM acked)"
);

/// Appends a batch of room pushes (heads created with epoch `$5`, the batch's time).
const APPEND_ROOM: &str = "
    WITH input AS (
        SELECT t.room, t.message_id, t.operation, t.body, t.ord
        FROM unnest($1::text[], $2::text[]::uuid[], $3::int4[], $4::bytea[])
             WITH ORDINALITY AS t(room, message_id, operation, body, ord)
    ), counts AS (
        SELECT room, count(*)::int8 AS n FROM input GROUP BY room
    ), heads AS (
        INSERT INTO room_heads AS h (room, epoch, head_seq, last_at)
        SELECT room, $5, n, $6 FROM counts ORDER BY room
        ON CONFLICT (room) DO UPDATE
           SET head_seq = h.head_seq + EXCLUDED.head_seq, last_at = EXCLUDED.last_at
        RETURNING h.room, h.epoch, h.head_seq
    ), numbered AS (
        SELECT i.*, h.epoch,
               h.head_seq - c.n + row_number() OVER (PARTITION BY i.room ORDER BY i.ord) AS seq
        FROM input i JOIN heads h ON h.room = i.room JOIN counts c ON c.room = i.room
    ), stored AS (
        INSERT INTO room_log (room, seq, message_id, operation, body, created_at)
        SELECT room, seq, message_id, operation, body, $6 FROM numbered
    )
    SELECT epoch, seq FROM numbered ORDER BY ord";

/// Reads a room's head and a page of rows after a number still in the window (`$4`: oldest time).
const READ_ROOM: &str = "
    SELECT h.epoch, h.head_seq, 0::int8,
           m.seq, m.message_id::text, NULL::text, m.operation, m.body, m.created_at
    FROM room_heads h
    LEFT JOIN LATERAL (
        SELECT seq, message_id, operation, body, created_at FROM room_log
        WHERE room = h.room AND seq > $2 AND created_at >= $4
        ORDER BY seq LIMIT $3
    ) m ON true
    WHERE h.room = $1
    ORDER BY m.seq";

/// Removes user rows past their age (at most `$2`), raises the heads' trimmed numbers and writes
/// `expired` receipts (at `$3`) for rows never acked.
const CLEANUP_MESSAGES: &str = concat!(
    "WITH victims AS (
        SELECT mid, seq FROM inbox_messages WHERE created_at < $1 LIMIT $2
    ), gone AS (
        DELETE FROM inbox_messages m USING victims v WHERE m.mid = v.mid AND m.seq = v.seq
        RETURNING m.message_id, m.mid, m.key, m.seq
    ), trimmed AS (
        UPDATE inbox_heads h SET trimmed_seq = greatest(h.trimmed_seq, g.seq)
        FROM (SELECT mid, max(seq) AS seq FROM gone GROUP BY mid) g WHERE h.mid = g.mid
    ), expired AS (
        INSERT INTO push_receipts (message_id, target, state, at) ",
    expired_sql!("$3"),
    " ON CONFLICT DO NOTHING
    )
    SELECT count(*) FROM gone"
);

/// Runs [`APPEND_USER`] for checked entries on `executor` (the pool, or a transaction).
async fn append_users<'c>(
    executor: impl PgExecutor<'c>,
    entries: &[UserEntry],
    now: UnixMillis,
    max_per_user: u64,
) -> Result<Vec<Position>, StoreError> {
    let mids: Vec<i64> = entries.iter().map(|e| e.mid).collect();
    let keys: Vec<Option<&str>> = entries.iter().map(|e| e.key.as_deref()).collect();
    let ids: Vec<String> = entries.iter().map(|e| e.message_id.to_string()).collect();
    let operations: Vec<i32> = entries.iter().map(|e| e.operation).collect();
    let bodies: Vec<&[u8]> = entries.iter().map(|e| e.body.as_slice()).collect();
    let rows: Vec<(i64, i64)> = sqlx::query_as(APPEND_USER)
        .bind(mids)
        .bind(keys)
        .bind(ids)
        .bind(operations)
        .bind(bodies)
        .bind(now)
        .bind(sql(max_per_user))
        .fetch_all(executor)
        .await
        .map_err(store_error)?;
    rows.into_iter()
        .map(|(epoch, seq)| position(epoch, seq))
        .collect()
}

/// Runs [`APPEND_ROOM`] for checked entries on `executor`.
async fn append_rooms<'c>(
    executor: impl PgExecutor<'c>,
    entries: &[RoomEntry],
    now: UnixMillis,
) -> Result<Vec<Position>, StoreError> {
    let rooms: Vec<&str> = entries.iter().map(|e| e.room.as_str()).collect();
    let ids: Vec<String> = entries.iter().map(|e| e.message_id.to_string()).collect();
    let operations: Vec<i32> = entries.iter().map(|e| e.operation).collect();
    let bodies: Vec<&[u8]> = entries.iter().map(|e| e.body.as_slice()).collect();
    let rows: Vec<(i64, i64)> = sqlx::query_as(APPEND_ROOM)
        .bind(rooms)
        .bind(ids)
        .bind(operations)
        .bind(bodies)
        .bind(sql(next_epoch(0, now)))
        .bind(now)
        .fetch_all(executor)
        .await
        .map_err(store_error)?;
    rows.into_iter()
        .map(|(epoch, seq)| position(epoch, seq))
        .collect()
}

/// Inserts checked receipts on `executor`, keeping first times; answers how many were new.
async fn insert_receipts<'c>(
    executor: impl PgExecutor<'c>,
    receipts: &[Receipt],
) -> Result<u64, StoreError> {
    let ids: Vec<String> = receipts.iter().map(|r| r.message_id.to_string()).collect();
    let targets: Vec<String> = receipts.iter().map(|r| r.target.to_text()).collect();
    let states: Vec<i16> = receipts.iter().map(|r| r.state.code()).collect();
    let ats: Vec<i64> = receipts.iter().map(|r| r.at).collect();
    let inserted = sqlx::query(
        "INSERT INTO push_receipts (message_id, target, state, at)
         SELECT * FROM unnest($1::text[]::uuid[], $2::text[], $3::int2[], $4::int8[])
         ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(targets)
    .bind(states)
    .bind(ats)
    .execute(executor)
    .await
    .map_err(store_error)?;
    Ok(inserted.rows_affected())
}

/// Removes, inside the batch's transaction, what a durable batch stored: its user rows and room
/// rows by position, and every receipt of its pushes (their ids are new, so only the batch wrote
/// them). The heads keep their advanced numbers.
const BURN: &str = "
    WITH users AS (
        DELETE FROM inbox_messages m USING unnest($1::int8[], $2::int8[]) AS t(mid, seq)
        WHERE m.mid = t.mid AND m.seq = t.seq
    ), rooms AS (
        DELETE FROM room_log l USING unnest($3::text[], $4::int8[]) AS t(room, seq)
        WHERE l.room = t.room AND l.seq = t.seq
    )
    DELETE FROM push_receipts WHERE message_id = ANY($5::text[]::uuid[])";

async fn burn(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    batch: &DurableBatch,
    positions: &BatchPositions,
) -> Result<(), StoreError> {
    let mids: Vec<i64> = batch.users.iter().map(|e| e.mid).collect();
    let user_seqs: Vec<i64> = positions.users.iter().map(|p| sql(p.seq)).collect();
    let rooms: Vec<&str> = batch.rooms.iter().map(|e| e.room.as_str()).collect();
    let room_seqs: Vec<i64> = positions.rooms.iter().map(|p| sql(p.seq)).collect();
    let ids: BTreeSet<String> = batch
        .users
        .iter()
        .map(|e| e.message_id)
        .chain(batch.rooms.iter().map(|e| e.message_id))
        .chain(batch.receipts.iter().map(|r| r.message_id))
        .map(|id| id.to_string())
        .collect();
    sqlx::query(BURN)
        .bind(mids)
        .bind(user_seqs)
        .bind(rooms)
        .bind(room_seqs)
        .bind(ids.into_iter().collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    Ok(())
}

#[async_trait]
impl Inbox for PostgresInbox {
    async fn append_user(
        &self,
        entries: &[UserEntry],
        now: UnixMillis,
    ) -> Result<Vec<Position>, StoreError> {
        check_user_entries(entries)?;
        append_users(&self.pool, entries, now, self.settings.max_per_user).await
    }

    async fn read_user(
        &self,
        mid: i64,
        key: Option<&str>,
        after: Position,
        limit: usize,
    ) -> Result<ReadOutcome, StoreError> {
        check_mid(mid)?;
        let after = check_position(after)?;
        let limit = check_limit(limit)?;
        let rows: Vec<ReadRow> = sqlx::query_as(READ_USER)
            .bind(mid)
            .bind(sql(after.seq))
            .bind(key)
            .bind(sql(after.epoch))
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let Some(&(epoch, head, trimmed, ..)) = rows.first() else {
            // No head: nothing was ever stored for the user.
            return Ok(
                user_verdict(after, Position::ORIGIN, 0).unwrap_or(ReadOutcome::Page {
                    pushes: Vec::new(),
                    head: Position::ORIGIN,
                }),
            );
        };
        let head = position(epoch, head)?;
        if let Some(refused) = user_verdict(after, head, number(trimmed)?) {
            return Ok(refused);
        }
        let mut pushes = Vec::with_capacity(rows.len());
        for row in rows {
            pushes.extend(pushed(epoch, row)?);
        }
        Ok(ReadOutcome::Page { pushes, head })
    }

    async fn user_head(&self, mid: i64) -> Result<Position, StoreError> {
        check_mid(mid)?;
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT epoch, head_seq FROM inbox_heads WHERE mid = $1")
                .bind(mid)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        row.map_or(Ok(Position::ORIGIN), |(epoch, seq)| position(epoch, seq))
    }

    async fn reset_user(&self, mid: i64, now: UnixMillis) -> Result<Position, StoreError> {
        check_mid(mid)?;
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let old: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM inbox_heads WHERE mid = $1 FOR UPDATE")
                .bind(mid)
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
        let epoch = next_epoch(old.map(number).transpose()?.unwrap_or(0), now);
        sqlx::query(
            "INSERT INTO inbox_heads (mid, epoch, head_seq, trimmed_seq) VALUES ($1, $2, 0, 0)
             ON CONFLICT (mid) DO UPDATE SET epoch = $2, head_seq = 0, trimmed_seq = 0",
        )
        .bind(mid)
        .bind(sql(epoch))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        for delete in [
            "DELETE FROM inbox_messages WHERE mid = $1",
            "DELETE FROM inbox_acks WHERE mid = $1",
        ] {
            sqlx::query(delete)
                .bind(mid)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(Position { epoch, seq: 0 })
    }

    async fn record_acks(
        &self,
        acks: &[AckEntry],
        now: UnixMillis,
    ) -> Result<AckReport, StoreError> {
        check_acks(acks)?;
        // One ack per device (an upsert may not touch a row twice in one statement).
        let latest = latest_acks(acks);
        let mids: Vec<i64> = latest.keys().map(|(mid, _)| *mid).collect();
        let keys: Vec<&str> = latest.keys().map(|(_, key)| *key).collect();
        let epochs: Vec<i64> = latest.values().map(|p| sql(p.epoch)).collect();
        let seqs: Vec<i64> = latest.values().map(|p| sql(p.seq)).collect();
        let (valid, acked): (i64, i64) = sqlx::query_as(RECORD_ACKS)
            .bind(mids)
            .bind(keys)
            .bind(epochs)
            .bind(seqs)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        let valid = number(valid)?;
        Ok(AckReport {
            applied: valid,
            stale: latest.len() as u64 - valid.min(latest.len() as u64),
            acked_pushes: number(acked)?,
        })
    }

    async fn record_receipts(&self, receipts: &[Receipt]) -> Result<u64, StoreError> {
        check_receipts(receipts)?;
        insert_receipts(&self.pool, receipts).await
    }

    async fn receipts(&self, message_id: MessageId) -> Result<Vec<Receipt>, StoreError> {
        let rows: Vec<(String, i16, i64)> = sqlx::query_as(
            "SELECT target, state, at FROM push_receipts WHERE message_id = $1::uuid
             ORDER BY target, state",
        )
        .bind(message_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut receipts = rows
            .into_iter()
            .map(|(target, state, at)| {
                Ok(Receipt {
                    message_id,
                    target: ReceiptTarget::from_text(&target)
                        .ok_or_else(|| corrupt("receipt target", &target))?,
                    state: ReceiptState::from_code(state)
                        .ok_or_else(|| corrupt("receipt state", state))?,
                    at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Text order of `mid:12` and `mid:9` is not numeric order: sort as the type orders.
        receipts.sort_by(|a, b| (&a.target, a.state).cmp(&(&b.target, b.state)));
        Ok(receipts)
    }

    async fn append_room(
        &self,
        entries: &[RoomEntry],
        now: UnixMillis,
    ) -> Result<Vec<Position>, StoreError> {
        check_room_entries(entries)?;
        append_rooms(&self.pool, entries, now).await
    }

    async fn read_room(
        &self,
        room: &str,
        after: Position,
        limit: usize,
        now: UnixMillis,
    ) -> Result<ReadOutcome, StoreError> {
        check_room(room)?;
        let after = check_position(after)?;
        let limit = check_limit(limit)?;
        let rows: Vec<ReadRow> = sqlx::query_as(READ_ROOM)
            .bind(room)
            .bind(sql(after.seq))
            .bind(limit as i64)
            .bind(now - self.settings.room_window_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let Some(&(epoch, head, ..)) = rows.first() else {
            return Ok(
                room_verdict(after, Position::ORIGIN, None).unwrap_or(ReadOutcome::Page {
                    pushes: Vec::new(),
                    head: Position::ORIGIN,
                }),
            );
        };
        let head = position(epoch, head)?;
        let mut pushes = Vec::with_capacity(rows.len());
        for row in rows {
            pushes.extend(pushed(epoch, row)?);
        }
        let first = pushes.first().map(|push| push.position.seq);
        if let Some(refused) = room_verdict(after, head, first) {
            return Ok(refused);
        }
        Ok(ReadOutcome::Page { pushes, head })
    }

    async fn room_head(&self, room: &str) -> Result<Position, StoreError> {
        check_room(room)?;
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT epoch, head_seq FROM room_heads WHERE room = $1")
                .bind(room)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        row.map_or(Ok(Position::ORIGIN), |(epoch, seq)| position(epoch, seq))
    }

    async fn append_published(
        &self,
        batch: &DurableBatch,
        now: UnixMillis,
        publish: PublishStep<'_>,
    ) -> Result<BatchPositions, PublishedAppendError> {
        check_durable_batch(batch)?;
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let mut positions = BatchPositions::default();
        if !batch.users.is_empty() {
            positions.users =
                append_users(&mut *tx, &batch.users, now, self.settings.max_per_user).await?;
        }
        if !batch.rooms.is_empty() {
            positions.rooms = append_rooms(&mut *tx, &batch.rooms, now).await?;
        }
        if !batch.receipts.is_empty() {
            insert_receipts(&mut *tx, &batch.receipts).await?;
        }
        match publish(positions.clone()).await {
            Ok(()) => {
                tx.commit().await.map_err(store_error)?;
                Ok(positions)
            }
            Err(error) => {
                // Burn the numbers: remove what the batch stored, keep the heads advanced.
                let burned = burn(&mut tx, batch, &positions).await;
                match burned {
                    Ok(()) => {
                        if let Err(commit) = tx.commit().await {
                            tracing::warn!(error = %commit, "could not commit a burned durable batch; it is rolled back");
                        }
                    }
                    Err(burn) => {
                        tracing::warn!(error = %burn, "could not burn a durable batch; it is rolled back");
                    }
                }
                Err(PublishedAppendError::Publish(error))
            }
        }
    }

    async fn cleanup(&self, now: UnixMillis, batch: u64) -> Result<CleanupReport, StoreError> {
        let limit = sql(batch);
        let count = |query: &'static str, cutoff: i64| {
            sqlx::query_scalar::<_, i64>(query)
                .bind(cutoff)
                .bind(limit)
                .fetch_one(&self.pool)
        };
        let messages: i64 = sqlx::query_scalar(CLEANUP_MESSAGES)
            .bind(now - self.settings.max_age_ms)
            .bind(limit)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        let room_entries = count(
            "WITH gone AS (DELETE FROM room_log WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM room_log WHERE created_at < $1 LIMIT $2)) RETURNING 1)
             SELECT count(*) FROM gone",
            now - self.settings.room_window_ms,
        )
        .await
        .map_err(store_error)?;
        let room_heads = count(
            "WITH gone AS (DELETE FROM room_heads WHERE room = ANY(ARRAY(
                 SELECT h.room FROM room_heads h WHERE h.last_at < $1
                 AND NOT EXISTS (SELECT 1 FROM room_log l WHERE l.room = h.room) LIMIT $2))
                 RETURNING 1)
             SELECT count(*) FROM gone",
            now - self.settings.room_idle_ms,
        )
        .await
        .map_err(store_error)?;
        let receipts = count(
            "WITH gone AS (DELETE FROM push_receipts WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM push_receipts WHERE at < $1 LIMIT $2)) RETURNING 1)
             SELECT count(*) FROM gone",
            now - self.settings.receipt_max_age_ms,
        )
        .await
        .map_err(store_error)?;
        Ok(CleanupReport {
            messages: number(messages)?,
            room_entries: number(room_entries)?,
            room_heads: number(room_heads)?,
            receipts: number(receipts)?,
        })
    }
}
