//! Putting an instance together: the router of every API, the background expiry sweeper, and the
//! listener with graceful shutdown.
//!
//! The edge lifecycle calls, the auth hook and the business APIs have separate bounds on requests
//! in flight, so business load (or a slow broker holding pushes, or a slow auth webhook) cannot
//! starve edge heartbeats until every node is declared dead. The sweeper runs on every instance but sweeps only while it holds the store's sweeper
//! lease (renewed each round), so one instance sweeps at a time; node timeouts are judged by the
//! store's clock. Each sweep also runs the inbox's retention ([`crate::push::clean_inbox`]).
//!
//! [`start`] binds (port 0 works, for tests and `rim dev`) and returns a handle that knows its
//! address; [`serve`] is the same for a process that simply runs until a shutdown signal. The
//! listener speaks HTTP/1.1 and cleartext HTTP/2 (h2c, prior knowledge) on the same port: busy
//! business backends and edges can multiplex many requests over one connection.
//!
//! With `control_tls_cert` and `control_tls_key` the listener speaks HTTPS only (HTTP/1.1 and h2,
//! chosen by ALPN), so enrollment, the edge API and the business API run over TLS; nodes trust a
//! private CA with `edge_control_ca_file` / `job_control_ca_file`. The certificate machinery is
//! the edge's too, in rim-tls ([`rim_tls::acceptor()`]: the pair is reloaded when its files change
//! or on SIGHUP, session tickets), and so is the listener ([`rim_tls::TlsListener`]: handshakes
//! run concurrently, each bounded in time, so a silent peer holds up nobody). Without them (the
//! default, and `rim dev` on loopback) it is plain HTTP.

use crate::config::ControlConfig;
use crate::error::ApiError;
use crate::observe::{TrackRequests, timed_store};
use crate::state::AppState;
use crate::{admin, durable_api, edge_api, goim, health, openapi, presence, v1};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::{IncomingStream, ListenerExt};
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use rim_bus::BusProducer;
use rim_store::{Scope, Store};
use rim_tls::TlsListener;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{BoxError, Layer, ServiceBuilder};
use tower_http::trace::TraceLayer;

/// Every route of the control plane, with request metrics, tracing, and bounds on requests in
/// flight: one for the business and admin APIs, one for the edge lifecycle calls, one for the auth
/// hook (excess requests get 503 at once). Health and metrics are outside all, so they answer
/// under any load.
pub fn build_router(state: AppState) -> Router {
    build_router_with(state, Router::new())
}

/// [`build_router`] with the stateless routes of `extra` beside the APIs (outside their bounds on
/// requests in flight, before the not-found fallback); `extra` must have no fallback of its own.
fn build_router_with(state: AppState, extra: Router) -> Router {
    let business = Router::new()
        .merge(goim::routes())
        .merge(v1::routes())
        .merge(admin::routes())
        .merge(presence::routes())
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        );
    Router::new()
        .merge(limited(
            business,
            "business",
            state.config.control_max_in_flight,
        ))
        .merge(limited(
            edge_api::lifecycle_routes().merge(durable_api::routes()),
            "edge",
            state.config.control_edge_max_in_flight,
        ))
        .merge(limited(
            edge_api::auth_routes(),
            "auth",
            state.config.control_auth_max_in_flight,
        ))
        .merge(limited(
            crate::upstream::routes(),
            "upstream",
            state.config.control_upstream_max_in_flight,
        ))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics))
        .merge(extra.with_state(()))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(TrackRequests::default())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// `routes` behind their own bound of `max_in_flight` requests; `api` labels the shed counter.
fn limited(routes: Router<AppState>, api: &'static str, max_in_flight: usize) -> Router<AppState> {
    routes.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |error| overloaded(api, error)))
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(max_in_flight.max(1))),
    )
}

/// The answer to a request shed because too many of its API are in flight.
async fn overloaded(api: &'static str, error: BoxError) -> ApiError {
    metrics::counter!("rim_control_requests_shed_total", "api" => api).increment(1);
    ApiError::Unavailable(format!("control plane overloaded, retry later: {error}"))
}

/// `GET /metrics`: the Prometheus text exposition, for callers with the read scope (a Prometheus
/// scrape job sends the key as its bearer token). It is on the business port, so it is not public:
/// the metrics name routes, rates and failures an attacker would like to watch.
async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    state.require(&headers, Scope::Read).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    ))
}

/// Periodically removes expired sessions and marks silent nodes dead while this instance holds the
/// sweeper lease, until `stop` changes. The lease lasts three intervals, so another instance takes
/// over within that once this one stops renewing it.
async fn sweep(state: AppState, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(state.config.control_sweep_interval_ms.max(100));
    let lease_ms = i64::try_from(every.as_millis().saturating_mul(3)).unwrap_or(i64::MAX);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut holding = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let lease = timed_store(
            "sweeper_lease",
            state
                .store
                .sweeper_lease(&state.instance_id, lease_ms, crate::now_ms()),
        )
        .await;
        match lease {
            Ok(true) => {
                if !holding {
                    tracing::info!(instance = %state.instance_id, "this instance runs the expiry sweep");
                }
                holding = true;
            }
            Ok(false) => {
                if holding {
                    tracing::info!(instance = %state.instance_id, "another instance runs the expiry sweep now");
                }
                holding = false;
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "sweeper lease unavailable; retrying next interval");
                continue;
            }
        }
        match timed_store(
            "expire",
            state
                .store
                .expire(crate::now_ms(), state.config.control_node_timeout_ms),
        )
        .await
        {
            Ok(report) if report.nodes_marked_dead > 0 || report.sessions_removed > 0 => {
                if report.nodes_marked_dead > 0 {
                    state.directory.invalidate();
                }
                tracing::info!(
                    nodes_marked_dead = report.nodes_marked_dead,
                    sessions_removed = report.sessions_removed,
                    "expiry sweep"
                );
                presence::report_ended(&state, &report.ended_users).await;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "expiry sweep failed; retrying next interval"),
        }
        crate::push::clean_inbox(&state).await;
    }
}

