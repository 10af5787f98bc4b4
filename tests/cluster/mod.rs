//! A whole rim deployment on this machine, for end-to-end and chaos tests.
//!
//! [`Cluster`] starts the real components as the README's production section runs them: a throwaway
//! PostgreSQL cluster and a Kafka-protocol broker (rim-testkit), then `rim control`, one `rim job`
//! per region and `rim edge` processes, each the real `rim` binary in its own process on free
//! loopback ports, so a test can SIGKILL, stop and restart any of them. Clients are rim-client
//! sessions authenticating with signed JWTs (HS256), and [`Recorder`] counts at the client what
//! arrived. Every process logs to a file in the cluster's directory; [`Cluster::logs`] prints their
//! tails when a test fails.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod process;
pub mod pusher;
pub mod recorder;
pub mod rim_wire;

use process::Process;
use recorder::Recorder;
use rim_testkit::kafka::TestKafka;
use rim_testkit::ports::free_port;
use rim_testkit::postgres::TestPostgres;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Shared secret of the test deployment's processes.
pub const CLUSTER_SECRET: &str = "cluster-secret-for-end-to-end-tests";
/// Admin API key of `rim control` (pushes, reads, admin).
pub const ADMIN_KEY: &str = "admin-key-for-end-to-end-tests";
/// HS256 secret the edges verify client tokens with.
pub const JWT_SECRET: &str = "jwt-secret-for-end-to-end-tests-with-enough-entropy";
/// Business operation of the pushes tests send.
pub const OPERATION: i32 = 1000;
/// How long any "eventually" of a test may take before it fails: generous for a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One `rim edge` of the cluster.
pub struct Edge {
    /// Its node id.
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// `127.0.0.1:port` of its goim TCP listener.
    pub tcp: String,
    /// The process.
    pub process: Process,
}

/// The running deployment.
pub struct Cluster {
    /// The PostgreSQL cluster.
    pub postgres: TestPostgres,
    /// The broker.
    pub kafka: TestKafka,
    /// Where logs and key files live.
    pub dir: tempfile::TempDir,
    database_url: String,
    /// `http://127.0.0.1:port` of `rim control`.
    pub control_url: String,
    /// The control-plane process.
    pub control: Process,
    /// `rim job` per region.
    pub jobs: BTreeMap<String, Process>,
    /// The edges, in start order.
    pub edges: Vec<Edge>,
    http: reqwest::Client,
}

impl Cluster {
    /// The layout most tests use: region `east` with edges `east-1` and `east-2`, region `west`
    /// with `west-1`.
    pub async fn two_regions() -> Cluster {
        Cluster::start(
            &["east", "west"],
            &[("east-1", "east"), ("east-2", "east"), ("west-1", "west")],
        )
        .await
    }

    /// Starts PostgreSQL, the broker, `rim control`, and one `rim job` per region of `regions`;
    /// then the `edges` (node id, region), waiting until control lists every edge as active.
    pub async fn start(regions: &[&str], edges: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(regions, edges, &[]).await
    }

