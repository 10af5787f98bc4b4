//! Turning what an edge reports (registration, heartbeat) into store records, with the checks both
//! stores share.
//!
//! Edges are trusted peers but still remote input: ports must fit in 16 bits, coordinates must be on
//! the globe, ids must be non-empty, counts are clamped to the signed 64-bit range PostgreSQL stores,
//! and a heartbeat's room list is summed per room, so both stores see exactly the same values.

use crate::error::StoreError;
use crate::model::{Node, NodeState, Region, UnixMillis};
use rim_proto::schema::{NodeHeartbeat, NodeRegistration};
use std::collections::BTreeMap;

/// The largest count either store keeps (PostgreSQL's `int8`).
const MAX_COUNT: u64 = i64::MAX as u64;

/// A validated registration as a node record: active, not drained, seen `now`, with no load
/// reported yet (the stores keep an admin's drain and the last load of a known node).
pub(crate) fn node_from_registration(
    reg: &NodeRegistration,
    now: UnixMillis,
) -> Result<Node, StoreError> {
    if reg.node_id.is_empty() {
        return Err(StoreError::Invalid("node_id is empty".into()));
    }
    if reg.region.is_empty() {
        return Err(StoreError::Invalid("region is empty".into()));
    }
    check_coordinates(reg.latitude, reg.longitude)?;
    let port = |name: &str, value: u32| {
        u16::try_from(value)
            .map_err(|_| StoreError::Invalid(format!("{name} {value} is not a port")))
    };
    Ok(Node {
        id: reg.node_id.clone(),
        region: reg.region.clone(),
        latitude: reg.latitude,
        longitude: reg.longitude,
        hostname: reg.hostname.clone(),
        addresses: reg.addresses.clone(),
        tcp_port: port("tcp_port", reg.tcp_port)?,
        ws_port: port("ws_port", reg.ws_port)?,
        wss_port: port("wss_port", reg.wss_port)?,
        push_url: reg.push_url.clone(),
        weight: reg.weight,
        state: NodeState::Active,
        drained_by_admin: false,
        boot_id: reg.boot_id.clone(),
        connection_count: 0,
        ip_count: 0,
        last_seen: now,
    })
}

/// Whether a registration with `new` boot id ends the life recorded as `stored`: both known and
/// different. An empty boot id (an edge that does not send one) never ends a life.
pub(crate) fn is_new_life(stored: &str, new: &str) -> bool {
    !stored.is_empty() && !new.is_empty() && stored != new
}

/// The region a registration creates when its region is unknown: centred on the node.
pub(crate) fn region_of(node: &Node) -> Region {
    Region {
        name: node.region.clone(),
        latitude: node.latitude,
        longitude: node.longitude,
    }
}

/// Checks a region before it is stored.
pub(crate) fn check_region(region: &Region) -> Result<(), StoreError> {
    if region.name.is_empty() {
        return Err(StoreError::Invalid("region name is empty".into()));
    }
    check_coordinates(region.latitude, region.longitude)
}

fn check_coordinates(latitude: f64, longitude: f64) -> Result<(), StoreError> {
    if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
        return Err(StoreError::Invalid(format!(
            "coordinates ({latitude}, {longitude}) are not on the globe"
        )));
    }
    Ok(())
}

/// A heartbeat's load figures, ready to store.
#[derive(Debug)]
pub(crate) struct Load {
    /// Open connections (clamped).
    pub connection_count: u64,
    /// Distinct client IPs (clamped).
    pub ip_count: u64,
    /// Non-empty rooms by id with their summed, clamped counts, in id order.
    pub rooms: BTreeMap<String, u64>,
}

/// The load a heartbeat reports: rooms listed twice are summed, empty ones dropped.
pub(crate) fn load_of(report: &NodeHeartbeat) -> Load {
    let mut rooms = BTreeMap::new();
    for room in report.rooms.iter().filter(|room| room.count > 0) {
        let count: &mut u64 = rooms.entry(room.room.clone()).or_default();
        *count = count.saturating_add(room.count).min(MAX_COUNT);
    }
    Load {
        connection_count: report.connection_count.min(MAX_COUNT),
        ip_count: report.ip_count.min(MAX_COUNT),
        rooms,
    }
}
