//! Node identity: enrollment, node tokens and the signing keys behind them.
//!
//! The cluster secret is only the *enrollment* credential. A node (edge or job worker) trades it
//! once for a short-lived node token bound to its role, node id and region, and from then on
//! presents the token: the edge API accepts nothing else ([`NodeIssuer::authenticate`]), and edges
//! accept pushes only with a job worker's token. Tokens are renewed with the token itself, so a
//! running cluster does not need the secret again.
//!
//! | route | credential | request | answer |
//! |---|---|---|---|
//! | `POST /edge/v1/enroll` | `Bearer <cluster secret>` | `NodeEnrollment` | `NodeCredential` |
//! | `POST /edge/v1/renew` | `Bearer <node token>` (edge or job) | – (no body) | `NodeCredential` for the same claims |
//! | `GET /edge/v1/keys` | – (public keys are public) | – | `NodeKeys` |
//!
//! # Keys
//!
//! Tokens are signed with Ed25519 (`EdDSA`) keys kept in the store ([`rim_store::node_keys`]), so
//! every control instance signs and verifies with the same set. Each instance caches the set for
//! [`KEY_CACHE`] and reads it again when a token names a `kid` it does not hold (at most once per
//! [`KEY_REFRESH_FLOOR`]); while the store is unreachable the cached set keeps serving. On a read:
//! - no key at all (a new cluster): the instance generates generation 1 and inserts it; an
//!   instance racing it loses on the unique generation and reads the winner's key;
//! - newest key older than `control_node_key_rotation_ms`: the next generation is inserted the
//!   same way, and every instance signs with it once its cache turns over;
//! - keys below the newest generation are deleted once no token they signed can still be valid
//!   (the newest key is older than a token lifetime plus the cache time plus the clock leeway).
//!
//! # Rotation procedure
//!
//! - **Signing keys, routine**: automatic (above). Nodes need nothing: tokens signed with the
//!   previous key stay valid until they expire, and edges fetch the new public key when a job
//!   token names it (and at every renewal).
//! - **Signing keys, emergency** (a key leaked): delete the keys from the store
//!   (`DELETE FROM node_signing_keys;`). Within [`KEY_CACHE`] every control instance generates or
//!   reads a new generation, every outstanding node token is refused (401), and nodes enroll again
//!   with the cluster secret. Rotate the cluster secret as well if the node that leaked it had it.
//! - **Cluster secret** (the enrollment credential): set the new secret on every control
//!   instance (rolling restart), then on the nodes. Running nodes keep working throughout, since
//!   they renew with their tokens; only a node that must enroll during the change (a restart) needs
//!   the secret the instance it reaches has, and it retries until it gets one.

use crate::edge_api::{PROTOBUF, check_id};
use crate::error::ApiError;
use crate::input::read_body;
use crate::observe::timed_store;
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prost::Message;
use rim_proto::node_token::{
    AUDIENCE, ISSUER, KeySet, LEEWAY_SECS, NodeClaims, NodeRole, TokenError,
};
use rim_proto::schema::{NodeCredential, NodeEnrollment, NodeKey, NodeKeys};
use rim_store::{NodeSigningKey, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an instance trusts its cached key set before reading the store again.
pub const KEY_CACHE: Duration = Duration::from_secs(10);

/// Reads forced by an unknown `kid` (or retried after a failed read) are at least this far apart.
pub const KEY_REFRESH_FLOOR: Duration = Duration::from_secs(1);

/// Largest enrollment body: three short strings.
const MAX_ENROLLMENT_BODY: usize = 4 * 1024;

/// PKCS#8 v1 prefix of an Ed25519 private key: the DER of everything before the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Routes of enrollment (mounted with the edge lifecycle routes, under their bound on requests in
/// flight).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/edge/v1/enroll", post(enroll))
        .route("/edge/v1/renew", post(renew))
        .route("/edge/v1/keys", get(keys))
}

/// The key set one instance uses, as read from the store.
struct Signing {
    read_at: Instant,
    /// `kid` and key of the newest generation: what new tokens are signed with.
    newest: Option<(String, EncodingKey)>,
    /// Every stored public key, for verification.
    verify: KeySet,
    /// The same keys, as nodes receive them.
    wire: Vec<NodeKey>,
}

