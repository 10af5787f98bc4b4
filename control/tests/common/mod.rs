//! Shared test scaffolding: a control instance on a free port with a real store and bus, and an
//! HTTP client that speaks the edge and business APIs the way edges and backends do.
#![allow(dead_code)] // each test binary uses a different subset

use metrics_exporter_prometheus::PrometheusBuilder;
use prost::Message;
use rim_bus::BusProducer;
use rim_control::{ControlConfig, RunningControl};
use rim_proto::schema::session_event::Kind;
use rim_proto::schema::{
    NodeCredential, NodeEnrollment, NodeHeartbeat, NodeRegistration, RoomCount, SessionBatch,
    SessionEvent,
};
use rim_store::Store;
use rim_store::memory::MemoryStore;
use serde_json::Value;
use std::sync::Arc;

/// Cluster secret of every test instance.
pub const SECRET: &str = "test-cluster-secret";
/// Bootstrap admin key of every test instance.
pub const ADMIN_KEY: &str = "test-admin-key";

/// A running control plane and a client for it.
pub struct Harness {
    pub control: RunningControl,
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
}

/// A PostgreSQL store on a fresh database of the shared test cluster (rim-testkit).
pub async fn fresh_postgres() -> Arc<rim_store::postgres::PostgresStore> {
    let url = rim_testkit::postgres::TestPostgres::shared().fresh_database();
    Arc::new(
        rim_store::postgres::PostgresStore::connect(&url, rim_store::StoreSettings::default())
            .await
            .unwrap(),
    )
}

/// The configuration tests start from: free port, bootstrap admin key.
pub fn config() -> ControlConfig {
    ControlConfig {
        control_admin_key: Some(ADMIN_KEY.into()),
        ..ControlConfig::default()
    }
}

/// A fresh in-memory store.
pub fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new(rim_store::StoreSettings::default()))
}

/// Starts an instance with this configuration, store and bus.
pub async fn start(
    config: ControlConfig,
    store: Arc<dyn Store>,
    bus: Arc<dyn BusProducer>,
) -> Harness {
    let prometheus = PrometheusBuilder::new().build_recorder().handle();
    let control = rim_control::start(config, SECRET, store.clone(), bus, prometheus)
        .await
        .unwrap();
    let base = format!("http://{}", control.local_addr());
    Harness {
        control,
        base,
        http: reqwest::Client::new(),
        store,
    }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Enrolls a node with the cluster secret; answers its credential.
    pub async fn enroll(&self, role: &str, node_id: &str, region: &str) -> NodeCredential {
        let request = NodeEnrollment {
            role: role.into(),
            node_id: node_id.into(),
            region: region.into(),
        };
        let response = self
            .http
            .post(self.url("/edge/v1/enroll"))
            .bearer_auth(SECRET)
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "enrolling {node_id}");
        NodeCredential::decode(response.bytes().await.unwrap()).unwrap()
    }

    /// POSTs a protobuf message to the edge API with `token`.
    pub async fn edge_with(
        &self,
        token: &str,
        path: &str,
        message: &impl Message,
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/x-protobuf")
            .body(message.encode_to_vec())
            .send()
            .await
            .unwrap()
    }

    /// POSTs a protobuf message to the edge API as the node it names, with a token that node got
    /// by enrolling (in the registration's region, else any).
    pub async fn edge<M: Message + NodeBody>(&self, path: &str, message: &M) -> reqwest::Response {
        let credential = self
            .enroll(
                "edge",
                message.node_id(),
                message.region().unwrap_or("any-region"),
            )
            .await;
        self.edge_with(&credential.token, path, message).await
    }

    /// Registers a node as an edge would; asserts success.
    pub async fn register(&self, node_id: &str, region: &str) {
        let response = self
            .edge("/edge/v1/register", &registration(node_id, region))
            .await;
        assert_eq!(response.status(), 204, "{}", response.text().await.unwrap());
    }

    /// Sends a session batch; answers the status and the JSON body (if any).
    pub async fn sessions(&self, node_id: &str, events: Vec<SessionEvent>) -> (u16, Value) {
        let batch = SessionBatch {
            node_id: node_id.into(),
            events,
        };
        let response = self.edge("/edge/v1/sessions", &batch).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sends a heartbeat with room counts.
    pub async fn heartbeat(&self, node_id: &str, connections: u64, rooms: &[(&str, u64)]) -> u16 {
        let report = NodeHeartbeat {
            node_id: node_id.into(),
            connection_count: connections,
            ip_count: connections,
            rooms: rooms
                .iter()
                .map(|(room, count)| RoomCount {
                    room: (*room).into(),
                    count: *count,
                })
                .collect(),
            ..NodeHeartbeat::default()
        };
        self.edge("/edge/v1/heartbeat", &report)
            .await
            .status()
            .as_u16()
    }

    /// A request with an API key as bearer token.
    pub fn with_key(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(key)
    }

    /// Sends a request, answering status and JSON body (Null if not JSON).
    pub async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Creates an API key with these scopes through the admin API; answers its secret.
    pub async fn create_key(&self, name: &str, scopes: &[&str]) -> String {
        let (status, body) = Self::call(
            self.with_key(reqwest::Method::POST, "/v1/admin/api-keys", ADMIN_KEY)
                .json(&serde_json::json!({"name": name, "scopes": scopes})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["secret"].as_str().unwrap().to_owned()
    }
}

/// An edge API body, naming the node it is about.
pub trait NodeBody {
    /// The node the body is about.
    fn node_id(&self) -> &str;
    /// The region, for bodies that carry one.
    fn region(&self) -> Option<&str> {
        None
    }
}

impl NodeBody for NodeRegistration {
    fn node_id(&self) -> &str {
        &self.node_id
    }
    fn region(&self) -> Option<&str> {
        Some(&self.region)
    }
}

impl NodeBody for NodeHeartbeat {
    fn node_id(&self) -> &str {
        &self.node_id
    }
}

impl NodeBody for SessionBatch {
    fn node_id(&self) -> &str {
        &self.node_id
    }
}

impl NodeBody for rim_proto::schema::AuthRequest {
    fn node_id(&self) -> &str {
        &self.node_id
    }
}

/// A registration of a node in a region, near Shanghai.
pub fn registration(node_id: &str, region: &str) -> NodeRegistration {
    NodeRegistration {
        node_id: node_id.into(),
        region: region.into(),
        latitude: 31.23,
        longitude: 121.47,
        hostname: format!("{node_id}.example.com"),
        addresses: vec!["10.0.0.1".into()],
        tcp_port: 3101,
        ws_port: 3102,
        wss_port: 3103,
        push_url: "http://10.0.0.1:3109".into(),
        weight: 10,
        boot_id: "boot-1".into(),
    }
}

/// A connect event.
pub fn connect(key: &str, mid: i64, connection_id: u64, at: i64, room: &str) -> SessionEvent {
    SessionEvent {
        kind: Kind::Connect as i32,
        key: key.into(),
        mid,
        room: room.into(),
        platform: "android".into(),
        accepts: vec![1000],
        connection_id,
        at_unix_ms: at,
        ip: "192.0.2.1".into(),
    }
}

/// A disconnect event.
pub fn disconnect(key: &str, mid: i64, connection_id: u64, at: i64) -> SessionEvent {
    SessionEvent {
        kind: Kind::Disconnect as i32,
        ..connect(key, mid, connection_id, at, "")
    }
}

/// Now, in the store's unit.
pub fn now() -> i64 {
    rim_control::now_ms()
}
