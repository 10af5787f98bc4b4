//! [`PostgresStore`]: the production store, shared by every control-plane instance.
//!
//! Each trait call is one statement or one short transaction on a pooled connection. The pool waits
//! at most [`PoolSettings::acquire_timeout`] for a connection, so while the database is down calls
//! fail quickly with [`StoreError::Unavailable`] instead of queueing, and the pool reconnects by
//! itself when the database is back (each pooled connection is pinged before use, so connections
//! broken by a database restart are replaced rather than handed out). Every statement is bounded
//! by the server's `statement_timeout` ([`PoolSettings::statement_timeout`], 30 s by default): a
//! call stuck behind a lock nobody releases (an operator's open transaction, a table rewrite)
//! fails as unavailable and gives its pooled connection back, instead of holding both until the
//! lock goes. Migrations (`migrations/` at the repository root) are embedded and applied by
//! [`PostgresStore::connect`], without that bound; sqlx serialises
//! concurrent migrators with an advisory lock, so instances may start together.
//!
//! Liveness uses the database's clock (`rim_now_ms()`, defined by the migrations): `last_seen` is
//! stamped with it and node timeouts and the sweeper lease are judged by it; the callers' `now`
//! only dates sessions. Instances with skewed clocks therefore agree on which nodes are alive.

mod errors;
mod inbox;
mod node_keys;
mod receipt_feed;
mod rows;
mod sessions;

pub use inbox::PostgresInbox;
pub use receipt_feed::PostgresReceiptFeed;

use crate::error::StoreError;
use crate::model::{
    ApiKeyRecord, EndedUsers, ExpiryReport, Node, NodeState, OnlineTotals, Region, RegionRemoval,
    RegistrationReport, RoomOnline, Session, SessionApplyReport, UnixMillis,
};
use crate::node_input::{check_region, is_new_life, load_of, node_from_registration, region_of};
use crate::node_keys::NodeSigningKey;
use crate::{Store, StoreSettings};
use async_trait::async_trait;
use errors::store_error;
use rim_proto::schema::{NodeHeartbeat, NodeRegistration, SessionEvent};
use rows::{
    ApiKeyRow, NodeRow, RegionRow, api_key_columns, count_to_sql, node_columns, region_columns,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::collections::HashMap;
use std::time::Duration;

/// The schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// [`PoolSettings::statement_timeout`] by default.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the store uses its connection pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections opened to the database (PostgreSQL's own limit is shared by all instances).
    pub max_connections: u32,
    /// Longest a call waits for a connection before failing with [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// Longest one statement may run (waiting on locks included) before the server cancels it and
    /// the call fails with [`StoreError::Unavailable`]; zero: unbounded. A durable append may wait
    /// on a head that other instances hold while they publish, one after another, so it must
    /// exceed the publish timeout (`control_publish_timeout_ms`, 3 s by default) many times over.
    /// Migrations run without it.
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

/// A [`Store`] in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    settings: StoreSettings,
}

impl PostgresStore {
    /// Connects with the default [`PoolSettings`] and brings the schema up to date.
    pub async fn connect(url: &str, settings: StoreSettings) -> Result<Self, StoreError> {
        Self::connect_with(url, settings, PoolSettings::default()).await
    }

    /// Connects with explicit pool settings and brings the schema up to date.
    /// [`StoreError::Invalid`] for a malformed URL, [`StoreError::Unavailable`] when the database
    /// cannot be reached or migrated.
    pub async fn connect_with(
        url: &str,
        settings: StoreSettings,
        pool: PoolSettings,
    ) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|err| StoreError::Invalid(format!("database URL: {err}")))?;
        // Appended to what the URL sets, so it is the value that holds.
        // 0 is PostgreSQL's "unbounded"; a bound under a millisecond is one millisecond.
        let statement_timeout = match pool.statement_timeout.as_millis() {
            0 if !pool.statement_timeout.is_zero() => 1,
            millis => millis,
        }
        .to_string();
        let options = options.options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections)
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(store_error)?;
        migrate(&pool).await?;
        Ok(Self { pool, settings })
    }
}

