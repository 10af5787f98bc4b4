//! Starting each role with the store and bus it runs on.
//!
//! | role | store | bus |
//! |---|---|---|
//! | `dev` | in memory | in process |
//! | `control` | PostgreSQL | Kafka producer |
//! | `job` | PostgreSQL (to find edges) | Kafka consumer group of its region |
//! | `edge` | – (reports to control over HTTP) | – (job workers push to it over HTTP) |
//!
//! Every edge runs with a [`SessionReporter`] (its link to the control plane) as its session observer
//! and a [`DurableReporter`] (resume calls, acks and `written` receipts of rim's durable delivery),
//! and authenticates clients through control's auth webhook when `edge_auth_webhook` is set; with
//! `edge_upstream` an [`UpstreamForwarder`] takes client messages to control's upstream backend
//! (`rim dev` turns it on when its control plane has an upstream webhook).
//!
//! Every edge and job worker first enrolls with the control plane ([`NodeCredentials`]: the
//! cluster secret buys a node token bound to its role, node id and region, renewed with itself),
//! and presents that token on every internal call; an edge accepts pushes only with a job worker's
//! token of its region. `rim dev` does the same over loopback, with its random secret, so it needs
//! no configuration.

use crate::cli::{ControlArgs, DevArgs, EdgeArgs, JobArgs};
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use rim_bus::kafka::{KafkaProducer, KafkaSettings};
use rim_bus::memory::MemoryBus;
use rim_edge::{Edge, EdgeConfig, EdgeHandle, EdgeHooks, Verifier};
use rim_edgelink::{
    CredentialSettings, DurableReporter, LinkConfig, NodeCredentials, SessionReporter,
    UpstreamForwarder, WebhookVerifier,
};
use rim_job::StoreDirectory;
use rim_proto::node_token::NodeRole;
use rim_store::memory::MemoryStore;
use rim_store::postgres::{PoolSettings, PostgresStore};
use rim_store::{Store, StoreSettings};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Pushes the in-process bus of `rim dev` holds per region before publishing fails with 503.
const DEV_BUS_CAPACITY: usize = 100_000;

/// How long a stopping edge waits for its last session changes to reach the control plane.
const REPORT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs edge, control plane and job worker in this process until a stop signal.
pub async fn dev(
    args: DevArgs,
    secret: String,
    prometheus: PrometheusHandle,
) -> anyhow::Result<()> {
    let admin_key = args.control.control_admin_key.clone().unwrap_or_default();
    let upstream_configured = args
        .control
        .control_upstream_webhook_url
        .as_deref()
        .is_some_and(|url| !url.is_empty());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(StoreSettings::default()));
    let bus = Arc::new(MemoryBus::new(DEV_BUS_CAPACITY));
    let demo = crate::demo::router(&args.edge, &args.link);
    let control = rim_control::start_with_routes(
        args.control,
        &secret,
        store.clone(),
        bus.clone(),
        prometheus.clone(),
        demo,
    )
    .await?;
    let mut link = args.link;
    link.edge_control_url = format!("http://{}", loopback_if_unspecified(control.local_addr()));
    link.edge_region.clone_from(&args.job.job_region);
    if link.edge_public_addresses.is_empty() {
        link.edge_public_addresses = vec!["127.0.0.1".into()];
    }
    // The embedded edge forwards client messages once the embedded control has a backend for them.
    link.edge_upstream |= upstream_configured;
    let job_settings = CredentialSettings {
        control_url: link.edge_control_url.clone(),
        ..link.credential_settings()
    };
    let edge = start_edge(args.edge, link, &secret, prometheus).await?;
    let (job_credentials, _job_renewal) = enroll(
        NodeRole::Job,
        &args.job.node_id(),
        &args.job.job_region,
        &secret,
        &job_settings,
    )?;
    job_credentials.ready().await;
    let consumer = bus.consumer(&args.job.job_region, &args.job.group_id());
    let directory = Arc::new(StoreDirectory::new(store, args.job.directory_cache()));
    print_banner(edge.handle.addrs(), control.local_addr(), &admin_key);
    rim_job::run(
        &args.job,
        job_credentials.token(),
        consumer,
        directory,
        crate::shutdown::signal(),
    )
    .await?;
    stop_edge(edge).await;
    control.shutdown().await
}

