//! Session batches in PostgreSQL: a constant number of round trips per batch, whatever its size.
//!
//! A batch is one transaction on one pooled connection. Disconnects and renewals of keys with no
//! other event in the batch (most of a steady-state batch) are exactly guarded SQL writes: a
//! `DELETE` and an `UPDATE` that match the node and connection id, sent together as one statement
//! over `unnest`ed arrays; the rows it touched (`RETURNING`) are what the report counts. Everything
//! else (every connect, and keys with several events) is replayed in Rust
//! ([`plan_session_events`], the same code as the memory store) against the stored sessions, read
//! with one `= ANY` lookup after the keys were locked, and the net writes, at most one per key (plus,
//! rarely, a removal before an upsert), go out through the same statement. The lock is what makes
//! takeovers exact: a connect's outcome depends on the stored session, and the session it displaces
//! must be reported so its edge can close it, so no other batch may connect the same key between
//! the read and the write.

use super::errors::store_error;
use super::rows::{SessionRow, connection_id_to_sql, session_columns};
use crate::error::StoreError;
use crate::model::{Session, SessionApplyReport, UnixMillis};
use crate::session_rules::{SessionIdentity, plan_session_events};
use rim_proto::schema::SessionEvent;
use rim_proto::schema::session_event::Kind;
use sqlx::{Connection, PgConnection, PgPool};
use std::collections::HashMap;

/// Removals (`$1..$4`), renewals (`$5..$10`) and upserts (`$11..$20`) in one statement, returning
/// how many rows each changed. The data-modifying CTEs touch disjoint keys. Removals and renewals
/// match the node and connection id, and the connect time too where it is known (not NULL); upserts
/// replace a stored session of another node, or of the same node when it is not newer
/// (`session_rules::connect_wins`).
const WRITE: &str = r#"
WITH removed AS (
    DELETE FROM sessions s
    USING unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS t(key, node_id, connection_id, connected_at)
    WHERE s.key = t.key AND s.node_id = t.node_id AND s.connection_id = t.connection_id
      AND (t.connected_at IS NULL OR s.connected_at = t.connected_at)
    RETURNING 1
), renewed AS (
    UPDATE sessions s SET room = t.room, expires_at = t.expires_at
    FROM unnest($5::text[], $6::text[], $7::int8[], $8::int8[], $9::text[], $10::int8[])
        AS t(key, node_id, connection_id, connected_at, room, expires_at)
    WHERE s.key = t.key AND s.node_id = t.node_id AND s.connection_id = t.connection_id
      AND (t.connected_at IS NULL OR s.connected_at = t.connected_at)
    RETURNING 1
), upserted AS (
    INSERT INTO sessions (key, mid, node_id, room, platform, accepts, connection_id, ip, connected_at, expires_at)
    SELECT t.key, t.mid, t.node_id, t.room, t.platform, t.accepts::int4[], t.connection_id, t.ip,
           t.connected_at, t.expires_at
    FROM unnest($11::text[], $12::int8[], $13::text[], $14::text[], $15::text[], $16::text[], $17::int8[],
                $18::text[], $19::int8[], $20::int8[])
        AS t(key, mid, node_id, room, platform, accepts, connection_id, ip, connected_at, expires_at)
    ON CONFLICT (key) DO UPDATE SET
        mid = EXCLUDED.mid, node_id = EXCLUDED.node_id, room = EXCLUDED.room, platform = EXCLUDED.platform,
        accepts = EXCLUDED.accepts, connection_id = EXCLUDED.connection_id, ip = EXCLUDED.ip,
        connected_at = EXCLUDED.connected_at, expires_at = EXCLUDED.expires_at
    WHERE sessions.node_id <> EXCLUDED.node_id OR sessions.connected_at <= EXCLUDED.connected_at
    RETURNING 1
)
SELECT (SELECT count(*) FROM removed), (SELECT count(*) FROM renewed), (SELECT count(*) FROM upserted)
"#;

/// How often a batch is tried when PostgreSQL aborts it to break a deadlock with a concurrent batch.
const DEADLOCK_ATTEMPTS: u32 = 3;