/// Issues and checks node tokens; see the module docs. One per control instance.
pub struct NodeIssuer {
    store: Arc<dyn Store>,
    token_ttl: Duration,
    rotate_every: Duration,
    current: parking_lot::RwLock<Option<Arc<Signing>>>,
    /// Held while reading the store; the value is when the last read failed.
    refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl NodeIssuer {
    /// An issuer over `store` whose tokens live `token_ttl` and whose newest key is replaced once
    /// older than `rotate_every`. Reads nothing yet: the first call that needs keys does.
    pub fn new(store: Arc<dyn Store>, token_ttl: Duration, rotate_every: Duration) -> Self {
        Self {
            store,
            token_ttl: token_ttl.max(Duration::from_secs(1)),
            rotate_every: rotate_every.max(Duration::from_secs(1)),
            current: parking_lot::RwLock::new(None),
            refresh: tokio::sync::Mutex::new(None),
        }
    }

    /// A token for this node, with the keys that verify it.
    pub async fn issue(
        &self,
        role: NodeRole,
        node_id: &str,
        region: &str,
    ) -> Result<NodeCredential, ApiError> {
        let signing = self.signing(false).await?;
        let (kid, key) = signing.newest.as_ref().ok_or_else(|| {
            ApiError::Unavailable("no node-token signing key in the store yet".into())
        })?;
        let now = crate::now_ms();
        let iat = u64::try_from(now / 1000).unwrap_or(0);
        let exp = iat.saturating_add(self.token_ttl.as_secs().max(1));
        let claims = NodeClaims {
            sub: node_id.to_owned(),
            role,
            region: region.to_owned(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat,
            nbf: iat,
            exp,
        };
        let header = Header {
            kid: Some(kid.clone()),
            ..Header::new(Algorithm::EdDSA)
        };
        let token = jsonwebtoken::encode(&header, &claims, key)
            .map_err(|error| ApiError::Unavailable(format!("signing a node token: {error}")))?;
        metrics::counter!("rim_control_node_tokens_issued_total", "role" => role.as_str())
            .increment(1);
        Ok(NodeCredential {
            token,
            expires_at_unix_ms: i64::try_from(exp.saturating_mul(1000)).unwrap_or(i64::MAX),
            keys: signing.wire.clone(),
        })
    }

    /// The claims of the node token the request presents, which must be of `role`: 401 without a
    /// valid token (missing, malformed, forged, expired, unknown key), 403 for another role.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        role: NodeRole,
    ) -> Result<NodeClaims, ApiError> {
        let token = bearer(headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "the edge API requires `Authorization: Bearer <node token>` (enroll with the \
                 cluster secret at /edge/v1/enroll)"
                    .into(),
            )
        })?;
        self.verify(token, role).await
    }

    /// Verifies a token for `role`, reading the keys again once if it names an unknown `kid`.
    async fn verify(&self, token: &str, role: NodeRole) -> Result<NodeClaims, ApiError> {
        let result = self.signing(false).await?.verify.verify(token, role);
        let result = match result {
            Err(TokenError::UnknownKey(_)) => self.signing(true).await?.verify.verify(token, role),
            other => other,
        };
        result.map_err(|error| {
            metrics::counter!("rim_control_node_token_refused_total").increment(1);
            match error {
                TokenError::WrongRole { .. } => ApiError::Forbidden(error.to_string()),
                _ => ApiError::Unauthorized(error.to_string()),
            }
        })
    }

    /// The public keys, as nodes receive them.
    pub async fn public_keys(&self) -> Result<Vec<NodeKey>, ApiError> {
        Ok(self.signing(false).await?.wire.clone())
    }

    /// The cached key set, read again when older than [`KEY_CACHE`] (or, with `unknown_kid`, when
    /// older than [`KEY_REFRESH_FLOOR`]). A failed read serves the cached set if there is one.
    async fn signing(&self, unknown_kid: bool) -> Result<Arc<Signing>, ApiError> {
        let max_age = if unknown_kid {
            KEY_REFRESH_FLOOR
        } else {
            KEY_CACHE
        };
        let cached = self.current.read().clone();
        if let Some(signing) = &cached
            && signing.read_at.elapsed() < max_age
        {
            return Ok(signing.clone());
        }
        let mut last_failure = self.refresh.lock().await;
        // Read by someone else while we waited?
        let cached = self.current.read().clone();
        if let Some(signing) = &cached
            && signing.read_at.elapsed() < max_age
        {
            return Ok(signing.clone());
        }
        if let Some(signing) = &cached
            && last_failure.is_some_and(|at| at.elapsed() < KEY_REFRESH_FLOOR)
        {
            return Ok(signing.clone());
        }
        match self.read_keys().await {
            Ok(signing) => {
                *last_failure = None;
                let signing = Arc::new(signing);
                *self.current.write() = Some(signing.clone());
                Ok(signing)
            }
            Err(error) => {
                *last_failure = Some(Instant::now());
                match cached {
                    Some(signing) => {
                        tracing::warn!(%error, "node-token keys not refreshed; using the cached set");
                        Ok(signing)
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// Reads the key set, creating the first or the next generation when due and deleting
    /// generations nobody can hold a valid token of.
    async fn read_keys(&self) -> Result<Signing, ApiError> {
        let read_at = Instant::now();
        let mut keys = timed_store("node_signing_keys", self.store.node_signing_keys()).await?;
        let now = crate::now_ms();
        let rotate_ms = i64::try_from(self.rotate_every.as_millis()).unwrap_or(i64::MAX);
        let due = keys
            .last()
            .is_none_or(|newest| now.saturating_sub(newest.created_at) >= rotate_ms);
        if due {
            let generation = keys.last().map_or(1, |newest| newest.generation + 1);
            let key = generate_key(generation, now);
            let inserted = timed_store(
                "insert_node_signing_key",
                self.store.insert_node_signing_key(&key),
            )
            .await?;
            if inserted {
                tracing::info!(kid = %key.kid, generation, "new node-token signing key");
            }
            keys = timed_store("node_signing_keys", self.store.node_signing_keys()).await?;
        }
        if let Some(newest) = keys.last() {
            let grace = self.token_ttl + KEY_CACHE + Duration::from_secs(LEEWAY_SECS);
            let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
            if keys.len() > 1 && now.saturating_sub(newest.created_at) > grace_ms {
                let generation = newest.generation;
                let deleted = timed_store(
                    "delete_node_signing_keys_below",
                    self.store.delete_node_signing_keys_below(generation),
                )
                .await?;
                tracing::info!(deleted, kept = %newest.kid, "retired old node-token signing keys");
                keys.retain(|key| key.generation >= generation);
            }
        }
        let wire: Vec<NodeKey> = keys
            .iter()
            .map(|key| NodeKey {
                kid: key.kid.clone(),
                public_key: key.public_key.clone().into(),
            })
            .collect();
        Ok(Signing {
            read_at,
            newest: keys
                .last()
                .map(|key| (key.kid.clone(), EncodingKey::from_ed_der(&key.private_key))),
            verify: KeySet::from_wire(&wire),
            wire,
        })
    }
}

/// A new Ed25519 key of `generation`, created at `now`.
fn generate_key(generation: i64, now: i64) -> NodeSigningKey {
    let seed: [u8; 32] = rand::random();
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let mut private_key = ED25519_PKCS8_PREFIX.to_vec();
    private_key.extend_from_slice(&seed);
    let tag: [u8; 6] = rand::random();
    NodeSigningKey {
        generation,
        kid: format!("g{generation}-{}", URL_SAFE_NO_PAD.encode(tag)),
        private_key,
        public_key: public.to_vec(),
        created_at: now,
    }
}

/// The bearer token of a request ([`crate::auth::bearer_token`]), an empty one counting as none.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    crate::auth::bearer_token(headers).filter(|token| !token.is_empty())
}

/// A protobuf answer.
fn protobuf(message: &impl Message) -> Response {
    ([(header::CONTENT_TYPE, PROTOBUF)], message.encode_to_vec()).into_response()
}

/// `POST /edge/v1/enroll`: the cluster secret (checked before the body is read) for a node token.
async fn enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.edges.require(&headers)?;
    let bytes = read_body(&headers, body, MAX_ENROLLMENT_BODY).await?;
    let request = NodeEnrollment::decode(bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed protobuf body: {e}")))?;
    let role = NodeRole::parse(&request.role).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "role must be \"edge\" or \"job\", got {:?}",
            request.role
        ))
    })?;
    check_id("node_id", &request.node_id)?;
    check_id("region", &request.region)?;
    let credential = state
        .nodes
        .issue(role, &request.node_id, &request.region)
        .await?;
    tracing::info!(node = %request.node_id, role = role.as_str(), region = %request.region, "node enrolled");
    Ok(protobuf(&credential))
}

