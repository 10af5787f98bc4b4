//! Node tokens: how an edge or a job worker proves who it is on an internal link.
//!
//! The control plane enrolls each node (`POST /edge/v1/enroll`, authenticated by the cluster
//! secret, the *enrollment* credential) and answers a short-lived token bound to the node's role,
//! id and region, signed with one of the control plane's Ed25519 keys. Every later call presents
//! that token instead of the secret: edges on the edge API (control checks that the body's node id
//! is the token's), job workers on the edges' `/internal/push` (the edge checks the role is `job`
//! and the region its own). A node renews its token with the token itself before it expires.
//!
//! The token is a compact JWS with nothing left to the token's choice: the algorithm is pinned to
//! `EdDSA` (a token naming another is refused), the key is chosen by `kid` among the keys the
//! verifier holds, and issuer, audience, expiry and the claims below are all required.
//! [`KeySet::verify`] is the one verification both the control plane and the edges use.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::schema::NodeKey;

/// `iss` of every node token.
pub const ISSUER: &str = "rim-control";
/// `aud` of every node token: it is good on internal links only, never as a client token.
pub const AUDIENCE: &str = "rim-node";
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Longest node id or region a token may name (the edge API's bound on identifiers).
pub const MAX_ID_LEN: usize = 128;

/// What a node is: the role decides which internal calls its token is good for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// An edge: calls the control plane's edge API for itself.
    Edge,
    /// A job worker: pushes to the edges of its region.
    Job,
}

impl NodeRole {
    /// The role's name in tokens and enrollment requests.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Edge => "edge",
            NodeRole::Job => "job",
        }
    }

    /// Parses a role name (`edge`, `job`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "edge" => Some(NodeRole::Edge),
            "job" => Some(NodeRole::Job),
            _ => None,
        }
    }
}

/// The claims of a node token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeClaims {
    /// The node id the token is bound to.
    pub sub: String,
    /// The node's role.
    pub role: NodeRole,
    /// The node's region.
    pub region: String,
    /// Issuer, always [`ISSUER`].
    pub iss: String,
    /// Audience, always [`AUDIENCE`].
    pub aud: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused; the text is meant for the caller (it names no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS of the pinned algorithm.
    #[error("malformed node token: {0}")]
    Malformed(String),
    /// Signed with a key this verifier does not hold (rotated in since it last fetched the keys,
    /// or never issued by this cluster).
    #[error("node token signed with unknown key {0:?}")]
    UnknownKey(String),
    /// Signature, issuer, audience or time checks failed.
    #[error("invalid node token: {0}")]
    Invalid(String),
    /// A valid token of another role than the call needs.
    #[error("a {found} token cannot be used here; a {wanted} token is required")]
    WrongRole {
        /// The role the call needs.
        wanted: &'static str,
        /// The token's role.
        found: &'static str,
    },
}

/// The public keys a verifier trusts, by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Length of a raw Ed25519 public key.
const PUBLIC_KEY_LEN: usize = 32;

impl KeySet {
    /// The set of these wire keys; keys that are not 32-byte Ed25519 public keys are skipped.
    pub fn from_wire(keys: &[NodeKey]) -> Self {
        let keys = keys
            .iter()
            .filter(|key| key.public_key.len() == PUBLIC_KEY_LEN && !key.kid.is_empty())
            .map(|key| (key.kid.clone(), DecodingKey::from_ed_der(&key.public_key)))
            .collect();
        Self { keys }
    }

    /// True when it holds no key (nothing verifies).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether it holds the key `kid`.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Verifies `token` for a call that needs `role`: pinned algorithm, known `kid`, signature,
    /// issuer, audience, `exp` and `nbf` (with [`LEEWAY_SECS`]), bounded identifiers.
    pub fn verify(&self, token: &str, role: NodeRole) -> Result<NodeClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| TokenError::Malformed(error.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Malformed(format!(
                "algorithm {:?} is not EdDSA",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Malformed("no kid in the header".into()))?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<NodeClaims>(token, key, &validation)
            .map_err(|error| TokenError::Invalid(error.to_string()))?
            .claims;
        if claims.sub.is_empty()
            || claims.sub.len() > MAX_ID_LEN
            || claims.region.is_empty()
            || claims.region.len() > MAX_ID_LEN
        {
            return Err(TokenError::Invalid(
                "node id or region empty or too long".into(),
            ));
        }
        if claims.role != role {
            return Err(TokenError::WrongRole {
                wanted: role.as_str(),
                found: claims.role.as_str(),
            });
        }
        Ok(claims)
    }
}

/// The bearer token a node currently presents, shared between whoever renews it and the clients
/// that send it. Cheap to clone (one `Arc`); reading never waits for a renewal. A client whose
/// peer refused the token says so ([`TokenCell::refused`]), which calls the renewer's hook.
#[derive(Clone, Default)]
pub struct TokenCell(Arc<CellInner>);

/// The hook a renewer installs to hear that the token was refused.
type RefusedHook = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct CellInner {
    token: RwLock<Arc<str>>,
    on_refused: RwLock<Option<RefusedHook>>,
}

impl std::fmt::Debug for TokenCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCell(<redacted>)")
    }
}

impl TokenCell {
    /// A cell holding `token` (empty: nothing to present yet).
    pub fn new(token: &str) -> Self {
        let cell = Self::default();
        cell.set(token);
        cell
    }

    /// The current token (empty until the node enrolled).
    pub fn get(&self) -> Arc<str> {
        match self.0.token.read() {
            Ok(token) => token.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the token (after an enrollment or renewal).
    pub fn set(&self, token: &str) {
        let token = Arc::from(token);
        match self.0.token.write() {
            Ok(mut current) => *current = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
    }

    /// Installs the hook [`TokenCell::refused`] calls (the renewer's "renew now").
    pub fn on_refused(&self, hook: impl Fn() + Send + Sync + 'static) {
        let hook: RefusedHook = Arc::new(hook);
        match self.0.on_refused.write() {
            Ok(mut current) => *current = Some(hook),
            Err(poisoned) => *poisoned.into_inner() = Some(hook),
        }
    }

    /// A peer refused the token (401/403): tells the renewer, if one is installed.
    pub fn refused(&self) {
        let hook = match self.0.on_refused.read() {
            Ok(hook) => hook.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if let Some(hook) = hook {
            hook();
        }
    }
}

impl From<&str> for TokenCell {
    fn from(token: &str) -> Self {
        Self::new(token)
    }
}

impl From<&String> for TokenCell {
    fn from(token: &String) -> Self {
        Self::new(token)
    }
}

impl From<String> for TokenCell {
    fn from(token: String) -> Self {
        Self::new(&token)
    }
}

impl From<&TokenCell> for TokenCell {
    fn from(cell: &TokenCell) -> Self {
        cell.clone()
    }
}
