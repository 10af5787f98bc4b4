//! Signed-token verifier: the production way for a client to prove who it is.
//!
//! The business backend signs a JWT (HS256 with a shared secret or RS256 with its private key) whose
//! claims give `mid`, `key`, `room_id` (or `room`), `platform` and `accepts`; the client puts it in its
//! auth body. The edge checks the signature, `exp` (required) and, when configured, `iss`.
//!
//! Keys live in files so that they rotate without a restart: [`JwtVerifier::reload`] re-reads them,
//! and [`JwtVerifier::watch`] does so whenever a file's modification time changes and on SIGHUP. A
//! reload that fails keeps the previous keys (a half-written file must not lock every client out).

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

use super::body::find_token;
use super::{AuthError, AuthRequest, Identity, Verifier};

/// Claims rim reads from a client token (standard `exp`/`iss` are checked by the validation).
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    mid: i64,
    #[serde(default)]
    key: String,
    #[serde(default, alias = "room")]
    room_id: String,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    accepts: Vec<i32>,
}

/// The keys loaded from the files, by algorithm family.
struct KeySet {
    hmac: Vec<DecodingKey>,
    rsa: Vec<DecodingKey>,
    modified: Vec<Option<SystemTime>>,
}

/// Verifies client JWTs against keys read from files, reloadable at run time.
pub struct JwtVerifier {
    files: Vec<PathBuf>,
    issuer: Option<String>,
    keys: ArcSwap<KeySet>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("files", &self.files)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Loads every key file: a PEM public key is an RS256 key, anything else is an HS256 secret
    /// (surrounding whitespace trimmed). Fails if a file is unreadable, empty or a bad PEM, or if no
    /// file is given.
    pub fn load(files: Vec<PathBuf>, issuer: Option<String>) -> anyhow::Result<Self> {
        // Pick the pure-Rust backend explicitly so that another crate enabling a second backend does
        // not leave jsonwebtoken unable to choose; an error only means one is already installed.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
        anyhow::ensure!(
            !files.is_empty(),
            "JWT auth needs at least one key file (edge_jwt_keys)"
        );
        let keys = read_keys(&files)?;
        Ok(Self {
            files,
            issuer,
            keys: ArcSwap::from_pointee(keys),
        })
    }

    /// Re-reads the key files now; on error the previous keys stay in force.
    pub fn reload(&self) -> anyhow::Result<()> {
        let keys = read_keys(&self.files)?;
        self.keys.store(Arc::new(keys));
        tracing::info!(files = ?self.files, "JWT keys reloaded");
        Ok(())
    }

    /// Reloads if any key file's modification time differs from the loaded one.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let current: Vec<Option<SystemTime>> = self.files.iter().map(modified).collect();
        if current == self.keys.load().modified {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Starts a task that reloads the keys when a file changes (checked every `interval`) and on
    /// SIGHUP. It holds only a weak reference and ends when the verifier is dropped.
    pub fn watch(verifier: &Arc<Self>, interval: Duration) {
        let weak: Weak<Self> = Arc::downgrade(verifier);
        tokio::spawn(async move {
            let mut hangup = hangup_signal();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = recv_hangup(&mut hangup) => true,
                };
                let Some(verifier) = weak.upgrade() else {
                    return;
                };
                let result = if forced {
                    verifier.reload().map(|()| true)
                } else {
                    verifier.reload_if_changed()
                };
                if let Err(error) = result {
                    tracing::error!(%error, "JWT key reload failed; keeping the previous keys");
                }
            }
        });
    }

    fn verify_token(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Malformed(format!("bad token: {e}")))?;
        let keys = self.keys.load();
        let candidates = match header.alg.family() {
            AlgorithmFamily::Hmac => &keys.hmac,
            AlgorithmFamily::Rsa => &keys.rsa,
            _ => {
                return Err(AuthError::Rejected(format!(
                    "token algorithm {:?} is not accepted",
                    header.alg
                )));
            }
        };
        let validation = self.validation(header.alg);
        let mut last = AuthError::Rejected(format!("no {:?} key configured", header.alg));
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = AuthError::Rejected(format!("token refused: {e}")),
            }
        }
        Err(last)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.validate_exp = true;
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.set_required_spec_claims(&["exp", "iss"]);
            }
            None => validation.set_required_spec_claims(&["exp"]),
        }
        validation
    }
}

#[async_trait]
impl Verifier for JwtVerifier {
    async fn verify(&self, request: AuthRequest<'_>) -> Result<Identity, AuthError> {
        let (token, json) = find_token(request.body);
        let token = token.ok_or_else(|| {
            AuthError::Malformed("no token: send a JWT, or goim JSON with a \"token\" field".into())
        })?;
        let claims = self.verify_token(&token)?;
        let platform = match claims.platform.is_empty() {
            true => json.map(|j| j.platform).unwrap_or_default(),
            false => claims.platform,
        };
        Ok(Identity {
            mid: claims.mid,
            key: claims.key,
            room: claims.room_id,
            platform,
            accepts: claims.accepts,
        })
    }
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_keys(files: &[PathBuf]) -> anyhow::Result<KeySet> {
    let mut keys = KeySet {
        hmac: Vec::new(),
        rsa: Vec::new(),
        modified: Vec::with_capacity(files.len()),
    };
    for path in files {
        let modified_at = modified(path);
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read JWT key {}: {e}", path.display()))?;
        let trimmed = bytes.trim_ascii();
        anyhow::ensure!(!trimmed.is_empty(), "JWT key {} is empty", path.display());
        if trimmed.starts_with(b"-----BEGIN") {
            let key = DecodingKey::from_rsa_pem(trimmed).map_err(|e| {
                anyhow::anyhow!("JWT key {} is not an RSA public key: {e}", path.display())
            })?;
            keys.rsa.push(key);
        } else {
            keys.hmac.push(DecodingKey::from_secret(trimmed));
        }
        keys.modified.push(modified_at);
    }
    Ok(keys)
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP; file polling only"))
        .ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

/// Resolves on SIGHUP; never if SIGHUP cannot be received.
async fn recv_hangup(hangup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        return signal.recv().await;
    }
    let _ = hangup;
    std::future::pending().await
}
