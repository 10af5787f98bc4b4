//! The edge API: how edges tell the control plane who they are and who is connected to them.
//!
//! Every call is `POST`, authenticated with `Authorization: Bearer <cluster secret>`, with a
//! protobuf body (`Content-Type: application/x-protobuf`, messages of `rim_proto::schema`) of at
//! most `edge_body_limit` bytes.
//!
//! | route | request | success | meaning |
//! |---|---|---|---|
//! | `/edge/v1/register` | `NodeRegistration` | 204 | node known and active (call again after a 404); a new `boot_id` ends the previous life's sessions |
//! | `/edge/v1/heartbeat` | `NodeHeartbeat` | 204 | counts, room counts and draining flag stored; `stopped` marks the node dead at once |
//! | `/edge/v1/sessions` | `SessionBatch` | 200, JSON `SessionApplyReport` | events applied in order |
//! | `/edge/v1/auth` | `AuthRequest` | 200, `AuthResponse` | business webhook accepted or refused the client |
//!
//! Statuses an edge client must handle (error bodies are JSON `{"error","message"}`):
//! - 401: wrong cluster secret (configuration error, do not retry).
//! - 400: malformed protobuf or invalid field (do not retry the same body; drop and count it).
//! - 404: unknown node (heartbeat, sessions): register again, then resend. On `/edge/v1/auth`:
//!   no webhook is configured (the body is an `AuthResponse` refusal saying so).
//! - 413: body or batch too large: split the batch.
//! - 502 (`/edge/v1/auth` only): the webhook failed; refuse the client as "auth unavailable".
//! - 503: store unavailable, nothing applied: retry with backoff, keep the batch.
//!
//! An invalid event (unknown kind, empty or oversized key, malformed room) is dropped, logged and
//! counted in the report's `ignored`, so one bad event never blocks the rest of its batch.
//! Session events are applied with `Store::apply_session_events`, whose rules make redelivery
//! safe: a duplicate connect is a no-op replace, a stale disconnect (another connection owns the key
//! now) is ignored, so an edge may resend a batch whose answer it did not get. A connect that takes a
//! key from another connection (on another node, or another connection of the same node) has the
//! old connection closed by its edge ([`crate::takeover`]).
//!
//! The lifecycle routes (register, heartbeat, sessions) have their own bound on requests in flight
//! (`control_edge_max_in_flight`), and the auth hook another (`control_auth_max_in_flight`), apart
//! from the business APIs', so heartbeats get through whatever the business load, the broker or
//! the business webhook do.

use crate::error::ApiError;
use crate::input::read_body;
use crate::observe::timed_store;
use crate::push::{MAX_NAME_LEN, validate_room};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use prost::Message;
use rim_proto::schema::session_event::Kind;
use rim_proto::schema::{
    AuthRequest, AuthResponse, NodeHeartbeat, NodeRegistration, SessionBatch, SessionEvent,
};

/// Content type of protobuf bodies.
pub const PROTOBUF: &str = "application/x-protobuf";

/// Longest node id, region name or host name.
const MAX_ID_LEN: usize = 128;

/// Most public addresses a node may register.
const MAX_ADDRESSES: usize = 32;

/// Routes of the edge API that keep nodes and sessions known: register, heartbeat, sessions.
pub fn lifecycle_routes() -> Router<AppState> {
    Router::new()
        .route("/edge/v1/register", post(register))
        .route("/edge/v1/heartbeat", post(heartbeat))
        .route("/edge/v1/sessions", post(sessions))
}

/// The auth hook, bounded apart from the lifecycle routes: it waits for the business webhook.
pub fn auth_routes() -> Router<AppState> {
    Router::new().route("/edge/v1/auth", post(auth))
}

/// Authenticates the edge and decodes its protobuf body.
async fn decode<M: Message + Default>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<M, ApiError> {
    state.edges.require(headers)?;
    let bytes = read_body(headers, body, state.config.control_edge_body_limit).await?;
    M::decode(bytes).map_err(|e| ApiError::BadRequest(format!("malformed protobuf body: {e}")))
}

/// A protobuf response.
fn protobuf(message: &impl Message) -> Response {
    ([(header::CONTENT_TYPE, PROTOBUF)], message.encode_to_vec()).into_response()
}

/// Checks an identifier the edge chose: non-empty, bounded.
fn check_id(what: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(ApiError::BadRequest(format!(
            "{what} must be 1..={MAX_ID_LEN} bytes, got {value:?}"
        )));
    }
    Ok(())
}

