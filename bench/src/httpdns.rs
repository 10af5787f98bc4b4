//! `rim-bench httpdns`: HTTPDNS answers per second per core, in process and over real HTTP.
//!
//! 1. **In process**: the answer for a mix of clients (region hint only, no hint, located by
//!    coordinates) from a synthetic snapshot of `--nodes` nodes in `--regions` regions, through
//!    [`rim_balancer::Rankings`] with the JSON from its precomputed pieces (what control serves)
//!    and through the direct computation ([`rim_balancer::answer()`]) serialized by serde; one
//!    thread, so answers per second are per core.
//! 2. **Over HTTP**: a child process (`rim-bench httpdns-server`) runs rim's control plane
//!    (the real router, middleware included) with a memory store holding the same nodes, kept
//!    fresh by heartbeats (so the node directory hands out a new snapshot every second and the
//!    rankings are rebuilt), on a runtime of `--server-threads` threads. This process opens
//!    `--connections` keep-alive HTTP/1.1 connections and asks `GET /goim/nodes/weighted` in a
//!    loop over the same mix, with a minimal client (one write, one read per answer) so that it
//!    costs less than the server. Answers per second are divided by the server's CPU seconds
//!    (utime + stime of all its threads, from `/proc/<pid>/stat`) to give answers per server
//!    CPU-second: the per-core figure. The server installs the Prometheus recorder as `rim
//!    control` does, so the request metrics cost what they cost in production. With
//!    `--pipeline N` each connection sends N requests in one write before reading their N answers
//!    (HTTP/1.1 pipelining, which real HTTPDNS clients do not do: report it beside the
//!    unpipelined figure).
//!
//!    On loopback the server's write of an answer runs the client's TCP receive and, when the
//!    load process sleeps in `epoll_wait`, wakes it: the kernel charges both to the server, which a
//!    remote client would never cost it (about a third of the server's CPU in a profile). With
//!    `--waiting spin` the load process instead runs its connections on one thread that polls
//!    them without sleeping (it burns that core), so the server's figure leaves out the wake-ups;
//!    the default, `sleep`, is the tokio client that sleeps like real clients' machines do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use rim_balancer::{
    BalancerConfig, Client, GeoPoint, NodeCandidate, NodeState, Platform, Ports, Rankings,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::child::spawn_announced;
use crate::procfs::{self, Cpu, Watched};

/// `httpdns`: the options.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpdnsArgs {
    /// Edge nodes in the snapshot.
    #[arg(long, default_value_t = 60)]
    pub nodes: usize,
    /// Regions they are spread over.
    #[arg(long, default_value_t = 6)]
    pub regions: usize,
    /// Answers computed per client kind in the in-process measurement.
    #[arg(long, default_value_t = 200_000)]
    pub iterations: usize,
    /// Keep-alive connections of the HTTP measurement.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of the HTTP measurement (0: skip it).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Runtime threads of the server process.
    #[arg(long, default_value_t = 1)]
    pub server_threads: usize,
    /// Requests each connection sends together before reading their answers (1: no pipelining,
    /// as real HTTPDNS clients ask).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// How the load process waits for answers (see the module docs).
    #[arg(long, value_enum, default_value_t = Waiting::Sleep)]
    pub waiting: Waiting,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// How the load process of the HTTP measurement waits for answers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// Tokio tasks, one per connection: the process sleeps in `epoll_wait` when no answer is in.
    Sleep,
    /// One thread polls every connection without sleeping.
    Spin,
}

/// `httpdns-server`: the options (internal, started by `httpdns`).
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Edge nodes to register.
    #[arg(long)]
    pub nodes: usize,
    /// Regions they are spread over.
    #[arg(long)]
    pub regions: usize,
    /// Runtime threads.
    #[arg(long)]
    pub threads: usize,
}

/// The client kinds asked for, as (label, query string).
fn mix(regions: usize) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = (0..regions)
        .map(|r| {
            (
                format!("region r{r}"),
                format!("platform=native&region=r{r}"),
            )
        })
        .collect();
    out.push(("no hint".into(), "platform=web".into()));
    out.push((
        "coordinates".into(),
        "platform=native&lat=31.2&lon=121.5".into(),
    ));
    out
}

