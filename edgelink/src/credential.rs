//! A node's credential: enrollment with the cluster secret, then a node token kept fresh.
//!
//! [`NodeCredentials`] is what an edge or a job worker presents on internal links (see
//! `rim_proto::node_token`). Its background task ([`NodeCredentials::spawn`]):
//!
//! 1. enrolls (`POST /edge/v1/enroll` with the cluster secret, its role, node id and region),
//!    retrying with backoff until control answers; the token goes into [`NodeCredentials::token`],
//!    which every client of the node reads per request, and the public keys into the key set;
//! 2. renews the token with the token itself (`POST /edge/v1/renew`) when half its lifetime is
//!    left, so the secret is not sent again; a renewal refused with 401 (control's keys were
//!    replaced in an emergency) falls back to enrolling;
//! 3. does either at once (at most once per [`REFRESH_FLOOR`]) when a client reports that its peer
//!    refused the token ([`TokenCell::refused`], called by the edge link's and the job worker's
//!    clients on 401/403).
//!
//! For an edge it is also the [`PushAuthority`] of the internal endpoint: a push needs a token of
//! role `job` for the edge's own region, signed by one of the keys the edge holds. A token naming
//! a key the edge does not hold yet (control rotated) triggers a fetch of the public keys
//! (`GET /edge/v1/keys`, at most once per [`KEY_FETCH_FLOOR`]); the job worker's retry then passes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use rim_edge::internal::PushAuthority;
use rim_proto::node_token::{KeySet, NodeRole, TokenCell, TokenError};
use rim_proto::schema::{NodeCredential, NodeEnrollment, NodeKey};
use rim_retry::Backoff;
use tokio::sync::{Notify, watch};
/// What stops [`NodeCredentials::spawn`]'s task, re-exported so callers need no tokio-util of
/// their own.
pub use tokio_util::sync::CancellationToken;

use crate::client::{CallError, ControlClient};

/// Fetches of the public keys triggered by unknown `kid`s are at least this far apart.
pub const KEY_FETCH_FLOOR: Duration = Duration::from_secs(1);

/// Renewals asked for by refused calls are at least this far apart.
pub const REFRESH_FLOOR: Duration = Duration::from_secs(1);

/// Renewal starts once this fraction of the token's lifetime is left.
const RENEW_AT_REMAINING: f64 = 0.5;

/// Where and how a node enrolls.
#[derive(Clone, Debug)]
pub struct CredentialSettings {
    /// Base URL of the control plane (`/edge/v1/enroll` is appended).
    pub control_url: String,
    /// PEM CA certificate(s) to trust for an `https` control URL, besides the system's.
    pub control_ca_file: Option<std::path::PathBuf>,
    /// Bound on each call.
    pub timeout: Duration,
    /// Pauses between failed attempts.
    pub backoff: Backoff,
}

/// The public keys an edge trusts, refreshed from control on demand.
struct Keys {
    client: ControlClient,
    set: RwLock<KeySet>,
    last_fetch: Mutex<Option<Instant>>,
}

impl Keys {
    fn replace(&self, keys: &[NodeKey]) {
        *self.set.write() = KeySet::from_wire(keys);
    }

    /// Fetches the keys unless a fetch started less than [`KEY_FETCH_FLOOR`] ago.
    async fn fetch(&self) {
        {
            let mut last = self.last_fetch.lock();
            if last.is_some_and(|at| at.elapsed() < KEY_FETCH_FLOOR) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.client.keys().await {
            Ok(keys) => self.replace(&keys.keys),
            Err(error) => tracing::warn!(%error, "fetching the node-token keys failed"),
        }
    }
}

/// This node's credential; see the module docs. Share it behind an `Arc`.
pub struct NodeCredentials {
    role: NodeRole,
    node_id: String,
    region: String,
    /// Presents the cluster secret: enrollment only.
    enroller: ControlClient,
    /// Presents the current token: renewal.
    renewer: ControlClient,
    token: TokenCell,
    keys: Arc<Keys>,
    /// Expiry of the current token, ms since the epoch (0: none yet).
    expires_at_ms: AtomicI64,
    enrolled: watch::Sender<bool>,
    wake: Arc<Notify>,
    backoff: Backoff,
}

impl NodeCredentials {
    /// The credential of node `node_id` of `role` in `region`, enrolling with `cluster_secret`.
    /// Nothing is sent before [`NodeCredentials::spawn`]. Fails on an empty secret or id, or an
    /// unusable control URL or CA file.
    pub fn new(
        role: NodeRole,
        node_id: &str,
        region: &str,
        cluster_secret: &str,
        settings: &CredentialSettings,
    ) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(
            !cluster_secret.is_empty(),
            "the cluster secret (the enrollment credential) must not be empty"
        );
        anyhow::ensure!(
            !node_id.is_empty() && !region.is_empty(),
            "a node needs a node id and a region to enroll"
        );
        let ca = settings.control_ca_file.as_deref();
        let client = |bearer: TokenCell| {
            ControlClient::new(&settings.control_url, bearer, settings.timeout, ca)
        };
        let token = TokenCell::default();
        let wake = Arc::new(Notify::new());
        let woken = wake.clone();
        token.on_refused(move || woken.notify_one());
        Ok(Arc::new(Self {
            role,
            node_id: node_id.to_owned(),
            region: region.to_owned(),
            enroller: client(TokenCell::new(cluster_secret))?,
            renewer: client(token.clone())?,
            keys: Arc::new(Keys {
                client: client(TokenCell::default())?,
                set: RwLock::new(KeySet::default()),
                last_fetch: Mutex::new(None),
            }),
            token,
            expires_at_ms: AtomicI64::new(0),
            enrolled: watch::Sender::new(false),
            wake,
            backoff: settings.backoff.clone(),
        }))
    }

