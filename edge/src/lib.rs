//! rim edge (goim's comet): holds client connections and fans pushes out to them.
//!
//! Clients speak the goim v2 protocol (`shared/spec/PROTOCOL.md`) over TCP, WebSocket (`/sub`, with
//! or without a query string) and, when a certificate is configured, TLS and WSS. Job workers push on
//! an internal HTTP endpoint. The pieces, one concept per module:
//!
//! | module | idea |
//! |---|---|
//! | [`config`] | `EdgeConfig` (clap args / `[edge]` TOML section) |
//! | [`auth`] | the [`auth::Verifier`] trait; JWT (pinned algorithms, audience, `kid`, JWKS, reloadable keys), room grants, insecure dev verifier |
//! | [`listener`] / [`limits`] | accept loops, PROXY protocol from trusted networks, per-address (IPv6 /64) and total bounds |
//! | [`session`] | one connection: handshake, heartbeats, ops (room changes authorized and bounded), close — one task per connection |
//! | [`transport`] | TCP/TLS byte streams and WebSocket messages behind one trait |
//! | [`bucket`] / [`channel`] | connections sharded by key; rooms per bucket; key takeover |
//! | [`outbox`] | the per-connection queue, bounded by bytes and time behind, drained whole into one write |
//! | [`fanout`] | pushes to keys / rooms / everyone, encoded once, slow-consumer policy, superseded closes |
//! | [`dedup`] | deliveries (message id, record) remembered for a time window, bounded in memory |
//! | [`durable`] | rim's durable-delivery extension: op-20 pushes, resume after auth, acks, `written` receipts |
//! | [`ratelog`] | rate-limited log lines for per-connection events |
//! | [`wakes`] | a request's frames are all queued before each writer is woken once |
//! | [`internal`] | `POST /internal/push`, `/metrics`, `/healthz` |
//! | [`hooks`] | [`EdgeEvents`] (session observer) and [`UpstreamSink`] (client upstream messages) |
//!
//! # Starting an edge
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use rim_edge::{Edge, EdgeConfig, EdgeHooks};
//! let config = EdgeConfig::local()?; // every default, loopback port 0 everywhere
//! let verifier = rim_edge::auth::from_config(&config)?; // JWT keys from `edge_jwt_keys`, or insecure
//! let edge = Edge::start(config, "cluster-secret".into(), verifier, EdgeHooks::default()).await?;
//! println!("tcp on {}, ws on {}, pushes on http://{}/internal/push",
//!     edge.addrs().tcp, edge.addrs().ws, edge.addrs().internal);
//! edge.shutdown().await; // stop accepting, close clients with a reason, drain, bounded in time
//! # Ok(()) }
//! ```
//!
//! Pushing: `POST http://<internal>/internal/push` with `Authorization: Bearer <job node token>` (or
//! the cluster secret for an edge without [`EdgeHooks::push_authority`]) and a protobuf
//! `rim.v1.EdgePushRequest`; or, in-process, [`EdgeHandle::push`]. Both return per push the
//! number of connections reached.
//!
//! The process installs the Prometheus recorder; pass its handle in [`EdgeHooks::metrics`] to have it
//! served at `/metrics` on the internal port.

pub mod auth;
pub mod bucket;
pub mod channel;
pub mod close;
pub mod config;
pub mod dedup;
pub mod durable;
pub mod fanout;
pub mod heartbeat;
pub mod hooks;
pub mod internal;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod platforms;
pub mod ratelog;
pub mod session;
pub mod state;
pub mod transport;
pub mod wakes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use rim_proto::schema::EdgePush;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{AuthError, Identity, Verifier};
pub use config::EdgeConfig;
pub use hooks::{CountingSink, EdgeEvents, NoEvents, UpstreamReply, UpstreamSink};

use crate::bucket::Buckets;
use crate::fanout::{Fanout, FanoutSettings};
use crate::limits::Limiter;
use crate::listener::Kind;
use crate::state::{Settings, Shared};

/// Entry point: `Edge::start` runs an edge inside the current Tokio runtime.
#[derive(Debug)]
pub struct Edge(());

