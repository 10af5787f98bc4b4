//! edge-under-test: one rim edge alone in its own process, so a benchmark can read its memory and CPU
//! from `/proc/<pid>` without counting the clients that load it.
//!
//! Every `EdgeConfig` option is accepted as a flag (see `--help`); the cluster secret comes from the
//! `RIM_BENCH_SECRET` variable (kept off the command line). Once listening it prints one line,
//! `tcp=<addr> ws=<addr> internal=<addr>`, and runs until its standard input closes (the parent
//! exited or dropped the pipe), then shuts the edge down. It installs the Prometheus recorder, so
//! `/metrics` on the internal port shows what the edge counted (drops, closes, write batches).
//! `edge-bench` starts it; it can also be run by hand against any load generator.

use anyhow::Context;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use rim_edge::{Edge, EdgeConfig, EdgeHooks};
use tokio::io::AsyncReadExt;

/// The allocator `rim` itself runs with (see the `rim` binary's `src/main.rs`), so that what this
/// benchmark measures is what a deployment runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The edge options, exactly as the `rim edge` command takes them.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    edge: EdgeConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = std::env::var("RIM_BENCH_SECRET").context("RIM_BENCH_SECRET is not set")?;
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let verifier = rim_edge::auth::from_config(&args.edge)?;
    let hooks = EdgeHooks {
        metrics: Some(prometheus),
        ..EdgeHooks::default()
    };
    let edge = Edge::start(args.edge, secret, verifier, hooks).await?;
    let addrs = *edge.addrs();
    println!(
        "tcp={} ws={} internal={}",
        addrs.tcp, addrs.ws, addrs.internal
    );
    // Nothing is ever written to us: reading returns once the parent closes the pipe or exits.
    let mut sink = [0u8; 64];
    let mut stdin = tokio::io::stdin();
    while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    edge.shutdown().await;
    Ok(())
}
