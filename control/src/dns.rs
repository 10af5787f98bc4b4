//! HTTPDNS: which edges a client should connect to, answered by the balancer crate from the cached
//! node list.
//!
//! goim located clients by IP with an empty stub; here the client's position comes from `lat`/`lon`
//! query parameters (optional, validated) and its region from `region`; without them the balancer
//! ranks by load and weight alone. The answer is a pure function of the node snapshot: reading it
//! changes nothing, and draining or dead nodes are never answered (the balancer's health check).

use crate::error::ApiError;
use crate::input::Params;
use crate::state::AppState;
use rim_balancer::{Client, GeoPoint, GoimAnswer, NodeCandidate, Platform, Ports, RankedNode};
use rim_store::{Node, NodeState};
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

/// The client as described by the query: `platform`, optional `lat` + `lon`, optional `region`.
fn client(params: &Params) -> Result<Client, ApiError> {
    let lat: Option<f64> = params.parsed("lat")?;
    let lon: Option<f64> = params.parsed("lon")?;
    let location = match (lat, lon) {
        (Some(lat), Some(lon)) => {
            Some(GeoPoint::new(lat, lon).map_err(|e| ApiError::BadRequest(e.to_string()))?)
        }
        (None, None) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "`lat` and `lon` must be given together".into(),
            ));
        }
    };
    Ok(Client {
        location,
        region: params
            .get("region")
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
        platform: Platform::from_query(params.get("platform")),
        seed: None,
    })
}

/// The goim-shaped answer plus rim's explained ranking.
pub async fn answer(
    state: &AppState,
    params: &Params,
) -> Result<(GoimAnswer, Vec<RankedNode>), ApiError> {
    let client = client(params)?;
    let snapshot = state.directory.snapshot().await?;
    let candidates: Vec<NodeCandidate> = snapshot.nodes().iter().filter_map(candidate).collect();
    let now = SystemTime::now();
    let config = &state.config.balancer;
    Ok((
        rim_balancer::answer(&candidates, &client, now, config),
        rim_balancer::rank(&candidates, &client, now, config),
    ))
}
