//! Whether a bus client can do its work right now, for `/healthz` and readiness.
//!
//! A process whose broker is down must not answer "ok": a load balancer would keep sending it
//! pushes it can only refuse, and an operator would look elsewhere. A health answer is *asked of the
//! broker* when it is wanted (a metadata request bounded in time, plus, for a consumer, whether the
//! group gave it partitions), instead of being inferred from the last publish, which may be minutes
//! old on an idle control plane.

use async_trait::async_trait;

/// What a health check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusHealth {
    /// The client reaches its broker (and, for a consumer, is a member of its group with
    /// partitions, or the only one waiting for them).
    Healthy,
    /// It cannot do its work now; the text says why (for the `/healthz` body and logs).
    Unhealthy(String),
}

impl BusHealth {
    /// Whether this is [`BusHealth::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, BusHealth::Healthy)
    }
}

/// Checks one bus client's health; shareable with any task (a consumer is owned by its worker loop,
/// its probe by the health endpoint).
#[async_trait]
pub trait HealthProbe: Send + Sync + 'static {
    /// Asks the broker now; returns within a few seconds even when it is unreachable.
    async fn check(&self) -> BusHealth;
}
