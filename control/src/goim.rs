//! The goim-compatible business routes (`/goim/*`), shaped as `GOIM-HTTP-API.md` describes so
//! backends written for goim's logic work unchanged.
//!
//! Every answer is goim's envelope `{"code": 0, "message": "", "data": ...}`. Differences, on
//! purpose: the routes need an API key (push scope for pushes, read scope for the rest, except the
//! client-facing HTTPDNS answer `/goim/nodes/weighted`) unless `goim_routes_open` is set; bodies are size-limited (413); push answers carry a report (message id,
//! targeted sessions, offline users/keys) in `data` where goim sent nothing; operations below 1000
//! are refused; bad parameters are HTTP 400 with code -400, and failures of the store or bus are
//! HTTP 503 with code -500 (goim: 200 or 500).

use crate::auth::Caller;
use crate::dns;
use crate::error::{ApiError, GoimError};
use crate::input::{Params, read_body};
use crate::observe::timed_store;
use crate::push::{PushRequest, PushTarget, push};
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rim_store::Scope;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Largest `limit` of `/goim/online/top`.
pub const MAX_TOP_LIMIT: usize = 1000;

/// Routes of the goim-compatible API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/goim/push/keys", post(push_keys))
        .route("/goim/push/mids", post(push_mids))
        .route("/goim/push/room", post(push_room))
        .route("/goim/push/all", post(push_all))
        .route("/goim/online/top", get(online_top))
        .route("/goim/online/room", get(online_room))
        .route("/goim/online/total", get(online_total))
        .route("/goim/nodes/weighted", get(nodes_weighted))
        .route("/goim/nodes/instances", get(nodes_instances))
}

/// goim's success envelope `{"code": 0, "message": "", "data": ...}`, written straight from the
/// data (no JSON tree in between: the push routes answer this per push, issue 8).
#[derive(Serialize)]
struct Envelope<T> {
    code: i32,
    message: &'static str,
    data: T,
}

/// goim's success envelope around `data`.
fn ok(data: impl Serialize) -> Response {
    Json(Envelope {
        code: 0,
        message: "",
        data,
    })
    .into_response()
}

/// Checks the caller's key unless the goim routes are configured open (then anyone is a caller
/// without limits).
async fn guard(state: &AppState, headers: &HeaderMap, scope: Scope) -> Result<Caller, GoimError> {
    if state.config.goim_routes_open {
        return Ok(Caller::unlimited());
    }
    Ok(state.caller(headers, scope).await?)
}

/// Reads the target from the query (`target`: 400 if malformed), authenticates, reads the raw
/// body as the payload, and runs the push pipeline. Takes the request whole, so its headers are
/// read in place rather than copied out by an extractor.
async fn run_push(
    state: &AppState,
    request: Request,
    target: impl FnOnce(&Params) -> Result<PushTarget, ApiError>,
) -> Result<Response, GoimError> {
    let (parts, body) = request.into_parts();
    let params = Params::of(&parts);
    let target = target(&params)?;
    guard(state, &parts.headers, Scope::Push)
        .await?
        .admit(target.kind())?;
    let operation = params.required_parsed("operation")?;
    let body = read_body(&parts.headers, body, state.config.control_push_body_limit).await?;
    Ok(ok(push(
        state,
        PushRequest {
            operation,
            body,
            target,
        },
    )
    .await?))
}

/// `POST /goim/push/keys?operation=&keys=`.
async fn push_keys(State(state): State<AppState>, request: Request) -> Result<Response, GoimError> {
    run_push(&state, request, |params| {
        let keys = params.list("keys").into_iter().map(str::to_owned).collect();
        Ok(PushTarget::Keys(keys))
    })
    .await
}

/// `POST /goim/push/mids?operation=&mids=`.
async fn push_mids(State(state): State<AppState>, request: Request) -> Result<Response, GoimError> {
    run_push(&state, request, |params| {
        Ok(PushTarget::Mids(params.parsed_list("mids")?))
    })
    .await
}

