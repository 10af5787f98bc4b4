//! JWKS: verification keys published by an identity provider at a URL, cached and rotated.
//!
//! An identity provider rotates its signing keys by publishing the new key (with a new `kid`) next to
//! the old one, signing with it, and later removing the old one. The edge follows without a restart:
//!
//! - every URL is fetched at start and every `edge_jwt_jwks_refresh_ms`;
//! - a token naming a `kid` no cached key has makes the edge fetch again at once, so the first token
//!   signed with a freshly published key is accepted; such fetches happen at most once per
//!   `edge_jwt_jwks_min_refetch_ms` and one at a time (tokens with made-up `kid`s cannot turn the
//!   edge into a flood against the key server, and simultaneous clients share one fetch);
//! - a fetch that fails (unreachable, bad status, oversized or unreadable answer, no usable key)
//!   keeps that URL's last good set, so an outage of the provider locks nobody out.
//!
//! Keys meant for encryption (`use: enc`), of unsupported types, or HMAC secrets shorter than
//! [`super::jwt::MIN_HMAC_KEY_LEN`] are skipped with a warning. A key's `alg`, when given, pins it to
//! that algorithm.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::jwt::{Key, check_hmac_len};

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Longest time one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The keys of a list of JWKS URLs, with the last good set of each kept across failed fetches.
pub struct Jwks {
    urls: Vec<reqwest::Url>,
    client: reqwest::Client,
    /// The union of every URL's last good set (what verification reads).
    keys: ArcSwap<Vec<Arc<Key>>>,
    /// Each URL's last good set (`None`: never fetched successfully).
    per_url: Mutex<Vec<Option<Vec<Arc<Key>>>>>,
    /// When the last fetch started; held while fetching, so fetches never overlap.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch: Duration,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// A cache for `urls` (nothing fetched yet); fails on a URL that does not parse or is not
    /// http(s). `min_refetch` bounds the fetches caused by unknown `kid`s.
    pub fn new(urls: &[String], min_refetch: Duration) -> anyhow::Result<Self> {
        let urls = urls
            .iter()
            .map(|url| {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| anyhow::anyhow!("edge_jwt_jwks_urls: {url:?}: {e}"))?;
                anyhow::ensure!(
                    matches!(parsed.scheme(), "http" | "https"),
                    "edge_jwt_jwks_urls: {url:?} is not an http(s) URL"
                );
                Ok(parsed)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // reqwest is built without a TLS provider of its own; use ring, as the rest of the edge does,
        // unless the process already chose one.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the JWKS HTTP client: {e}"))?;
        Ok(Self {
            per_url: Mutex::new(vec![None; urls.len()]),
            urls,
            client,
            keys: ArcSwap::from_pointee(Vec::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refetch,
        })
    }

    /// The keys in force.
    pub(crate) fn keys(&self) -> Arc<Vec<Arc<Key>>> {
        self.keys.load_full()
    }

    /// True once at least one URL was fetched successfully.
    pub fn has_loaded(&self) -> bool {
        self.per_url.lock().iter().any(Option::is_some)
    }

    /// Fetches every URL now (waiting for a fetch already running), keeping the last good set of
    /// each URL that fails.
    pub async fn refresh(&self) {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_all().await;
    }

    /// A token named `kid`, which no key has: fetch again unless a fetch started less than
    /// `min_refetch` ago. Returns once the keys are as fresh as that allows.
    pub(crate) async fn refresh_for_unknown_kid(&self, kid: &str) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return;
        }
        tracing::info!(kid, "unknown JWT key id: fetching the JWKS again");
        *last = Some(Instant::now());
        self.fetch_all().await;
    }

    /// Refreshes every `interval` (the first time at once) until the cache is dropped.
    pub fn watch(jwks: &Arc<Self>, interval: Duration) {
        let weak: Weak<Self> = Arc::downgrade(jwks);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(jwks) = weak.upgrade() else {
                    return;
                };
                jwks.refresh().await;
            }
        });
    }

    async fn fetch_all(&self) {
        for (index, url) in self.urls.iter().enumerate() {
            match self.fetch(url).await {
                Ok(keys) => {
                    tracing::debug!(%url, keys = keys.len(), "JWKS fetched");
                    self.per_url.lock()[index] = Some(keys);
                }
                Err(error) => {
                    tracing::error!(%url, %error, "JWKS fetch failed; keeping the last good keys")
                }
            }
        }
        let union: Vec<Arc<Key>> = self
            .per_url
            .lock()
            .iter()
            .flatten()
            .flatten()
            .cloned()
            .collect();
        self.keys.store(Arc::new(union));
    }

    async fn fetch(&self, url: &reqwest::Url) -> anyhow::Result<Vec<Arc<Key>>> {
        let mut response = self.client.get(url.clone()).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "status {}",
            response.status()
        );
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            anyhow::ensure!(
                body.len() + chunk.len() <= MAX_JWKS_BYTES,
                "answer longer than {MAX_JWKS_BYTES} bytes"
            );
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| anyhow::anyhow!("not a JWKS document: {e}"))?;
        let keys = usable_keys(&set, url);
        anyhow::ensure!(!keys.is_empty(), "no usable signing key in the JWKS");
        Ok(keys)
    }
}

/// The signature keys of `set` that this edge can use; the others are logged and skipped.
fn usable_keys(set: &JwkSet, url: &reqwest::Url) -> Vec<Arc<Key>> {
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let usable = (|| {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                anyhow::bail!("meant for encryption");
            }
            let alg = jwk
                .common
                .key_algorithm
                .map(|alg| {
                    Algorithm::try_from(alg)
                        .map_err(|_| anyhow::anyhow!("algorithm {alg} is not a signature one"))
                })
                .transpose()?;
            let key = DecodingKey::from_jwk(jwk)?;
            if let AlgorithmParameters::OctetKey(_) = &jwk.algorithm {
                check_hmac_len(key.try_get_as_bytes()?.len(), &"the key")?;
            }
            Ok(Key { kid, alg, key })
        })();
        match usable {
            Ok(key) => keys.push(Arc::new(key)),
            Err(error) => {
                tracing::warn!(%url, kid = ?jwk.common.key_id, %error, "JWKS key skipped")
            }
        }
    }
    keys
}
