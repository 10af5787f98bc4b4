//! rim's own versioned business API (`/v1/*`): JSON bodies, real HTTP status codes, described by the
//! OpenAPI document at `/v1/openapi.json` ([`crate::openapi`]).
//!
//! Pushes take a JSON body naming the operation, the targets and the payload, given either as
//! UTF-8 text (`body_text`) or as base64 bytes (`body_base64`, standard alphabet, padded), exactly
//! one of the two. The decoded payload is limited to `control_push_body_limit` bytes (413), the
//! JSON request to [`MAX_JSON_BODY`]. A push is answered `202 Accepted` once the bus holds it, with
//! the [`crate::push::PushReport`]. Reads need the read scope, pushes the push scope;
//! the HTTPDNS answer (`/v1/dns`) is public, as clients call it before they have any credentials.

use crate::dns;
use crate::error::ApiError;
use crate::input::{Params, read_body};
use crate::observe::timed_store;
use crate::push::{PushReport, PushRequest, PushTarget, push, validate_room};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use rim_store::Scope;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// Largest JSON request body of the `/v1` API (targets plus an encoded payload).
pub const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

/// Routes of the versioned business API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/push/keys", post(push_to::<Keys>))
        .route("/v1/push/users", post(push_to::<Users>))
        .route("/v1/push/room", post(push_to::<Room>))
        .route("/v1/push/all", post(push_to::<Everyone>))
        .route("/v1/online/total", get(online_total))
        .route("/v1/online/rooms", get(online_rooms))
        .route("/v1/online/top", get(online_top))
        .route("/v1/pushes/{id}", get(crate::receipts::push_receipts))
        .route("/v1/nodes", get(nodes))
        .route("/v1/dns", get(dns_answer))
}

/// Reads and decodes a JSON request body of at most `limit` bytes.
pub async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(headers, body, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// The payload of a push, as text or base64.
#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    body_text: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
}

impl Payload {
    /// The payload bytes; 400 unless exactly one form is given, 413 over the limit.
    fn decode(self, limit: usize) -> Result<Bytes, ApiError> {
        let bytes =
            match (self.body_text, self.body_base64) {
                (Some(text), None) => Bytes::from(text),
                (None, Some(encoded)) => Bytes::from(STANDARD.decode(encoded).map_err(|e| {
                    ApiError::BadRequest(format!("body_base64 is not base64: {e}"))
                })?),
                _ => {
                    return Err(ApiError::BadRequest(
                        "give exactly one of `body_text` and `body_base64`".into(),
                    ));
                }
            };
        if bytes.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "push payload of {} bytes is larger than the limit of {limit} bytes",
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}

/// A `/v1/push/*` body: the operation, whom it is for (`T`, one per route) and the payload.
#[derive(Debug, Deserialize)]
struct PushBody<T> {
    operation: i32,
    #[serde(flatten)]
    target: T,
    #[serde(flatten)]
    payload: Payload,
}

/// `POST /v1/push/keys` targets.
#[derive(Debug, Deserialize)]
struct Keys {
    keys: Vec<String>,
}

/// `POST /v1/push/users` targets.
#[derive(Debug, Deserialize)]
struct Users {
    mids: Vec<i64>,
}

/// `POST /v1/push/room` target.
#[derive(Debug, Deserialize)]
struct Room {
    room: String,
}

/// `POST /v1/push/all`: everyone, optionally rate-capped.
#[derive(Debug, Deserialize)]
struct Everyone {
    #[serde(default)]
    speed: i32,
}

impl From<Keys> for PushTarget {
    fn from(target: Keys) -> Self {
        PushTarget::Keys(target.keys)
    }
}

impl From<Users> for PushTarget {
    fn from(target: Users) -> Self {
        PushTarget::Mids(target.mids)
    }
}

impl From<Room> for PushTarget {
    fn from(target: Room) -> Self {
        PushTarget::Room(target.room)
    }
}

impl From<Everyone> for PushTarget {
    fn from(target: Everyone) -> Self {
        PushTarget::Broadcast {
            speed: target.speed,
        }
    }
}

/// `POST /v1/push/{keys,users,room,all}`: authenticates a push, decodes its body, and runs the
/// pipeline: 202 with the report.
async fn push_to<T: DeserializeOwned + Into<PushTarget>>(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PushReport>), ApiError> {
    let caller = state.caller(&headers, Scope::Push).await?;
    let parsed: PushBody<T> = json_body(&headers, body, MAX_JSON_BODY).await?;
    let target: PushTarget = parsed.target.into();
    caller.admit(target.kind())?;
    let request = PushRequest {
        operation: parsed.operation,
        body: parsed
            .payload
            .decode(state.config.control_push_body_limit)?,
        target,
    };
    Ok((StatusCode::ACCEPTED, Json(push(&state, request).await?)))
}

/// `GET /v1/online/total`: `{"conn_count", "ip_count"}`.
async fn online_total(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.require(&headers, Scope::Read).await?;
    let totals = timed_store("online_totals", state.store.online_totals()).await?;
    Ok(Json(json!(totals)))
}

/// `GET /v1/online/rooms?rooms=type://id,...`: `{"rooms": {"type://id": count}}`.
async fn online_rooms(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    state.require(&headers, Scope::Read).await?;
    let rooms: Vec<String> = params
        .list("rooms")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if rooms.is_empty() || rooms.len() > state.config.control_max_targets {
        return Err(ApiError::BadRequest(format!(
            "`rooms` must name 1..={} rooms",
            state.config.control_max_targets
        )));
    }
    rooms.iter().try_for_each(|room| validate_room(room))?;
    let counts = timed_store("room_online", state.store.room_online(&rooms)).await?;
    Ok(Json(json!({ "rooms": counts })))
}

/// `GET /v1/online/top?type=&limit=`: `{"rooms": [{"room", "count"}]}`, full room ids.
async fn online_top(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    state.require(&headers, Scope::Read).await?;
    let room_type = params.required("type")?;
    let limit = crate::goim::top_limit(&params)?;
    let top = timed_store("top_rooms", state.store.top_rooms(room_type, limit)).await?;
    Ok(Json(json!({ "rooms": top })))
}

/// `GET /v1/nodes`: every node the store knows, dead ones included, with state and load.
async fn nodes(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    state.require(&headers, Scope::Read).await?;
    let nodes = timed_store("nodes", state.store.nodes()).await?;
    Ok(Json(json!({ "nodes": nodes })))
}

/// `GET /v1/dns?lat=&lon=&platform=&region=`: `{"answer": goim answer, "ranked": [explained nodes]}`.
async fn dns_answer(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let asker = dns::Asker {
        params: &params,
        headers: &headers,
        peer: peer.map(|Extension(ConnectInfo(addr))| addr),
    };
    let (answer, ranked, located) = dns::explained(&state, &asker).await?;
    Ok(Json(
        json!({ "answer": answer, "ranked": ranked, "located": located }),
    ))
}
