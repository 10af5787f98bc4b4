//! What every connection task and the internal endpoint share.
//!
//! One `Arc<Shared>` per edge; connection tasks hold a clone each, so it carries only shared handles and
//! the few settings read on hot paths, copied out of the config once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::metrics::Histogram;
use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::bucket::Buckets;
use crate::config::EdgeConfig;
use crate::durable::DurableLink;
use crate::fanout::Fanout;
use crate::heartbeat::Clock;
use crate::hooks::{EdgeEvents, UpstreamSink};
use crate::limits::Limiter;

/// Settings the connection tasks read, taken from [`EdgeConfig`].
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Largest client body.
    pub max_body: usize,
    /// Time from accept to completed auth.
    pub handshake_timeout: Duration,
    /// Silence allowed after auth.
    pub heartbeat_deadline: Duration,
    /// How long shutdown waits for connections.
    pub shutdown_timeout: Duration,
    /// Longest wait of an auth reply for the control plane's acknowledgement of the connect.
    pub auth_report_timeout: Duration,
}

impl Settings {
    /// Copies the settings out of `config`.
    pub fn from_config(config: &EdgeConfig) -> Self {
        Self {
            max_body: config.edge_max_client_body,
            handshake_timeout: config.handshake_timeout(),
            heartbeat_deadline: config.heartbeat_deadline(),
            shutdown_timeout: Duration::from_millis(config.edge_shutdown_timeout_ms),
            auth_report_timeout: Duration::from_millis(config.edge_auth_report_timeout_ms),
        }
    }
}

/// State shared by all connections of one edge.
pub struct Shared {
    /// Hot-path settings.
    pub settings: Settings,
    /// Connections by key, and rooms.
    pub buckets: Arc<Buckets>,
    /// Push execution.
    pub fanout: Arc<Fanout>,
    /// Auth.
    pub verifier: Arc<dyn Verifier>,
    /// Session observer.
    pub events: Arc<dyn EdgeEvents>,
    /// Upstream client messages.
    pub upstream: Arc<dyn UpstreamSink>,
    /// Admission bounds.
    pub limiter: Arc<Limiter>,
    /// Cancelled when the edge shuts down.
    pub shutdown: CancellationToken,
    /// Frames per write, recorded by every connection's writer (see [`crate::metrics::write_batches`]).
    pub write_batches: Histogram,
    /// The control plane's durable half (resume, acks, receipts), if the edge has a link to it.
    pub durable: Option<Arc<dyn DurableLink>>,
    /// The clock of the connections' heartbeat deadlines (see [`crate::heartbeat`]).
    pub heartbeats: Clock,
    next_id: AtomicU64,
}

impl Shared {
    /// Bundles the parts of an edge.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        buckets: Arc<Buckets>,
        fanout: Arc<Fanout>,
        verifier: Arc<dyn Verifier>,
        events: Arc<dyn EdgeEvents>,
        upstream: Arc<dyn UpstreamSink>,
        limiter: Arc<Limiter>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            settings,
            buckets,
            fanout,
            verifier,
            events,
            upstream,
            limiter,
            shutdown,
            write_batches: crate::metrics::write_batches(),
            durable: None,
            heartbeats: Clock::new(settings.heartbeat_deadline),
            next_id: AtomicU64::new(1),
        }
    }

    /// The same state with `durable` as the link to the control plane's durable half.
    pub fn with_durable(mut self, durable: Option<Arc<dyn DurableLink>>) -> Self {
        self.durable = durable;
        self
    }

    /// A connection id never used before on this edge.
    pub fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
