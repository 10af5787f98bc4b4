//! Session batches in PostgreSQL: a constant number of round trips per batch, whatever its size.
//!
//! A batch is applied on one pooled connection in three steps: the node is checked, the stored
//! sessions of the batch's keys are read with one `= ANY` lookup, and the events are replayed in Rust
//! against them ([`plan_session_events`]), leaving at most one write per key (plus, rarely, a removal
//! before an upsert). The writes then go out as at most two statements: a `DELETE` joined to
//! `unnest`ed arrays, then an `UPDATE` joined the same way and an `INSERT ... SELECT unnest` upsert as
//! data-modifying CTEs over disjoint keys. Every write re-checks the rules in SQL against the row it
//! touches (the identity read in step two, or "not newer" for connects), so a batch racing with
//! another node's batch for the same key can lose its write but never break a rule; no row locks are
//! held between the read and the write.

use super::errors::store_error;
use super::rows::{SessionRow, connection_id_to_sql, session_columns};
use crate::error::StoreError;
use crate::model::{Session, SessionApplyReport, UnixMillis};
use crate::session_rules::{SessionIdentity, SessionPlan, plan_session_events};
use rim_proto::schema::SessionEvent;
use sqlx::{Connection, PgConnection, PgPool};
use std::collections::HashMap;

/// The plan's removals, each guarded by the identity of the row the plan was computed from.
const REMOVE: &str = r#"
DELETE FROM sessions s
USING unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS t(key, node_id, connection_id, connected_at)
WHERE s.key = t.key AND s.node_id = t.node_id
  AND s.connection_id = t.connection_id AND s.connected_at = t.connected_at
"#;

