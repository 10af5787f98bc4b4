//! rim-balancer: the HTTPDNS ranking library. Given a snapshot of edge nodes, a client and the current time, it
//! answers "which edges should this client connect to, best first?".
//!
//! It is split the way pingora splits load balancing, one concern per module:
//!
//! - [`discovery`]: what a candidate node looks like; the caller supplies the snapshot (from its store).
//! - [`health`]: which candidates may be answered at all (active, weighted, recently seen).
//! - [`selection`]: how eligible nodes are ordered (distance band, region hint, load, distance, tie-break), with an
//!   explainable [`Score`] per node.
//! - [`answer`]: the goim-compatible answer built from that order.
//!
//! Everything is a pure function of its inputs: no clock, no randomness, no interior state. goim's balancer mutated
//! itself on every GET; this one cannot, because it only ever borrows the snapshot.

pub mod answer;
pub mod client;
pub mod config;
pub mod discovery;
pub mod health;
pub mod location;
pub mod selection;

pub use answer::{Backoff, GoimAnswer, answer};
pub use client::{Client, Platform};
pub use config::BalancerConfig;
pub use discovery::{NodeCandidate, NodeState, Ports};
pub use health::Ineligible;
pub use location::{GeoPoint, InvalidLocation};
pub use selection::{RankedNode, Score, rank};
