//! A whole rim deployment on this machine for the scenarios that go through the production path
//! (REST -> Kafka -> job -> edge): a throwaway PostgreSQL cluster and a Kafka-protocol broker
//! (tansu from rim-testkit, or librdkafka's mock cluster in a `rim-bench mock-kafka` child: see
//! [`Broker`]), then `rim control`, one `rim job` and `edges` `rim edge` processes, each the real
//! `rim` binary (release build next to this program, or `--rim`) in its own process on free
//! loopback ports, edges with insecure auth so goim auth bodies are trusted. Every process logs to
//! a file in the cluster's directory (printed at start). Everything is killed when the cluster is
//! dropped.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rim_testkit::kafka::TestKafka;
use rim_testkit::ports::free_port;
use rim_testkit::postgres::TestPostgres;

/// Shared secret of the deployment's processes.
const CLUSTER_SECRET: &str = "rim-bench-cluster-secret";
/// Admin API key of `rim control` (pushes).
pub const ADMIN_KEY: &str = "rim-bench-admin-key";
/// The region everything runs in.
const REGION: &str = "bench";
/// The room of the push that warms control's producer up: no client joins it.
const WARM_UP_ROOM: &str = "rim-bench-warm-up";

/// One `rim` child process, killed on drop.
pub struct RimProcess {
    /// Its name (`control`, `job`, `edge-1`, ...), also its log's name.
    pub name: String,
    child: Child,
}

impl RimProcess {
    fn start(rim: &Path, dir: &Path, name: &str, args: &[String]) -> anyhow::Result<Self> {
        let log = File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(rim)
            .args(args)
            .env("RIM_CLUSTER_SECRET", CLUSTER_SECRET)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} {name}", rim.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running deployment.
pub struct Cluster {
    /// `http://127.0.0.1:port` of `rim control`.
    pub control_url: String,
    /// The goim TCP listeners of the edges.
    pub edge_tcp: Vec<SocketAddr>,
    /// The WebSocket listeners of the edges.
    pub edge_ws: Vec<SocketAddr>,
    /// control, job, then the edges.
    pub processes: Vec<RimProcess>,
    /// Where the logs are.
    pub dir: PathBuf,
    _kafka: Kafka,
    _postgres: TestPostgres,
}

/// The Kafka-protocol broker of a started deployment.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// tansu 0.6 with memory storage (rim-testkit): the test broker of rim's own tests. It
    /// sleeps through a fetch's whole wait even when it holds records, and its produce and fetch
    /// costs grow with the log.
    Tansu,
    /// librdkafka's mock cluster: answers a fetch at once when it holds records (as Kafka does);
    /// no CreateTopics, so the region topic is created by the mock itself. Shows what rim's own
    /// hops cost.
    ///
    /// A fetch that finds no records is answered empty after its whole `fetch.wait.max.ms`, even
    /// when records arrive meanwhile (`rd_kafka_mock_handle_Fetch` decides the answer when the
    /// request arrives and only delays it), where Kafka answers a waiting fetch as soon as records
    /// arrive. So a record produced while the job's fetch waits would wait out the rest of the
    /// wait and the next fetch's round trip: 0 to 10 ms with rim's `fetch.wait.max.ms=10`, which
    /// costs nothing on Kafka. The job of a mock cluster therefore runs with
    /// [`MOCK_FETCH_WAIT`] so the mock behaves like Kafka; rim's default is not changed for it.
    Mock,
}

/// The job's extra librdkafka property on the mock broker (see [`Broker::Mock`]): a 1 ms fetch
/// wait, so a record arriving during an empty fetch waits at most about a millisecond, as an
/// answer from Kafka would come.
pub const MOCK_FETCH_WAIT: &str = "fetch.wait.max.ms=1";

impl Broker {
    /// Extra `rim job` arguments this broker needs to behave like Kafka.
    fn job_args(self) -> Vec<String> {
        match self {
            Broker::Tansu => Vec::new(),
            Broker::Mock => vec![format!("--job-kafka-option={MOCK_FETCH_WAIT}")],
        }
    }
}

/// A running broker, stopped on drop.
enum Kafka {
    Tansu(TestKafka),
    /// The `rim-bench mock-kafka` child (it ends when its stdin closes) and its bootstrap list.
    Mock(Child, String),
}