/// Checks a registration's fields before they reach the store or the balancer.
fn check_registration(node: &NodeRegistration) -> Result<(), ApiError> {
    check_id("node_id", &node.node_id)?;
    check_id("region", &node.region)?;
    if node.hostname.len() > MAX_ID_LEN {
        return Err(ApiError::BadRequest(format!(
            "hostname longer than {MAX_ID_LEN} bytes"
        )));
    }
    if !(-90.0..=90.0).contains(&node.latitude) || !(-180.0..=180.0).contains(&node.longitude) {
        return Err(ApiError::BadRequest(format!(
            "latitude/longitude out of range: {}, {}",
            node.latitude, node.longitude
        )));
    }
    if node.addresses.len() > MAX_ADDRESSES
        || node
            .addresses
            .iter()
            .any(|a| a.is_empty() || a.len() > MAX_ID_LEN)
    {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_ADDRESSES} addresses of 1..={MAX_ID_LEN} bytes"
        )));
    }
    for (name, port) in [
        ("tcp_port", node.tcp_port),
        ("ws_port", node.ws_port),
        ("wss_port", node.wss_port),
    ] {
        if port > u32::from(u16::MAX) {
            return Err(ApiError::BadRequest(format!("{name} {port} is not a port")));
        }
    }
    if node.push_url.len() > 1024 {
        return Err(ApiError::BadRequest(
            "push_url longer than 1024 bytes".into(),
        ));
    }
    Ok(())
}

/// `POST /edge/v1/register`.
async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let node: NodeRegistration = decode(&state, &headers, body).await?;
    check_registration(&node)?;
    if node.boot_id.len() > MAX_ID_LEN {
        return Err(ApiError::BadRequest(format!(
            "boot_id longer than {MAX_ID_LEN} bytes"
        )));
    }
    let report = timed_store(
        "register_node",
        state.store.register_node(&node, crate::now_ms()),
    )
    .await?;
    state.directory.invalidate();
    if report.restarted {
        tracing::info!(node = %node.node_id, region = %node.region, boot_id = %node.boot_id,
            sessions_ended = report.sessions_ended, "edge restarted; its previous life's sessions ended");
    } else {
        tracing::info!(node = %node.node_id, region = %node.region, "edge registered");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /edge/v1/heartbeat`.
async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let report: NodeHeartbeat = decode(&state, &headers, body).await?;
    check_id("node_id", &report.node_id)?;
    if let Some(bad) = report
        .rooms
        .iter()
        .find(|r| validate_room(&r.room).is_err())
    {
        return Err(ApiError::BadRequest(format!(
            "room {:?} is not `type://id`",
            bad.room
        )));
    }
    timed_store(
        "node_heartbeat",
        state.store.node_heartbeat(&report, crate::now_ms()),
    )
    .await?;
    if report.stopped {
        state.directory.invalidate();
        tracing::info!(node = %report.node_id, "edge stopped; node dead and its sessions ended");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Checks one session event's fields (the reason names what is wrong).
fn check_event(event: &SessionEvent) -> Result<(), ApiError> {
    if !matches!(
        Kind::try_from(event.kind),
        Ok(Kind::Connect | Kind::Disconnect | Kind::Renew)
    ) {
        return Err(ApiError::BadRequest(format!(
            "session event kind {} is not connect/disconnect/renew",
            event.kind
        )));
    }
    if event.key.is_empty() || event.key.len() > MAX_NAME_LEN {
        return Err(ApiError::BadRequest(format!(
            "session key must be 1..={MAX_NAME_LEN} bytes"
        )));
    }
    if !event.room.is_empty() {
        validate_room(&event.room)?;
    }
    if event.platform.len() > MAX_ID_LEN
        || event.ip.len() > MAX_ID_LEN
        || event.accepts.len() > 1024
    {
        return Err(ApiError::BadRequest(format!(
            "session event for key {:?} has oversized fields",
            event.key
        )));
    }
    Ok(())
}

/// `POST /edge/v1/sessions`.
async fn sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let batch: SessionBatch = decode(&state, &headers, body).await?;
    check_id("node_id", &batch.node_id)?;
    let limit = state.config.control_max_session_batch;
    if batch.events.len() > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} session events in one batch; at most {limit}",
            batch.events.len()
        )));
    }
    let total = batch.events.len();
    let mut events = batch.events;
    events.retain(|event| match check_event(event) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(node = %batch.node_id, %error, "invalid session event dropped");
            false
        }
    });
    let invalid = (total - events.len()) as u64;
    let mut report = timed_store(
        "apply_session_events",
        state
            .store
            .apply_session_events(&batch.node_id, &events, crate::now_ms()),
    )
    .await?;
    report.ignored += invalid;
    state
        .takeovers
        .notify(&state, std::mem::take(&mut report.displaced));
    metrics::counter!("rim_control_session_events_total").increment(total as u64);
    metrics::counter!("rim_control_session_events_invalid_total").increment(invalid);
    Ok(Json(report).into_response())
}

/// `POST /edge/v1/auth`.
async fn auth(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: AuthRequest = decode(&state, &headers, body).await?;
    check_id("node_id", &request.node_id)?;
    let Some(webhook) = &state.webhook else {
        let refusal = AuthResponse {
            accepted: false,
            reason: "no auth webhook is configured on the control plane".into(),
            ..AuthResponse::default()
        };
        return Ok((StatusCode::NOT_FOUND, protobuf(&refusal)).into_response());
    };
    let answer = webhook
        .verify(&request.node_id, &request.client_ip, request.body)
        .await?;
    metrics::counter!("rim_control_auth_webhook_total", "accepted" => answer.accepted.to_string())
        .increment(1);
    Ok(protobuf(&answer))
}
