//! The node-token signing keys in PostgreSQL (table `node_signing_keys`); see
//! [`crate::node_keys`] for the rules.

use super::errors::store_error;
use crate::error::StoreError;
use crate::node_keys::NodeSigningKey;
use sqlx::PgPool;

/// A `node_signing_keys` row: generation, kid, private key, public key, created at.
type KeyRow = (i64, String, Vec<u8>, Vec<u8>, i64);

/// Every key, by generation.
pub(super) async fn all(pool: &PgPool) -> Result<Vec<NodeSigningKey>, StoreError> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT generation, kid, private_key, public_key, created_at
         FROM node_signing_keys ORDER BY generation",
    )
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    Ok(rows
        .into_iter()
        .map(
            |(generation, kid, private_key, public_key, created_at)| NodeSigningKey {
                generation,
                kid,
                private_key,
                public_key,
                created_at,
            },
        )
        .collect())
}

/// Adds a key unless its generation or kid is taken; true if added.
pub(super) async fn insert(pool: &PgPool, key: &NodeSigningKey) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO node_signing_keys (generation, kid, private_key, public_key, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(key.generation)
    .bind(&key.kid)
    .bind(&key.private_key)
    .bind(&key.public_key)
    .bind(key.created_at)
    .execute(pool)
    .await
    .map_err(store_error)?;
    Ok(inserted.rows_affected() == 1)
}

/// Removes the keys of generations below `generation`; how many.
pub(super) async fn delete_below(pool: &PgPool, generation: i64) -> Result<u64, StoreError> {
    let deleted = sqlx::query("DELETE FROM node_signing_keys WHERE generation < $1")
        .bind(generation)
        .execute(pool)
        .await
        .map_err(store_error)?;
    Ok(deleted.rows_affected())
}
