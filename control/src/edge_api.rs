//! The edge API: how edges tell the control plane who they are and who is connected to them.
//!
//! Every call is `POST`, authenticated with `Authorization: Bearer <node token>` (an edge's token,
//! from [`crate::enroll`]; the cluster secret is refused here), with a protobuf body
//! (`Content-Type: application/x-protobuf`, messages of `rim_proto::schema`) of at most
//! `edge_body_limit` bytes. The token is checked before any of the body is read, and it binds the
//! call to one node: a body naming another node id (or, on register, another region) is refused
//! with 403, so a compromised edge can neither report sessions for, register or heartbeat as, nor
//! change the push URL of any node but its own.
//!
//! | route | request | success | meaning |
//! |---|---|---|---|
//! | `/edge/v1/register` | `NodeRegistration` | 204 | node known and active (call again after a 404); a new `boot_id` ends the previous life's sessions |
//! | `/edge/v1/heartbeat` | `NodeHeartbeat` | 204 | counts, room counts and draining flag stored; `stopped` marks the node dead at once |
//! | `/edge/v1/enroll`, `/edge/v1/renew`, `/edge/v1/keys` | see [`crate::enroll`] | 200 | node tokens |
//! | `/edge/v1/sessions` | `SessionBatch` | 200, JSON `SessionApplyReport` | events applied in order |
//! | `/edge/v1/auth` | `AuthRequest` | 200, `AuthResponse` | business webhook accepted or refused the client |
//! | `/edge/v1/resume`, `/edge/v1/acks`, `/edge/v1/receipts` | see [`crate::durable_api`] | 200 / 204 | durable delivery: what a client missed, what it processed, what was written |
//!
//! Statuses an edge client must handle (error bodies are JSON `{"error","message"}`):
//! - 401: missing, malformed, forged or expired node token (enroll or renew, then retry).
//! - 403: the token is another node's, another region's or another role's.
//! - 400: malformed protobuf or invalid field (do not retry the same body; drop and count it).
//! - 404: unknown node (heartbeat, sessions): register again, then resend. On `/edge/v1/auth`:
//!   no webhook is configured (the body is an `AuthResponse` refusal saying so).
//! - 413: body or batch too large: split the batch.
//! - 502 (`/edge/v1/auth` only): the webhook failed; refuse the client as "auth unavailable".
//! - 503: store unavailable, nothing applied: retry with backoff, keep the batch.
//!
//! Liveness never depends on room statistics: a heartbeat's room list is bounded by the edge (its
//! largest rooms, the rest summed in `omitted_*`), and control stores at most
//! [`rim_proto::MAX_HEARTBEAT_ROOMS`] of them, dropping (and counting) rooms that are malformed or
//! beyond the bound, so the heartbeat itself is accepted whatever rooms clients chose.
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
use crate::push::validate_room;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use prost::Message;
use rim_proto::limits::MAX_KEY_LEN;
use rim_proto::node_token::{NodeClaims, NodeRole};
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
        .merge(crate::enroll::routes())
}

/// The auth hook, bounded apart from the lifecycle routes: it waits for the business webhook.
pub fn auth_routes() -> Router<AppState> {
    Router::new().route("/edge/v1/auth", post(auth))
}

