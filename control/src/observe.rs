//! What the control plane tells operators: Prometheus metrics for requests, pushes, the bus and the
//! store.
//!
//! Metrics go through the `metrics` facade (names `rim_control_*`); the process installs the
//! Prometheus recorder and hands its handle to [`crate::serve`], which renders it at `/metrics`.
//! Requests are labelled by their route template (axum's `MatchedPath`), never the raw path, so
//! label cardinality stays bounded whatever callers send. Because of that bound the request
//! metrics' handles are registered once per (route, method, status) and kept in
//! [`RequestMetrics`]: a request then only looks its handles up, allocating nothing (HTTPDNS
//! answers go through here at 100,000 a second per core, pushes at 50,000: issue 8). The layer
//! that records them ([`TrackRequests`]) wraps each route's service directly, so a request costs
//! no boxed future or cloned service (what `axum::middleware::from_fn` would cost it).

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use metrics::{Counter, Histogram};
use parking_lot::RwLock;
use rim_bus::BusError;
use rim_store::StoreError;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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

/// The layer that counts and times every HTTP request by route template, method and status,
/// into one instance's [`RequestMetrics`].
#[derive(Clone, Default)]
pub struct TrackRequests(RequestMetrics);

impl<S> tower::Layer<S> for TrackRequests {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service whose requests [`TrackRequests`] records.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    metrics: RequestMetrics,
}

impl<S> tower::Service<Request> for Tracked<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        TrackedFuture {
            inner: self.inner.call(request),
            record: Some((self.metrics.clone(), route, method, Instant::now())),
        }
    }
}

/// The answer of a [`Tracked`] service: the inner answer, recorded when it is ready.
pub struct TrackedFuture<F> {
    inner: F,
    /// Where and what to record (taken once recorded).
    record: Option<(RequestMetrics, Option<MatchedPath>, Method, Instant)>,
}

impl<F, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        if let (Ok(response), Some((metrics, route, method, started))) =
            (&answer, self.record.take())
        {
            let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
            metrics.record(
                route,
                &method,
                response.status(),
                started.elapsed().as_secs_f64(),
            );
        }
        Poll::Ready(answer)
    }
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
