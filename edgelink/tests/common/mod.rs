//! Shared test scaffolding: the real control plane (memory store and bus), an edge with the session
//! reporter, a job worker, a goim TCP client and a business push client, all on loopback port 0.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use metrics_exporter_prometheus::PrometheusBuilder;
use rim_bus::memory::MemoryBus;
use rim_control::{ControlConfig, RunningControl};
use rim_edge::auth::Verifier;
use rim_edge::config::AuthMode;
use rim_edge::{Edge, EdgeConfig, EdgeHandle, EdgeHooks};
use rim_edgelink::{CredentialSettings, LinkConfig, NodeCredentials, SessionReporter};
use rim_job::{JobConfig, StoreDirectory};
use rim_proto::node_token::NodeRole;
use rim_proto::{Packet, op};
use rim_store::memory::MemoryStore;
use rim_store::{Session, Store, StoreSettings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The cluster secret of every test component.
pub const SECRET: &str = "edgelink-test-secret";
/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// The region of the test edge and job worker.
pub const REGION: &str = "local";

/// A fresh in-memory store.
pub fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new(StoreSettings::default()))
}

/// A free loopback address nobody listens on (yet); below the ephemeral range, so no client
/// connection of a parallel test takes it before a test's server binds it (see rim-testkit).
pub fn unused_addr() -> SocketAddr {
    let port = rim_testkit::ports::free_port().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts control on `addr` with open goim routes, fast caches and an optional auth webhook.
pub async fn start_control(
    addr: SocketAddr,
    store: Arc<dyn Store>,
    bus: Arc<MemoryBus>,
    auth_webhook_url: Option<String>,
) -> RunningControl {
    let config = ControlConfig {
        control_listen: addr,
        control_auth_webhook_url: auth_webhook_url,
        ..control_config()
    };
    start_control_with(config, store, bus).await
}

/// The control settings of the tests: open goim routes, fast caches, a free loopback port.
pub fn control_config() -> ControlConfig {
    ControlConfig {
        goim_routes_open: true,
        control_node_cache_ms: 20,
        ..ControlConfig::default()
    }
}

/// Starts control with `config`.
pub async fn start_control_with(
    config: ControlConfig,
    store: Arc<dyn Store>,
    bus: Arc<MemoryBus>,
) -> RunningControl {
    let prometheus = PrometheusBuilder::new().build_recorder().handle();
    rim_control::start(config, SECRET, store, bus, prometheus)
        .await
        .unwrap()
}

/// Link settings for a test: node `node_id`, control at `control`, short periods and retries.
pub fn link_config(control: SocketAddr, node_id: &str) -> LinkConfig {
    LinkConfig {
        edge_control_url: format!("http://{control}"),
        edge_node_id: Some(node_id.into()),
        edge_region: REGION.into(),
        edge_node_heartbeat_ms: 100,
        edge_link_retry_initial_ms: 20,
        edge_link_retry_max_ms: 200,
        edge_control_timeout_ms: 2_000,
        ..LinkConfig::local().unwrap()
    }
}

/// An enrolling (in the background) credential of `role` for `node_id` in [`REGION`], at the
/// control plane of `settings`.
pub fn credentials(
    role: NodeRole,
    node_id: &str,
    settings: &CredentialSettings,
) -> Arc<NodeCredentials> {
    let credentials = NodeCredentials::new(role, node_id, REGION, SECRET, settings).unwrap();
    credentials.spawn(tokio_util::sync::CancellationToken::new());
    credentials
}

/// The edge credential of the node `link` configures.
pub fn edge_credentials(link: &LinkConfig) -> Arc<NodeCredentials> {
    let node_id = link.node_id();
    credentials(NodeRole::Edge, &node_id, &link.credential_settings())
}

/// A running edge whose sessions a reporter sends to control.
pub struct TestEdge {
    pub handle: EdgeHandle,
    pub reporter: Arc<SessionReporter>,
    /// Its node credential: what it reports with, and who may push to it.
    pub credentials: Arc<NodeCredentials>,
}

impl TestEdge {
    /// Starts an edge on loopback with `verifier` (insecure goim JSON when `None`) and a started
    /// reporter configured by `link`.
    pub async fn start(link: LinkConfig, verifier: Option<Arc<dyn Verifier>>) -> Self {
        Self::start_with(link, verifier, |_| {}).await
    }

    /// [`TestEdge::start`] after letting `tweak` adjust the edge's config.
    pub async fn start_with(
        link: LinkConfig,
        verifier: Option<Arc<dyn Verifier>>,
        tweak: impl FnOnce(&mut EdgeConfig),
    ) -> Self {
        let mut config = EdgeConfig::local().unwrap();
        config.edge_auth = AuthMode::Insecure;
        tweak(&mut config);
        let verifier = match verifier {
            Some(verifier) => verifier,
            None => rim_edge::auth::from_config(&config).unwrap(),
        };
        let credentials = edge_credentials(&link);
        let reporter = SessionReporter::new(link);
        let hooks = EdgeHooks {
            events: reporter.clone(),
            push_authority: Some(credentials.clone()),
            ..EdgeHooks::default()
        };
        let handle = Edge::start(config, SECRET.into(), verifier, hooks)
            .await
            .unwrap();
        reporter.start(&credentials, handle.addrs()).unwrap();
        Self {
            handle,
            reporter,
            credentials,
        }
    }

    /// Goim client connected to this edge's TCP listener.
    pub async fn client(&self) -> GoimClient {
        GoimClient::connect(self.handle.addrs().tcp).await
    }

    /// Shuts the edge down the way the binary does: drain, close clients, flush the reporter.
    pub async fn shutdown(self) -> bool {
        self.reporter.drain().await;
        self.handle.shutdown().await;
        self.reporter.shutdown(PATIENCE).await
    }
}

/// A running job worker of [`REGION`] on the memory bus.
pub struct TestJob {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl TestJob {
    /// Starts a worker consuming `bus`, finding edges in `store`, pushing with the job token it
    /// enrolls for at `control`.
    pub fn start(control: SocketAddr, store: Arc<dyn Store>, bus: &MemoryBus) -> Self {
        Self::start_with(control, store, bus, |_| {})
    }

    /// [`TestJob::start`] after letting `tweak` adjust the worker's config.
    pub fn start_with(
        control: SocketAddr,
        store: Arc<dyn Store>,
        bus: &MemoryBus,
        tweak: impl FnOnce(&mut JobConfig),
    ) -> Self {
        let mut config = JobConfig {
            job_region: REGION.into(),
            job_directory_cache_ms: 20,
            job_retry_initial_ms: 20,
            job_retry_max_ms: 200,
            ..JobConfig::default()
        };
        tweak(&mut config);
        let consumer = bus.consumer(REGION, &config.group_id());
        let directory = Arc::new(StoreDirectory::new(store, config.directory_cache()));
        let settings = link_config(control, "unused").credential_settings();
        let credentials = credentials(NodeRole::Job, &config.node_id(), &settings);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            rim_job::run(&config, credentials.token(), consumer, directory, shutdown)
                .await
                .unwrap();
        });
        Self { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// Control, edge and job worker over one memory store and bus.
pub struct Cluster {
    pub store: Arc<dyn Store>,
    pub bus: Arc<MemoryBus>,
    pub control: RunningControl,
    pub edge: TestEdge,
    pub job: TestJob,
    pub business: Business,
}

impl Cluster {
    /// Starts control, then the edge (node `node_id`) reporting to it, then the job worker.
    pub async fn start(node_id: &str) -> Self {
        Self::start_with(link_config, node_id, memory_store()).await
    }

    /// [`Cluster::start`] on `store`, with the link settings `link(control address, node_id)`.
    pub async fn start_with(
        link: impl FnOnce(SocketAddr, &str) -> LinkConfig,
        node_id: &str,
        store: Arc<dyn Store>,
    ) -> Self {
        let bus = Arc::new(MemoryBus::new(1_000));
        let control = start_control(unused_addr(), store.clone(), bus.clone(), None).await;
        let edge = TestEdge::start(link(control.local_addr(), node_id), None).await;
        let job = TestJob::start(control.local_addr(), store.clone(), &bus);
        let business = Business::new(control.local_addr());
        Self {
            store,
            bus,
            control,
            edge,
            job,
            business,
        }
    }

    pub async fn stop(self) {
        assert!(self.edge.shutdown().await, "reporter did not flush");
        self.job.stop().await;
        self.control.shutdown().await.unwrap();
    }
}

/// The business backend's side of control: goim push routes.
pub struct Business {
    base: String,
    http: reqwest::Client,
}

impl Business {
    pub fn new(control: SocketAddr) -> Self {
        Self {
            base: format!("http://{control}"),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /goim/push/<route>?<query>` with `body`; asserts goim success and returns `data`.
    pub async fn push(&self, route: &str, query: &str, body: &[u8]) -> Value {
        let response = self
            .http
            .post(format!("{}/goim/push/{route}?{query}", self.base))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], 0, "{answer}");
        answer["data"].clone()
    }
}

/// A goim v2 client over TCP.
pub struct GoimClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl GoimClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// Sends op 7 with `body`; returns the op-8 reply.
    pub async fn auth(&mut self, body: &[u8]) -> Packet {
        let packet = Packet::new(1, op::AUTH, 1, body.to_vec());
        self.stream.write_all(&packet.to_bytes()).await.unwrap();
        let reply = self.recv().await;
        assert_eq!(reply.op, op::AUTH_REPLY);
        reply
    }

    /// Authenticates with goim's JSON body (the insecure verifier trusts it); asserts success.
    pub async fn login(&mut self, mid: i64, key: &str, room: &str) {
        let body =
            json!({"mid": mid, "key": key, "room_id": room, "platform": "web", "accepts": [1000]});
        let reply = self.auth(body.to_string().as_bytes()).await;
        assert!(reply.body.is_empty(), "auth refused: {:?}", reply.body);
    }

    /// Sends a packet with `op` and `body`.
    pub async fn send(&mut self, op_code: i32, body: &[u8]) {
        let packet = Packet::new(1, op_code, 2, body.to_vec());
        self.stream.write_all(&packet.to_bytes()).await.unwrap();
    }

    /// The next packet.
    pub async fn recv(&mut self) -> Packet {
        loop {
            if let Some(packet) = rim_proto::stream::decode(&mut self.buf, usize::MAX).unwrap() {
                return packet;
            }
            let read = tokio::time::timeout(PATIENCE, self.stream.read_buf(&mut self.buf))
                .await
                .expect("no packet in time")
                .unwrap();
            assert!(read > 0, "connection ended");
        }
    }

    /// Waits until the edge closes the connection.
    pub async fn closed(&mut self) {
        loop {
            let read = tokio::time::timeout(PATIENCE, self.stream.read_buf(&mut self.buf))
                .await
                .expect("connection not closed in time");
            if matches!(read, Ok(0) | Err(_)) {
                return;
            }
        }
    }
}

/// Polls `check` until it returns `Some`, failing after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The live session of `key` in the store, if any.
pub async fn session(store: &Arc<dyn Store>, key: &str) -> Option<Session> {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    store
        .sessions_by_keys(&[key.to_owned()], now)
        .await
        .unwrap()
        .pop()
}

/// Waits until the store holds a session for `key`, and returns it.
pub async fn session_appears(store: &Arc<dyn Store>, key: &str) -> Session {
    eventually(&format!("a session for {key}"), || session(store, key)).await
}

/// Waits until the store holds no session for `key`.
pub async fn session_disappears(store: &Arc<dyn Store>, key: &str) {
    eventually(&format!("no session for {key}"), || async {
        session(store, key).await.is_none().then_some(())
    })
    .await
}
