//! The admin API (`/v1/admin/*`, admin scope): regions, API keys and draining nodes.
//!
//! Regions are created (`POST`, 409 if the name is taken), moved (`PUT`, which also creates) and
//! deleted (`DELETE`, 409 while live nodes serve the region, so no client or push is stranded).
//! Creating or moving a region first creates its bus topic, so a region is never announced
//! without one; the answers name the topic (when the bus has topics). These are the calls the
//! Terraform provider (`terraform/provider`) makes.
//!
//! API keys are created here: the answer to `POST /v1/admin/api-keys` is the only time the secret
//! is shown; the store keeps its SHA-256 only. Draining a node tells the balancer to send it no new
//! clients while its connections finish (the edge itself may also report draining on shutdown); an
//! admin's drain lasts across the node's restarts until `POST /v1/admin/nodes/{id}/undrain`.

use crate::auth::generate_key;
use crate::error::ApiError;
use crate::observe::timed_store;
use crate::state::AppState;
use crate::v1::json_body;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use rim_store::{ApiKeyRecord, NodeState, Region, RegionRemoval, Scope};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 16 * 1024;

/// Longest region or key name.
const MAX_NAME: usize = 128;

/// Routes of the admin API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/regions", get(regions).post(create_region))
        .route(
            "/v1/admin/regions/{name}",
            get(region).put(put_region).delete(delete_region),
        )
        .route("/v1/admin/api-keys", get(api_keys).post(create_api_key))
        .route(
            "/v1/admin/api-keys/{id}",
            get(api_key).delete(revoke_api_key),
        )
        .route("/v1/admin/nodes/{id}/drain", post(drain_node))
        .route("/v1/admin/nodes/{id}/undrain", post(undrain_node))
}

/// Requires the admin scope.
async fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    state.require(headers, Scope::Admin).await
}

/// Checks a name given by an admin: non-empty, bounded.
fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::BadRequest(format!(
            "{what} must be 1..={MAX_NAME} bytes"
        )));
    }
    Ok(())
}

/// A region as answered: the record plus its bus topic (absent for buses without topics).
#[derive(Debug, Serialize)]
struct RegionView {
    #[serde(flatten)]
    region: Region,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
}

impl RegionView {
    fn new(state: &AppState, region: Region) -> Self {
        let topic = state.bus.region_topic(&region.name);
        Self { region, topic }
    }
}

/// `GET /v1/admin/regions`: `{"regions": [...]}`.
async fn regions(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers).await?;
    let regions: Vec<RegionView> = timed_store("regions", state.store.regions())
        .await?
        .into_iter()
        .map(|region| RegionView::new(&state, region))
        .collect();
    Ok(Json(json!({ "regions": regions })))
}

/// `GET /v1/admin/regions/{name}`: the region, or 404.
async fn region(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RegionView>, ApiError> {
    admin(&state, &headers).await?;
    let found = timed_store("regions", state.store.regions())
        .await?
        .into_iter()
        .find(|region| region.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no region {name:?}")))?;
    Ok(Json(RegionView::new(&state, found)))
}

/// `PUT /v1/admin/regions/{name}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionBody {
    latitude: f64,
    longitude: f64,
}

/// `POST /v1/admin/regions` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRegion {
    name: String,
    latitude: f64,
    longitude: f64,
}

/// A region an admin described, checked: a bounded name and coordinates on the globe.
fn checked_region(name: String, latitude: f64, longitude: f64) -> Result<Region, ApiError> {
    check_name("region name", &name)?;
    if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
        return Err(ApiError::BadRequest(
            "latitude must be in [-90, 90] and longitude in [-180, 180]".into(),
        ));
    }
    Ok(Region {
        name,
        latitude,
        longitude,
    })
}

/// Creates the region's bus topic (503 if the bus cannot; nothing is stored then).
async fn create_topic(state: &AppState, region: &str) -> Result<(), ApiError> {
    state.bus.create_region_topic(region).await.map_err(|err| {
        ApiError::Unavailable(format!(
            "creating the topic of region {region:?} failed, the region was not stored: {err}"
        ))
    })
}

