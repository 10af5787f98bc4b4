//! Starting each role with the store and bus it runs on.
//!
//! | role | store | bus |
//! |---|---|---|
//! | `dev` | in memory | in process |
//! | `control` | PostgreSQL | Kafka producer |
//! | `job` | PostgreSQL (to find edges) | Kafka consumer group of its region |
//! | `edge` | – (reports to control over HTTP) | – (job workers push to it over HTTP) |

use crate::cli::{ControlArgs, DevArgs, EdgeArgs, JobArgs};
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use rim_bus::kafka::{KafkaProducer, KafkaSettings};
use rim_bus::memory::MemoryBus;
use rim_edge::{Edge, EdgeHooks};
use rim_job::StoreDirectory;
use rim_store::memory::MemoryStore;
use rim_store::postgres::PostgresStore;
use rim_store::{Store, StoreSettings};
use std::sync::Arc;

/// Pushes the in-process bus of `rim dev` holds per region before publishing fails with 503.
const DEV_BUS_CAPACITY: usize = 100_000;

/// Runs edge, control plane and job worker in this process until a stop signal.
pub async fn dev(
    args: DevArgs,
    secret: String,
    prometheus: PrometheusHandle,
) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(StoreSettings::default()));
    let bus = Arc::new(MemoryBus::new(DEV_BUS_CAPACITY));
    let control = rim_control::start(
        args.control,
        &secret,
        store.clone(),
        bus.clone(),
        prometheus.clone(),
    )
    .await?;
    let verifier = rim_edge::auth::from_config(&args.edge)?;
    let hooks = EdgeHooks {
        metrics: Some(prometheus),
        ..EdgeHooks::default()
    };
    let edge = Edge::start(args.edge, secret.clone(), verifier, hooks).await?;
    let consumer = bus.consumer(&args.job.job_region, &args.job.group_id());
    let directory = Arc::new(StoreDirectory::new(store, args.job.directory_cache()));
    let addrs = edge.addrs();
    println!("rim dev is running (edge + control + job, in-memory store and bus)");
    println!("  clients:  tcp {}   ws://{}/sub", addrs.tcp, addrs.ws);
    println!(
        "  business: http://{}/goim/push/room?operation=1000&type=live&room=1000",
        control.local_addr()
    );
    println!("  edge internal: http://{}/metrics", addrs.internal);
    rim_job::run(
        &args.job,
        &secret,
        consumer,
        directory,
        crate::shutdown::signal(),
    )
    .await?;
    edge.shutdown().await;
    control.shutdown().await
}

/// Runs an edge until a stop signal, then shuts it down gracefully.
pub async fn edge(
    args: EdgeArgs,
    secret: String,
    prometheus: PrometheusHandle,
) -> anyhow::Result<()> {
    let verifier = rim_edge::auth::from_config(&args.edge)?;
    let hooks = EdgeHooks {
        metrics: Some(prometheus),
        ..EdgeHooks::default()
    };
    let edge = Edge::start(args.edge, secret, verifier, hooks).await?;
    tracing::info!(addrs = ?edge.addrs(), "edge running");
    crate::shutdown::signal().await;
    edge.shutdown().await;
    Ok(())
}

/// Runs a control-plane instance on PostgreSQL and Kafka until a stop signal.
pub async fn control(
    args: ControlArgs,
    secret: String,
    prometheus: PrometheusHandle,
) -> anyhow::Result<()> {
    let store = PostgresStore::connect(&args.control_database_url, StoreSettings::default())
        .await
        .context("connecting to PostgreSQL")?;
    let settings = KafkaSettings {
        topic_prefix: args.control_topic_prefix,
        ..KafkaSettings::new(args.control_kafka_brokers)
    };
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
pub async fn job(args: JobArgs, secret: String) -> anyhow::Result<()> {
    let store = PostgresStore::connect(&args.job_database_url, StoreSettings::default())
        .await
        .context("connecting to PostgreSQL")?;
    let directory = Arc::new(StoreDirectory::new(
        Arc::new(store),
        args.job.directory_cache(),
    ));
    rim_job::run_with_kafka(&args.job, &secret, directory, crate::shutdown::signal()).await?;
    Ok(())
}
