//! Signed-token verifier: the production way for a client to prove who it is.
//!
//! The business backend signs a JWT whose claims give `mid`, `key`, `room_id` (or `room`), `rooms`
//! (the rooms it may change to, see [`super::rooms`]), `platform` and `accepts`; the client puts it
//! in its auth body. What the edge checks, and why:
//!
//! - **The algorithm is pinned** by configuration (`edge_jwt_algorithms`, default HS256 and RS256): a
//!   token naming any other is refused, and a key only verifies algorithms of its own family, so a
//!   token "signed" with HS256 using an RSA public key as the secret never verifies.
//! - **`exp` is required; `nbf` is checked** when present (with `edge_jwt_leeway_s` of clock skew);
//!   `iss` is required when `edge_jwt_issuer` is set and **`aud` is required** (one of
//!   `edge_jwt_audience`) when that is set, so a token minted for another service is refused.
//! - **Keys are chosen by `kid`**: a token with a `kid` is only tried against keys with that id (key
//!   files named `KID=PATH`, and the keys of the JWKS URLs); one without is tried against every key
//!   of its algorithm's family. An unknown `kid` makes the JWKS be fetched again (rate-limited, see
//!   [`super::jwks`]) before the token is refused.
//! - **HMAC secrets are at least [`MIN_HMAC_KEY_LEN`] bytes**: a shorter file is refused at start
//!   (and on reload, keeping the previous keys), since a short shared secret can be brute-forced
//!   from any one token.
//!
//! Key files rotate without a restart: [`JwtVerifier::reload`] re-reads them, and
//! [`JwtVerifier::watch`] does so whenever a file's modification time changes and on SIGHUP. A reload
//! that fails keeps the previous keys (a half-written file must not lock every client out).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::body::find_token;
use super::jwks::Jwks;
use super::{AuthError, AuthRequest, Identity, RoomGrant, Verifier};
use rim_tls::reload::Reload;

/// Shortest HMAC secret accepted, in bytes (the output size of SHA-256, as RFC 7518 §3.2 asks).
pub const MIN_HMAC_KEY_LEN: usize = 32;