/// `POST /v1/admin/regions`: creates a region and its topic; 201 with it, 409 if the name is
/// taken (an existing region is never moved by a create).
async fn create_region(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<RegionView>), ApiError> {
    admin(&state, &headers).await?;
    let body: NewRegion = json_body(&headers, body, MAX_ADMIN_BODY).await?;
    let region = checked_region(body.name, body.latitude, body.longitude)?;
    create_topic(&state, &region.name).await?;
    if !timed_store("insert_region", state.store.insert_region(&region)).await? {
        return Err(ApiError::Conflict(format!(
            "region {:?} already exists",
            region.name
        )));
    }
    tracing::info!(region = %region.name, "region created");
    Ok((StatusCode::CREATED, Json(RegionView::new(&state, region))))
}

/// `PUT /v1/admin/regions/{name}`: creates (with its topic) or moves a region; answers it.
async fn put_region(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RegionView>, ApiError> {
    admin(&state, &headers).await?;
    let body: RegionBody = json_body(&headers, body, MAX_ADMIN_BODY).await?;
    let region = checked_region(name, body.latitude, body.longitude)?;
    create_topic(&state, &region.name).await?;
    timed_store("upsert_region", state.store.upsert_region(&region)).await?;
    Ok(Json(RegionView::new(&state, region)))
}

/// `DELETE /v1/admin/regions/{name}`: 204; 404 for an unknown region; 409 while live nodes serve
/// it (naming them). The topic stays: records still in it are the operator's to drain or drop.
async fn delete_region(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    admin(&state, &headers).await?;
    match timed_store("delete_region", state.store.delete_region(&name)).await? {
        RegionRemoval::Removed => {
            state.directory.invalidate();
            tracing::info!(region = %name, "region deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        RegionRemoval::Unknown => Err(ApiError::NotFound(format!("no region {name:?}"))),
        RegionRemoval::HasLiveNodes(nodes) => Err(ApiError::Conflict(format!(
            "region {name:?} still has live nodes ({}): drain and stop them first",
            nodes.join(", ")
        ))),
    }
}

/// An API key as listed: everything but the hash.
#[derive(Debug, Serialize)]
struct KeyView {
    id: String,
    name: String,
    scopes: Vec<Scope>,
    created_at: i64,
    revoked_at: Option<i64>,
    /// Target kinds the key may push to; null: every kind.
    target_kinds: Option<Vec<rim_store::TargetKind>>,
    /// The key's push rate limit; null: none.
    rate_limit: Option<rim_store::RateLimit>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(record: ApiKeyRecord) -> Self {
        Self {
            id: record.id,
            name: record.name,
            scopes: record.scopes,
            created_at: record.created_at,
            revoked_at: record.revoked_at,
            target_kinds: record.target_kinds,
            rate_limit: record.rate_limit,
        }
    }
}

/// `GET /v1/admin/api-keys`: `{"api_keys": [...]}`, without secrets.
async fn api_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers).await?;
    let keys: Vec<KeyView> = timed_store("api_keys", state.store.api_keys())
        .await?
        .into_iter()
        .map(KeyView::from)
        .collect();
    Ok(Json(json!({ "api_keys": keys })))
}

/// `GET /v1/admin/api-keys/{id}`: the key without its secret (revoked ones too), or 404.
async fn api_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<KeyView>, ApiError> {
    admin(&state, &headers).await?;
    timed_store("api_keys", state.store.api_keys())
        .await?
        .into_iter()
        .find(|key| key.id == id)
        .map(|key| Json(KeyView::from(key)))
        .ok_or_else(|| ApiError::NotFound(format!("no API key {id:?}")))
}

/// `POST /v1/admin/api-keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    scopes: Vec<Scope>,
    /// Target kinds the key may push to (`mids`, `keys`, `room`, `broadcast`); absent: all.
    #[serde(default)]
    target_kinds: Option<Vec<rim_store::TargetKind>>,
    /// Pushes per second the key may make on each control instance; absent: no limit.
    #[serde(default)]
    rate_per_second: Option<u32>,
    /// Pushes the key may make at once after a quiet period; defaults to `rate_per_second`.
    #[serde(default)]
    rate_burst: Option<u32>,
}

