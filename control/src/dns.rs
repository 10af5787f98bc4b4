//! HTTPDNS: which edges a client should connect to, answered by the balancer crate from the cached
//! node list.
//!
//! goim located clients by IP with an empty stub; here the client's position comes from `lat`/`lon`
//! query parameters (optional, validated), else from trusted proxy headers or the GeoIP database
//! by the client's IP (the balancer's [`rim_balancer::Locator`]), else the default region; `region`
//! names a region outright. Each request draws a random seed (or takes `seed`, to replay an
//! answer), so simultaneous clients spread over a region's nodes by free weighted capacity. The
//! answer is a pure function of the node snapshot and the seed: reading it changes nothing, and
//! draining, dead or stale nodes are never answered; an empty answer says why.
//!
//! What every answer for one snapshot shares (the balancer's candidates, the selectable nodes,
//! the group order per region hint) is computed once per snapshot by [`rim_balancer::Rankings`]
//! and kept in [`Answers`], swapped atomically when the directory hands out a new snapshot: a
//! request only locates the client and draws its seed's order (issue 8: 100,000 answers/s per
//! core). The goim answer's JSON is precomputed in pieces with the rankings too (per node its
//! ports and endpoints, and what every answer shares), so [`weighted`] writes the response body
//! by concatenating the pieces its order lists, inside goim's envelope: no answer struct, no
//! serializer per request.

use crate::error::ApiError;
use crate::input::Params;
use crate::state::AppState;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use rim_balancer::{
    Cached, Client, GeoPoint, GoimAnswer, Located, NodeCandidate, Platform, Ports, RankedNode,
    RankingCache,
};
use rim_store::{Node, NodeSnapshot, NodeState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The balancer's view of a stored node; `None` if its stored location is unusable.
fn candidate(node: &Node) -> Option<NodeCandidate> {
    let location = GeoPoint::new(node.latitude, node.longitude).ok()?;
    Some(NodeCandidate {
        id: node.id.clone(),
        region: node.region.clone(),
        location,
        hostname: node.hostname.clone(),
        addresses: node.addresses.clone(),
        ports: Ports {
            tcp: node.tcp_port,
            ws: node.ws_port,
            wss: node.wss_port,
        },
        weight: node.weight,
        connections: node.connection_count,
        state: match node.state {
            NodeState::Active => rim_balancer::NodeState::Active,
            NodeState::Draining => rim_balancer::NodeState::Draining,
            NodeState::Dead => rim_balancer::NodeState::Dead,
        },
        last_seen: UNIX_EPOCH + Duration::from_millis(u64::try_from(node.last_seen).unwrap_or(0)),
    })
}

/// The client's explicit coordinates (`lat` + `lon`), if it sent them.
fn query_location(params: &Params) -> Result<Option<GeoPoint>, ApiError> {
    let lat: Option<f64> = params.parsed("lat")?;
    let lon: Option<f64> = params.parsed("lon")?;
    match (lat, lon) {
        (Some(lat), Some(lon)) => GeoPoint::new(lat, lon)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(e.to_string())),
        (None, None) => Ok(None),
        _ => Err(ApiError::BadRequest(
            "`lat` and `lon` must be given together".into(),
        )),
    }
}

/// Who is asking: the request's query, headers and peer address.
pub struct Asker<'a> {
    /// The query parameters (`platform`, `lat`, `lon`, `region`, `seed`).
    pub params: &'a Params,
    /// The request headers (trusted proxy headers, when configured).
    pub headers: &'a HeaderMap,
    /// The connection's peer address, when the server records it.
    pub peer: Option<SocketAddr>,
}

/// The client as the balancer sees it, and how it was located.
fn client(state: &AppState, asker: &Asker<'_>) -> Result<(Client, Located), ApiError> {
    let header = |name: &str| asker.headers.get(name).and_then(|v| v.to_str().ok());
    let located = state.locator.locate(
        query_location(asker.params)?,
        header,
        asker.peer.map(|peer| peer.ip()),
    );
    let region = asker
        .params
        .get("region")
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .or_else(|| located.region.clone());
    let seed: Option<u64> = asker.params.parsed("seed")?;
    let client = Client {
        location: located.location,
        region,
        platform: Platform::from_query(asker.params.get("platform")),
        seed: Some(seed.unwrap_or_else(rand::random)),
    };
    Ok((client, located))
}

/// The rankings of the directory's latest node snapshot, shared by every HTTPDNS request.
#[derive(Default)]
pub struct Answers(RankingCache<NodeSnapshot>);

/// goim's success envelope up to its `data`, which the answer follows, and its end.
const ENVELOPE: (&[u8], &[u8]) = (b"{\"code\":0,\"message\":\"\",\"data\":", b"}");

/// The response to `GET /goim/nodes/weighted`: the goim-shaped answer (what goim's clients read) in
/// goim's success envelope, as JSON written from the rankings' precomputed pieces.
pub async fn weighted(state: &AppState, asker: &Asker<'_>) -> Result<Response, ApiError> {
    let (client, _) = client(state, asker)?;
    let now = SystemTime::now();
    let cached = rankings(state, now).await?;
    let mut body = Vec::with_capacity(512);
    body.extend_from_slice(ENVELOPE.0);
    cached.rankings().answer_json(&client, now, &mut body);
    body.extend_from_slice(ENVELOPE.1);
    let json = HeaderValue::from_static("application/json");
    Ok(([(CONTENT_TYPE, json)], body).into_response())
}

/// The goim-shaped answer, rim's explained ranking, and how the client was located.
pub async fn explained(
    state: &AppState,
    asker: &Asker<'_>,
) -> Result<(GoimAnswer, Vec<RankedNode>, Located), ApiError> {
    let (client, located) = client(state, asker)?;
    let now = SystemTime::now();
    let cached = rankings(state, now).await?;
    let rankings = cached.rankings();
    Ok((
        rankings.answer(&client, now),
        rankings.rank(&client, now),
        located,
    ))
}

/// The rankings of the current node snapshot (built when the directory hands out a new one).
async fn rankings(
    state: &AppState,
    now: SystemTime,
) -> Result<Arc<Cached<NodeSnapshot>>, ApiError> {
    let snapshot = state.directory.snapshot().await?;
    let config = &state.config.balancer;
    Ok(state.httpdns.0.get(&snapshot, now, config, |snapshot| {
        snapshot.nodes().iter().filter_map(candidate).collect()
    }))
}
