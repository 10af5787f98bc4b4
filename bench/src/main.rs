//! `rim-bench`: load any goim-protocol server and measure it. See `bench/README.md` for the
//! scenarios, their options and the latest numbers; `rim-bench <scenario> --help` for each.

use clap::{Parser, Subcommand};
use rim_bench::report::Report;
use rim_bench::scenarios;

/// The allocator `rim` itself runs with (see the `rim` binary's `src/main.rs`), so that what this
/// benchmark measures is what a deployment runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A goim-protocol load generator and rim's benchmark scenarios.
#[derive(Parser, Debug)]
#[command(name = "rim-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Server memory per idle connection, and after a burst of large pushes.
    Idle(scenarios::IdleArgs),
    /// One room: pushes one at a time and in bursts; server CPU per delivery, latency.
    Room(scenarios::RoomArgs),
    /// A connect storm: handshakes per second and their times.
    Connect(scenarios::ConnectArgs),
    /// A steady push rate through REST -> Kafka -> job -> edge; end-to-end latency.
    Latency(scenarios::PathArgs),
    /// Many connections over several `rim edge` processes, held while room pushes flow.
    Scale(scenarios::PathArgs),
    /// HTTPDNS answers per second per core, in process and over HTTP with keep-alive.
    Httpdns(rim_bench::httpdns::HttpdnsArgs),
    /// Internal: the HTTPDNS server process of `httpdns`.
    #[command(hide = true)]
    HttpdnsServer(rim_bench::httpdns::ServerArgs),
    /// Internal: librdkafka's mock cluster for `--broker mock` (prints its bootstrap list, ends
    /// when stdin closes).
    #[command(hide = true)]
    MockKafka {
        /// Topics to create.
        #[arg(long)]
        topic: Vec<String>,
        /// Partitions of each topic.
        #[arg(long, default_value_t = 12)]
        partitions: i32,
    },
    /// Internal: one worker process of a load (started by the scenarios).
    #[command(hide = true)]
    Worker {
        /// The worker's slice, as JSON.
        spec: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // reqwest is built without a TLS provider in this workspace; everything here is plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Scenario::Worker { spec } => rim_bench::worker::main(&spec),
        Scenario::HttpdnsServer(args) => rim_bench::httpdns::server(args),
        Scenario::MockKafka { topic, partitions } => {
            rim_bench::cluster::serve_mock_kafka(&topic, partitions)
        }
        Scenario::Httpdns(args) => {
            tokio::runtime::Runtime::new()?.block_on(rim_bench::httpdns::run(args))?;
            Ok(())
        }
        Scenario::Idle(args) => checked(scenarios::idle(args)),
        Scenario::Room(args) => checked(scenarios::room(args)),
        Scenario::Connect(args) => checked(scenarios::connect(args)),
        Scenario::Latency(args) => checked(scenarios::latency(args)),
        Scenario::Scale(args) => checked(scenarios::scale(args)),
    }
}

/// Runs a scenario; exits with status 1 when its counts were not what they should be.
fn checked(
    scenario: impl std::future::Future<Output = anyhow::Result<Report>>,
) -> anyhow::Result<()> {
    let report = tokio::runtime::Runtime::new()?.block_on(scenario)?;
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}
