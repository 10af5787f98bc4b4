//! Who is calling: business callers by API key, edges by the cluster secret.
//!
//! Business callers present an API key as `Authorization: Bearer <key>` (the scheme in any case,
//! as RFC 9110 has it) or `X-Api-Key: <key>`. Only SHA-256 hashes of keys are stored; a presented
//! key is hashed and looked up. The bootstrap admin key from the configuration is compared by hash
//! in constant time and holds every scope, without limits, so a fresh deployment can create its real
//! keys. Edges present the cluster secret as a bearer token, also compared by hash in constant time
//! (equal-length digests, so neither content nor length leaks through timing).
//!
//! A key may be limited to some target kinds (a push elsewhere gets 403 with a message) and to a
//! rate ([`rim_store::RateLimit`], a token bucket; a push over it gets 429 with `Retry-After`). The
//! bucket is kept by each control instance on its own: the limit is **per control instance**, so
//! behind a balancer spreading callers over N instances a key may push up to N times its rate in
//! all. Instances are stateless and share only PostgreSQL, and a shared counter there would cost
//! every push the round trip the key cache exists to save; an operator who wants a cluster-wide
//! figure sets the key's rate to it divided by the number of instances.
//!
//! Keys the store confirmed are remembered for a few seconds (unknown keys are never cached, so
//! guessing cannot fill it), so a push with a business key does not cost a PostgreSQL round trip;
//! a revocation takes effect at once on the instance that revoked and within that delay on the
//! others. The cache is bounded and evicts the keys least worth keeping (S3-FIFO) when full; a
//! key's bucket is carried over when it is verified again, so re-verification does not refill it.

use crate::error::ApiError;
use crate::observe::timed_store;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use quick_cache::sync::Cache;
use rand::RngCore;
use rim_store::{RateLimit, Scope, Store, TargetKind};
use sha2::{Digest, Sha256};
use std::sync::Arc;
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

/// A bearer token: `Authorization: Bearer <token>`, the scheme matched in any case.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The token a request presents: a bearer token, else `X-Api-Key: <token>`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers).or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })
}

/// How long a verified key is trusted without asking the store again. A key revoked through
/// another instance stops working here within this delay (at once on the revoking instance).
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// Most verified keys remembered; when full, the least worth keeping are evicted.
const KEY_CACHE_CAPACITY: usize = 10_000;

/// A token bucket: refills at the limit's rate up to its burst; each push takes one token.
#[derive(Debug)]
struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            refilled: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.limit.per_second.max(1));
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.limit.burst.max(1)));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// A key the store confirmed, remembered briefly so every push does not cost a store lookup.
#[derive(Debug)]
struct VerifiedKey {
    id: String,
    scopes: Vec<Scope>,
    /// Kinds the key may push to; `None`: every kind.
    target_kinds: Option<Vec<TargetKind>>,
    /// The key's rate, if it has one (shared with the entry that replaces this one on
    /// re-verification, as long as the limit is unchanged).
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    verified_at: Instant,
}

/// Who made a request: what a push route checks the push against ([`Caller::admit`]).
#[derive(Debug)]
pub struct Caller {
    /// The caller's key; `None` for the bootstrap admin key and open goim routes (no limits).
    key: Option<Arc<VerifiedKey>>,
}

impl Caller {
    /// A caller without limits (the goim routes when configured open).
    pub fn unlimited() -> Self {
        Self { key: None }
    }