/// Tells the user of `rim dev` where to connect and how to push, as lines to copy and paste.
fn print_banner(addrs: &rim_edge::EdgeAddrs, control: SocketAddr, admin_key: &str) {
    let control = loopback_if_unspecified(control);
    let ws = loopback_if_unspecified(addrs.ws);
    let tcp = loopback_if_unspecified(addrs.tcp);
    println!("rim dev is running (edge + control + job, in-memory store and bus)");
    println!("demo: http://{control}/");
    println!("clients:");
    println!("  websocket: ws://{ws}/sub");
    println!("  tcp:       {tcp}");
    println!("push (goim routes):");
    println!(
        "  curl -d 'hello user 123' 'http://{control}/goim/push/mids?operation=1000&mids=123'"
    );
    println!(
        "  curl -d 'hello room'     'http://{control}/goim/push/room?operation=1000&type=live&room=1000'"
    );
    println!("  curl -d 'hello everyone' 'http://{control}/goim/push/all?operation=1000'");
    println!("push (/v1, admin key of this run):");
    println!(
        "  curl -H 'Authorization: Bearer {admin_key}' -d '{{\"mids\":[123],\"operation\":1000,\"body_text\":\"hi\"}}' http://{control}/v1/push/users"
    );
    println!(
        "metrics: http://{}/metrics",
        loopback_if_unspecified(addrs.internal)
    );
}

/// Runs an edge until a stop signal, then shuts it down gracefully.
pub async fn edge(
    args: EdgeArgs,
    secret: String,
    prometheus: PrometheusHandle,
) -> anyhow::Result<()> {
    let edge = start_edge(args.edge, args.link, &secret, prometheus).await?;
    tracing::info!(addrs = ?edge.handle.addrs(), node = edge.reporter.node_id(), "edge running");
    crate::shutdown::signal().await;
    stop_edge(edge).await;
    Ok(())
}

/// A node's credential and its renewal task (stopped when the guard is dropped).
fn enroll(
    role: NodeRole,
    node_id: &str,
    region: &str,
    secret: &str,
    settings: &CredentialSettings,
) -> anyhow::Result<(Arc<NodeCredentials>, DropGuard)> {
    let credentials = NodeCredentials::new(role, node_id, region, secret, settings)?;
    let stop = CancellationToken::new();
    credentials.spawn(stop.clone());
    Ok((credentials, stop.drop_guard()))
}

/// A started edge, its reporter, and the renewal of its node credential.
struct RunningEdge {
    handle: EdgeHandle,
    reporter: Arc<SessionReporter>,
    /// Resume calls, acks and `written` receipts (rim's durable delivery).
    durable: Arc<DurableReporter>,
    _renewal: DropGuard,
}

/// Starts an edge whose sessions a [`SessionReporter`] reports to the control plane of `link`, and
/// the reporter once the edge's ports are bound; both use the node credential the edge enrolls
/// for, which also decides who may push to it.
async fn start_edge(
    config: EdgeConfig,
    link: LinkConfig,
    secret: &str,
    prometheus: PrometheusHandle,
) -> anyhow::Result<RunningEdge> {
    let reporter = SessionReporter::new(link.clone());
    let (credentials, renewal) = enroll(
        NodeRole::Edge,
        reporter.node_id(),
        &link.edge_region,
        secret,
        &link.credential_settings(),
    )?;
    let verifier: Arc<dyn Verifier> = if link.edge_auth_webhook {
        tracing::info!("clients are authenticated by the control plane's auth webhook");
        Arc::new(WebhookVerifier::new(&link, &credentials)?)
    } else {
        rim_edge::auth::from_config(&config)?
    };
    let durable = DurableReporter::start(&link, &credentials)?;
    let mut hooks = EdgeHooks {
        events: reporter.clone(),
        metrics: Some(prometheus),
        push_authority: Some(credentials.clone()),
        durable: Some(durable.clone()),
        ..EdgeHooks::default()
    };
    if link.edge_upstream {
        hooks.upstream = UpstreamForwarder::start(&link, reporter.node_id(), &credentials)?;
    }
    let handle = Edge::start(config, secret.to_owned(), verifier, hooks).await?;
    reporter.start(&credentials, handle.addrs())?;
    Ok(RunningEdge {
        handle,
        reporter,
        durable,
        _renewal: renewal,
    })
}