    /// The token to present (empty until enrolled); clients read it on every request.
    pub fn token(&self) -> &TokenCell {
        &self.token
    }

    /// The node id the credential is bound to.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Waits until the node holds a token.
    pub async fn ready(&self) {
        let mut enrolled = self.enrolled.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = enrolled.wait_for(|enrolled| *enrolled).await;
    }

    /// Starts the background task that enrolls and renews until `stop` is cancelled.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.run(stop).await })
    }

    async fn run(&self, stop: CancellationToken) {
        let mut backoff = self.backoff.clone();
        loop {
            let pause = match self.obtain().await {
                Ok(()) => {
                    backoff.reset();
                    self.until_renewal()
                }
                Err(error) => {
                    tracing::warn!(node = %self.node_id, role = self.role.as_str(), %error,
                        "node credential not obtained; retrying");
                    backoff.next_pause()
                }
            };
            let attempted = tokio::time::Instant::now();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                () = self.wake.notified() => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep_until(attempted + REFRESH_FLOOR) => {}
                    }
                }
            }
        }
    }

    /// Renews the current token, or enrolls when there is none or control refuses it.
    async fn obtain(&self) -> Result<(), CallError> {
        let credential = if self.token.get().is_empty() {
            self.enroll().await?
        } else {
            match self.renewer.renew().await {
                Ok(credential) => credential,
                Err(CallError::Unauthorized(reason)) => {
                    tracing::warn!(node = %self.node_id, %reason,
                        "control refused the node token; enrolling again");
                    self.enroll().await?
                }
                Err(error) => return Err(error),
            }
        };
        self.install(&credential);
        Ok(())
    }

    async fn enroll(&self) -> Result<NodeCredential, CallError> {
        let request = NodeEnrollment {
            role: self.role.as_str().into(),
            node_id: self.node_id.clone(),
            region: self.region.clone(),
        };
        let credential = self.enroller.enroll(&request).await?;
        tracing::info!(node = %self.node_id, role = self.role.as_str(), region = %self.region,
            "enrolled with the control plane");
        Ok(credential)
    }

    fn install(&self, credential: &NodeCredential) {
        self.token.set(&credential.token);
        self.keys.replace(&credential.keys);
        self.expires_at_ms
            .store(credential.expires_at_unix_ms, Ordering::Relaxed);
        self.enrolled.send_replace(true);
    }

    /// How long until the token should be renewed.
    fn until_renewal(&self) -> Duration {
        let left_ms = self.expires_at_ms.load(Ordering::Relaxed) - now_ms();
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        left.mul_f64(RENEW_AT_REMAINING).max(Duration::from_secs(1))
    }
}

impl PushAuthority for NodeCredentials {
    /// A job worker's token for this edge's region.
    fn admit(&self, token: &str) -> Result<(), String> {
        let verified = self.keys.set.read().verify(token, NodeRole::Job);
        match verified {
            Ok(claims) if claims.region == self.region => Ok(()),
            Ok(claims) => Err(format!(
                "job worker {:?} serves region {:?}; this edge serves {:?}",
                claims.sub, claims.region, self.region
            )),
            Err(error @ TokenError::UnknownKey(_)) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let keys = self.keys.clone();
                    runtime.spawn(async move { keys.fetch().await });
                }
                Err(format!("{error}; fetching the control plane's keys, retry"))
            }
            Err(error) => Err(error.to_string()),
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reads a PEM CA file into certificates for an HTTP client.
pub(crate) fn ca_certificates(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path)
        .map_err(|error| anyhow::anyhow!("reading CA file {}: {error}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|error| anyhow::anyhow!("parsing CA file {}: {error}", path.display()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "no certificate in CA file {}",
        path.display()
    );
    Ok(certificates)
}
