//! The internal HTTP endpoint: what job workers and operators talk to, on its own port.
//!
//! - `POST /internal/push`: body `rim.v1.EdgePushRequest` (protobuf), header
//!   `Authorization: Bearer <job worker's node token>`; answers `rim.v1.EdgePushResponse` with,
//!   per push, how many connections it reached. Statuses:
//!   - 401 without a credential the edge accepts. The credential is checked on the headers alone,
//!     before a byte of the body is read, so an unauthenticated caller cannot make the edge buffer
//!     anything (the connection is closed after the answer).
//!   - 413 above `edge_max_push_body` (a declared length is refused before reading).
//!   - 400 for a body that is not the message, or for a push whose operation is a protocol one
//!     (below [`rim_proto::op::MIN_BUSINESS_PUSH`]: auth replies, heartbeat replies, batches...
//!     that clients would misread), whatever the control plane checked; nothing of such a
//!     request is executed.
//!   - 503 ("edge stopping") from the moment shutdown begins: the edge is closing its connections
//!     and would not write those pushes, so the job must settle or retry them elsewhere rather
//!     than count them delivered. A request that was executing when shutdown began is answered 503
//!     as well, since its frames may not have been written before the connections closed.
//! - `GET /metrics`: the process's Prometheus metrics (when the process gave the edge its handle).
//! - `GET /healthz`: 200 `ok`, or 503 `draining` once shutdown started.
//!
//! # Who may push
//!
//! With a [`PushAuthority`] (what `rim edge` wires: the edge's node credential, which accepts the
//! tokens of job workers of its region signed by the control plane), a push needs such a token;
//! an edge's token, another region's job token, an expired or forged one is refused. The cluster
//! secret is then accepted only if `edge_internal_accept_cluster_secret` is set, for the migration
//! of a cluster whose job workers do not enroll yet (off by default: the secret is the enrollment
//! credential and should not open the push path). Without an authority (an edge embedded without
//! node identity, such as in-process tests), the cluster secret is the credential.
//!
//! # TLS
//!
//! With `edge_internal_tls_cert` and `edge_internal_tls_key`, the endpoint speaks HTTPS only (job
//! workers trust its CA with `job_edge_ca_file`); handshakes run concurrently, each bounded in time,
//! so a slow or silent peer cannot hold up the others.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use metrics_exporter_prometheus::PrometheusHandle;
use prost::Message;
use rim_proto::schema::edge_push::Target;
use rim_proto::schema::{EdgePushRequest, EdgePushResponse};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::fanout::Fanout;
use crate::metrics;

/// Settings of the internal endpoint (flattened into [`crate::EdgeConfig`]; `[edge]` TOML keys).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct InternalConfig {
    /// PEM certificate chain of the internal endpoint: with its key, the endpoint speaks HTTPS only.
    #[arg(long, env = "RIM_EDGE_INTERNAL_TLS_CERT")]
    pub edge_internal_tls_cert: Option<PathBuf>,
    /// PEM private key of the internal endpoint.
    #[arg(long, env = "RIM_EDGE_INTERNAL_TLS_KEY")]
    pub edge_internal_tls_key: Option<PathBuf>,
    /// Also accept the cluster secret (not only job workers' node tokens) on `/internal/push`:
    /// for migrating a cluster whose job workers do not enroll yet. Off by default.
    #[arg(
        long,
        env = "RIM_EDGE_INTERNAL_ACCEPT_CLUSTER_SECRET",
        default_value_t = false
    )]
    pub edge_internal_accept_cluster_secret: bool,
}

/// Decides whether a bearer token may push to this edge (the edge's node credential implements it).
pub trait PushAuthority: Send + Sync + 'static {
    /// `Ok` if `token` may push here; otherwise why not (said to the caller, so no secrets).
    fn admit(&self, token: &str) -> Result<(), String>;
}

/// What the internal routes need.
#[derive(Clone)]
pub struct InternalState {
    /// Push execution.
    pub fanout: Arc<Fanout>,
    /// The cluster secret, when it is accepted as a push credential (see the module docs).
    pub secret: Option<Arc<[u8]>>,
    /// Checks job workers' tokens, when the edge has a node identity.
    pub authority: Option<Arc<dyn PushAuthority>>,
    /// Largest accepted push body.
    pub max_body: usize,
    /// Renders `/metrics`, when the process installed a Prometheus recorder.
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled at shutdown (health turns to draining, pushes are refused).
    pub shutdown: CancellationToken,
}

/// The internal router. The push route reads its body itself, after authentication.
pub fn router(state: InternalState) -> Router {
    Router::new()
        .route("/internal/push", post(push))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(health))
        .with_state(state)
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let result = match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
        Some(acceptor) => {
            let listener = rim_tls::TlsListener::spawn(listener, acceptor, stop.clone());
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    };
    if let Err(error) = result {
        tracing::error!(%error, "internal endpoint failed");
    }
}

/// The bearer token of a request (scheme matched case-insensitively).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
        .filter(|token| !token.is_empty())
}

/// Why a push request is not authorized, if it is not.
fn refusal(state: &InternalState, headers: &HeaderMap) -> Option<String> {
    let Some(token) = bearer(headers) else {
        return Some("missing `Authorization: Bearer <job node token>`".into());
    };
    if let Some(secret) = &state.secret
        && bool::from(token.ct_eq(secret))
    {
        return None;
    }
    let Some(authority) = &state.authority else {
        return Some("wrong cluster secret".into());
    };
    let Ok(token) = std::str::from_utf8(token) else {
        return Some("the token is not text".into());
    };
    authority.admit(token).err()
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

/// A 4xx answer; `close` for answers given before the body was read, so the rest of it is never
/// waited for.
fn refuse(status: StatusCode, message: String, close: bool) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    if close {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The first push of `request` that would send clients a protocol operation.
fn protocol_op(request: &EdgePushRequest) -> Option<(usize, i32)> {
    request.pushes.iter().enumerate().find_map(|(index, push)| {
        let to_clients = !matches!(push.target, Some(Target::Superseded(_)));
        (to_clients && push.operation < rim_proto::op::MIN_BUSINESS_PUSH)
            .then_some((index, push.operation))
    })
}

async fn push(State(state): State<InternalState>, headers: HeaderMap, body: Body) -> Response {
    if let Some(reason) = refusal(&state, &headers) {
        metrics::unauthorized();
        return refuse(StatusCode::UNAUTHORIZED, reason, true);
    }
    let too_large = || {
        metrics::push_refused("too_large");
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("push request larger than {} bytes", state.max_body),
            true,
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > state.max_body as u64) {
        return too_large();
    }
    let body = match Limited::new(body, state.max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return too_large(),
        Err(error) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {error}"),
                true,
            );
        }
    };
    let request = match EdgePushRequest::decode(body) {
        Ok(request) => request,
        Err(error) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("body is not an EdgePushRequest: {error}"),
                false,
            );
        }
    };
    if let Some((index, operation)) = protocol_op(&request) {
        metrics::push_refused("protocol_operation");
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "push {index} has operation {operation}; pushes must use operations >= {} \
                 (lower ones are protocol operations); nothing of this request was executed",
                rim_proto::op::MIN_BUSINESS_PUSH
            ),
            false,
        );
    }
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