/// `POST /goim/push/room?operation=&type=&room=`.
async fn push_room(State(state): State<AppState>, request: Request) -> Result<Response, GoimError> {
    run_push(&state, request, |params| {
        Ok(PushTarget::Room(format!(
            "{}://{}",
            params.required("type")?,
            params.required("room")?
        )))
    })
    .await
}

/// `POST /goim/push/all?operation=&speed=`.
async fn push_all(State(state): State<AppState>, request: Request) -> Result<Response, GoimError> {
    run_push(&state, request, |params| {
        Ok(PushTarget::Broadcast {
            speed: params.parsed("speed")?.unwrap_or(0),
        })
    })
    .await
}

/// The `limit` of a top-rooms query: required, 1..=[`MAX_TOP_LIMIT`].
pub fn top_limit(params: &Params) -> Result<usize, crate::error::ApiError> {
    let limit: i64 = params.required_parsed("limit")?;
    usize::try_from(limit)
        .ok()
        .filter(|l| (1..=MAX_TOP_LIMIT).contains(l))
        .ok_or_else(|| {
            crate::error::ApiError::BadRequest(format!(
                "`limit` must be 1..={MAX_TOP_LIMIT}, got {limit}"
            ))
        })
}

/// `GET /goim/online/top?type=&limit=`: `[{"room_id", "count"}]`, ids without `type://`.
async fn online_top(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, GoimError> {
    guard(&state, &headers, Scope::Read).await?;
    let room_type = params.required("type")?;
    let limit = top_limit(&params)?;
    let top = timed_store("top_rooms", state.store.top_rooms(room_type, limit)).await?;
    let prefix = format!("{room_type}://");
    let rooms: Vec<Value> = top
        .iter()
        .map(|r| json!({"room_id": r.room.strip_prefix(&prefix).unwrap_or(&r.room), "count": r.count}))
        .collect();
    Ok(ok(rooms))
}

/// `GET /goim/online/room?type=&rooms=`: `{"<id>": count}`.
async fn online_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, GoimError> {
    guard(&state, &headers, Scope::Read).await?;
    let room_type = params.required("type")?;
    let ids = params.list("rooms");
    if ids.is_empty() {
        return Err(crate::error::ApiError::BadRequest(
            "query parameter `rooms` is required".into(),
        )
        .into());
    }
    if ids.len() > state.config.control_max_targets {
        return Err(crate::error::ApiError::BadRequest(format!(
            "at most {} rooms per query",
            state.config.control_max_targets
        ))
        .into());
    }
    let rooms: Vec<String> = ids.iter().map(|id| format!("{room_type}://{id}")).collect();
    let counts = timed_store("room_online", state.store.room_online(&rooms)).await?;
    let data: BTreeMap<&str, u64> = ids
        .iter()
        .zip(&rooms)
        .map(|(id, room)| (*id, counts.get(room).copied().unwrap_or(0)))
        .collect();
    Ok(ok(data))
}

/// `GET /goim/online/total`: `{"conn_count", "ip_count"}`.
async fn online_total(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, GoimError> {
    guard(&state, &headers, Scope::Read).await?;
    Ok(ok(timed_store(
        "online_totals",
        state.store.online_totals(),
    )
    .await?))
}

/// `GET /goim/nodes/weighted?platform=`: the HTTPDNS answer. Public: clients call it before they
/// have credentials. Also takes rim's optional `lat`, `lon` and `region`.
async fn nodes_weighted(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    params: Params,
) -> Result<Response, GoimError> {
    let asker = dns::Asker {
        params: &params,
        headers: &headers,
        peer: peer.map(|Extension(ConnectInfo(addr))| addr),
    };
    // Encoded by the rankings from precomputed pieces (the hottest route: issue 8).
    Ok(dns::weighted(&state, &asker).await?)
}

/// `GET /goim/nodes/instances`: every node not dead, with its metadata.
async fn nodes_instances(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, GoimError> {
    guard(&state, &headers, Scope::Read).await?;
    let nodes = timed_store("nodes", state.store.nodes()).await?;
    let live: Vec<_> = nodes
        .into_iter()
        .filter(|n| n.state != rim_store::NodeState::Dead)
        .collect();
    Ok(ok(live))
}