/// Authenticates the edge by its node token (before reading anything of the body), then decodes
/// its protobuf body.
pub(crate) async fn decode<M: Message + Default>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(NodeClaims, M), ApiError> {
    let claims = state.nodes.authenticate(headers, NodeRole::Edge).await?;
    let bytes = read_body(headers, body, state.config.control_edge_body_limit).await?;
    let message = M::decode(bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed protobuf body: {e}")))?;
    Ok((claims, message))
}

/// Refuses (403) a body about another node than the token's.
pub(crate) fn own(claims: &NodeClaims, node_id: &str) -> Result<(), ApiError> {
    if claims.sub == node_id {
        return Ok(());
    }
    metrics::counter!("rim_control_edge_foreign_node_refused_total").increment(1);
    tracing::warn!(token_node = %claims.sub, body_node = %node_id, "edge call for another node refused");
    Err(ApiError::Forbidden(format!(
        "this credential belongs to node {:?}; it cannot act for node {node_id:?}",
        claims.sub
    )))
}

/// A protobuf response.
pub(crate) fn protobuf(message: &impl Message) -> Response {
    ([(header::CONTENT_TYPE, PROTOBUF)], message.encode_to_vec()).into_response()
}

/// Checks an identifier the edge chose: non-empty, bounded.
pub(crate) fn check_id(what: &str, value: &str) -> Result<(), ApiError> {
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
    let (claims, node): (_, NodeRegistration) = decode(&state, &headers, body).await?;
    own(&claims, &node.node_id)?;
    if node.region != claims.region {
        return Err(ApiError::Forbidden(format!(
            "node {:?} enrolled in region {:?}; it cannot register in {:?}",
            claims.sub, claims.region, node.region
        )));
    }
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
        crate::presence::report_ended(&state, &report.ended_users).await;
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
    let (claims, mut report): (_, NodeHeartbeat) = decode(&state, &headers, body).await?;
    own(&claims, &report.node_id)?;
    bound_rooms(&mut report);
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

/// Keeps a heartbeat's room statistics within bounds without refusing the heartbeat: malformed
/// rooms are dropped, and beyond [`rim_proto::MAX_HEARTBEAT_ROOMS`] only the largest rooms are
/// kept; what is left out is added to the report's `omitted_*` figures, published per node as
/// `rim_control_heartbeat_rooms_omitted{node}`.
fn bound_rooms(report: &mut NodeHeartbeat) {
    let mut omitted = |rooms: &mut Vec<rim_proto::schema::RoomCount>, reason: &'static str| {
        if rooms.is_empty() {
            return;
        }
        metrics::counter!("rim_control_heartbeat_rooms_dropped_total", "reason" => reason)
            .increment(rooms.len() as u64);
        report.omitted_rooms = report.omitted_rooms.saturating_add(rooms.len() as u64);
        let connections = rooms
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.count));
        report.omitted_room_connections =
            report.omitted_room_connections.saturating_add(connections);
    };
    let (mut valid, mut invalid): (Vec<_>, Vec<_>) = std::mem::take(&mut report.rooms)
        .into_iter()
        .partition(|room| validate_room(&room.room).is_ok());
    omitted(&mut invalid, "malformed");
    if valid.len() > rim_proto::MAX_HEARTBEAT_ROOMS {
        valid.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.room.cmp(&b.room)));
        let mut beyond = valid.split_off(rim_proto::MAX_HEARTBEAT_ROOMS);
        omitted(&mut beyond, "beyond_bound");
    }
    report.rooms = valid;
    metrics::gauge!("rim_control_heartbeat_rooms_omitted", "node" => report.node_id.clone())
        .set(report.omitted_rooms as f64);
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
    if event.key.is_empty() || event.key.len() > MAX_KEY_LEN {
        return Err(ApiError::BadRequest(format!(
            "session key must be 1..={MAX_KEY_LEN} bytes"
        )));
    }
    if !event.room.is_empty() {
        validate_room(&event.room)?;
    }
    if event.platform.len() > rim_proto::limits::MAX_PLATFORM_LEN
        || event.ip.len() > MAX_ID_LEN
        || event.accepts.len() > rim_proto::limits::MAX_WATCH_OPS
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
    let (claims, batch): (_, SessionBatch) = decode(&state, &headers, body).await?;
    own(&claims, &batch.node_id)?;
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
    let watch = crate::presence::PresenceWatch::before(&state, &events).await;
    let mut report = timed_store(
        "apply_session_events",
        state
            .store
            .apply_session_events(&batch.node_id, &events, crate::now_ms()),
    )
    .await?;
    report.ignored += invalid;
    if let Some(watch) = watch {
        watch.after(&state, &batch.node_id, &claims.region).await;
    }
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
    let (claims, request): (_, AuthRequest) = decode(&state, &headers, body).await?;
    own(&claims, &request.node_id)?;
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