    /// Lets a push to `kind` through: 403 if the key may not push to that kind, 429 (with the
    /// delay after which a retry can succeed) if it is over its rate on this instance.
    pub fn admit(&self, kind: TargetKind) -> Result<(), ApiError> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        if let Some(kinds) = &key.target_kinds
            && !kinds.contains(&kind)
        {
            metrics::counter!("rim_control_pushes_refused_total", "reason" => "target_kind")
                .increment(1);
            let allowed: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
            return Err(ApiError::Forbidden(format!(
                "API key {:?} may not push to target kind {:?}; it may push to: {}",
                key.id,
                kind.as_str(),
                if allowed.is_empty() {
                    "nothing".to_owned()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        if let Some(bucket) = &key.bucket {
            let mut bucket = bucket.lock();
            if let Err(wait) = bucket.take(Instant::now()) {
                metrics::counter!("rim_control_pushes_refused_total", "reason" => "rate_limit")
                    .increment(1);
                return Err(ApiError::TooManyRequests {
                    message: format!(
                        "API key {:?} is over its rate limit of {} pushes/s (burst {}) on this \
                         control instance; retry in {} ms",
                        key.id,
                        bucket.limit.per_second,
                        bucket.limit.burst,
                        wait.as_millis().max(1)
                    ),
                    retry_after: wait,
                });
            }
        }
        Ok(())
    }
}

/// Checks business callers' API keys.
pub struct CallerAuth {
    /// Hash of the bootstrap admin key, if one is configured.
    admin_key_hash: Option<[u8; 32]>,
    /// Recently verified live keys by secret hash. Unknown keys are never cached, so guessing
    /// cannot fill it.
    verified: Cache<[u8; 32], Arc<VerifiedKey>>,
}

impl CallerAuth {
    /// A checker that also accepts the bootstrap admin key (if any).
    pub fn new(admin_key: Option<&str>) -> Self {
        Self::with_capacity(admin_key, KEY_CACHE_CAPACITY)
    }

    /// [`CallerAuth::new`] remembering at most `capacity` verified keys.
    fn with_capacity(admin_key: Option<&str>, capacity: usize) -> Self {
        Self {
            admin_key_hash: admin_key.filter(|key| !key.is_empty()).map(hash_secret),
            verified: Cache::new(capacity),
        }
    }

    /// Forgets a key at once (it was revoked through this instance).
    pub fn forget(&self, id: &str) {
        self.verified.retain(|_, key| key.id != id);
    }

    /// A live key: from the cache if verified recently, else from the store (keeping the bucket
    /// of the entry it replaces when the limit is unchanged).
    async fn lookup(
        &self,
        store: &dyn Store,
        hash: [u8; 32],
    ) -> Result<Arc<VerifiedKey>, ApiError> {
        let cached = self.verified.get(&hash);
        if let Some(key) = &cached
            && key.verified_at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(key.clone());
        }
        let Some(record) = timed_store("api_key_by_hash", store.api_key_by_hash(&hash))
            .await?
            .filter(|record| record.revoked_at.is_none())
        else {
            self.verified.remove(&hash);
            return Err(ApiError::Unauthorized("unknown or revoked API key".into()));
        };
        let now = Instant::now();
        let bucket = record.rate_limit.map(|limit| {
            cached
                .as_ref()
                .and_then(|old| old.bucket.clone())
                .filter(|bucket| bucket.lock().limit == limit)
                .unwrap_or_else(|| Arc::new(Mutex::new(TokenBucket::new(limit, now))))
        });
        let key = Arc::new(VerifiedKey {
            id: record.id,
            scopes: record.scopes,
            target_kinds: record.target_kinds,
            bucket,
            verified_at: now,
        });
        self.verified.insert(hash, key.clone());
        Ok(key)
    }

    /// The caller, if the request carries a live key holding `scope` (or the admin scope, which
    /// implies all others). 401 without a valid key, 403 without the scope, 503 if the store is
    /// down.
    pub async fn caller(
        &self,
        store: &dyn Store,
        headers: &HeaderMap,
        scope: Scope,
    ) -> Result<Caller, ApiError> {
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
            return Ok(Caller::unlimited());
        }
        let key = self.lookup(store, hash).await?;
        if key.scopes.contains(&scope) || key.scopes.contains(&Scope::Admin) {
            Ok(Caller { key: Some(key) })
        } else {
            Err(ApiError::Forbidden(format!(
                "API key {:?} lacks the {:?} scope",
                key.id,
                scope_name(scope)
            )))
        }
    }

    /// [`CallerAuth::caller`] for routes that only need the scope.
    pub async fn require(
        &self,
        store: &dyn Store,
        headers: &HeaderMap,
        scope: Scope,
    ) -> Result<(), ApiError> {
        self.caller(store, headers, scope).await.map(drop)
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
        let presented = bearer_token(headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "the edge API requires `Authorization: Bearer <cluster secret>`".into(),
            )
        })?;
        if bool::from(self.secret_hash.ct_eq(&hash_secret(presented))) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("wrong cluster secret".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rim_store::ApiKeyRecord;
    use rim_store::memory::MemoryStore;

    /// A store holding `count` live push keys `secret-0`, `secret-1`, ...
    async fn store_with_keys(count: usize) -> MemoryStore {
        let store = MemoryStore::new(rim_store::StoreSettings::default());
        for index in 0..count {
            let record = ApiKeyRecord {
                id: format!("key-{index}"),
                secret_hash: hash_secret(&format!("secret-{index}")).to_vec(),
                name: String::new(),
                scopes: vec![Scope::Push],
                created_at: 0,
                revoked_at: None,
                target_kinds: None,
                rate_limit: None,
            };
            store.insert_api_key(&record).await.unwrap();
        }
        store
    }

    fn bearer(secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {secret}").parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn the_key_cache_stays_bounded_and_evicts_instead_of_clearing() {
        let capacity = 64;
        let store = store_with_keys(4 * capacity).await;
        let auth = CallerAuth::with_capacity(None, capacity);
        // A key in steady use among many one-off keys.
        let hot = bearer("secret-0");
        for index in 0..4 * capacity {
            auth.require(&store, &hot, Scope::Push).await.unwrap();
            auth.require(&store, &bearer(&format!("secret-{index}")), Scope::Push)
                .await
                .unwrap();
            assert!(auth.verified.len() <= capacity, "{}", auth.verified.len());
        }
        assert!(
            auth.verified.len() >= capacity / 2,
            "a full cache is evicted from, not emptied: {} left",
            auth.verified.len()
        );
        assert!(auth.verified.get(&hash_secret("secret-0")).is_some());
        // Unknown keys are not cached.
        let before = auth.verified.len();
        for index in 0..capacity {
            let unknown = bearer(&format!("guess-{index}"));
            assert!(auth.require(&store, &unknown, Scope::Push).await.is_err());
        }
        assert_eq!(auth.verified.len(), before);
    }

    #[test]
    fn a_token_bucket_refills_at_its_rate_up_to_its_burst() {
        let start = Instant::now();
        let limit = RateLimit {
            per_second: 10,
            burst: 2,
        };
        let mut bucket = TokenBucket::new(limit, start);
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_ok());
        let wait = bucket.take(start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        assert!(bucket.take(start + Duration::from_millis(100)).is_ok());
        // A long pause refills to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        assert!(bucket.take(later).is_ok());
        assert!(bucket.take(later).is_ok());
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_not_bearer() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", " bEaReR abc"] {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer_token(&headers), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearerabc", "abc"] {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer_token(&headers), None, "{value:?}");
        }
        let edges = EdgeAuth::new("cluster-secret");
        assert!(edges.require(&bearer("cluster-secret")).is_ok());
        let mut lowercase = HeaderMap::new();
        lowercase.insert(AUTHORIZATION, "bearer cluster-secret".parse().unwrap());
        assert!(edges.require(&lowercase).is_ok());
        assert!(edges.require(&bearer("other")).is_err());
    }
}
