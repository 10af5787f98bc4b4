//! Who is calling: business callers by API key, edges by the cluster secret.
//!
//! Business callers present an API key as `Authorization: Bearer <key>` or `X-Api-Key: <key>`.
//! Only SHA-256 hashes of keys are stored; a presented key is hashed and looked up. The bootstrap
//! admin key from the configuration is compared by hash in constant time and holds every scope, so a
//! fresh deployment can create its real keys. Edges present the cluster secret as a bearer token,
//! also compared by hash in constant time (equal-length digests, so neither content nor length leaks
//! through timing).
//!
//! Keys the store confirmed are remembered for a few seconds (bounded, unknown keys never cached),
//! so a push with a business key does not cost a PostgreSQL round trip; a revocation takes effect at
//! once on the instance that revoked and within that delay on the others.

use crate::error::ApiError;
use crate::observe::timed_store;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use rand::RngCore;
use rim_store::{Scope, Store};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Prefix of the keys we issue, so leaked keys are easy to recognise in logs and scanners.
const KEY_PREFIX: &str = "rimk_";

/// SHA-256 of a secret, the form in which secrets are stored and compared.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random API key secret (256 bits, URL-safe text) and its stored hash.
pub fn generate_key() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    let hash = hash_secret(&secret);
    (secret, hash)
}

/// The token a request presents: `Authorization: Bearer <token>`, else `X-Api-Key: <token>`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// How long a verified key is trusted without asking the store again. A key revoked through
/// another instance stops working here within this delay (at once on the revoking instance).
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// Most verified keys remembered; when full, the cache is emptied (counted in
/// `rim_control_api_key_cache_resets_total`) and refills from the store.
const KEY_CACHE_CAPACITY: usize = 10_000;

/// A key the store confirmed, remembered briefly so every push does not cost a store lookup.
struct VerifiedKey {
    id: String,
    scopes: Vec<Scope>,
    verified_at: Instant,
}

/// Checks business callers' API keys.
pub struct CallerAuth {
    /// Hash of the bootstrap admin key, if one is configured.
    admin_key_hash: Option<[u8; 32]>,
    /// Recently verified live keys by secret hash. Unknown keys are never cached, so guessing
    /// cannot fill it.
    verified: Mutex<HashMap<[u8; 32], VerifiedKey>>,
}

impl CallerAuth {
    /// A checker that also accepts the bootstrap admin key (if any).
    pub fn new(admin_key: Option<&str>) -> Self {
        Self {
            admin_key_hash: admin_key.filter(|key| !key.is_empty()).map(hash_secret),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets a key at once (it was revoked through this instance).
    pub fn forget(&self, id: &str) {
        self.verified.lock().retain(|_, key| key.id != id);
    }

    /// The id and scopes of a live key: from the cache if verified recently, else from the store.
    async fn lookup(
        &self,
        store: &dyn Store,
        hash: [u8; 32],
    ) -> Result<(String, Vec<Scope>), ApiError> {
        if let Some(key) = self.verified.lock().get(&hash)
            && key.verified_at.elapsed() < KEY_CACHE_TTL
        {
            return Ok((key.id.clone(), key.scopes.clone()));
        }
        let record = timed_store("api_key_by_hash", store.api_key_by_hash(&hash))
            .await?
            .filter(|record| record.revoked_at.is_none())
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked API key".into()))?;
        let mut verified = self.verified.lock();
        if verified.len() >= KEY_CACHE_CAPACITY {
            verified.clear();
            metrics::counter!("rim_control_api_key_cache_resets_total").increment(1);
        }
        let key = VerifiedKey {
            id: record.id.clone(),
            scopes: record.scopes.clone(),
            verified_at: Instant::now(),
        };
        verified.insert(hash, key);
        Ok((record.id, record.scopes))
    }

    /// Succeeds if the request carries a live key holding `scope` (or the admin scope, which
    /// implies all others). 401 without a valid key, 403 without the scope, 503 if the store is down.
    pub async fn require(
        &self,
        store: &dyn Store,
        headers: &HeaderMap,
        scope: Scope,
    ) -> Result<(), ApiError> {
        let token = presented_token(headers)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "an API key is required: `Authorization: Bearer <key>` or `X-Api-Key`".into(),
                )
            })?;
        let hash = hash_secret(token);
        if let Some(admin) = &self.admin_key_hash
            && bool::from(admin.ct_eq(&hash))
        {
            return Ok(());
        }
        let (id, scopes) = self.lookup(store, hash).await?;
        if scopes.contains(&scope) || scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "API key {:?} lacks the {:?} scope",
                id,
                scope_name(scope)
            )))
        }
    }
}

/// The scope's name as it appears in JSON.
pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Push => "push",
        Scope::Read => "read",
        Scope::Admin => "admin",
    }
}

/// Checks that a request comes from an edge of this cluster.
pub struct EdgeAuth {
    /// Hash of the cluster secret.
    secret_hash: [u8; 32],
}

impl EdgeAuth {
    /// A checker for this cluster secret.
    pub fn new(cluster_secret: &str) -> Self {
        Self {
            secret_hash: hash_secret(cluster_secret),
        }
    }

    /// Succeeds if the request presents the cluster secret as a bearer token; 401 otherwise.
    pub fn require(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "the edge API requires `Authorization: Bearer <cluster secret>`".into(),
                )
            })?;
        if bool::from(self.secret_hash.ct_eq(&hash_secret(presented.trim()))) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("wrong cluster secret".into()))
        }
    }
}