/// `POST /edge/v1/renew`: a fresh token for the claims of the presented one (no body is read).
async fn renew(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = bearer(&headers)
        .ok_or_else(|| ApiError::Unauthorized("renewal requires `Bearer <node token>`".into()))?;
    // Either role may renew; the role is read from the token, then checked by `verify`.
    let role =
        token_role(token).ok_or_else(|| ApiError::Unauthorized("malformed node token".into()))?;
    let claims = state.nodes.verify(token, role).await?;
    let credential = state
        .nodes
        .issue(claims.role, &claims.sub, &claims.region)
        .await?;
    Ok(protobuf(&credential))
}

/// The role a token claims, read without verification (only to choose what to verify it for).
fn token_role(token: &str) -> Option<NodeRole> {
    #[derive(serde::Deserialize)]
    struct RoleOnly {
        role: NodeRole,
    }
    let payload = token.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<RoleOnly>(&json)
        .ok()
        .map(|r| r.role)
}

/// `GET /edge/v1/keys`: the public keys node tokens are verified with.
async fn keys(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(protobuf(&NodeKeys {
        keys: state.nodes.public_keys().await?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rim_store::StoreSettings;
    use rim_store::memory::MemoryStore;

    fn issuer(store: Arc<dyn Store>, ttl: Duration) -> NodeIssuer {
        NodeIssuer::new(store, ttl, Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn issued_tokens_verify_for_their_role_only() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(StoreSettings::default()));
        let nodes = issuer(store, Duration::from_secs(60));
        let credential = nodes.issue(NodeRole::Edge, "edge-1", "sh").await.unwrap();
        let claims = nodes
            .verify(&credential.token, NodeRole::Edge)
            .await
            .unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.region.as_str()),
            ("edge-1", "sh")
        );
        assert!(matches!(
            nodes.verify(&credential.token, NodeRole::Job).await,
            Err(ApiError::Forbidden(_))
        ));
        assert_eq!(token_role(&credential.token), Some(NodeRole::Edge));
        // The node's own key set verifies it too.
        let keys = KeySet::from_wire(&credential.keys);
        assert!(keys.verify(&credential.token, NodeRole::Edge).is_ok());
    }

    #[tokio::test]
    async fn instances_on_one_store_share_one_key() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(StoreSettings::default()));
        let first = issuer(store.clone(), Duration::from_secs(60));
        let second = issuer(store.clone(), Duration::from_secs(60));
        let (a, b) = tokio::join!(first.public_keys(), second.public_keys());
        assert_eq!(a.unwrap(), b.unwrap());
        let token = first
            .issue(NodeRole::Job, "job-1", "sh")
            .await
            .unwrap()
            .token;
        assert!(second.verify(&token, NodeRole::Job).await.is_ok());
        assert_eq!(store.node_signing_keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_due_rotation_adds_a_generation_and_old_tokens_still_verify() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(StoreSettings::default()));
        let old = generate_key(1, crate::now_ms() - 10_000);
        assert!(store.insert_node_signing_key(&old).await.unwrap());
        let nodes = NodeIssuer::new(
            store.clone(),
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        let credential = nodes.issue(NodeRole::Edge, "e", "r").await.unwrap();
        let stored = store.node_signing_keys().await.unwrap();
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert!(credential.token.len() > 10);
        let header = jsonwebtoken::decode_header(&credential.token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(stored[1].kid.as_str()));
        // A token of the old key (issued before the rotation) is still good.
        let old_token = jsonwebtoken::encode(
            &Header {
                kid: Some(old.kid.clone()),
                ..Header::new(Algorithm::EdDSA)
            },
            &NodeClaims {
                sub: "e".into(),
                role: NodeRole::Edge,
                region: "r".into(),
                iss: ISSUER.into(),
                aud: AUDIENCE.into(),
                iat: 0,
                nbf: 0,
                exp: u64::MAX / 2,
            },
            &EncodingKey::from_ed_der(&old.private_key),
        )
        .unwrap();
        assert!(nodes.verify(&old_token, NodeRole::Edge).await.is_ok());
    }

    #[tokio::test]
    async fn keys_older_than_every_valid_token_are_deleted() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(StoreSettings::default()));
        let now = crate::now_ms();
        store
            .insert_node_signing_key(&generate_key(1, now - 600_000))
            .await
            .unwrap();
        store
            .insert_node_signing_key(&generate_key(2, now - 300_000))
            .await
            .unwrap();
        let nodes = NodeIssuer::new(
            store.clone(),
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        assert_eq!(nodes.public_keys().await.unwrap().len(), 1);
        let stored = store.node_signing_keys().await.unwrap();
        assert_eq!(stored.iter().map(|k| k.generation).collect::<Vec<_>>(), [2]);
    }
}
