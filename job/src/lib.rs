//! rim's job workers (goim's job): deliver a region's pushes from the bus to the region's edges.
//!
//! One worker consumes one region's bus topic in the region's consumer group and, per batch:
//! - groups key pushes by the node holding each key, so each edge gets one request with its keys;
//! - sends room and broadcast pushes to every live edge of the region (`speed` passes through: the
//!   edge applies the rate cap);
//! - posts protobuf [`rim_proto::schema::EdgePushRequest`]s to `<push_url>/internal/push` with the
//!   worker's node token, one request at a time per edge and in log order, retrying with backoff until
//!   the edge takes it, leaves the directory, or the part's delivery deadline passes (so one dead
//!   or stopping edge never holds up the others: see `lane`);
//! - commits the batch only after every edge it targets took or settled its part (at-least-once;
//!   edges drop duplicates by message id and record index).
//!
//! Modules: [`config`] (flags), [`directory`] (which edges a region has), `route` (batch → per-edge
//! requests), `lane` (ordered delivery per edge, deadlines), `edge_client` (the HTTP call), `worker`
//! (the loop), `observe` (`rim job`'s `/healthz` and `/metrics`).
//!
//! Entry points: [`run`] with any [`BusConsumer`] (the in-process bus of `rim dev`), and
//! [`run_kafka_worker`] for `rim job` (with its health and metrics port; [`run_with_kafka`] is the
//! same without a metrics recorder).
//!
//! Metrics: `rim_job_consumed_total`, `rim_job_delivered_total` (pushes taken by edges),
//! `rim_job_connections_reached_total`, `rim_job_edge_errors_total{reason}`,
//! `rim_job_edge_auth_failures_total`, `rim_job_dropped_total{reason}` (`edge_unreachable`,
//! `edge_stopping`, `edge_gone`, `rejected`, `no_target`), `rim_job_bus_errors_total`,
//! `rim_job_commit_errors_total`, `rim_job_inflight_batches`, `rim_job_inflight_full_total`,
//! `rim_job_consume_lag_seconds` (from control accepting a push to the worker reading it: the
//! bus's share), `rim_job_commit_lag_seconds` (to its commit, once its edges took it), all by
//! `region`.

pub mod config;
pub mod directory;
mod edge_client;
mod lane;
mod observe;
mod route;
mod worker;

pub use config::JobConfig;
pub use directory::{DirectoryError, EdgeDirectory, EdgeTarget, StoreDirectory};
pub use edge_client::PUSH_PATH;

use lane::LaneContext;
use metrics_exporter_prometheus::PrometheusHandle;
use observe::Observed;
use rim_bus::BusConsumer;
use rim_bus::kafka::KafkaConsumer;
use rim_proto::node_token::TokenCell;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use worker::Worker;

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The configuration or the secret cannot be used (e.g. an HTTP client cannot be built).
    #[error("job worker setup: {0}")]
    Setup(String),
}

/// Runs a worker for `config.job_region` on `consumer` until `shutdown` completes.
///
/// `bearer` is presented to edges as `Authorization: Bearer <token>`, read per request: the
/// worker's node token (kept fresh by whoever renews it, `rim_edgelink::NodeCredentials` in the
/// `rim` binary), or the cluster secret for edges without node identity. `directory` lists the
/// region's edges (a [`StoreDirectory`] over the store in both `rim dev` and `rim job`).
pub async fn run<C: BusConsumer>(
    config: &JobConfig,
    bearer: impl Into<TokenCell>,
    consumer: C,
    directory: Arc<dyn EdgeDirectory>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), JobError> {
    let client = edge_client::EdgeClient::new(
        bearer.into(),
        config.edge_timeout(),
        config.job_edge_ca_file.as_deref(),
    )
    .map_err(JobError::Setup)?;
    let worker = Worker {
        consumer,
        region: config.job_region.clone(),
        batch_size: config.job_batch_size.max(1),
        max_inflight: config.job_max_inflight_batches.max(1),
        grace: config.edge_timeout(),
        directory: directory.clone(),
        lane_context: Arc::new(LaneContext {
            client,
            directory,
            region: config.job_region.clone(),
            backoff: config.backoff(),
            max_request_bytes: config.job_max_request_bytes.max(1),
            deadline: config.edge_deadline(),
        }),
        backoff: config.backoff(),
    };
    worker.run(shutdown).await;
    Ok(())
}

/// Runs `rim job` until `shutdown` completes: serves `/healthz` and `/metrics` (rendering
/// `prometheus`) on `config.job_listen`, joins the region's Kafka consumer group (retrying with
/// backoff while Kafka is unreachable; static membership unless disabled) and runs the worker on it.
///
/// Fails at once when the Kafka options are not valid librdkafka properties or the listen address
/// cannot be bound: those need an operator, not a retry.
pub async fn run_kafka_worker(
    config: &JobConfig,
    bearer: impl Into<TokenCell>,
    directory: Arc<dyn EdgeDirectory>,
    prometheus: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), JobError> {
    let bearer = bearer.into();
    let settings = config.kafka_settings();
    settings.check().map_err(JobError::Setup)?;
    let listener = TcpListener::bind(config.job_listen)
        .await
        .map_err(|err| JobError::Setup(format!("listening on {}: {err}", config.job_listen)))?;
    tracing::info!(listen = %config.job_listen, "job health and metrics endpoint");
    let observed = Observed::new(prometheus);
    let (stop_endpoint, endpoint_stopped) = oneshot::channel::<()>();
    let endpoint = tokio::spawn(observe::serve(listener, observed.clone(), async {
        let _ = endpoint_stopped.await;
    }));

    let group = config.group_id();
    let instance_id = config.group_instance_id();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = config.backoff();
    let joined = loop {
        tokio::select! {
            () = &mut shutdown => break None,
            joined = KafkaConsumer::join(&settings, &config.job_region, &group, instance_id.as_deref()) => match joined {
                Ok(consumer) => break Some(consumer),
                Err(err) => {
                    let pause = backoff.next_pause();
                    tracing::warn!(%err, ?pause, "cannot join the region's consumer group yet");
                    tokio::select! {
                        () = &mut shutdown => break None,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            },
        }
    };
    let result = match joined {
        Some(consumer) => {
            tracing::info!(%group, instance_id = ?instance_id, "joined the region's consumer group");
            observed.joined(consumer.health_probe());
            run(config, bearer, consumer, directory, shutdown).await
        }
        None => Ok(()),
    };
    let _ = stop_endpoint.send(());
    match endpoint.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(%err, "job health endpoint failed"),
        Err(err) => tracing::error!(%err, "job health endpoint task failed"),
    }
    result
}