impl Kafka {
    /// Starts `broker` with the region topic (for the mock, which cannot be asked to create it).
    async fn start(broker: Broker, topic: &str) -> anyhow::Result<Kafka> {
        Ok(match broker {
            Broker::Tansu => Kafka::Tansu(tokio::task::spawn_blocking(TestKafka::start).await?),
            Broker::Mock => {
                let mut child = Command::new(std::env::current_exe()?)
                    .args(["mock-kafka", "--topic", topic])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("starting rim-bench mock-kafka")?;
                let stdout = child.stdout.take().context("mock-kafka stdout")?;
                let line = tokio::task::spawn_blocking(move || {
                    let mut line = String::new();
                    BufReader::new(stdout).read_line(&mut line).map(|_| line)
                })
                .await??;
                let bootstrap = line.trim().to_owned();
                anyhow::ensure!(
                    !bootstrap.is_empty(),
                    "mock-kafka printed no bootstrap list"
                );
                Kafka::Mock(child, bootstrap)
            }
        })
    }

    fn bootstrap(&self) -> String {
        match self {
            Kafka::Tansu(tansu) => tansu.bootstrap(),
            Kafka::Mock(_, bootstrap) => bootstrap.clone(),
        }
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if let Kafka::Mock(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `rim-bench mock-kafka`: librdkafka's mock cluster (one broker) with these topics, until stdin
/// closes (the parent ended). Prints the bootstrap list as its first line.
pub fn serve_mock_kafka(topics: &[String], partitions: i32) -> anyhow::Result<()> {
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    for topic in topics {
        mock.create_topic(topic, partitions, 1)?;
    }
    println!("{}", mock.bootstrap_servers());
    // Returns at EOF (or an error): the parent is gone or done with the broker.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

/// The `rim` binary next to the running program (both built by `cargo build --release`).
pub fn default_rim() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("rim"))
}

impl Cluster {
    /// Starts PostgreSQL, the broker, control, job and `edges` edges; waits until control lists
    /// every edge as active, the job has its partitions and control has published a push.
    pub async fn start(rim: &Path, edges: usize, broker: Broker) -> anyhow::Result<Cluster> {
        anyhow::ensure!(
            rim.exists(),
            "{} not found: build it with `cargo build --release -p rim`",
            rim.display()
        );
        let _ = rustls::crypto::ring::default_provider().install_default();
        let postgres = tokio::task::spawn_blocking(TestPostgres::start).await?;
        let kafka = Kafka::start(
            broker,
            &format!("{}{REGION}", rim_bus::kafka::DEFAULT_TOPIC_PREFIX),
        )
        .await?;
        let dir = std::env::temp_dir().join(format!("rim-bench-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        eprintln!("cluster logs: {}", dir.display());
        let database_url = postgres.fresh_database();
        let port = free_port()?;
        let control_url = format!("http://127.0.0.1:{port}");
        let mut processes = vec![RimProcess::start(
            rim,
            &dir,
            "control",
            &[
                "control".into(),
                format!("--control-listen=127.0.0.1:{port}"),
                format!("--control-database-url={database_url}"),
                format!("--control-kafka-brokers={}", kafka.bootstrap()),
                format!("--control-admin-key={ADMIN_KEY}"),
            ],
        )?];
        let http = reqwest::Client::new();
        wait_for(Duration::from_secs(60), "control to answer", || async {
            http.get(format!("{control_url}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await?;
        let job_listen = free_port()?;
        let mut job_args = vec![
            "job".into(),
            format!("--job-region={REGION}"),
            format!("--job-database-url={database_url}"),
            format!("--job-kafka-brokers={}", kafka.bootstrap()),
            format!("--job-control-url={control_url}"),
            format!("--job-listen=127.0.0.1:{job_listen}"),
        ];
        job_args.extend(broker.job_args());
        processes.push(RimProcess::start(rim, &dir, "job", &job_args)?);
        let (mut edge_tcp, mut edge_ws) = (Vec::new(), Vec::new());
        for n in 1..=edges {
            let (tcp, ws, internal) = (free_port()?, free_port()?, free_port()?);
            processes.push(RimProcess::start(
                rim,
                &dir,
                &format!("edge-{n}"),
                &[
                    "edge".into(),
                    format!("--edge-node-id=bench-edge-{n}"),
                    format!("--edge-region={REGION}"),
                    format!("--edge-control-url={control_url}"),
                    format!("--edge-tcp-listen=127.0.0.1:{tcp}"),
                    format!("--edge-ws-listen=127.0.0.1:{ws}"),
                    format!("--edge-internal-listen=127.0.0.1:{internal}"),
                    format!("--edge-push-url=http://127.0.0.1:{internal}"),
                    "--edge-public-addresses=127.0.0.1".into(),
                    "--edge-auth=insecure".into(),
                    "--edge-max-conns-per-ip=0".into(),
                    "--edge-max-connections=0".into(),
                    "--edge-handshake-timeout-ms=60000".into(),
                    "--edge-node-heartbeat-ms=1000".into(),
                ],
            )?);
            edge_tcp.push(SocketAddr::from(([127, 0, 0, 1], tcp)));
            edge_ws.push(SocketAddr::from(([127, 0, 0, 1], ws)));
        }
        let cluster = Cluster {
            control_url,
            edge_tcp,
            edge_ws,
            processes,
            dir,
            _kafka: kafka,
            _postgres: postgres,
        };
        wait_for(
            Duration::from_secs(60),
            "every edge to be active",
            || async { cluster.active_edges(&http).await == edges },
        )
        .await?;
        // The job answers 200 once the group gave it the region's partitions: pushes sent before
        // would wait for the group join, which is not what a scenario measures.
        wait_for(
            Duration::from_secs(60),
            "the job to join its consumer group",
            || async {
                http.get(format!("http://127.0.0.1:{job_listen}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await?;
        // control's first pushes wait for its producer to get the topic's metadata and a producer
        // id (seconds on the mock broker: pushes answered 503 after the 3 s publish deadline), a
        // cold start, not what a scenario measures. A push to a room nobody joined goes the whole
        // way to the bus and reaches no client.
        let rest = crate::push::Rest::new(&cluster.control_url, Some(ADMIN_KEY.into()));
        wait_for(
            Duration::from_secs(60),
            "control to publish a push",
            || async {
                rest.room_named(1000, WARM_UP_ROOM, b"warm-up".to_vec())
                    .await
                    .is_ok()
            },
        )
        .await?;
        Ok(cluster)
    }

    /// (name, pid) of the edges.
    pub fn edges(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .filter(|p| p.name.starts_with("edge-"))
            .map(|p| (p.name.clone(), p.pid()))
            .collect()
    }

    /// (name, pid) of every rim process.
    pub fn all(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|p| (p.name.clone(), p.pid()))
            .collect()
    }

    async fn active_edges(&self, http: &reqwest::Client) -> usize {
        let Ok(response) = http
            .get(format!("{}/v1/nodes", self.control_url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
        else {
            return 0;
        };
        let Ok(text) = response.text().await else {
            return 0;
        };
        let Ok(nodes) = serde_json::from_str::<serde_json::Value>(&text) else {
            return 0;
        };
        nodes
            .get("nodes")
            .and_then(|n| n.as_array())
            .map_or(0, |list| {
                list.iter()
                    .filter(|node| node.get("state").and_then(|s| s.as_str()) == Some("active"))
                    .count()
            })
    }
}

/// Polls `ready` every 100 ms until it holds; fails after `patience`.
pub async fn wait_for<F, Fut>(patience: Duration, what: &str, ready: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !ready().await {
        if started.elapsed() > patience {
            bail!("gave up waiting for {what} after {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mock_broker_gives_the_job_a_short_fetch_wait() {
        let options: rim_bus::kafka::KafkaOptions =
            MOCK_FETCH_WAIT.parse().expect("a librdkafka property");
        assert_eq!(
            options.pairs(),
            [("fetch.wait.max.ms".to_owned(), "1".to_owned())]
        );
        assert_eq!(
            Broker::Mock.job_args(),
            [format!("--job-kafka-option={MOCK_FETCH_WAIT}")]
        );
        assert!(Broker::Tansu.job_args().is_empty());
    }
}
