//! Builders shared by the balancer's integration tests, so each test states only what differs from a plain,
//! healthy node or client.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

pub mod mmdb;

use std::time::{Duration, SystemTime};

use geo::{Destination, Haversine, Point};
use rim_balancer::{Client, GeoPoint, NodeCandidate, NodeState, Platform, Ports, RankedNode};

pub const SHANGHAI: (f64, f64) = (31.2304, 121.4737);
pub const HANGZHOU: (f64, f64) = (30.2741, 120.1551);
pub const BEIJING: (f64, f64) = (39.9042, 116.4074);
pub const FRANKFURT: (f64, f64) = (50.1109, 8.6821);

pub const PORTS: Ports = Ports {
    tcp: 3101,
    ws: 3102,
    wss: 3103,
};

/// A fixed "now", so tests never depend on the wall clock.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub fn point((lat, lon): (f64, f64)) -> GeoPoint {
    GeoPoint::new(lat, lon).unwrap()
}

/// The point `km` away from `from` heading `bearing` degrees, along a great circle.
pub fn travel(from: GeoPoint, bearing: f64, km: f64) -> GeoPoint {
    let to = Haversine.destination(Point::new(from.lon(), from.lat()), bearing, km * 1000.0);
    GeoPoint::new(to.y().clamp(-90.0, 90.0), to.x()).unwrap()
}

/// An active, freshly seen, empty node of weight 10 with host name `<id>.edge.test` and address `ip-<id>`.
pub fn node(id: &str, region: &str, at: (f64, f64)) -> NodeCandidate {
    NodeCandidate {
        id: id.to_owned(),
        region: region.to_owned(),
        location: point(at),
        hostname: format!("{id}.edge.test"),
        addresses: vec![format!("ip-{id}")],
        ports: PORTS,
        weight: 10,
        connections: 0,
        state: NodeState::Active,
        last_seen: now(),
    }
}

pub fn native_client(at: Option<(f64, f64)>, region: Option<&str>) -> Client {
    Client {
        location: at.map(point),
        region: region.map(str::to_owned),
        platform: Platform::Native,
        seed: None,
    }
}

pub fn ids(ranked: &[RankedNode]) -> Vec<&str> {
    ranked.iter().map(|r| r.node_id.as_str()).collect()
}