/// The client a query of [`mix`] describes (for the in-process measurement).
fn client_of(query: &str, seed: u64) -> anyhow::Result<Client> {
    let mut client = Client {
        location: None,
        region: None,
        platform: Platform::Native,
        seed: Some(seed),
    };
    let (mut lat, mut lon) = (None, None);
    for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        match key {
            "platform" => client.platform = Platform::from_query(Some(value)),
            "region" => client.region = Some(value.to_owned()),
            "lat" => lat = Some(value.parse()?),
            "lon" => lon = Some(value.parse()?),
            _ => {}
        }
    }
    if let (Some(lat), Some(lon)) = (lat, lon) {
        client.location = Some(GeoPoint::new(lat, lon)?);
    }
    Ok(client)
}

/// Node `n` of the synthetic snapshot: region `r{n % regions}`, around a point per region.
fn node(n: usize, regions: usize) -> anyhow::Result<NodeCandidate> {
    let region = n % regions.max(1);
    let lat = -60.0 + 120.0 * region as f64 / regions.max(1) as f64 + (n % 7) as f64 * 0.1;
    let lon = -170.0 + 340.0 * region as f64 / regions.max(1) as f64;
    Ok(NodeCandidate {
        id: format!("edge-{n}"),
        region: format!("r{region}"),
        location: GeoPoint::new(lat, lon)?,
        hostname: format!("edge-{n}.bench.example"),
        addresses: vec![format!("10.0.{}.{}", n / 250, n % 250 + 1)],
        ports: Ports {
            tcp: 3101,
            ws: 3102,
            wss: 3103,
        },
        weight: 10 + (n % 3) as u32 * 10,
        connections: (n as u64 * 7_919) % 20_000,
        state: NodeState::Active,
        last_seen: SystemTime::now(),
    })
}

/// One in-process figure.
#[derive(Debug, Serialize)]
pub struct InProcess {
    /// The client kind.
    pub client: String,
    /// ns per answer through the precomputed rankings and JSON pieces.
    pub rankings_ns: f64,
    /// ns per answer computed directly (JSON included).
    pub direct_ns: f64,
}