/// Brings the schema up to date on a connection of its own without the statement timeout (a
/// migration may rewrite a large table), closed afterwards so the pool never hands it out.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let failed = |err: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("migrating the database: {err}"))
    };
    let mut migrating = pool.acquire().await.map_err(store_error)?;
    migrating.close_on_drop();
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *migrating)
        .await
        .map_err(|err| failed(&err))?;
    MIGRATOR
        .run(&mut *migrating)
        .await
        .map_err(|err| failed(&err))
}

/// What a session delete returns for [`EndedUsers`]: the user and its node's region.
macro_rules! ended_user {
    () => {
        "mid, COALESCE((SELECT n.region FROM nodes n WHERE n.id = sessions.node_id), '')"
    };
}

/// Marks nodes dead and removes their sessions and room counts, in the caller's transaction;
/// returns how many sessions went with them.
async fn bury(
    tx: &mut sqlx::PgConnection,
    node_ids: &[String],
    ended: &mut EndedUsers,
) -> Result<u64, sqlx::Error> {
    sqlx::query("UPDATE nodes SET state = 'dead' WHERE id = ANY($1)")
        .bind(node_ids)
        .execute(&mut *tx)
        .await?;
    clear_nodes(tx, node_ids, ended).await
}

/// Removes the sessions and room counts of a node's previous life (it restarted), in the caller's
/// transaction; returns how many sessions ended.
async fn end_previous_life(
    tx: &mut sqlx::PgConnection,
    node_id: &str,
    ended: &mut EndedUsers,
) -> Result<u64, sqlx::Error> {
    clear_nodes(tx, &[node_id.to_owned()], ended).await
}

/// Most sessions of dead or restarted nodes one statement removes. A large edge's sessions go in
/// rounds of this many (each found through the node index), all in the caller's transaction, so
/// no statement comes near the statement timeout however many sessions the node held; one
/// statement for all of them could exceed it and then fail the same way on every retry.
pub const SESSIONS_PER_ROUND: i64 = 10_000;

/// Removes the sessions and room counts of `node_ids`, noting the sessions' users in `ended`;
/// returns how many sessions ended.
async fn clear_nodes(
    tx: &mut sqlx::PgConnection,
    node_ids: &[String],
    ended: &mut EndedUsers,
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM room_counts WHERE node_id = ANY($1)")
        .bind(node_ids)
        .execute(&mut *tx)
        .await?;
    let mut count = 0;
    loop {
        // The node is checked again on the row itself: a session another node took over while
        // this statement waited for it is that node's now, and stays.
        let removed: Vec<(i64, String)> = sqlx::query_as(concat!(
            "DELETE FROM sessions WHERE node_id = ANY($1) AND key IN \
             (SELECT key FROM sessions WHERE node_id = ANY($1) LIMIT $2) RETURNING ",
            ended_user!()
        ))
        .bind(node_ids)
        .bind(SESSIONS_PER_ROUND)
        .fetch_all(&mut *tx)
        .await?;
        // A short round may only mean that some sessions moved meanwhile: done once a round
        // finds nothing left.
        if removed.is_empty() {
            return Ok(count);
        }
        count += note_ended(ended, removed);
    }
}

/// Adds the removed sessions' users (not user 0) to `ended`; returns how many sessions ended.
fn note_ended(ended: &mut EndedUsers, removed: Vec<(i64, String)>) -> u64 {
    let count = removed.len() as u64;
    for (mid, region) in removed.into_iter().filter(|(mid, _)| *mid != 0) {
        ended.entry(mid).or_insert(region);
    }
    count
}

#[async_trait]
impl Store for PostgresStore {
    fn inbox(
        &self,
        settings: crate::inbox::InboxSettings,
    ) -> Result<std::sync::Arc<dyn crate::inbox::Inbox>, StoreError> {
        Ok(std::sync::Arc::new(self.postgres_inbox(settings)?))
    }

    fn receipt_feed(
        &self,
        _settings: crate::inbox::InboxSettings,
    ) -> Result<std::sync::Arc<dyn crate::receipt_feed::ReceiptFeed>, StoreError> {
        Ok(std::sync::Arc::new(self.postgres_receipt_feed()))
    }

