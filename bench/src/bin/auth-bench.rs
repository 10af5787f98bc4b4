//! auth-bench: what it costs a client's login that the edge answers its auth only once the control
//! plane has accepted the connect (so that a push sent right after the reply finds the session).
//!
//! One in-process control plane (memory store, in-process bus) and, per mode, a fresh edge with its
//! session reporter on loopback. goim TCP clients log in (connect, op 7, op 8 back) and the time from
//! connect to auth reply is measured, with the edge answering at once (`edge_auth_report_timeout_ms`
//! 0, the old behaviour) and with it waiting for the acknowledgement (the default bound, 1 s). For
//! each mode it also checks, right when the reply arrives, whether the store already holds the
//! session ("known at reply": what a business push sent at that moment depends on), and counts the
//! session requests the edge made (logins per request: batching is kept). Connections stay open
//! until the mode ends, so no disconnects share the batches.
//!
//! Back-to-back logins (`--gap-ms 0`) are the worst case of the wait: each login arrives just after
//! the previous batch started, so it waits for the link's pacing (`edge_session_flush_ms`, `--flush-ms`)
//! before its batch may start. Spaced logins (`--gap-ms 20`) show an isolated login's cost.
//!
//! The clients share the machine with the edge and the control plane: compare modes within one run.
//! `cargo run --release -p rim-bench --bin auth-bench -- --logins 2000 --concurrency 1,32`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rim_bus::memory::MemoryBus;
use rim_control::ControlConfig;
use rim_edge::config::AuthMode;
use rim_edge::{Edge, EdgeConfig, EdgeHandle, EdgeHooks};
use rim_edgelink::{LinkConfig, SessionReporter};
use rim_proto::{HEADER_LEN, Packet, op};
use rim_store::memory::MemoryStore;
use rim_store::{Store, StoreSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Cluster secret of the benchmark's components.
const SECRET: &str = "auth-bench-secret";
/// How long the benchmark waits for an edge to register.
const REGISTER_PATIENCE: Duration = Duration::from_secs(10);

/// Command-line options.
#[derive(Parser, Debug)]
struct Args {
    /// Logins measured per mode and concurrency.
    #[arg(long, default_value_t = 2_000)]
    logins: usize,
    /// Logins in progress at once, one measurement per value (1: one after the other).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 32])]
    concurrency: Vec<usize>,
    /// Logins before each measurement, not counted.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// The link's `edge_session_flush_ms`: how long a connect waits for company in its batch.
    #[arg(long, default_value_t = 10)]
    flush_ms: u64,
    /// The bound of the waiting mode (`edge_auth_report_timeout_ms`).
    #[arg(long, default_value_t = 1_000)]
    wait_ms: u64,
    /// Pause of each client loop between two logins, in milliseconds.
    #[arg(long, default_value_t = 0)]
    gap_ms: u64,
}

/// Latencies of one measurement, and how many sessions the store knew when the reply arrived.
struct Measured {
    latencies: Vec<Duration>,
    known_at_reply: usize,
}

impl Measured {
    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }
}

/// An edge reporting to the benchmark's control plane.
struct BenchEdge {
    handle: EdgeHandle,
    reporter: Arc<SessionReporter>,
}

impl BenchEdge {
    async fn start(
        control: SocketAddr,
        node_id: &str,
        args: &Args,
        wait_ms: u64,
    ) -> anyhow::Result<Self> {
        let mut link = LinkConfig::local()?;
        link.edge_control_url = format!("http://{control}");
        link.edge_node_id = Some(node_id.into());
        link.edge_region = "bench".into();
        link.edge_session_flush_ms = args.flush_ms;
        let mut config = EdgeConfig::local()?;
        config.edge_auth = AuthMode::Insecure;
        config.edge_max_conns_per_ip = 0;
        config.edge_max_connections = 0;
        config.edge_auth_report_timeout_ms = wait_ms;
        let credentials = rim_edgelink::NodeCredentials::new(
            rim_proto::node_token::NodeRole::Edge,
            node_id,
            &link.edge_region,
            SECRET,
            &link.credential_settings(),
        )?;
        credentials.spawn(rim_edgelink::credential::CancellationToken::new());
        let reporter = SessionReporter::new(link);
        let verifier = rim_edge::auth::from_config(&config)?;
        let hooks = EdgeHooks {
            events: reporter.clone(),
            ..EdgeHooks::default()
        };
        let handle = Edge::start(config, SECRET.into(), verifier, hooks).await?;
        reporter.start(&credentials, handle.addrs())?;
        Ok(Self { handle, reporter })
    }

    async fn stop(self) {
        self.reporter.drain().await;
        self.handle.shutdown().await;
        self.reporter.shutdown(Duration::from_secs(10)).await;
    }
}