/// Largest per-key rate or burst (what the store's `int4` columns hold).
const MAX_RATE: u32 = i32::MAX as u32;

impl NewKey {
    /// The key's rate limit, if it has one: 400 for a zero or oversized figure, or a burst
    /// without a rate.
    fn rate_limit(&self) -> Result<Option<rim_store::RateLimit>, ApiError> {
        let valid = |what: &str, value: u32| {
            if (1..=MAX_RATE).contains(&value) {
                Ok(value)
            } else {
                Err(ApiError::BadRequest(format!(
                    "{what} must be 1..={MAX_RATE}, got {value}"
                )))
            }
        };
        match (self.rate_per_second, self.rate_burst) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(ApiError::BadRequest(
                "rate_burst needs rate_per_second".into(),
            )),
            (Some(per_second), burst) => Ok(Some(rim_store::RateLimit {
                per_second: valid("rate_per_second", per_second)?,
                burst: valid("rate_burst", burst.unwrap_or(per_second))?,
            })),
        }
    }
}

/// `POST /v1/admin/api-keys`: 201 with the key's view plus `secret`, shown this once.
async fn create_api_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admin(&state, &headers).await?;
    let request: NewKey = json_body(&headers, body, MAX_ADMIN_BODY).await?;
    check_name("key name", &request.name)?;
    if request.scopes.is_empty() {
        return Err(ApiError::BadRequest(
            "a key needs at least one scope (push, read, admin)".into(),
        ));
    }
    if request.target_kinds.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::BadRequest(
            "target_kinds must name at least one of mids, keys, room, broadcast \
             (leave it out for every kind)"
                .into(),
        ));
    }
    let rate_limit = request.rate_limit()?;
    let (secret, hash) = generate_key();
    let record = ApiKeyRecord {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        secret_hash: hash.to_vec(),
        name: request.name,
        scopes: request.scopes,
        created_at: crate::now_ms(),
        revoked_at: None,
        target_kinds: request.target_kinds,
        rate_limit,
    };
    timed_store("insert_api_key", state.store.insert_api_key(&record)).await?;
    tracing::info!(id = %record.id, name = %record.name, "API key created");
    let limits = json!({"target_kinds": record.target_kinds, "rate_limit": record.rate_limit});
    let mut view = json!(KeyView::from(record));
    view["secret"] = Value::String(secret);
    view["target_kinds"] = limits["target_kinds"].clone();
    view["rate_limit"] = limits["rate_limit"].clone();
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /v1/admin/api-keys/{id}`: 204, or 404 for an unknown key.
async fn revoke_api_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    admin(&state, &headers).await?;
    if timed_store(
        "revoke_api_key",
        state.store.revoke_api_key(&id, crate::now_ms()),
    )
    .await?
    {
        state.callers.forget(&id);
        tracing::info!(%id, "API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no API key {id:?}")))
    }
}

/// `POST /v1/admin/nodes/{id}/drain`: 204, or 404 for an unknown node.
async fn drain_node(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    set_state(&state, &headers, &id, NodeState::Draining).await
}

/// `POST /v1/admin/nodes/{id}/undrain`: lifts an admin's drain (a dead node stays dead until it
/// registers); 204, or 404 for an unknown node.
async fn undrain_node(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    set_state(&state, &headers, &id, NodeState::Active).await
}

/// Sets a node's state by admin request.
async fn set_state(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    node_state: NodeState,
) -> Result<StatusCode, ApiError> {
    admin(state, headers).await?;
    timed_store("set_node_state", state.store.set_node_state(id, node_state)).await?;
    state.directory.invalidate();
    tracing::info!(node = %id, state = node_state.as_str(), "node state set by admin request");
    Ok(StatusCode::NO_CONTENT)
}