/// Optional collaborators of an edge; [`Default`] gives no-op events, a counting upstream sink and no
/// `/metrics` rendering.
#[derive(Clone)]
pub struct EdgeHooks {
    /// Told about connects, disconnects and room changes (the edge→control client).
    pub events: Arc<dyn EdgeEvents>,
    /// Receives client upstream messages (op 4 and business ops).
    pub upstream: Arc<dyn UpstreamSink>,
    /// The process's Prometheus handle, rendered at `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    /// Who may push on `/internal/push` (the edge's node credential); without one, the cluster
    /// secret (see [`internal`]).
    pub push_authority: Option<Arc<dyn internal::PushAuthority>>,
    /// The control plane's durable half: resume, acks and `written` receipts (see [`durable`]);
    /// without one, rim-aware connections are answered "not resumed: unavailable".
    pub durable: Option<Arc<dyn durable::DurableLink>>,
}

impl Default for EdgeHooks {
    fn default() -> Self {
        Self {
            events: Arc::new(NoEvents),
            upstream: Arc::new(CountingSink),
            metrics: None,
            push_authority: None,
            durable: None,
        }
    }
}

/// Where a started edge listens (ports resolved, so port 0 in the config shows the real port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeAddrs {
    /// Plain TCP.
    pub tcp: SocketAddr,
    /// WebSocket (`ws://<ws>/sub`).
    pub ws: SocketAddr,
    /// TCP over TLS, when a cert and key are configured.
    pub tls: Option<SocketAddr>,
    /// WebSocket over TLS, when a cert and key are configured.
    pub wss: Option<SocketAddr>,
    /// Internal HTTP: `/internal/push`, `/metrics`, `/healthz`.
    pub internal: SocketAddr,
}