/// The HTTP figure.
#[derive(Debug, Serialize)]
pub struct OverHttp {
    /// Answers received.
    pub answers: u64,
    /// Wall seconds.
    pub seconds: f64,
    /// Answers per wall second.
    pub per_second: f64,
    /// Server CPU.
    pub server_cpu: Cpu,
    /// Answers per server CPU-second: the per-core figure.
    pub per_server_cpu_second: f64,
    /// The load process's CPU.
    pub load_cpu: Cpu,
    /// Answers that were not `200` with nodes listed.
    pub bad: u64,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct HttpdnsReport {
    /// The command line.
    pub command: String,
    /// Load average before and after.
    pub load_average: [[f64; 3]; 2],
    /// Nodes and regions.
    pub nodes: usize,
    /// Regions.
    pub regions: usize,
    /// In-process figures.
    pub in_process: Vec<InProcess>,
    /// The HTTP figure.
    pub over_http: Option<OverHttp>,
}

/// `rim-bench httpdns`.
pub async fn run(args: HttpdnsArgs) -> anyhow::Result<HttpdnsReport> {
    let load_before = procfs::load_average()?;
    println!(
        "== rim-bench httpdns: {} nodes in {} regions",
        args.nodes, args.regions
    );
    let in_process = in_process(&args)?;
    for figure in &in_process {
        println!(
            "in process, {:<12} rankings {:>7.0} ns = {:>9.0} answers/s per core; direct {:>7.0} ns = {:>9.0}/s ({:.1}x)",
            figure.client,
            figure.rankings_ns,
            1e9 / figure.rankings_ns,
            figure.direct_ns,
            1e9 / figure.direct_ns,
            figure.direct_ns / figure.rankings_ns
        );
    }
    let over_http = if args.seconds > 0.0 {
        let figure = over_http(&args).await?;
        println!(
            "over HTTP ({} keep-alive connections, {} request(s) pipelined, load waiting by {:?}, server on {} thread(s)): {} answers in {:.1} s = {:.0}/s; \
             server CPU {:.2} s user + {:.2} s sys = {:.0} answers per server CPU-second; load CPU {:.2} s; {} bad",
            args.connections,
            args.pipeline.max(1),
            args.waiting,
            args.server_threads,
            figure.answers,
            figure.seconds,
            figure.per_second,
            figure.server_cpu.user,
            figure.server_cpu.system,
            figure.per_server_cpu_second,
            figure.load_cpu.total(),
            figure.bad
        );
        Some(figure)
    } else {
        None
    };
    let load_after = procfs::load_average()?;
    println!("load average before {load_before:?}, after {load_after:?}");
    let report = HttpdnsReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        load_average: [load_before, load_after],
        nodes: args.nodes,
        regions: args.regions,
        in_process,
        over_http,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if report.over_http.as_ref().is_some_and(|h| h.bad > 0) {
        bail!("some HTTPDNS answers were not 200 with nodes");
    }
    Ok(report)
}

fn in_process(args: &HttpdnsArgs) -> anyhow::Result<Vec<InProcess>> {
    let config = BalancerConfig::default();
    let nodes: Vec<NodeCandidate> = (0..args.nodes)
        .map(|n| node(n, args.regions))
        .collect::<anyhow::Result<_>>()?;
    let now = SystemTime::now();
    let rankings = Rankings::new(nodes.clone(), now, &config);
    let mut out = Vec::new();
    for (label, query) in mix(args.regions) {
        // `answer` appends the answer's JSON for the client to the buffer.
        let time = |answer: &dyn Fn(&Client, &mut Vec<u8>) -> anyhow::Result<()>| {
            let started = Instant::now();
            let mut bytes = 0usize;
            for seed in 0..args.iterations as u64 {
                let client = client_of(&query, seed)?;
                let mut json = Vec::with_capacity(512);
                answer(&client, &mut json)?;
                anyhow::ensure!(json.len() > 100, "empty answer for {query}");
                bytes += json.len();
            }
            std::hint::black_box(bytes);
            anyhow::Ok(started.elapsed().as_nanos() as f64 / args.iterations.max(1) as f64)
        };
        out.push(InProcess {
            // What control serves: the precomputed pieces of the answer's JSON.
            rankings_ns: time(&|client, json| {
                rankings.answer_json(client, now, json);
                Ok(())
            })?,
            direct_ns: time(&|client, json| {
                let answer = rim_balancer::answer(&nodes, client, now, &config);
                Ok(serde_json::to_writer(json, &answer)?)
            })?,
            client: label,
        });
    }
    Ok(out)
}

async fn over_http(args: &HttpdnsArgs) -> anyhow::Result<OverHttp> {
    let binary = std::env::current_exe()?;
    let mut command = tokio::process::Command::new(binary);
    command.args([
        "httpdns-server".to_owned(),
        format!("--nodes={}", args.nodes),
        format!("--regions={}", args.regions),
        format!("--threads={}", args.server_threads),
    ]);
    let (mut server, announced) =
        spawn_announced(&mut command, "httpdns-server", Duration::from_secs(30)).await?;
    let addr = announced.addr("addr")?;
    let pid = server.id().context("server exited")?;
    let watched = Watched::new(vec![("server".into(), pid)]);
    let me = Watched::new(vec![("load".into(), std::process::id())]);
    let queries: Arc<Vec<String>> =
        Arc::new(mix(args.regions).into_iter().map(|(_, q)| q).collect());
    let answers = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let pipeline = args.pipeline.max(1);
    let requests = Arc::new(requests(addr, &queries));
    let spinner = match args.waiting {
        Waiting::Sleep => {
            for n in 0..args.connections {
                let (requests, answers, bad, stop) =
                    (requests.clone(), answers.clone(), bad.clone(), stop.clone());
                tasks.spawn(
                    async move { ask(addr, n, pipeline, requests, answers, bad, stop).await },
                );
            }
            None
        }
        Waiting::Spin => {
            let (connections, answers, bad, stop) =
                (args.connections, answers.clone(), bad.clone(), stop.clone());
            Some(std::thread::spawn(move || {
                spin(
                    addr,
                    connections,
                    pipeline,
                    &requests,
                    &answers,
                    &bad,
                    &stop,
                )
            }))
        }
    };
    // Warm up (connections open, first rankings built), then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (server_before, me_before) = (watched.sample()?, me.sample()?);
    let counted_before = answers.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let counted = answers.load(Ordering::Relaxed) - counted_before;
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = procfs::cpu_between(&server_before, &watched.sample()?);
    let load_cpu = procfs::cpu_between(&me_before, &me.sample()?);
    stop.store(true, Ordering::Relaxed);
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    if let Some(spinner) = spinner {
        spinner
            .join()
            .map_err(|_| anyhow::anyhow!("the spinning client panicked"))??;
    }
    drop(server.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), server.wait()).await;
    Ok(OverHttp {
        answers: counted,
        seconds,
        per_second: counted as f64 / seconds,
        server_cpu,
        per_server_cpu_second: counted as f64 / server_cpu.total().max(f64::EPSILON),
        load_cpu,
        bad: bad.load(Ordering::Relaxed),
    })
}