/// A running control-plane instance.
pub struct RunningControl {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    sweeper: JoinHandle<()>,
    /// The receipt webhook and fallback scanner, when configured.
    feed_consumers: Vec<JoinHandle<()>>,
}

impl RunningControl {
    /// The address the instance listens on (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish, stops the sweeper.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        // Receivers are gone only if both tasks already ended, which the joins below report.
        let _ = self.stop.send(true);
        self.sweeper.await?;
        for consumer in self.feed_consumers {
            consumer.await?;
        }
        Ok(self.server.await??)
    }
}

/// Binds `config.control_listen` and starts serving and sweeping in the background. Installs ring
/// as the process's default rustls provider if none is (HTTPS clients of the process need one).
pub async fn start(
    config: ControlConfig,
    cluster_secret: &str,
    store: Arc<dyn Store>,
    bus: Arc<dyn BusProducer>,
    prometheus: PrometheusHandle,
) -> anyhow::Result<RunningControl> {
    start_with_routes(
        config,
        cluster_secret,
        store,
        bus,
        prometheus,
        Router::new(),
    )
    .await
}

/// [`start`], serving the stateless routes of `extra` beside the APIs (outside their bounds on
/// requests in flight, before the not-found fallback): how `rim dev` adds its demo page. `extra`
/// must have no fallback of its own.
pub async fn start_with_routes(
    config: ControlConfig,
    cluster_secret: &str,
    store: Arc<dyn Store>,
    bus: Arc<dyn BusProducer>,
    prometheus: PrometheusHandle,
    extra: Router,
) -> anyhow::Result<RunningControl> {
    if cluster_secret.is_empty() {
        anyhow::bail!("the cluster secret is empty: edges could not authenticate");
    }
    // reqwest (the auth webhook) is built without a bundled TLS crypto provider; make the
    // workspace's (ring) the process default. An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if config.goim_routes_open {
        tracing::warn!(
            "goim_routes_open: /goim/* routes accept pushes and reads WITHOUT an API key"
        );
    }
    let tls = tls_acceptor(&config)?;
    let listener = tokio::net::TcpListener::bind(config.control_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.control_listen))?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config, cluster_secret, store, bus, prometheus)?;
    let (stop, stopped) = watch::channel(false);
    let feed_consumers = crate::receipt_events::spawn_consumers(&state, &stopped)?;
    let sweeper = tokio::spawn(sweep(state.clone(), stopped.clone()));
    let router = build_router_with(state, extra);
    // Cancelled once graceful shutdown begins: the TLS listener then stops accepting.
    let accepting = CancellationToken::new();
    let until_stop = {
        let accepting = accepting.clone();
        let mut stopped = stopped;
        async move {
            // An error means the sender is gone: stop as well.
            let _ = stopped.wait_for(|stop| *stop).await;
            accepting.cancel();
        }
    };
    let secure = tls.is_some();
    let server = match tls {
        None => tokio::spawn(
            axum::serve(
                // Answers leave at once: with Nagle, an answer written while the previous one is
                // unacknowledged (pipelined requests) waits for the peer's delayed ACK.
                listener.tap_io(|tcp| {
                    if let Err(error) = tcp.set_nodelay(true) {
                        tracing::debug!(%error, "TCP_NODELAY not set");
                    }
                }),
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(until_stop)
            .into_future(),
        ),
        Some(acceptor) => {
            // What `into_make_service_with_connect_info` does for a plain TCP listener: each
            // connection's router knows its peer (the push routes log it).
            let per_connection =
                tower::service_fn(move |incoming: IncomingStream<'_, TlsListener>| {
                    let peer = ConnectInfo(*incoming.remote_addr());
                    std::future::ready(Ok::<_, Infallible>(Extension(peer).layer(router.clone())))
                });
            tokio::spawn(
                axum::serve(
                    TlsListener::spawn(listener, acceptor, accepting),
                    per_connection,
                )
                .with_graceful_shutdown(until_stop)
                .into_future(),
            )
        }
    };
    tracing::info!(%addr, tls = secure, "control plane listening");
    Ok(RunningControl {
        addr,
        stop,
        server,
        sweeper,
        feed_consumers,
    })
}

/// The listener's TLS acceptor when `control_tls_cert` and `control_tls_key` are set (both or
/// neither), offering h2 and HTTP/1.1 by ALPN.
fn tls_acceptor(config: &ControlConfig) -> anyhow::Result<Option<TlsAcceptor>> {
    let (cert, key) = match (&config.control_tls_cert, &config.control_tls_key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => anyhow::bail!("TLS needs both control_tls_cert and control_tls_key"),
    };
    let reloading = rim_tls::acceptor(cert, key)?;
    // The copy shares the reloading certificate resolver and the ticketer with the original.
    let mut server_config = rustls::ServerConfig::clone(reloading.config());
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server_config))))
}

/// Runs an instance until `shutdown` completes, then stops it gracefully.
pub async fn serve(
    config: ControlConfig,
    cluster_secret: &str,
    store: Arc<dyn Store>,
    bus: Arc<dyn BusProducer>,
    prometheus: PrometheusHandle,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(config, cluster_secret, store, bus, prometheus).await?;
    shutdown.await;
    running.shutdown().await
}