    /// [`Cluster::start`] with extra flags for `rim control` (`--control-inbox-max-per-user=10`).
    pub async fn start_with(
        regions: &[&str],
        edges: &[(&str, &str)],
        control_flags: &[&str],
    ) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let postgres = TestPostgres::start();
        let kafka = TestKafka::start();
        // Under the target directory and kept afterwards, so a failed run's logs can be read.
        let dir = tempfile::Builder::new()
            .prefix("rim-cluster-")
            .disable_cleanup(true)
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("cluster directory");
        println!("cluster files and logs: {}", dir.path().display());
        std::fs::write(dir.path().join("jwt.key"), JWT_SECRET).expect("jwt key file");
        let database_url = postgres.fresh_database();
        let port = free_port().expect("free port");
        let control_url = format!("http://127.0.0.1:{port}");
        let mut control_args = vec![
            "control".into(),
            format!("--control-listen=127.0.0.1:{port}"),
            format!("--control-database-url={database_url}"),
            format!("--control-kafka-brokers={}", kafka.bootstrap()),
            format!("--control-admin-key={ADMIN_KEY}"),
        ];
        control_args.extend(control_flags.iter().map(|flag| (*flag).to_owned()));
        let control = Process::start(dir.path(), "control", control_args);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let mut cluster = Cluster {
            postgres,
            kafka,
            dir,
            database_url,
            control_url,
            control,
            jobs: BTreeMap::new(),
            edges: Vec::new(),
            http,
        };
        cluster.wait_for_control().await;
        for region in regions {
            cluster.start_job(region);
        }
        for (node_id, region) in edges {
            cluster.start_edge(node_id, region);
        }
        for (node_id, _) in edges {
            cluster.wait_for_node(node_id, "active").await;
        }
        cluster
    }

    /// Starts `rim job` for `region` (or starts it again after a kill or stop).
    pub fn start_job(&mut self, region: &str) {
        let args = vec![
            "job".into(),
            format!("--job-region={region}"),
            format!("--job-database-url={}", self.database_url),
            format!("--job-kafka-brokers={}", self.kafka.bootstrap()),
            format!("--job-control-url={}", self.control_url),
            format!("--job-listen=127.0.0.1:{}", free_port().expect("free port")),
        ];
        match self.jobs.get_mut(region) {
            Some(job) => job.restart(),
            None => {
                let job = Process::start(self.dir.path(), &format!("job-{region}"), args);
                self.jobs.insert(region.to_owned(), job);
            }
        }
    }

    /// Starts an edge `node_id` in `region` on free ports.
    pub fn start_edge(&mut self, node_id: &str, region: &str) {
        let port = || free_port().expect("free port");
        let (tcp, ws, internal) = (port(), port(), port());
        let key = self.dir.path().join("jwt.key");
        let process = Process::start(
            self.dir.path(),
            &format!("edge-{node_id}"),
            vec![
                "edge".into(),
                format!("--edge-node-id={node_id}"),
                format!("--edge-region={region}"),
                format!("--edge-control-url={}", self.control_url),
                format!("--edge-tcp-listen=127.0.0.1:{tcp}"),
                format!("--edge-ws-listen=127.0.0.1:{ws}"),
                format!("--edge-wss-listen=127.0.0.1:{}", port()),
                format!("--edge-tls-listen=127.0.0.1:{}", port()),
                format!("--edge-internal-listen=127.0.0.1:{internal}"),
                format!("--edge-push-url=http://127.0.0.1:{internal}"),
                "--edge-public-addresses=127.0.0.1".into(),
                format!("--edge-jwt-keys={}", key.display()),
                // Short node heartbeats so liveness changes show within a test's patience.
                "--edge-node-heartbeat-ms=1000".into(),
            ],
        );
        self.edges.push(Edge {
            node_id: node_id.to_owned(),
            region: region.to_owned(),
            tcp: format!("127.0.0.1:{tcp}"),
            process,
        });
    }

    /// The edge named `node_id`.
    pub fn edge(&mut self, node_id: &str) -> &mut Edge {
        self.edges
            .iter_mut()
            .find(|edge| edge.node_id == node_id)
            .unwrap_or_else(|| panic!("no edge {node_id}"))
    }

    /// The TCP address of edge `node_id`.
    pub fn tcp_of(&self, node_id: &str) -> String {
        self.edges
            .iter()
            .find(|edge| edge.node_id == node_id)
            .map(|edge| edge.tcp.clone())
            .unwrap_or_else(|| panic!("no edge {node_id}"))
    }

    /// A signed client token for user `mid` with connection key `key`, joining `room` (may be "").
    pub fn token(mid: i64, key: &str, room: &str) -> Vec<u8> {
        let exp = jsonwebtoken::get_current_timestamp() + 3600;
        let claims =
            json!({"mid": mid, "key": key, "room_id": room, "accepts": [OPERATION], "exp": exp});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .expect("signing a token");
        json!({"platform": "linux", "token": token})
            .to_string()
            .into_bytes()
    }

    /// A client of user `mid` with key `key` in `room`, connected to `addresses` (reconnecting
    /// through them in turn), once it is authenticated and its session is known to control.
    pub async fn client(&self, mid: i64, key: &str, room: &str, addresses: &[String]) -> Recorder {
        let recorder = Recorder::start(addresses.to_vec(), Cluster::token(mid, key, room));
        recorder.wait_connected(1).await;
        recorder
    }

    /// Sends `body` as JSON to `path` of the `/v1` API with the admin key; the status and answer.
    pub async fn v1(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.control_url))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST {path}: {err}"));
        let status = response.status().as_u16();
        let answer = response.json().await.unwrap_or(Value::Null);
        (status, answer)
    }

    /// A goim-route push (`/goim/push/...?query`) with `body`; the status and answer.
    pub async fn goim(&self, path_and_query: &str, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path_and_query}", self.control_url))
            .bearer_auth(ADMIN_KEY)
            .body(body.to_owned())
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST {path_and_query}: {err}"));
        let status = response.status().as_u16();
        let answer = response.json().await.unwrap_or(Value::Null);
        (status, answer)
    }

    /// `GET` of a control path with the admin key, as JSON.
    pub async fn get(&self, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.control_url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Waits until control answers its health check.
    pub async fn wait_for_control(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.get("/v1/nodes").await.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "control did not come up:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The state control lists for node `node_id` (`active`, `draining`, `dead`), if listed.
    pub async fn node_state(&self, node_id: &str) -> Option<String> {
        let nodes = self.get("/v1/nodes").await?;
        let list = nodes.get("nodes").and_then(Value::as_array)?.clone();
        list.iter()
            .find(|node| node.get("id").and_then(Value::as_str) == Some(node_id))
            .and_then(|node| node.get("state").and_then(Value::as_str))
            .map(str::to_owned)
    }

    /// Waits until control lists `node_id` in `state`.
    pub async fn wait_for_node(&self, node_id: &str, state: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if self.node_state(node_id).await.as_deref() == Some(state) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {node_id} never became {state} (is {:?}):\n{}",
                self.node_state(node_id).await,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The tail of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = self.control.log_tail();
        for job in self.jobs.values() {
            out.push_str(&job.log_tail());
        }
        for edge in &self.edges {
            out.push_str(&edge.process.log_tail());
        }
        out
    }
}
