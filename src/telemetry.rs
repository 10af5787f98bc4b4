//! Process-wide observability: the tracing subscriber (logs) and the Prometheus recorder (metrics).
//!
//! Installed once by `main` before any role starts, so every crate can just use `tracing` and the
//! `metrics` facade; each role renders the returned handle on its own `/metrics` endpoint.

use crate::cli::LogFormat;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber (filter from `RUST_LOG`, else `default_filter`) in the chosen
/// format.
pub fn init_logs(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// How often the recorder drains its histograms into their summaries when nobody scrapes.
const METRICS_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process's Prometheus recorder and returns the handle that renders it.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    Ok(PrometheusBuilder::new().install_recorder()?)
}

/// Runs the recorder's upkeep on an interval, so histogram samples do not pile up in memory
/// between scrapes (or forever, when nothing scrapes). Needs a Tokio runtime.
pub fn spawn_metrics_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
        loop {
            ticks.tick().await;
            handle.run_upkeep();
        }
    });
}