/// A running edge: its addresses, live counts, in-process push, and shutdown.
pub struct EdgeHandle {
    addrs: EdgeAddrs,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    /// Stops the internal endpoint at the end of shutdown.
    internal_stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Edge {
    /// Binds every listener, starts accepting, and returns a handle.
    ///
    /// `cluster_secret` authenticates job workers on the internal endpoint (must not be empty).
    /// `verifier` decides client identities (see [`auth::from_config`]). Must be called inside a Tokio
    /// runtime. Fails if a listener cannot bind, the TLS files are unusable, or a bound is invalid.
    pub async fn start(
        config: EdgeConfig,
        cluster_secret: String,
        verifier: Arc<dyn Verifier>,
        hooks: EdgeHooks,
    ) -> anyhow::Result<EdgeHandle> {
        anyhow::ensure!(
            !cluster_secret.is_empty(),
            "the cluster secret must not be empty"
        );
        anyhow::ensure!(
            config.edge_max_push_body <= (i32::MAX as usize) / 2,
            "edge_max_push_body is too large for goim framing"
        );
        anyhow::ensure!(
            config.edge_queue_max_bytes > 0 && config.edge_queue_max_age_ms > 0,
            "edge_queue_max_bytes and edge_queue_max_age_ms must be positive"
        );
        if config.edge_queue_max_bytes < config.edge_max_push_body {
            tracing::warn!(
                edge_queue_max_bytes = config.edge_queue_max_bytes,
                edge_max_push_body = config.edge_max_push_body,
                "edge_queue_max_bytes is below one push request's size: a single burst can close \
                 clients that read at full speed as slow consumers"
            );
        }
        metrics::describe();
        let tls = match (&config.edge_tls_cert, &config.edge_tls_key) {
            (Some(cert), Some(key)) => Some(rim_tls::reloading_acceptor(
                cert,
                key,
                std::time::Duration::from_millis(config.edge_tls_reload_ms),
            )?),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both edge_tls_cert and edge_tls_key"),
        };
        let internal_tls = match (
            &config.internal.edge_internal_tls_cert,
            &config.internal.edge_internal_tls_key,
        ) {
            (Some(cert), Some(key)) => Some(rim_tls::acceptor(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!(
                "internal TLS needs both edge_internal_tls_cert and edge_internal_tls_key"
            ),
        };
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .with_context(|| format!("binding {addr}"))
        };
        let tcp = bind(config.edge_tcp_listen.clone()).await?;
        let ws = bind(config.edge_ws_listen.clone()).await?;
        let internal = bind(config.edge_internal_listen.clone()).await?;
        let secure = match &tls {
            Some(acceptor) => Some((
                bind(config.edge_tls_listen.clone()).await?,
                bind(config.edge_wss_listen.clone()).await?,
                acceptor.clone(),
            )),
            None => None,
        };

        let shutdown = CancellationToken::new();
        let buckets = Arc::new(Buckets::new(config.edge_buckets));
        let fanout = Fanout::new(
            buckets.clone(),
            FanoutSettings::from_config(&config),
            shutdown.clone(),
        );
        let shared = Arc::new(
            Shared::new(
                Settings::from_config(&config),
                buckets,
                fanout.clone(),
                verifier,
                hooks.events,
                hooks.upstream,
                Arc::new(Limiter::new(
                    config.edge_max_conns_per_ip,
                    config.edge_max_connections,
                )),
                shutdown.clone(),
            )
            .with_durable(hooks.durable),
        );

        let addrs = EdgeAddrs {
            tcp: tcp.local_addr()?,
            ws: ws.local_addr()?,
            tls: secure.as_ref().map(|s| s.0.local_addr()).transpose()?,
            wss: secure.as_ref().map(|s| s.1.local_addr()).transpose()?,
            internal: internal.local_addr()?,
        };
        let tracker = TaskTracker::new();
        let proxy = listener::proxy::ProxyPolicy::from_config(&config)?;
        let mut listeners = vec![(tcp, Kind::Tcp), (ws, Kind::Ws)];
        if let Some((tls_listener, wss_listener, acceptor)) = secure {
            listeners.push((tls_listener, Kind::Tls(acceptor.clone())));
            listeners.push((wss_listener, Kind::Wss(acceptor)));
        }
        let mut tasks: Vec<JoinHandle<()>> = listeners
            .into_iter()
            .map(|(listener, kind)| {
                tokio::spawn(listener::accept_loop(
                    listener,
                    kind,
                    proxy.clone(),
                    shared.clone(),
                    tracker.clone(),
                ))
            })
            .collect();
        let accept_secret =
            hooks.push_authority.is_none() || config.internal.edge_internal_accept_cluster_secret;
        let router = internal::router(internal::InternalState {
            fanout,
            secret: accept_secret.then(|| Arc::from(cluster_secret.into_bytes())),
            authority: hooks.push_authority,
            max_body: config.edge_max_push_body,
            metrics: hooks.metrics,
            shutdown: shutdown.clone(),
        });
        // The internal endpoint outlives the start of shutdown: while connections close it answers
        // pushes 503 and health "draining", and it stops once they are closed.
        let internal_stop = CancellationToken::new();
        tasks.push(tokio::spawn(internal::serve(
            internal,
            router,
            internal_tls,
            internal_stop.clone(),
        )));
        tasks.push(tokio::spawn(heartbeat::sweep(
            shared.buckets.clone(),
            shared.heartbeats,
            shutdown.clone(),
        )));
        tracing::info!(?addrs, "edge started");
        Ok(EdgeHandle {
            addrs,
            shared,
            tracker,
            internal_stop,
            tasks,
        })
    }
}

impl EdgeHandle {
    /// The bound addresses.
    pub fn addrs(&self) -> &EdgeAddrs {
        &self.addrs
    }

    /// Authenticated connections.
    pub fn connection_count(&self) -> usize {
        self.shared.buckets.connection_count()
    }

    /// Open client sockets, authenticated or not.
    pub fn socket_count(&self) -> usize {
        self.shared.limiter.socket_count()
    }

    /// Distinct client IPs with an open socket.
    pub fn ip_count(&self) -> usize {
        self.shared.limiter.ip_count()
    }

    /// Online count of every non-empty room on this edge.
    pub fn room_counts(&self) -> HashMap<String, usize> {
        self.shared.buckets.room_counts()
    }

    /// Connections in `room` on this edge.
    pub fn room_online(&self, room: &str) -> usize {
        self.shared.buckets.room_online(room)
    }

    /// Executes a push in-process (as `POST /internal/push` would); returns connections reached.
    pub async fn push(&self, push: &EdgePush) -> u32 {
        self.shared.fanout.push(push).await
    }

    /// True once shutdown has begun (the edge wants no new clients).
    pub fn is_draining(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// Graceful shutdown: refuse pushes (503 on the internal endpoint), stop accepting, tell every
    /// client (WebSocket close 1001 "server shutting down"; TCP: flush, then FIN), and wait up to
    /// `edge_shutdown_timeout_ms` for connections to finish; then stop the internal endpoint.
    /// Returns true if all connections finished in time.
    pub async fn shutdown(self) -> bool {
        self.shared.shutdown.cancel();
        self.tracker.close();
        let timeout = self.shared.settings.shutdown_timeout;
        let drained = tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                remaining = self.tracker.len(),
                "shutdown timeout: connections still open"
            );
        }
        self.internal_stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(timeout, task).await;
        }
        drained
    }
}