/// Applies one node's batch (see the module docs); [`StoreError::UnknownNode`] unless the node is
/// registered and not dead.
///
/// The transaction holds a share lock on the node row, so marking the node dead (which updates that
/// row) waits for batches in flight, and batches after it see the node dead: no session can be
/// written for a node whose sessions were just removed. Batches that cross each other's keys can
/// still deadlock on row locks; PostgreSQL aborts one, and it is retried.
pub(super) async fn apply_batch(
    conn: &mut PgConnection,
    node_id: &str,
    events: &[SessionEvent],
    now: UnixMillis,
    session_ttl_ms: i64,
) -> Result<SessionApplyReport, StoreError> {
    let mut attempt = 1;
    loop {
        match try_apply_batch(conn, node_id, events, now, session_ttl_ms).await {
            Ok(applied) => return applied,
            Err(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("40P01") && attempt < DEADLOCK_ATTEMPTS =>
            {
                tracing::debug!(node_id, attempt, "session batch deadlocked; retrying");
                attempt += 1;
            }
            Err(err) => return Err(store_error(err)),
        }
    }
}

/// One attempt at [`apply_batch`]: database errors outside, the node's absence inside.
async fn try_apply_batch(
    conn: &mut PgConnection,
    node_id: &str,
    events: &[SessionEvent],
    now: UnixMillis,
    session_ttl_ms: i64,
) -> Result<Result<SessionApplyReport, StoreError>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let live: Option<bool> =
        sqlx::query_scalar("SELECT state <> 'dead' FROM nodes WHERE id = $1 FOR SHARE")
            .bind(node_id)
            .fetch_optional(&mut *tx)
            .await?;
    if live != Some(true) {
        return Ok(Err(StoreError::UnknownNode(node_id.to_owned())));
    }
    let expires_at = now.saturating_add(session_ttl_ms);
    let (singles, planned) = split_batch(events);

    let mut report = if planned.is_empty() {
        SessionApplyReport::default()
    } else {
        replay(&mut tx, node_id, &planned, now, session_ttl_ms).await?
    };
    let mut single_writes = Writes::default();
    for event in &singles {
        match event.kind() {
            Kind::Disconnect => {
                single_writes.remove(&event.key, node_id, event.connection_id, None)
            }
            Kind::Renew => single_writes.renew(
                &event.key,
                node_id,
                event.connection_id,
                None,
                &event.room,
                expires_at,
            ),
            // `split_batch` leaves connects and events of unknown kinds to the replay.
            Kind::Connect | Kind::Unspecified => {}
        }
    }
    let (disconnected, renewed, _) = single_writes.execute(&mut tx).await?;
    report.disconnected += disconnected;
    report.renewed += renewed;
    report.ignored += (singles.len() as u64).saturating_sub(disconnected + renewed);
    tx.commit().await?;
    Ok(Ok(report))
}

/// Splits a batch into the disconnects and renewals of keys with no other event in the batch, which
/// SQL applies directly (guarded by node and connection id), and the rest, in batch order, which is
/// replayed: every connect (its outcome depends on the stored session, and a displaced one must be
/// reported), every key with several events, and malformed events (which the replay ignores).
fn split_batch(events: &[SessionEvent]) -> (Vec<&SessionEvent>, Vec<&SessionEvent>) {
    let mut per_key: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    for event in events {
        *per_key.entry(event.key.as_str()).or_default() += 1;
    }
    events.iter().partition(|event| {
        per_key[event.key.as_str()] == 1
            && !event.key.is_empty()
            && matches!(event.kind(), Kind::Disconnect | Kind::Renew)
    })
}

/// Advisory-lock class of session keys (two-key form, apart from sqlx's one-key migration lock).
const KEY_LOCK_CLASS: i32 = 0x7269_6d6b; // "rimk"