/// Claims rim reads from a client token (standard `exp`/`nbf`/`iss`/`aud` are checked by the
/// validation).
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    mid: i64,
    #[serde(default)]
    key: String,
    #[serde(default, alias = "room")]
    room_id: String,
    /// Rooms or room patterns (`live://*`) the connection may change to besides `room_id`.
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    accepts: Vec<i32>,
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct JwtPolicy {
    /// The only algorithms accepted.
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Accepted `aud` values; when not empty, `aud` is required.
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

impl Default for JwtPolicy {
    /// HS256 and RS256, no issuer or audience, 60 s of leeway.
    fn default() -> Self {
        Self {
            algorithms: vec![Algorithm::HS256, Algorithm::RS256],
            issuer: None,
            audience: Vec::new(),
            leeway_s: 60,
        }
    }
}

impl JwtPolicy {
    /// Parses the algorithm names (`edge_jwt_algorithms`); fails on an unknown or missing one.
    pub fn new(
        algorithms: &[String],
        issuer: Option<String>,
        audience: Vec<String>,
        leeway_s: u64,
    ) -> anyhow::Result<Self> {
        let algorithms = algorithms
            .iter()
            .map(|name| {
                name.trim().parse::<Algorithm>().map_err(|_| {
                    anyhow::anyhow!(
                        "edge_jwt_algorithms: unknown JWT algorithm {name:?} (one of HS256, \
                         HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            !algorithms.is_empty(),
            "edge_jwt_algorithms must name at least one algorithm"
        );
        Ok(Self {
            algorithms,
            issuer,
            audience: audience.into_iter().filter(|a| !a.is_empty()).collect(),
            leeway_s,
        })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// One verification key and what it may verify.
pub(crate) struct Key {
    /// Only tokens naming this `kid` (or none) use it.
    pub(crate) kid: Option<String>,
    /// The one algorithm it is for, when its source says so (a JWK's `alg`).
    pub(crate) alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

impl Key {
    /// True if a token with `alg` and `kid` may be checked with this key.
    fn fits(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        self.key.family() == alg.family()
            && self.alg.is_none_or(|own| own == alg)
            && kid.is_none_or(|kid| self.kid.as_deref() == Some(kid))
    }
}

/// Refuses an HMAC secret shorter than [`MIN_HMAC_KEY_LEN`]; `what` names it in the error.
pub(crate) fn check_hmac_len(len: usize, what: &dyn std::fmt::Display) -> anyhow::Result<()> {
    anyhow::ensure!(
        len >= MIN_HMAC_KEY_LEN,
        "{what} is an HMAC secret of {len} bytes; at least {MIN_HMAC_KEY_LEN} are required \
         (make one with `openssl rand -hex 32`)"
    );
    Ok(())
}

/// One configured key file: `PATH` or `KID=PATH`.
#[derive(Debug, Clone)]
struct KeyFile {
    kid: Option<String>,
    path: PathBuf,
}

impl KeyFile {
    fn parse(entry: &Path) -> Self {
        let text = entry.to_string_lossy();
        match text.split_once('=') {
            Some((kid, path)) if !kid.is_empty() && !kid.contains('/') && !path.is_empty() => {
                Self {
                    kid: Some(kid.to_owned()),
                    path: PathBuf::from(path),
                }
            }
            _ => Self {
                kid: None,
                path: entry.to_owned(),
            },
        }
    }
}

/// The keys loaded from the files.
struct FileKeys {
    keys: Vec<Arc<Key>>,
    modified: Vec<Option<SystemTime>>,
}

/// Verifies client JWTs against keys read from files and fetched from JWKS URLs.
pub struct JwtVerifier {
    files: Vec<KeyFile>,
    policy: JwtPolicy,
    keys: ArcSwap<FileKeys>,
    jwks: Option<Arc<Jwks>>,
}

impl Reload for JwtVerifier {
    fn reload(&self, forced: bool) -> anyhow::Result<bool> {
        if forced {
            JwtVerifier::reload(self).map(|()| true)
        } else {
            self.reload_if_changed()
        }
    }

    fn what(&self) -> &'static str {
        "JWT keys"
    }
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("files", &self.files)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Loads every key file (`PATH` or `KID=PATH`): a PEM public key is an RSA, EC or Ed25519 key,
    /// anything else an HMAC secret (surrounding whitespace trimmed, at least [`MIN_HMAC_KEY_LEN`]
    /// bytes). Fails if a file is unreadable, empty, a bad PEM or a short secret, or if no file is
    /// given.
    pub fn load(files: Vec<PathBuf>, policy: JwtPolicy) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !files.is_empty(),
            "JWT auth needs at least one key file (edge_jwt_keys) or JWKS URL (edge_jwt_jwks_urls)"
        );
        Self::with_jwks(files, policy, None)
    }

    /// Like [`JwtVerifier::load`], with keys from `jwks` too (then `files` may be empty).
    pub(crate) fn with_jwks(
        files: Vec<PathBuf>,
        policy: JwtPolicy,
        jwks: Option<Arc<Jwks>>,
    ) -> anyhow::Result<Self> {
        install_crypto_provider();
        let files: Vec<KeyFile> = files.iter().map(|f| KeyFile::parse(f)).collect();
        let keys = read_keys(&files)?;
        for alg in &policy.algorithms {
            if jwks.is_none() && !keys.keys.iter().any(|k| k.key.family() == alg.family()) {
                tracing::warn!(algorithm = ?alg, "no key of this algorithm's family is configured");
            }
        }
        Ok(Self {
            files,
            policy,
            keys: ArcSwap::from_pointee(keys),
            jwks,
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
        let current: Vec<Option<SystemTime>> =
            self.files.iter().map(|f| modified(&f.path)).collect();
        if current == self.keys.load().modified {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Starts a task that reloads the key files when one changes (checked every `interval`) and on
    /// SIGHUP. It holds only a weak reference and ends when the verifier is dropped.
    pub fn watch(verifier: &Arc<Self>, interval: Duration) {
        rim_tls::reload::watch(verifier, interval);
    }

    /// The keys a token with `alg` and `kid` may be checked with.
    fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Vec<Arc<Key>> {
        let files = self.keys.load();
        let fetched = self.jwks.as_ref().map(|jwks| jwks.keys());
        files
            .keys
            .iter()
            .chain(fetched.iter().flat_map(|keys| keys.iter()))
            .filter(|key| key.fits(alg, kid))
            .cloned()
            .collect()
    }

    async fn verify_token(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Malformed(format!("bad token: {e}")))?;
        let alg = header.alg;
        if !self.policy.algorithms.contains(&alg) {
            return Err(AuthError::Rejected(format!(
                "token algorithm {alg:?} is not accepted (accepted: {:?})",
                self.policy.algorithms
            )));
        }
        let kid = header.kid.as_deref();
        let mut candidates = self.candidates(alg, kid);
        if let (true, Some(kid), Some(jwks)) = (candidates.is_empty(), kid, &self.jwks) {
            jwks.refresh_for_unknown_kid(kid).await;
            candidates = self.candidates(alg, Some(kid));
            if candidates.is_empty() && !jwks.has_loaded() {
                return Err(AuthError::Unavailable(
                    "the signing keys (JWKS) could not be fetched yet".into(),
                ));
            }
        }
        if candidates.is_empty() {
            return Err(AuthError::Rejected(match kid {
                Some(kid) => format!("unknown key id (kid) {kid:?} for {alg:?}"),
                None => format!("no {alg:?} key configured"),
            }));
        }
        let validation = self.policy.validation(alg);
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = Some(e),
            }
        }
        let reason = last.map_or_else(String::new, |e| e.to_string());
        Err(AuthError::Rejected(format!("token refused: {reason}")))
    }
}

#[async_trait]
impl Verifier for JwtVerifier {
    async fn verify(&self, request: AuthRequest<'_>) -> Result<Identity, AuthError> {
        let (token, json) = find_token(request.body);
        let token = token.ok_or_else(|| {
            AuthError::Malformed("no token: send a JWT, or goim JSON with a \"token\" field".into())
        })?;
        let claims = self.verify_token(&token).await?;
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
            rooms: RoomGrant::patterns(claims.rooms),
        })
    }
}

/// Picks the pure-Rust backend of jsonwebtoken explicitly, so that another crate enabling a second
/// backend does not leave it unable to choose; an error only means one is already installed.
pub(crate) fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
    );
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads a PEM public key of any supported family.
fn public_key_from_pem(pem: &[u8], path: &Path) -> anyhow::Result<DecodingKey> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|e| {
            anyhow::anyhow!(
                "JWT key {} is not an RSA, EC or Ed25519 public key: {e}",
                path.display()
            )
        })
}

fn read_keys(files: &[KeyFile]) -> anyhow::Result<FileKeys> {
    let mut keys = FileKeys {
        keys: Vec::with_capacity(files.len()),
        modified: Vec::with_capacity(files.len()),
    };
    for file in files {
        let path = &file.path;
        let modified_at = modified(path);
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read JWT key {}: {e}", path.display()))?;
        let trimmed = bytes.trim_ascii();
        anyhow::ensure!(!trimmed.is_empty(), "JWT key {} is empty", path.display());
        let key = if trimmed.starts_with(b"-----BEGIN") {
            public_key_from_pem(trimmed, path)?
        } else {
            check_hmac_len(trimmed.len(), &format_args!("JWT key {}", path.display()))?;
            DecodingKey::from_secret(trimmed)
        };
        keys.keys.push(Arc::new(Key {
            kid: file.kid.clone(),
            alg: None,
            key,
        }));
        keys.modified.push(modified_at);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::KeyFile;
    use std::path::Path;

    #[test]
    fn key_file_entries_may_name_a_kid() {
        let named = KeyFile::parse(Path::new("main=/etc/rim/jwt.pem"));
        assert_eq!(named.kid.as_deref(), Some("main"));
        assert_eq!(named.path, Path::new("/etc/rim/jwt.pem"));
        let plain = KeyFile::parse(Path::new("/etc/rim/a=b.pem"));
        assert_eq!(plain.kid, None);
        assert_eq!(plain.path, Path::new("/etc/rim/a=b.pem"));
    }
}
