//! Client authentication: turning the op-7 auth body into a verified identity.
//!
//! goim trusted the JSON the client sent; rim asks a [`Verifier`]. The trait is async and object-safe
//! (`Arc<dyn Verifier>`) so that verifiers needing I/O (the auth webhook through the control plane, added
//! later) fit beside the local ones here: [`jwt::JwtVerifier`] (signed tokens, production; keys from
//! files and from JWKS URLs, [`jwks`]) and [`insecure::InsecureVerifier`] (development only).

pub mod body;
pub mod insecure;
pub mod jwks;
pub mod jwt;
pub mod rooms;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{AuthMode, EdgeConfig};

pub use rooms::RoomGrant;

/// Who a connection is, once verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// User id (0 = anonymous).
    pub mid: i64,
    /// Connection/device key; empty means the edge makes one up.
    pub key: String,
    /// Initial room in `type://id` form; empty means none.
    pub room: String,
    /// Free-text platform (web, ios, ...).
    pub platform: String,
    /// Initial watch set: the ops of key, user and broadcast pushes this connection wants.
    pub accepts: Vec<i32>,
    /// Rooms the connection may change to besides `room` (default: none; see [`rooms`]).
    pub rooms: RoomGrant,
}

impl Identity {
    /// Refuses an identity past the wire bounds (a key, platform or room id longer than
    /// [`rim_proto::limits::MAX_KEY_LEN`], [`rim_proto::limits::MAX_PLATFORM_LEN`] or
    /// [`rim_proto::limits::MAX_ROOM_LEN`], a watch set of more than
    /// [`rim_proto::limits::MAX_WATCH_OPS`]), whichever verifier produced it.
    pub fn check_bounds(&self) -> Result<(), AuthError> {
        use rim_proto::limits::{MAX_KEY_LEN, MAX_PLATFORM_LEN, MAX_ROOM_LEN, MAX_WATCH_OPS};
        for (what, len, max) in [
            ("key", self.key.len(), MAX_KEY_LEN),
            ("platform", self.platform.len(), MAX_PLATFORM_LEN),
            ("room id", self.room.len(), MAX_ROOM_LEN),
        ] {
            if len > max {
                return Err(AuthError::Rejected(format!(
                    "{what} of {len} bytes is longer than {max}"
                )));
            }
        }
        if self.accepts.len() > MAX_WATCH_OPS {
            return Err(AuthError::Rejected(format!(
                "the watch set holds {} operations, more than {MAX_WATCH_OPS}",
                self.accepts.len()
            )));
        }
        Ok(())
    }
}

/// What a verifier gets to decide on.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The op-7 body, unchanged.
    pub body: &'a [u8],
    /// The client's address.
    pub client_ip: IpAddr,
}

/// Why an auth body was refused; the text is sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The body is not something the verifier understands (not JSON, no token, ...).
    #[error("malformed auth body: {0}")]
    Malformed(String),
    /// The credentials were understood and refused (bad signature, expired, wrong issuer, ...).
    #[error("{0}")]
    Rejected(String),
    /// The verifier could not decide (a backend is down); the client should retry later.
    #[error("auth unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// Stable label for `rim_edge_auth_total{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Rejected(_) => "rejected",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Decides who a connecting client is.
///
/// Called once per connection inside the handshake timeout; must be cheap or bounded in time.
#[async_trait]
pub trait Verifier: Send + Sync + 'static {
    /// Verifies an auth request and returns the identity it proves.
    async fn verify(&self, request: AuthRequest<'_>) -> Result<Identity, AuthError>;
}

/// Builds the verifier the config asks for.
///
/// For JWT this checks the policy (pinned algorithms, audience), loads the key files and starts a
/// background task that re-reads them when they change and on SIGHUP, and, with JWKS URLs, one that
/// fetches those (both end when the verifier is dropped). Must be called inside a Tokio runtime.
pub fn from_config(config: &EdgeConfig) -> anyhow::Result<Arc<dyn Verifier>> {
    match config.edge_auth {
        AuthMode::Insecure => Ok(Arc::new(insecure::InsecureVerifier::new())),
        AuthMode::Jwt => {
            let issuer = Some(config.edge_jwt_issuer.clone()).filter(|i| !i.is_empty());
            let policy = jwt::JwtPolicy::new(
                &config.edge_jwt_algorithms,
                issuer,
                config.edge_jwt_audience.clone(),
                config.edge_jwt_leeway_s,
            )?;
            let urls: Vec<String> = config
                .edge_jwt_jwks_urls
                .iter()
                .filter(|url| !url.is_empty())
                .cloned()
                .collect();
            let verifier = if urls.is_empty() {
                jwt::JwtVerifier::load(config.edge_jwt_keys.clone(), policy)?
            } else {
                let jwks = Arc::new(jwks::Jwks::new(
                    &urls,
                    Duration::from_millis(config.edge_jwt_jwks_min_refetch_ms),
                )?);
                jwks::Jwks::watch(
                    &jwks,
                    Duration::from_millis(config.edge_jwt_jwks_refresh_ms.max(1_000)),
                );
                jwt::JwtVerifier::with_jwks(config.edge_jwt_keys.clone(), policy, Some(jwks))?
            };
            let verifier = Arc::new(verifier);
            jwt::JwtVerifier::watch(
                &verifier,
                Duration::from_millis(config.edge_jwt_reload_ms.max(100)),
            );
            Ok(verifier)
        }
    }
}