/// Replays the events of the keys that need it against their stored sessions and writes the net
/// effect; returns what the events did.
///
/// The keys are locked first (transaction-scoped advisory locks on their hashes, in hash order, so
/// two batches wait for each other instead of deadlocking) and their rows read `FOR UPDATE`: no
/// other batch can connect one of these keys between the read and the write, keys without a row
/// included, so the plan (who wins, who is displaced) is exact.
async fn replay(
    tx: &mut PgConnection,
    node_id: &str,
    events: &[&SessionEvent],
    now: UnixMillis,
    session_ttl_ms: i64,
) -> Result<SessionApplyReport, sqlx::Error> {
    let mut keys: Vec<&str> = events
        .iter()
        .map(|event| event.key.as_str())
        .filter(|key| !key.is_empty())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, h)
         FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($2::text[]) AS k ORDER BY h) AS t",
    )
    .bind(KEY_LOCK_CLASS)
    .bind(&keys)
    .execute(&mut *tx)
    .await?;
    let mut stored: HashMap<String, Session> = sqlx::query_as::<_, SessionRow>(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE key = ANY($1) ORDER BY key FOR UPDATE"
    ))
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| {
        let session = Session::from(row);
        (session.key.clone(), session)
    })
    .collect();
    let plan = plan_session_events(
        node_id,
        events.iter().copied(),
        now,
        session_ttl_ms,
        |key| stored.remove(key),
    );
    // An upsert may replace a row only once the older-but-removed session it displaces is gone, so
    // removals go first when the plan has both.
    let mut first = Writes::default();
    let mut second = Writes::default();
    let removals = if plan.upserts.is_empty() {
        &mut second
    } else {
        &mut first
    };
    for identity in plan.removals {
        removals.remove_identity(identity);
    }
    for renewal in plan.renewals {
        let SessionIdentity {
            key,
            node_id,
            connection_id,
            connected_at,
        } = renewal.identity;
        second.renew(
            &key,
            &node_id,
            connection_id,
            Some(connected_at),
            &renewal.room,
            renewal.expires_at,
        );
    }
    for session in plan.upserts {
        second.upsert(session);
    }
    first.execute(tx).await?;
    second.execute(tx).await?;
    Ok(plan.report)
}

/// Rows to remove, renew and upsert with one [`WRITE`] statement, as its array parameters.
#[derive(Default)]
struct Writes {
    removals: GuardColumns,
    renewals: GuardColumns,
    renew_rooms: Vec<String>,
    renew_expiries: Vec<i64>,
    upserts: Vec<Session>,
}

/// Which row a removal or renewal may touch: key, node, connection id and, when known, connect time.
#[derive(Default)]
struct GuardColumns {
    keys: Vec<String>,
    node_ids: Vec<String>,
    connection_ids: Vec<i64>,
    connected_ats: Vec<Option<i64>>,
}

impl GuardColumns {
    fn push(&mut self, key: &str, node_id: &str, connection_id: u64, connected_at: Option<i64>) {
        self.keys.push(key.to_owned());
        self.node_ids.push(node_id.to_owned());
        self.connection_ids
            .push(connection_id_to_sql(connection_id));
        self.connected_ats.push(connected_at);
    }
}

impl Writes {
    fn remove(&mut self, key: &str, node_id: &str, connection_id: u64, connected_at: Option<i64>) {
        self.removals
            .push(key, node_id, connection_id, connected_at);
    }

    fn remove_identity(&mut self, identity: SessionIdentity) {
        let SessionIdentity {
            key,
            node_id,
            connection_id,
            connected_at,
        } = identity;
        self.remove(&key, &node_id, connection_id, Some(connected_at));
    }

    fn renew(
        &mut self,
        key: &str,
        node_id: &str,
        connection_id: u64,
        connected_at: Option<i64>,
        room: &str,
        expires_at: UnixMillis,
    ) {
        self.renewals
            .push(key, node_id, connection_id, connected_at);
        self.renew_rooms.push(room.to_owned());
        self.renew_expiries.push(expires_at);
    }

    fn upsert(&mut self, session: Session) {
        self.upserts.push(session);
    }

