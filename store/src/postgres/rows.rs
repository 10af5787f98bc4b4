//! Rows as PostgreSQL returns them, and their checked conversion into the store's records.
//!
//! The schema stores what SQL can hold (signed integers, text states); the records use the types
//! the rest of rim works with (`u16` ports, `u64` counts, enums). Converting in one place keeps the
//! SQL of the store plain and makes a row this version cannot read an error instead of a panic.

use super::errors::corrupt;
use crate::error::StoreError;
use crate::model::{ApiKeyRecord, Node, NodeState, RateLimit, Region, Scope, Session, TargetKind};

/// Columns selected for a [`Region`] (a macro, so queries are `concat!`ed into static SQL).
macro_rules! region_columns {
    () => {
        "name, latitude, longitude"
    };
}
pub(super) use region_columns;

/// Columns selected for a [`Node`].
macro_rules! node_columns {
    () => {
        "id, region, latitude, longitude, hostname, addresses, tcp_port, ws_port, wss_port, push_url, weight, \
         state, drained_by_admin, boot_id, connection_count, ip_count, last_seen"
    };
}
pub(super) use node_columns;

/// Columns selected for a [`Session`].
macro_rules! session_columns {
    () => {
        "key, mid, node_id, room, platform, accepts, connection_id, ip, connected_at, expires_at"
    };
}
pub(super) use session_columns;

/// Columns selected for an [`ApiKeyRecord`].
macro_rules! api_key_columns {
    () => {
        "id, secret_hash, name, scopes, created_at, revoked_at, target_kinds, rate_per_second, rate_burst"
    };
}
pub(super) use api_key_columns;

/// A `regions` row.
#[derive(sqlx::FromRow)]
pub(super) struct RegionRow {
    name: String,
    latitude: f64,
    longitude: f64,
}

impl From<RegionRow> for Region {
    fn from(row: RegionRow) -> Self {
        Region {
            name: row.name,
            latitude: row.latitude,
            longitude: row.longitude,
        }
    }
}

/// A `nodes` row.
#[derive(sqlx::FromRow)]
pub(super) struct NodeRow {
    id: String,
    region: String,
    latitude: f64,
    longitude: f64,
    hostname: String,
    addresses: Vec<String>,
    tcp_port: i32,
    ws_port: i32,
    wss_port: i32,
    push_url: String,
    weight: i64,
    state: String,
    drained_by_admin: bool,
    boot_id: String,
    connection_count: i64,
    ip_count: i64,
    last_seen: i64,
}

impl TryFrom<NodeRow> for Node {
    type Error = StoreError;

    fn try_from(row: NodeRow) -> Result<Self, StoreError> {
        let port = |value: i32| u16::try_from(value).map_err(|_| corrupt("port", value));
        let count = |value: i64| u64::try_from(value).map_err(|_| corrupt("count", value));
        Ok(Node {
            tcp_port: port(row.tcp_port)?,
            ws_port: port(row.ws_port)?,
            wss_port: port(row.wss_port)?,
            weight: u32::try_from(row.weight).map_err(|_| corrupt("weight", row.weight))?,
            state: NodeState::parse(&row.state).ok_or_else(|| corrupt("node state", &row.state))?,
            drained_by_admin: row.drained_by_admin,
            boot_id: row.boot_id,
            connection_count: count(row.connection_count)?,
            ip_count: count(row.ip_count)?,
            id: row.id,
            region: row.region,
            latitude: row.latitude,
            longitude: row.longitude,
            hostname: row.hostname,
            addresses: row.addresses,
            push_url: row.push_url,
            last_seen: row.last_seen,
        })
    }
}

/// A `sessions` row.
#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    key: String,
    mid: i64,
    node_id: String,
    room: String,
    platform: String,
    accepts: Vec<i32>,
    connection_id: i64,
    ip: String,
    connected_at: i64,
    expires_at: i64,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            key: row.key,
            mid: row.mid,
            node_id: row.node_id,
            room: row.room,
            platform: row.platform,
            accepts: row.accepts,
            connection_id: connection_id_from_sql(row.connection_id),
            ip: row.ip,
            connected_at: row.connected_at,
            expires_at: row.expires_at,
        }
    }
}

/// An `api_keys` row.
#[derive(sqlx::FromRow)]
pub(super) struct ApiKeyRow {
    id: String,
    secret_hash: Vec<u8>,
    name: String,
    scopes: Vec<String>,
    created_at: i64,
    revoked_at: Option<i64>,
    target_kinds: Option<Vec<String>>,
    rate_per_second: Option<i32>,
    rate_burst: Option<i32>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;

    fn try_from(row: ApiKeyRow) -> Result<Self, StoreError> {
        let scopes = row
            .scopes
            .iter()
            .map(|scope| Scope::parse(scope).ok_or_else(|| corrupt("scope", scope)))
            .collect::<Result<_, _>>()?;
        let target_kinds = row
            .target_kinds
            .map(|kinds| {
                kinds
                    .iter()
                    .map(|kind| TargetKind::parse(kind).ok_or_else(|| corrupt("target kind", kind)))
                    .collect::<Result<_, _>>()
            })
            .transpose()?;
        let rate_limit = match (row.rate_per_second, row.rate_burst) {
            (None, None) => None,
            (Some(per_second), Some(burst)) => Some(RateLimit {
                per_second: u32::try_from(per_second)
                    .map_err(|_| corrupt("rate_per_second", per_second))?,
                burst: u32::try_from(burst).map_err(|_| corrupt("rate_burst", burst))?,
            }),
            (per_second, burst) => {
                return Err(corrupt("rate limit", (per_second, burst)));
            }
        };
        Ok(ApiKeyRecord {
            id: row.id,
            secret_hash: row.secret_hash,
            name: row.name,
            scopes,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
            target_kinds,
            rate_limit,
        })
    }
}

/// A connection id as stored: the `u64` bit pattern in an `int8`.
pub(super) fn connection_id_to_sql(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

/// The inverse of [`connection_id_to_sql`].
fn connection_id_from_sql(id: i64) -> u64 {
    u64::from_ne_bytes(id.to_ne_bytes())
}

/// A count as stored; counts are clamped to the `int8` range before they get here.
pub(super) fn count_to_sql(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
