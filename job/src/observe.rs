//! `rim job`'s own HTTP port: `/healthz` and `/metrics`, so a job worker is as observable as the
//! other roles.
//!
//! `/healthz` asks the bus when it is called (see [`rim_bus::HealthProbe`]): 200 `ok` while the
//! broker answers for the region's topic and the consumer group assigned this worker partitions;
//! 503 with the reason while it has not joined yet, the broker is down, or the topic is missing.
//! `/metrics` renders the process's Prometheus recorder (installed by the `rim` binary).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use rim_bus::{BusHealth, HealthProbe};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the endpoints read: the consumer's probe once it exists, and the metrics recorder.
pub(crate) struct Observed {
    probe: Mutex<Option<Arc<dyn HealthProbe>>>,
    prometheus: Option<PrometheusHandle>,
}

impl Observed {
    /// Nothing joined yet; `/metrics` renders `prometheus` (404 without one).
    pub(crate) fn new(prometheus: Option<PrometheusHandle>) -> Arc<Self> {
        Arc::new(Self {
            probe: Mutex::new(None),
            prometheus,
        })
    }

    /// The consumer joined: `/healthz` asks its probe from now on.
    pub(crate) fn joined(&self, probe: Arc<dyn HealthProbe>) {
        *self.probe.lock() = Some(probe);
    }

    /// The worker's health now.
    async fn health(&self) -> BusHealth {
        let probe = self.probe.lock().clone();
        match probe {
            Some(probe) => probe.check().await,
            None => BusHealth::Unhealthy("not joined the region's consumer group yet".into()),
        }
    }
}

/// Serves the endpoints on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    observed: Arc<Observed>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(observed);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `GET /healthz`.
async fn healthz(State(observed): State<Arc<Observed>>) -> Response {
    match observed.health().await {
        BusHealth::Healthy => "ok".into_response(),
        BusHealth::Unhealthy(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {reason}"),
        )
            .into_response(),
    }
}

/// `GET /metrics`: the Prometheus text exposition.
async fn render_metrics(State(observed): State<Arc<Observed>>) -> Response {
    match &observed.prometheus {
        Some(prometheus) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            prometheus.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder in this process").into_response(),
    }
}