    /// Runs the statement (nothing when empty); returns the rows (removed, renewed, upserted).
    /// Upserts go in key order, so concurrent batches lock the rows they share in the same order.
    async fn execute(mut self, tx: &mut PgConnection) -> Result<(u64, u64, u64), sqlx::Error> {
        if self.removals.keys.is_empty() && self.renewals.keys.is_empty() && self.upserts.is_empty()
        {
            return Ok((0, 0, 0));
        }
        self.upserts.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let up = UpsertColumns::from(self.upserts);
        let (removed, renewed, upserted): (i64, i64, i64) = sqlx::query_as(WRITE)
            .bind(self.removals.keys)
            .bind(self.removals.node_ids)
            .bind(self.removals.connection_ids)
            .bind(self.removals.connected_ats)
            .bind(self.renewals.keys)
            .bind(self.renewals.node_ids)
            .bind(self.renewals.connection_ids)
            .bind(self.renewals.connected_ats)
            .bind(self.renew_rooms)
            .bind(self.renew_expiries)
            .bind(up.keys)
            .bind(up.mids)
            .bind(up.node_ids)
            .bind(up.rooms)
            .bind(up.platforms)
            .bind(up.accepts)
            .bind(up.connection_ids)
            .bind(up.ips)
            .bind(up.connected_ats)
            .bind(up.expires_ats)
            .fetch_one(&mut *tx)
            .await?;
        Ok((
            removed.unsigned_abs(),
            renewed.unsigned_abs(),
            upserted.unsigned_abs(),
        ))
    }
}

/// Columns of whole sessions, for the upsert.
#[derive(Default)]
struct UpsertColumns {
    keys: Vec<String>,
    mids: Vec<i64>,
    node_ids: Vec<String>,
    rooms: Vec<String>,
    platforms: Vec<String>,
    /// `int4[]` literals (`{1,2}`): arrays of arrays must be rectangular, so each travels as text.
    accepts: Vec<String>,
    connection_ids: Vec<i64>,
    ips: Vec<String>,
    connected_ats: Vec<i64>,
    expires_ats: Vec<i64>,
}

impl From<Vec<Session>> for UpsertColumns {
    fn from(sessions: Vec<Session>) -> Self {
        let mut columns = UpsertColumns::default();
        for session in sessions {
            let accepts: Vec<String> = session.accepts.iter().map(i32::to_string).collect();
            columns.accepts.push(format!("{{{}}}", accepts.join(",")));
            columns.keys.push(session.key);
            columns.mids.push(session.mid);
            columns.node_ids.push(session.node_id);
            columns.rooms.push(session.room);
            columns.platforms.push(session.platform);
            columns
                .connection_ids
                .push(connection_id_to_sql(session.connection_id));
            columns.ips.push(session.ip);
            columns.connected_ats.push(session.connected_at);
            columns.expires_ats.push(session.expires_at);
        }
        columns
    }
}

/// Live sessions of these keys, by key.
pub(super) async fn by_keys(
    pool: &PgPool,
    keys: &[String],
    now: UnixMillis,
) -> Result<Vec<Session>, StoreError> {
    let rows = sqlx::query_as::<_, SessionRow>(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE key = ANY($1) AND expires_at > $2 ORDER BY key"
    ))
    .bind(keys)
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    Ok(rows.into_iter().map(Session::from).collect())
}

/// Live sessions of these users, at most `per_user` each (newest first, ties by key), by key. Only
/// the kept rows leave the database.
pub(super) async fn newest_by_mids(
    pool: &PgPool,
    mids: &[i64],
    per_user: usize,
    now: UnixMillis,
) -> Result<Vec<Session>, StoreError> {
    let rows = sqlx::query_as::<_, SessionRow>(concat!(
        "SELECT ",
        session_columns!(),
        " FROM (SELECT *, row_number() OVER (PARTITION BY mid ORDER BY connected_at DESC, key) AS rank
                FROM sessions WHERE mid = ANY($1) AND expires_at > $2) AS ranked
          WHERE rank <= $3 ORDER BY key"
    ))
    .bind(mids)
    .bind(now)
    .bind(i64::try_from(per_user).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    Ok(rows.into_iter().map(Session::from).collect())
}
