//! rim-balancer: the HTTPDNS ranking library. Given a snapshot of edge nodes, a client and the current time, it
//! answers "which edges should this client connect to, best first?".
//!
//! It is split the way pingora splits load balancing, one concern per module:
//!
//! - [`discovery`]: what a candidate node looks like and what a platform can dial on it; the caller supplies the
//!   snapshot (from its store).
//! - [`health`]: which candidates may be answered at all (active, weighted, recently seen), and why an answer is
//!   empty.
//! - [`selection`]: how eligible nodes are ordered (distance band, region hint, seeded draw, load, distance), with an
//!   explainable [`Score`] per node; `spread` is the seeded draw by free weighted capacity.
//! - [`answer`]: the goim-compatible answer built from that order.
//! - [`rankings`]: what all answers for one snapshot share, precomputed once per snapshot (per platform and region
//!   hint) and swapped in atomically, so a request only spreads its nearest group with its seed.
//! - [`locate`] and [`geoip`]: where a client is when it does not say (trusted proxy headers, MaxMind DB by IP,
//!   default region).
//!
//! Ranking is a pure function of its inputs: no clock, no randomness of its own, no interior state (the rankings cache
//! only memoizes it). The caller
//! passes the time and a per-request seed, so one (snapshot, client, seed, time) always gives the same answer, and
//! goim's habit of mutating the balancer on every GET is impossible because it only ever borrows the snapshot.

pub mod answer;
pub mod client;
pub mod config;
pub mod discovery;
pub mod geoip;
pub mod health;
pub mod locate;
pub mod location;
pub mod rankings;
pub mod selection;
mod spread;

pub use answer::{Backoff, GoimAnswer, answer};
pub use client::{Client, Platform};
pub use config::BalancerConfig;
pub use discovery::{NodeCandidate, NodeState, Ports};
pub use geoip::{GeoIp, GeoIpError};
pub use health::{Ineligible, NoEligibleNode};
pub use locate::{Located, LocationSource, Locator};
pub use location::{GeoPoint, InvalidLocation};
pub use rankings::{Cached, RankingCache, Rankings};
pub use selection::{RankedNode, Score, rank};
