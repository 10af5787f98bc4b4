//! The `rim` binary: one executable for every role (`rim dev | edge | control | job`).
//!
//! `main` only assembles: it layers the configuration ([`config`]), installs logs and metrics
//! ([`telemetry`]) and hands each role its options, the cluster secret and a stop signal
//! ([`roles`], [`shutdown`]).

mod cli;
mod client;
mod config;
mod demo;
mod roles;
mod shutdown;
mod telemetry;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use cli::{Cli, Role};
use rim_edge::config::AuthMode;
use std::ffi::OsString;

/// Every role allocates with mimalloc rather than glibc's malloc: the control plane's push path and
/// the job's routing are allocation-heavy (malloc and free were a quarter to a third of their
/// profiles), and an edge's many small per-connection allocations pack tighter. Measured in one
/// session, alternated against glibc (bench/README.md, "The allocator"): control's CPU per push
/// 74-78 -> 40-48 us (memory bus), job 1.15-1.2x pushes/s, the edge's user CPU per delivery
/// 0.51-0.55 -> 0.45-0.46 us, idle edge memory 1,833 -> 1,750 B per connection (after 64 KiB pushes
/// +500-580 B instead of +157 B: mimalloc keeps freed pages a little longer, within issue 8's 1 KB).
/// mimalloc is built without transparent huge pages (the `no_thp` feature): by default it asks the
/// kernel for 2 MiB pages on its segments, so every page it purged (after 10 ms unused) came back
/// as a fresh huge page zeroed in a fault (38% of control's samples at 1,000 pushes/s), and the
/// RSS of each role doubled (control 62 -> 33 MB, an edge of 2,000 connections 37 -> 25 MB; idle
/// edge 1,756 -> 1,679 B per connection, +878 -> +233 B after 64 KiB pushes).
/// The benchmarks that host rim's servers in their own processes declare the same allocator, so
/// they measure what `rim` runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let (cli, matches) = parse_command_line(std::env::args_os().collect())?;
    // `rim dev` is watched by a person: one line per accepted push too (production roles log
    // pushes at debug level only, they carry thousands a second).
    let default_filter = match cli.role {
        Some(Role::Dev(_)) => "info,rim_control::push=debug",
        _ => "info",
    };
    telemetry::init_logs(cli.log_format, default_filter);
    // The HTTP clients (edge link, job worker, auth webhook) are built without a bundled TLS crypto
    // provider; the process uses ring. An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prometheus = telemetry::init_metrics()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the Tokio runtime")?;
    let role = cli.role.context("no role selected")?;
    let secret = cli.cluster_secret;
    runtime.block_on(async move {
        telemetry::spawn_metrics_upkeep(prometheus.clone());
        match role {
            Role::Dev(mut args) => {
                let dev_matches = matches.subcommand_matches("dev").context("dev options")?;
                apply_dev_defaults(&mut args, dev_matches);
                let secret = secret.unwrap_or_else(random_token);
                roles::dev(args, secret, prometheus).await
            }
            Role::Edge(args) => roles::edge(args, required(secret)?, prometheus).await,
            Role::Control(args) => roles::control(args, required(secret)?, prometheus).await,
            Role::Job(args) => roles::job(args, required(secret)?, prometheus).await,
            Role::Client(args) => client::run(args).await,
        }
    })
}

/// Parses the command line over the configuration file; no subcommand means `dev`.
fn parse_command_line(mut args: Vec<OsString>) -> anyhow::Result<(Cli, ArgMatches)> {
    let mut command = cli::switchable_flags(Cli::command());
    if let Some(path) = config::config_path(&args) {
        command = config::apply_file(command, &path)?;
    }
    let matches = command.clone().get_matches_from(args.clone());
    if matches.subcommand().is_none() {
        args.push("dev".into());
        return parse_command_line(args);
    }
    Ok((Cli::from_arg_matches(&matches)?, matches))
}

/// `rim dev` is for one machine and demos: where the user left an option at its built-in default,
/// trust goim clients' JSON (so goim's own clients work unchanged), open the goim routes (so goim's
/// curl examples work) and create an admin key for the `/v1` API. Each is announced loudly.
fn apply_dev_defaults(args: &mut cli::DevArgs, matches: &ArgMatches) {
    let defaulted = |id: &str| matches.value_source(id) == Some(ValueSource::DefaultValue);
    // One machine: listen on loopback unless told otherwise (the production defaults listen on
    // every interface).
    let edge = &mut args.edge;
    for (id, listen) in [
        ("edge_tcp_listen", &mut edge.edge_tcp_listen),
        ("edge_ws_listen", &mut edge.edge_ws_listen),
        ("edge_wss_listen", &mut edge.edge_wss_listen),
        ("edge_tls_listen", &mut edge.edge_tls_listen),
        ("edge_internal_listen", &mut edge.edge_internal_listen),
    ] {
        if defaulted(id) {
            *listen = listen.replacen("0.0.0.0", "127.0.0.1", 1);
        }
    }
    if defaulted("control_listen") {
        args.control
            .control_listen
            .set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    // In-process heartbeats cost nothing: report every second, so room and broadcast answers count
    // the connections of a moment ago, not of ten seconds ago.
    if defaulted("edge_node_heartbeat_ms") {
        args.link.edge_node_heartbeat_ms = 1_000;
    }
    // One region in one process: the edge's and the job's region are the same; either flag sets it.
    if defaulted("job_region") && !defaulted("edge_region") {
        args.job.job_region.clone_from(&args.link.edge_region);
    }
    if defaulted("edge_auth")
        && args.edge.edge_jwt_keys.is_empty()
        && args.edge.edge_jwt_jwks_urls.is_empty()
    {
        args.edge.edge_auth = AuthMode::Insecure;
    }
    if defaulted("goim_routes_open") {
        args.control.goim_routes_open = true;
    }
    warn_if_exposed(args);
    if args.control.control_admin_key.is_none() {
        // Printed with the banner once everything listens (see `roles::dev`).
        args.control.control_admin_key = Some(random_token());
    }
}

/// Warns loudly when a development shortcut (trusting clients' claimed identity, goim routes
/// without a key) faces an address other than loopback.
fn warn_if_exposed(args: &cli::DevArgs) {
    let exposed = |listen: &str| {
        listen
            .parse::<std::net::SocketAddr>()
            .map_or(true, |addr| !addr.ip().is_loopback())
    };
    let edge = &args.edge;
    if edge.edge_auth == AuthMode::Insecure
        && (exposed(&edge.edge_tcp_listen) || exposed(&edge.edge_ws_listen))
    {
        tracing::warn!(
            tcp = %edge.edge_tcp_listen,
            ws = %edge.edge_ws_listen,
            "INSECURE: clients' claimed user ids are trusted on a non-loopback address; anyone who \
             can reach it can impersonate any user (configure --edge-jwt-keys)"
        );
    }
    if args.control.goim_routes_open && !args.control.control_listen.ip().is_loopback() {
        tracing::warn!(
            listen = %args.control.control_listen,
            "INSECURE: the goim push routes are open without an API key on a non-loopback address; \
             anyone who can reach it can push (set RIM_CONTROL_GOIM_ROUTES_OPEN=false)"
        );
    }
}

/// The cluster secret, which every production role needs.
fn required(secret: Option<String>) -> anyhow::Result<String> {
    secret
        .filter(|s| !s.is_empty())
        .context("set the cluster secret: --cluster-secret or RIM_CLUSTER_SECRET")
}

/// 32 random bytes as hex, for secrets `rim dev` makes up.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
