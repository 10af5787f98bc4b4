//! What the control plane tells operators: Prometheus metrics for requests, pushes, the bus and the
//! store.
//!
//! Metrics go through the `metrics` facade (names `rim_control_*`); the process installs the
//! Prometheus recorder and hands its handle to [`crate::serve`], which renders it at `/metrics`.
//! Requests are labelled by their route template (axum's `MatchedPath`), never the raw path, so
//! label cardinality stays bounded whatever callers send. Because of that bound the request
//! metrics' handles are registered once per (route, method, status) and kept in
//! [`RequestMetrics`]: a request then only looks its handles up, allocating nothing (HTTPDNS
//! answers go through here at 100,000 a second per core: issue 8).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};
use parking_lot::RwLock;
use rim_bus::BusError;
use rim_store::StoreError;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// The request metrics' handles of one instance, by route template (see the module docs).
#[derive(Clone, Default)]
pub struct RequestMetrics(Arc<RwLock<HashMap<String, RouteMetrics>>>);

/// One route's handles.
struct RouteMetrics {
    /// `rim_control_request_seconds{route}`.
    seconds: Histogram,
    /// `rim_control_requests_total{route, method, status}`, one per method and status seen.
    requests: Vec<(Method, StatusCode, Counter)>,
}

impl RequestMetrics {
    /// Records one request of `route` answered with `status` after `seconds`.
    fn record(&self, route: &str, method: &Method, status: StatusCode, seconds: f64) {
        {
            let routes = self.0.read();
            let known = routes.get(route).and_then(|handles| {
                let (_, _, counter) = handles
                    .requests
                    .iter()
                    .find(|(m, s, _)| m == method && *s == status)?;
                Some((&handles.seconds, counter))
            });
            if let Some((histogram, counter)) = known {
                counter.increment(1);
                histogram.record(seconds);
                return;
            }
        }
        let mut routes = self.0.write();
        let handles = routes
            .entry(route.to_owned())
            .or_insert_with(|| RouteMetrics {
                seconds: metrics::histogram!("rim_control_request_seconds", "route" => route.to_owned()),
                requests: Vec::new(),
            });
        let position = match handles
            .requests
            .iter()
            .position(|(m, s, _)| m == method && *s == status)
        {
            Some(position) => position,
            None => {
                let counter = metrics::counter!(
                    "rim_control_requests_total",
                    "route" => route.to_owned(),
                    "method" => method.as_str().to_owned(),
                    "status" => status.as_str().to_owned()
                );
                handles.requests.push((method.clone(), status, counter));
                handles.requests.len() - 1
            }
        };
        handles.requests[position].2.increment(1);
        handles.seconds.record(seconds);
    }
}

/// Counts and times every HTTP request by route template, method and status.
pub async fn track_requests(
    State(metrics): State<RequestMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics.record(
        route,
        &method,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
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
