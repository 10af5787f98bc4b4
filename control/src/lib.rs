//! rim's control plane (goim's logic): a stateless HTTP service (axum + tower) in front of the
//! store and the bus.
//!
//! It serves four surfaces, each in its own module:
//! - [`goim`]: the goim-compatible business routes (`/goim/*`).
//! - [`v1`] and [`admin`]: rim's versioned JSON API, described by [`openapi`] at `/v1/openapi.json`.
//! - [`edge_api`]: what edges call (register, heartbeat, session batches, auth webhook), with the
//!   node tokens of [`enroll`] (enrollment, renewal, signing keys); [`upstream`]: client messages
//!   the edges forward, handed to the business backend (webhook or Kafka) for its verdicts.
//! - `/metrics`, and [`health`] (`/healthz`: store and broker reachable).
//!
//! Key takeovers that the store reports are turned into close notices for the old edge by
//! [`takeover`].
//!
//! All state lives in the [`rim_store::Store`]; pushes go through the [`push`] pipeline to the
//! [`rim_bus::BusProducer`]. Any number of instances can serve the same store and bus. Entry points:
//! [`serve`] / [`start`] with a [`ControlConfig`], the cluster secret, a store, a bus and the
//! process's Prometheus handle; [`build_router`] for embedding the router elsewhere.

pub mod admin;
pub mod auth;
pub mod config;
pub mod dns;
pub mod durable_api;
pub mod edge_api;
pub mod enroll;
pub mod error;
pub mod fallback;
pub mod goim;
pub mod health;
pub mod input;
pub mod observe;
pub mod openapi;
pub mod presence;
pub mod push;
pub mod receipt_events;
pub mod receipts;
pub mod server;
pub mod state;
pub mod takeover;
pub mod upstream;
pub mod v1;
pub mod webhook;

pub use config::ControlConfig;
pub use error::ApiError;
pub use server::{RunningControl, build_router, serve, start, start_with_routes};
pub use state::AppState;

/// Milliseconds since the Unix epoch, the time unit of the store and of edge events.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
