//! Certificates for rim's TLS listeners (rustls, ring provider): certificates that rotate without
//! a restart, and session resumption.
//!
//! The certificate chain and key are PEM files; a listener is only started when both are configured.
//!
//! - **Hot reload.** The acceptor asks a resolver for the certificate of each new handshake; a task
//!   re-reads the two files when either's modification time changes (checked at the interval the
//!   caller gives: `edge_tls_reload_ms` on the edge) and on SIGHUP, and swaps the pair in. New
//!   connections get the new certificate; open ones keep the session they have. A pair that does not load (half-written
//!   file, key not matching the certificate) is logged and the previous one stays in force. The task
//!   ends when the acceptor is dropped.
//! - **Resumption.** Stateless session tickets (TLS 1.3 and 1.2; ChaCha20-Poly1305 keys generated at
//!   start, rotated every 6 hours, tickets valid 12 hours) let a client that reconnects — a reconnect
//!   storm after a network blip — skip the certificate exchange and signature, without the server
//!   keeping per-session state (there is no server-side session cache). Ticket keys are per
//!   process: a client resuming on another process gets a full handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::reload::Reload;

/// How often the certificate files are checked when the caller does not say.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Builds a TLS acceptor from PEM files: a certificate chain and a private key (PKCS#8, PKCS#1 or
/// SEC1), reloaded every [`DEFAULT_RELOAD_INTERVAL`] when they change. Must be called inside a Tokio
/// runtime.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    reloading_acceptor(cert, key, DEFAULT_RELOAD_INTERVAL)
}

/// Like [`acceptor`], checking the files for changes every `interval`.
pub fn reloading_acceptor(
    cert: &Path,
    key: &Path,
    interval: Duration,
) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(Reloading::load(cert, key, provider.clone())?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().context("creating the TLS session ticketer")?;
    // Resumption by ticket only: no per-session memory (rustls' default cache holds 256 sessions,
    // nothing against a reconnect storm of thousands).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    crate::reload::watch(&resolver, interval);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate in force, and the files it came from.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// Modification times of (cert, key) when `current` was loaded.
    loaded: parking_lot::Mutex<[Option<SystemTime>; 2]>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Reloading {
    fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let times = modified(cert, key);
        let current = read_pair(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: ArcSwap::from_pointee(current),
            loaded: parking_lot::Mutex::new(times),
        })
    }
}

impl Reload for Reloading {
    /// Re-reads the pair if `forced` or either file changed; on error the current pair stays.
    fn reload(&self, forced: bool) -> anyhow::Result<bool> {
        let times = modified(&self.cert, &self.key);
        if !forced && *self.loaded.lock() == times {
            return Ok(false);
        }
        let pair = read_pair(&self.cert, &self.key, &self.provider)?;
        self.current.store(Arc::new(pair));
        *self.loaded.lock() = times;
        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
        Ok(true)
    }

    fn what(&self) -> &'static str {
        "TLS certificate"
    }
}

fn modified(cert: &Path, key: &Path) -> [Option<SystemTime>; 2] {
    [cert, key].map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
}

/// Reads a certificate chain and its private key, checking that they belong together.
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
        .with_context(|| format!("parsing private key in {}", key.display()))?
        .with_context(|| format!("no private key in {}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, provider).with_context(|| {
        format!(
            "TLS certificate {} and key {} do not match",
            cert.display(),
            key.display()
        )
    })
}