/// Milliseconds since the Unix epoch (the store's clock).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Connects to `addr` and authenticates as `key`; returns the open connection and the time from
/// connect to auth reply.
async fn login(addr: SocketAddr, key: &str, mid: usize) -> anyhow::Result<(TcpStream, Duration)> {
    let body = format!(
        r#"{{"mid":{mid},"key":"{key}","room_id":"","platform":"bench","accepts":[1000]}}"#
    );
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let auth = Packet::new(1, op::AUTH, 1, body.into_bytes());
    stream.write_all(&auth.to_bytes()).await?;
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).await?;
    let elapsed = started.elapsed();
    let length = i32::from_be_bytes(header[0..4].try_into()?);
    let operation = i32::from_be_bytes(header[8..12].try_into()?);
    anyhow::ensure!(
        operation == op::AUTH_REPLY,
        "expected op 8, got {operation}"
    );
    anyhow::ensure!(
        usize::try_from(length)? == HEADER_LEN,
        "auth refused (reply with a body)"
    );
    Ok((stream, elapsed))
}

/// Runs `logins` logins, `concurrency` at a time with `gap` between a client loop's logins,
/// against `edge`; keys start at `first`.
async fn measure(
    edge: &BenchEdge,
    store: &Arc<dyn Store>,
    logins: usize,
    (concurrency, gap): (usize, Duration),
    first: usize,
) -> anyhow::Result<(Measured, Vec<TcpStream>)> {
    let addr = edge.handle.addrs().tcp;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, store) = (next.clone(), store.clone());
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= logins {
                    return anyhow::Ok(done);
                }
                let key = format!("bench-{}", first + n);
                let (stream, latency) = login(addr, &key, first + n + 1).await?;
                let known = !store.sessions_by_keys(&[key], now_ms()).await?.is_empty();
                done.push((stream, latency, known));
                tokio::time::sleep(gap).await;
            }
        }));
    }
    let mut measured = Measured {
        latencies: Vec::with_capacity(logins),
        known_at_reply: 0,
    };
    let mut streams = Vec::with_capacity(logins);
    for worker in workers {
        for (stream, latency, known) in worker.await?? {
            measured.latencies.push(latency);
            measured.known_at_reply += usize::from(known);
            streams.push(stream);
        }
    }
    measured.latencies.sort_unstable();
    Ok((measured, streams))
}

/// Waits until the store lists `node_id`.
async fn registered(store: &Arc<dyn Store>, node_id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + REGISTER_PATIENCE;
    loop {
        if store.nodes().await?.iter().any(|node| node.id == node_id) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "edge {node_id} did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// Session requests control accepted from edges so far (`rim_edge_link_calls_total`).
fn session_requests(prometheus: &PrometheusHandle) -> f64 {
    prometheus
        .render()
        .lines()
        .filter(|line| line.starts_with("rim_edge_link_calls_total{"))
        .filter(|line| line.contains(r#"call="sessions""#) && line.contains(r#"outcome="ok""#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.logins > 0, "--logins must be positive");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(StoreSettings::default()));
    let bus = Arc::new(MemoryBus::new(1_000));
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let control = rim_control::start(
        ControlConfig::default(),
        SECRET,
        store.clone(),
        bus,
        prometheus.clone(),
    )
    .await
    .context("starting the control plane")?;
    let modes = [("answer at once", 0), ("wait for the ack", args.wait_ms)];
    println!(
        "auth-bench: {} logins per row after {} warm-up, session flush {} ms, {} ms between a \
         client's logins (edge + in-process control plane, memory store, loopback TCP)",
        args.logins, args.warmup, args.flush_ms, args.gap_ms
    );
    println!(
        "{:<27} {:>5} {:>8} {:>8} {:>8} {:>8} {:>15} {:>14}",
        "mode", "conc", "p50 ms", "p90 ms", "p99 ms", "max ms", "known at reply", "logins/request"
    );
    let gap = Duration::from_millis(args.gap_ms);
    let mut first = 0;
    for &concurrency in &args.concurrency {
        let mut rows = Vec::new();
        for (name, wait_ms) in modes {
            let node_id = format!("auth-bench-{wait_ms}-{concurrency}");
            let edge = BenchEdge::start(control.local_addr(), &node_id, &args, wait_ms).await?;
            registered(&store, &node_id).await?;
            let load = (concurrency, gap);
            let (_, warm) = measure(&edge, &store, args.warmup, load, first).await?;
            first += args.warmup;
            let requests_before = session_requests(&prometheus);
            let (measured, open) = measure(&edge, &store, args.logins, load, first).await?;
            let requests = session_requests(&prometheus) - requests_before;
            first += args.logins;
            drop((warm, open));
            edge.stop().await;
            println!(
                "{:<27} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>14.1}% {:>14.1}",
                format!("{name} ({wait_ms} ms)"),
                concurrency,
                ms(measured.percentile(0.5)),
                ms(measured.percentile(0.9)),
                ms(measured.percentile(0.99)),
                ms(measured.percentile(1.0)),
                100.0 * measured.known_at_reply as f64 / args.logins as f64,
                args.logins as f64 / requests.max(1.0),
            );
            rows.push(measured);
        }
        if let [at_once, waiting] = &rows[..] {
            println!(
                "  added by waiting at concurrency {concurrency}: p50 {:+.2} ms, p99 {:+.2} ms",
                ms(waiting.percentile(0.5)) - ms(at_once.percentile(0.5)),
                ms(waiting.percentile(0.99)) - ms(at_once.percentile(0.99)),
            );
        }
    }
    control.shutdown().await?;
    Ok(())
}