/// The request of each query of the mix, in HTTP/1.1.
fn requests(addr: SocketAddr, queries: &[String]) -> Vec<Vec<u8>> {
    queries
        .iter()
        .map(|q| {
            format!("GET /goim/nodes/weighted?{q} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes()
        })
        .collect()
}

/// Counts one answer: good if `200` with nodes listed.
fn count(status: u16, body: &[u8], answers: &AtomicU64, bad: &AtomicU64) {
    const LISTED: &[u8] = b"\"nodes\":[\"";
    if status == 200 && body.windows(LISTED.len()).any(|w| w == LISTED) {
        answers.fetch_add(1, Ordering::Relaxed);
    } else {
        bad.fetch_add(1, Ordering::Relaxed);
    }
}

/// `pipeline` requests of the mix from the `k`-th on, in one buffer.
fn batch(requests: &[Vec<u8>], k: &mut usize, pipeline: usize, out: &mut Vec<u8>) {
    out.clear();
    for _ in 0..pipeline {
        out.extend_from_slice(&requests[*k % requests.len()]);
        *k += 1;
    }
}

/// One keep-alive connection asking in a loop until `stop`, `pipeline` requests at a time.
async fn ask(
    addr: SocketAddr,
    n: usize,
    pipeline: usize,
    requests: Arc<Vec<Vec<u8>>>,
    answers: Arc<AtomicU64>,
    bad: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut out = Vec::new();
    let mut responses = Responses::default();
    let mut k = n;
    while !stop.load(Ordering::Relaxed) {
        batch(&requests, &mut k, pipeline, &mut out);
        stream.write_all(&out).await?;
        for _ in 0..pipeline {
            let (status, body) = loop {
                if let Some((status, body)) = responses.take()? {
                    break (status, body);
                }
                if stream.read_buf(&mut responses.buf).await? == 0 {
                    bail!("closed before an answer");
                }
            };
            count(status, &responses.buf[body], &answers, &bad);
        }
    }
    Ok(())
}

/// `connections` keep-alive connections on this thread, polled without ever sleeping, each
/// sending `pipeline` requests at a time, until `stop`.
fn spin(
    addr: SocketAddr,
    connections: usize,
    pipeline: usize,
    requests: &[Vec<u8>],
    answers: &AtomicU64,
    bad: &AtomicU64,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    use std::io::{ErrorKind, Read, Write};
    struct Connection {
        stream: std::net::TcpStream,
        responses: Responses,
        awaited: usize,
        k: usize,
    }
    let mut all = Vec::with_capacity(connections);
    for k in 0..connections {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        all.push(Connection {
            stream,
            responses: Responses::default(),
            awaited: 0,
            k,
        });
    }
    let (mut out, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
    while !stop.load(Ordering::Relaxed) {
        for c in &mut all {
            if c.awaited == 0 {
                batch(requests, &mut c.k, pipeline, &mut out);
                let mut written = 0;
                while written < out.len() {
                    match c.stream.write(&out[written..]) {
                        Ok(n) => written += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
                        Err(e) => return Err(e.into()),
                    }
                }
                c.awaited = pipeline;
            }
            match c.stream.read(&mut chunk) {
                Ok(0) => bail!("closed before an answer"),
                Ok(n) => c.responses.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
            while let Some((status, body)) = c.responses.take()? {
                count(status, &c.responses.buf[body], answers, bad);
                c.awaited = c.awaited.saturating_sub(1);
            }
        }
    }
    Ok(())
}

/// The bytes read from one connection, and how many of them the last answer returned took (also
/// control-bench's lean push client).
#[derive(Default)]
pub struct Responses {
    /// Read from the connection and not yet dropped: read more into it.
    pub buf: Vec<u8>,
    taken: usize,
}

impl Responses {
    /// The next HTTP/1.1 response (with a `content-length`) if it is all in: its status and
    /// where its body is in `buf`. The bytes of the one returned before are dropped first; those
    /// of later (pipelined) responses stay.
    pub fn take(&mut self) -> anyhow::Result<Option<(u16, std::ops::Range<usize>)>> {
        self.buf.drain(..self.taken);
        self.taken = 0;
        let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = std::str::from_utf8(&self.buf[..end])?;
        let status: u16 = head.get(9..12).context("short status line")?.parse()?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .context("no content-length")?;
        let total = end + 4 + length;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.taken = total;
        Ok(Some((status, end + 4..total)))
    }
}

/// `rim-bench httpdns-server`: control's router over a memory store holding the synthetic nodes,
/// heartbeated every second; prints `addr=<addr>` and runs until stdin closes.
pub fn server(args: ServerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        use rim_proto::schema::{NodeHeartbeat, NodeRegistration};
        use rim_store::Store;
        let store = Arc::new(rim_store::memory::MemoryStore::new(
            rim_store::StoreSettings::default(),
        ));
        let mut registrations = Vec::new();
        for n in 0..args.nodes {
            let candidate = node(n, args.regions)?;
            let registration = NodeRegistration {
                node_id: candidate.id.clone(),
                region: candidate.region.clone(),
                latitude: candidate.location.lat(),
                longitude: candidate.location.lon(),
                hostname: candidate.hostname.clone(),
                addresses: candidate.addresses.clone(),
                tcp_port: u32::from(candidate.ports.tcp),
                ws_port: u32::from(candidate.ports.ws),
                wss_port: u32::from(candidate.ports.wss),
                push_url: "http://127.0.0.1:1".into(),
                weight: candidate.weight,
                ..NodeRegistration::default()
            };
            store
                .register_node(&registration, rim_control::now_ms())
                .await?;
            registrations.push((candidate.id, candidate.connections));
        }
        let bus = Arc::new(rim_bus::memory::MemoryBus::new(16));
        // Installed, as `rim control` installs it, so the request metrics really record.
        let prometheus =
            metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
        let config = rim_control::ControlConfig::default();
        let control = rim_control::start(
            config,
            "httpdns-bench-secret",
            store.clone(),
            bus,
            prometheus,
        )
        .await?;
        println!("addr={}", control.local_addr());
        let heartbeats = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                for (node_id, connections) in &registrations {
                    let beat = NodeHeartbeat {
                        node_id: node_id.clone(),
                        connection_count: *connections,
                        ..NodeHeartbeat::default()
                    };
                    if let Err(error) = store.node_heartbeat(&beat, rim_control::now_ms()).await {
                        eprintln!("heartbeat of {node_id}: {error}");
                    }
                }
            }
        });
        let mut sink = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
        heartbeats.abort();
        drop(control);
        Ok(())
    })
}