    async fn upsert_region(&self, region: &Region) -> Result<(), StoreError> {
        check_region(region)?;
        sqlx::query(
            "INSERT INTO regions (name, latitude, longitude) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude",
        )
        .bind(&region.name)
        .bind(region.latitude)
        .bind(region.longitude)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn regions(&self) -> Result<Vec<Region>, StoreError> {
        let rows = sqlx::query_as::<_, RegionRow>(concat!(
            "SELECT ",
            region_columns!(),
            " FROM regions ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(rows.into_iter().map(Region::from).collect())
    }

    async fn insert_region(&self, region: &Region) -> Result<bool, StoreError> {
        check_region(region)?;
        let inserted = sqlx::query(
            "INSERT INTO regions (name, latitude, longitude) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&region.name)
        .bind(region.latitude)
        .bind(region.longitude)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn delete_region(&self, name: &str) -> Result<RegionRemoval, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // The row lock holds off registrations into the region (their foreign key check waits).
        let found: Option<String> =
            sqlx::query_scalar("SELECT name FROM regions WHERE name = $1 FOR UPDATE")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
        if found.is_none() {
            return Ok(RegionRemoval::Unknown);
        }
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM nodes WHERE region = $1 AND state <> 'dead' ORDER BY id",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        if !live.is_empty() {
            return Ok(RegionRemoval::HasLiveNodes(live));
        }
        // Dead nodes hold no sessions (they were removed when the node died); room counts cascade.
        sqlx::query("DELETE FROM nodes WHERE region = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query("DELETE FROM regions WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(RegionRemoval::Removed)
    }

    async fn register_node(
        &self,
        reg: &NodeRegistration,
        _now: UnixMillis,
    ) -> Result<RegistrationReport, StoreError> {
        // `last_seen` is stamped by the database below (`rim_now_ms()`), not from the record.
        let node = node_from_registration(reg, 0)?;
        let region = region_of(&node);
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query(
            "INSERT INTO regions (name, latitude, longitude) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&region.name)
        .bind(region.latitude)
        .bind(region.longitude)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        // The row lock makes a concurrent registration of the same node wait, so exactly one of
        // two registrations with a new boot id ends the previous life.
        let stored_boot: Option<String> =
            sqlx::query_scalar("SELECT boot_id FROM nodes WHERE id = $1 FOR UPDATE")
                .bind(&node.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
        sqlx::query(
            "INSERT INTO nodes (id, region, latitude, longitude, hostname, addresses, tcp_port, ws_port, wss_port,
                                push_url, weight, state, boot_id, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active', $12, rim_now_ms())
             ON CONFLICT (id) DO UPDATE SET
                 region = EXCLUDED.region, latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
                 hostname = EXCLUDED.hostname, addresses = EXCLUDED.addresses, tcp_port = EXCLUDED.tcp_port,
                 ws_port = EXCLUDED.ws_port, wss_port = EXCLUDED.wss_port, push_url = EXCLUDED.push_url,
                 weight = EXCLUDED.weight, boot_id = EXCLUDED.boot_id, last_seen = EXCLUDED.last_seen,
                 state = CASE WHEN nodes.drained_by_admin THEN 'draining' ELSE 'active' END",
        )
        .bind(&node.id)
        .bind(&node.region)
        .bind(node.latitude)
        .bind(node.longitude)
        .bind(&node.hostname)
        .bind(&node.addresses)
        .bind(i32::from(node.tcp_port))
        .bind(i32::from(node.ws_port))
        .bind(i32::from(node.wss_port))
        .bind(&node.push_url)
        .bind(i64::from(node.weight))
        .bind(&node.boot_id)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut report = RegistrationReport {
            restarted: stored_boot.is_some_and(|stored| is_new_life(&stored, &node.boot_id)),
            sessions_ended: 0,
            ended_users: EndedUsers::new(),
        };
        if report.restarted {
            report.sessions_ended = end_previous_life(&mut tx, &node.id, &mut report.ended_users)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(report)
    }

    async fn node_heartbeat(
        &self,
        report: &NodeHeartbeat,
        _now: UnixMillis,
    ) -> Result<(), StoreError> {
        let load = load_of(report);
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let updated = sqlx::query(
            "UPDATE nodes SET connection_count = $2, ip_count = $3, last_seen = rim_now_ms(),
                              state = CASE WHEN $4 THEN 'draining' ELSE state END
             WHERE id = $1 AND state <> 'dead'",
        )
        .bind(&report.node_id)
        .bind(count_to_sql(load.connection_count))
        .bind(count_to_sql(load.ip_count))
        .bind(report.draining)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::UnknownNode(report.node_id.clone()));
        }
        if report.stopped {
            // Presence is not told of these (its module doc says what it does not see).
            let mut ended = EndedUsers::new();
            bury(&mut tx, std::slice::from_ref(&report.node_id), &mut ended)
                .await
                .map_err(store_error)?;
            return tx.commit().await.map_err(store_error);
        }
        sqlx::query("DELETE FROM room_counts WHERE node_id = $1")
            .bind(&report.node_id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        if !load.rooms.is_empty() {
            let (rooms, counts): (Vec<String>, Vec<i64>) = load
                .rooms
                .into_iter()
                .map(|(room, count)| (room, count_to_sql(count)))
                .unzip();
            sqlx::query(
                "INSERT INTO room_counts (node_id, room, count) SELECT $1, room, count
                 FROM unnest($2::text[], $3::int8[]) AS t(room, count)",
            )
            .bind(&report.node_id)
            .bind(rooms)
            .bind(counts)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn set_node_state(&self, node_id: &str, state: NodeState) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // Draining is an admin's drain (kept across registrations); active lifts it (a dead node
        // stays dead until it registers); dead is buried below.
        let updated = sqlx::query(
            "UPDATE nodes SET
                 drained_by_admin = CASE $2::text WHEN 'draining' THEN true WHEN 'active' THEN false
                                    ELSE drained_by_admin END,
                 state = CASE WHEN $2::text = 'active' AND state = 'dead' THEN 'dead' ELSE $2::text END
             WHERE id = $1",
        )
        .bind(node_id)
        .bind(state.as_str())
        .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::UnknownNode(node_id.to_owned()));
        }
        if state == NodeState::Dead {
            bury(&mut tx, &[node_id.to_owned()], &mut EndedUsers::new())
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let rows = sqlx::query_as::<_, NodeRow>(concat!(
            "SELECT ",
            node_columns!(),
            " FROM nodes ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter().map(Node::try_from).collect()
    }

    async fn apply_session_events(
        &self,
        node_id: &str,
        events: &[SessionEvent],
        now: UnixMillis,
    ) -> Result<SessionApplyReport, StoreError> {
        // One connection for the whole batch: its three or four statements need no further acquires.
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        let ttl = self.settings.session_ttl_ms;
        sessions::apply_batch(&mut conn, node_id, events, now, ttl).await
    }

    async fn sessions_by_keys(
        &self,
        keys: &[String],
        now: UnixMillis,
    ) -> Result<Vec<Session>, StoreError> {
        sessions::by_keys(&self.pool, keys, now).await
    }

    async fn newest_sessions_by_mids(
        &self,
        mids: &[i64],
        per_user: usize,
        now: UnixMillis,
    ) -> Result<Vec<Session>, StoreError> {
        sessions::newest_by_mids(&self.pool, mids, per_user, now).await
    }

    async fn expire(
        &self,
        now: UnixMillis,
        node_timeout_ms: i64,
    ) -> Result<ExpiryReport, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let silent: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM nodes WHERE state <> 'dead' AND last_seen < rim_now_ms() - $1 FOR UPDATE",
        )
        .bind(node_timeout_ms)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut report = ExpiryReport {
            nodes_marked_dead: silent.len() as u64,
            sessions_removed: 0,
            ended_users: EndedUsers::new(),
        };
        if !silent.is_empty() {
            report.sessions_removed += bury(&mut tx, &silent, &mut report.ended_users)
                .await
                .map_err(store_error)?;
        }
        let expired: Vec<(i64, String)> = sqlx::query_as(concat!(
            "DELETE FROM sessions WHERE expires_at <= $1 RETURNING ",
            ended_user!()
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        report.sessions_removed += note_ended(&mut report.ended_users, expired);
        tx.commit().await.map_err(store_error)?;
        Ok(report)
    }

    async fn sweeper_lease(
        &self,
        holder: &str,
        lease_ms: i64,
        _now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let held: Option<String> = sqlx::query_scalar(
            "INSERT INTO sweeper_lease (singleton, holder, expires_at) VALUES (true, $1, rim_now_ms() + $2)
             ON CONFLICT (singleton) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
             WHERE sweeper_lease.holder = EXCLUDED.holder OR sweeper_lease.expires_at <= rim_now_ms()
             RETURNING holder",
        )
        .bind(holder)
        .bind(lease_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(held.is_some())
    }

    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn room_online(&self, rooms: &[String]) -> Result<HashMap<String, u64>, StoreError> {
        let counted: Vec<(String, i64)> = sqlx::query_as(
            "SELECT rc.room, sum(rc.count)::int8 FROM room_counts rc JOIN nodes n ON n.id = rc.node_id
             WHERE n.state <> 'dead' AND rc.room = ANY($1) GROUP BY rc.room",
        )
        .bind(rooms)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut online: HashMap<String, u64> = rooms.iter().map(|room| (room.clone(), 0)).collect();
        for (room, count) in counted {
            online.insert(room, count.unsigned_abs());
        }
        Ok(online)
    }

    async fn top_rooms(
        &self,
        room_type: &str,
        limit: usize,
    ) -> Result<Vec<RoomOnline>, StoreError> {
        // Under the "C" collation, the ids starting with `type://` are exactly those in
        // [`type://`, `type:/0`) ('0' follows '/'), a range the room index serves.
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT rc.room, sum(rc.count)::int8 AS online FROM room_counts rc JOIN nodes n ON n.id = rc.node_id
             WHERE n.state <> 'dead' AND rc.room >= $1 AND rc.room < $2
             GROUP BY rc.room ORDER BY online DESC, rc.room LIMIT $3",
        )
        .bind(format!("{room_type}://"))
        .bind(format!("{room_type}:/0"))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(room, count)| RoomOnline {
                room,
                count: count.unsigned_abs(),
            })
            .collect())
    }

    async fn online_totals(&self) -> Result<OnlineTotals, StoreError> {
        let (conn_count, ip_count): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(connection_count), 0)::int8, coalesce(sum(ip_count), 0)::int8
             FROM nodes WHERE state <> 'dead'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(OnlineTotals {
            conn_count: conn_count.unsigned_abs(),
            ip_count: ip_count.unsigned_abs(),
        })
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.as_str()).collect();
        let target_kinds: Option<Vec<&str>> = key
            .target_kinds
            .as_ref()
            .map(|kinds| kinds.iter().map(|kind| kind.as_str()).collect());
        let rate = |value: u32| {
            i32::try_from(value)
                .map_err(|_| StoreError::Invalid(format!("rate limit {value} is too large")))
        };
        let (rate_per_second, rate_burst) = match key.rate_limit {
            Some(limit) => (Some(rate(limit.per_second)?), Some(rate(limit.burst)?)),
            None => (None, None),
        };
        sqlx::query(
            "INSERT INTO api_keys (id, secret_hash, name, scopes, created_at, revoked_at,
                                   target_kinds, rate_per_second, rate_burst)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&key.id)
        .bind(&key.secret_hash)
        .bind(&key.name)
        .bind(scopes)
        .bind(key.created_at)
        .bind(key.revoked_at)
        .bind(target_kinds)
        .bind(rate_per_second)
        .bind(rate_burst)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn api_key_by_hash(
        &self,
        secret_hash: &[u8],
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query_as::<_, ApiKeyRow>(concat!(
            "SELECT ",
            api_key_columns!(),
            " FROM api_keys WHERE secret_hash = $1"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.map(ApiKeyRecord::try_from).transpose()
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query_as::<_, ApiKeyRow>(concat!(
            "SELECT ",
            api_key_columns!(),
            " FROM api_keys ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter().map(ApiKeyRecord::try_from).collect()
    }

    async fn revoke_api_key(&self, id: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let updated =
            sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(updated.rows_affected() > 0)
    }

    async fn node_signing_keys(&self) -> Result<Vec<NodeSigningKey>, StoreError> {
        node_keys::all(&self.pool).await
    }

    async fn insert_node_signing_key(&self, key: &NodeSigningKey) -> Result<bool, StoreError> {
        node_keys::insert(&self.pool, key).await
    }

    async fn delete_node_signing_keys_below(&self, generation: i64) -> Result<u64, StoreError> {
        node_keys::delete_below(&self.pool, generation).await
    }
}