/// The plan's renewals (`$1..$6`) and upserts (`$7..$16`) in one statement. The two data-modifying
/// CTEs touch disjoint keys (the plan has one renewal or upsert per key); PostgreSQL runs
/// data-modifying CTEs whether or not the main query reads them.
const RENEW_AND_UPSERT: &str = r#"
WITH renewed AS (
    UPDATE sessions s SET room = t.room, expires_at = t.expires_at
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::int8[])
        AS t(key, node_id, connection_id, connected_at, room, expires_at)
    WHERE s.key = t.key AND s.node_id = t.node_id
      AND s.connection_id = t.connection_id AND s.connected_at = t.connected_at
), upserted AS (
    INSERT INTO sessions (key, mid, node_id, room, platform, accepts, connection_id, ip, connected_at, expires_at)
    SELECT t.key, t.mid, t.node_id, t.room, t.platform, t.accepts::int4[], t.connection_id, t.ip,
           t.connected_at, t.expires_at
    FROM unnest($7::text[], $8::int8[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int8[],
                $14::text[], $15::int8[], $16::int8[])
        AS t(key, mid, node_id, room, platform, accepts, connection_id, ip, connected_at, expires_at)
    ON CONFLICT (key) DO UPDATE SET
        mid = EXCLUDED.mid, node_id = EXCLUDED.node_id, room = EXCLUDED.room, platform = EXCLUDED.platform,
        accepts = EXCLUDED.accepts, connection_id = EXCLUDED.connection_id, ip = EXCLUDED.ip,
        connected_at = EXCLUDED.connected_at, expires_at = EXCLUDED.expires_at
    WHERE sessions.connected_at <= EXCLUDED.connected_at
)
SELECT 1
"#;

/// How often a batch is tried when PostgreSQL aborts it to break a deadlock with a concurrent batch.
const DEADLOCK_ATTEMPTS: u32 = 3;

/// Applies one node's batch (see the module docs); [`StoreError::UnknownNode`] unless the node is
/// registered and not dead.
///
/// The batch is one transaction holding a share lock on its node row, so marking the node dead
/// (which updates that row) waits for batches in flight, and batches after it see the node dead:
/// no session can be written for a node whose sessions were just removed. Two batches of different
/// nodes that take over each other's keys can deadlock; PostgreSQL aborts one, which is retried.
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
    let mut keys: Vec<&str> = events.iter().map(|event| event.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut stored: HashMap<String, Session> = sqlx::query_as::<_, SessionRow>(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE key = ANY($1)"
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
    let plan = plan_session_events(node_id, events, now, session_ttl_ms, |key| {
        stored.remove(key)
    });
    let report = plan.report;
    write_plan(&mut tx, plan).await?;
    tx.commit().await?;
    Ok(Ok(report))
}

/// Columns of identities, for the guarded `DELETE` and `UPDATE`.
#[derive(Default)]
struct IdentityColumns {
    keys: Vec<String>,
    node_ids: Vec<String>,
    connection_ids: Vec<i64>,
    connected_ats: Vec<i64>,
}

impl IdentityColumns {
    fn push(&mut self, identity: SessionIdentity) {
        self.keys.push(identity.key);
        self.node_ids.push(identity.node_id);
        self.connection_ids
            .push(connection_id_to_sql(identity.connection_id));
        self.connected_ats.push(identity.connected_at);
    }
}

/// Sends a plan's writes in the batch's transaction: removals first (an upsert may replace a row
/// only once the older-but-removed session it displaces is gone), then renewals and upserts.
/// Each list is in key order, so concurrent batches lock shared rows in the same order.
async fn write_plan(tx: &mut PgConnection, mut plan: SessionPlan) -> Result<(), sqlx::Error> {
    plan.removals.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    plan.renewals
        .sort_unstable_by(|a, b| a.identity.key.cmp(&b.identity.key));
    plan.upserts.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    if !plan.removals.is_empty() {
        let mut removals = IdentityColumns::default();
        plan.removals
            .drain(..)
            .for_each(|identity| removals.push(identity));
        sqlx::query(REMOVE)
            .bind(removals.keys)
            .bind(removals.node_ids)
            .bind(removals.connection_ids)
            .bind(removals.connected_ats)
            .execute(&mut *tx)
            .await?;
    }
    if !(plan.renewals.is_empty() && plan.upserts.is_empty()) {
        let mut renewals = IdentityColumns::default();
        let (mut rooms, mut expiries) = (Vec::new(), Vec::new());
        for renewal in plan.renewals {
            renewals.push(renewal.identity);
            rooms.push(renewal.room);
            expiries.push(renewal.expires_at);
        }
        let mut up = UpsertColumns::with_capacity(plan.upserts.len());
        plan.upserts
            .into_iter()
            .for_each(|session| up.push(session));
        sqlx::query(RENEW_AND_UPSERT)
            .bind(renewals.keys)
            .bind(renewals.node_ids)
            .bind(renewals.connection_ids)
            .bind(renewals.connected_ats)
            .bind(rooms)
            .bind(expiries)
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
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Columns of whole sessions, for the upsert.
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

impl UpsertColumns {
    fn with_capacity(count: usize) -> Self {
        Self {
            keys: Vec::with_capacity(count),
            mids: Vec::with_capacity(count),
            node_ids: Vec::with_capacity(count),
            rooms: Vec::with_capacity(count),
            platforms: Vec::with_capacity(count),
            accepts: Vec::with_capacity(count),
            connection_ids: Vec::with_capacity(count),
            ips: Vec::with_capacity(count),
            connected_ats: Vec::with_capacity(count),
            expires_ats: Vec::with_capacity(count),
        }
    }

    fn push(&mut self, session: Session) {
        let accepts: Vec<String> = session.accepts.iter().map(i32::to_string).collect();
        self.accepts.push(format!("{{{}}}", accepts.join(",")));
        self.keys.push(session.key);
        self.mids.push(session.mid);
        self.node_ids.push(session.node_id);
        self.rooms.push(session.room);
        self.platforms.push(session.platform);
        self.connection_ids
            .push(connection_id_to_sql(session.connection_id));
        self.ips.push(session.ip);
        self.connected_ats.push(session.connected_at);
        self.expires_ats.push(session.expires_at);
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

/// Live sessions of these users, by key.
pub(super) async fn by_mids(
    pool: &PgPool,
    mids: &[i64],
    now: UnixMillis,
) -> Result<Vec<Session>, StoreError> {
    let rows = sqlx::query_as::<_, SessionRow>(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE mid = ANY($1) AND expires_at > $2 ORDER BY key"
    ))
    .bind(mids)
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    Ok(rows.into_iter().map(Session::from).collect())
}