/// Stops an edge: tells control it drains, closes the clients, then sends their disconnects (each
/// step bounded in time).
async fn stop_edge(edge: RunningEdge) {
    edge.reporter.drain().await;
    edge.handle.shutdown().await;
    if !edge.reporter.shutdown(REPORT_FLUSH_TIMEOUT).await {
        tracing::warn!("some session changes were not reported; they expire at the control plane");
    }
    edge.durable.shutdown(REPORT_FLUSH_TIMEOUT).await;
}

/// `addr`, with an unspecified IP (listening on every interface) replaced by loopback.
fn loopback_if_unspecified(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// The PostgreSQL store at `url`, its statements bounded by `statement_timeout` (zero: unbounded).
async fn connect_store(url: &str, statement_timeout: Duration) -> anyhow::Result<PostgresStore> {
    let pool = PoolSettings {
        statement_timeout,
        ..PoolSettings::default()
    };
    PostgresStore::connect_with(url, StoreSettings::default(), pool)
        .await
        .context("connecting to PostgreSQL")
}

/// Runs a control-plane instance on PostgreSQL and Kafka until a stop signal.
pub async fn control(
    args: ControlArgs,
    secret: String,
    prometheus: PrometheusHandle,
) -> anyhow::Result<()> {
    let statement_timeout = Duration::from_millis(args.control_database_statement_timeout_ms);
    let publish_timeout = Duration::from_millis(args.control.control_publish_timeout_ms);
    if !statement_timeout.is_zero() && statement_timeout <= publish_timeout {
        anyhow::bail!(
            "--control-database-statement-timeout-ms ({statement_timeout:?}) must be above \
             --control-publish-timeout-ms ({publish_timeout:?}): a durable push waits on heads \
             that other instances hold while they publish"
        );
    }
    let store = connect_store(&args.control_database_url, statement_timeout).await?;
    let settings = KafkaSettings {
        topic_prefix: args.control_topic_prefix,
        client_options: args.control_kafka_option.into_iter().collect(),
        ..KafkaSettings::new(args.control_kafka_brokers)
    };
    settings.check().map_err(anyhow::Error::msg)?;
    let bus = KafkaProducer::new(&settings).context("creating the Kafka producer")?;
    rim_control::serve(
        args.control,
        &secret,
        Arc::new(store),
        Arc::new(bus),
        prometheus,
        crate::shutdown::signal(),
    )
    .await
}

/// Runs a job worker of one region on Kafka until a stop signal.
pub async fn job(
    args: JobArgs,
    secret: String,
    prometheus: PrometheusHandle,
) -> anyhow::Result<()> {
    let statement_timeout = Duration::from_millis(args.job_database_statement_timeout_ms);
    let store = connect_store(&args.job_database_url, statement_timeout).await?;
    let directory = Arc::new(StoreDirectory::new(
        Arc::new(store),
        args.job.directory_cache(),
    ));
    let settings = CredentialSettings {
        control_url: args.job.job_control_url.clone(),
        control_ca_file: args.job.job_control_ca_file.clone(),
        timeout: args.job.edge_timeout(),
        backoff: args.job.backoff(),
    };
    let (credentials, _renewal) = enroll(
        NodeRole::Job,
        &args.job.node_id(),
        &args.job.job_region,
        &secret,
        &settings,
    )?;
    rim_job::run_kafka_worker(
        &args.job,
        credentials.token(),
        directory,
        Some(prometheus),
        crate::shutdown::signal(),
    )
    .await?;
    Ok(())
}
