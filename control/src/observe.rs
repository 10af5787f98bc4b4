//! What the control plane tells operators: Prometheus metrics for requests, pushes, the bus and the
//! store.
//!
//! Metrics go through the `metrics` facade (names `rim_control_*`); the process installs the
//! Prometheus recorder and hands its handle to [`crate::serve`], which renders it at `/metrics`.
//! Requests are labelled by their route template (axum's `MatchedPath`), never the raw path, so
//! label cardinality stays bounded whatever callers send.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use rim_bus::BusError;
use rim_store::StoreError;
use std::future::Future;
use std::time::Instant;

/// Counts and times every HTTP request by route template, method and status.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("rim_control_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("rim_control_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Runs a store call, recording its latency and failures under the operation name.
pub async fn timed_store<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!("rim_control_store_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        let kind = match error {
            StoreError::UnknownNode(_) => "unknown_node",
            StoreError::Invalid(_) => "invalid",
            StoreError::Unavailable(_) => "unavailable",
        };
        metrics::counter!("rim_control_store_errors_total", "op" => op, "kind" => kind)
            .increment(1);
    }
    result
}

/// Runs a bus publish, recording its latency and failures.
pub async fn timed_publish(
    call: impl Future<Output = Result<(), BusError>>,
) -> Result<(), BusError> {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!("rim_control_bus_publish_seconds").record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        let kind = match error {
            BusError::Unavailable(_) => "unavailable",
            BusError::Full(_) => "full",
            BusError::Corrupt { .. } => "corrupt",
        };
        metrics::counter!("rim_control_bus_publish_errors_total", "kind" => kind).increment(1);
    }
    result
}
