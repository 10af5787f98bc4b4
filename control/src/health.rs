//! `GET /healthz`: whether this instance can do its work now, asked of its dependencies.
//!
//! 200 `ok` only when the store answers and the bus's broker does (`rim_bus::BusProducer::health`,
//! a bounded metadata request); otherwise 503 with one line per failing dependency, so a load
//! balancer stops sending pushes this instance could only refuse, and an operator sees why. Both
//! checks run at once and each is bounded in time (the store by its pool's acquire timeout, the bus
//! by its probe's), so the answer comes within seconds even when both are down.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rim_bus::BusHealth;

/// `GET /healthz`.
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let (store, bus) = tokio::join!(state.store.health(), state.bus.health());
    let mut reasons = Vec::new();
    if let Err(error) = store {
        reasons.push(format!("store: {error}"));
    }
    if let BusHealth::Unhealthy(why) = bus {
        reasons.push(format!("bus: {why}"));
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        tracing::warn!(reasons = %reasons.join("; "), "health check failing");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy\n{}\n", reasons.join("\n")),
        )
    }
}
