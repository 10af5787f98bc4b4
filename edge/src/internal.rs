//! The internal HTTP endpoint: what job workers and operators talk to, on its own port.
//!
//! - `POST /internal/push`: body `rim.v1.EdgePushRequest` (protobuf), header
//!   `Authorization: Bearer <cluster secret>` (compared in constant time); answers
//!   `rim.v1.EdgePushResponse` with, per push, how many connections it reached. 401 without the
//!   secret, 400 for a body that is not the message, 413 above `edge_max_push_body`, and 503 ("edge
//!   stopping") from the moment shutdown begins: the edge is closing its connections and would not
//!   write those pushes, so the job must settle or retry them elsewhere rather than count them
//!   delivered. A request that was executing when shutdown began is answered 503 as well, since its
//!   frames may not have been written before the connections closed.
//! - `GET /metrics`: the process's Prometheus metrics (when the process gave the edge its handle).
//! - `GET /healthz`: 200 `ok`, or 503 `draining` once shutdown started.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use prost::Message;
use rim_proto::schema::{EdgePushRequest, EdgePushResponse};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::fanout::Fanout;
use crate::metrics;

/// What the internal routes need.
#[derive(Clone)]
pub struct InternalState {
    /// Push execution.
    pub fanout: Arc<Fanout>,
    /// The cluster secret callers must present.
    pub secret: Arc<[u8]>,
    /// Renders `/metrics`, when the process installed a Prometheus recorder.
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled at shutdown (health turns to draining, pushes are refused).
    pub shutdown: CancellationToken,
}

/// The internal router; request bodies are limited to `max_body` bytes.
pub fn router(state: InternalState, max_body: usize) -> Router {
    Router::new()
        .route("/internal/push", post(push))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(health))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// True when the request carries `Authorization: Bearer <secret>`.
fn authorized(headers: &HeaderMap, secret: &[u8]) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|token| bool::from(token.ct_eq(secret)))
}

/// The answer to a push while the edge stops.
fn stopping() -> Response {
    metrics::push_refused("stopping");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        "edge stopping: it takes no more pushes\n",
    )
        .into_response()
}

async fn push(State(state): State<InternalState>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers, &state.secret) {
        metrics::unauthorized();
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong cluster secret\n",
        )
            .into_response();
    }
    let request = match EdgePushRequest::decode(body) {
        Ok(request) => request,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("body is not an EdgePushRequest: {error}\n"),
            )
                .into_response();
        }
    };
    if state.shutdown.is_cancelled() {
        return stopping();
    }
    let delivered = state.fanout.push_all(&request.pushes).await;
    if state.shutdown.is_cancelled() {
        return stopping();
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        EdgePushResponse { delivered }.encode_to_vec(),
    )
        .into_response()
}

async fn render_metrics(State(state): State<InternalState>) -> Response {
    match &state.metrics {
        Some(handle) => handle.render().into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no Prometheus recorder installed in this process\n",
        )
            .into_response(),
    }
}

async fn health(State(state): State<InternalState>) -> Response {
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ok\n".into_response()
    }
}
