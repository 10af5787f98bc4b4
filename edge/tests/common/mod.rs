//! Shared test helpers: start an edge on loopback port 0, goim clients over every transport, tokens,
//! pushes through the internal endpoint, and the "everyone else is fine" check that follows bad input.
#![allow(dead_code)] // each test binary uses a different subset

pub mod client;
pub mod tokens;

use std::time::Duration;

use prost::Message;
use rim_edge::config::AuthMode;
use rim_edge::{Edge, EdgeConfig, EdgeHandle, EdgeHooks};
use rim_proto::schema::{
    BroadcastTarget, EdgeKeys, EdgePush, EdgePushRequest, EdgePushResponse, edge_push::Target,
};

pub use client::Client;

/// The cluster secret of test edges.
pub const SECRET: &str = "test-cluster-secret";
/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// The two client transports every protocol test runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ws,
}

/// Defines `mod $name { tcp, ws }`: the async fn `$name(kind: Kind)` run once per transport.
#[macro_export]
macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn tcp() {
                super::$name($crate::common::Kind::Tcp).await
            }
            #[tokio::test]
            async fn ws() {
                super::$name($crate::common::Kind::Ws).await
            }
        }
    )*};
}

/// A running edge plus what the test needs to talk to it.
pub struct TestEdge {
    pub handle: EdgeHandle,
    /// Holds the JWT key files (and TLS files) for the edge's lifetime.
    pub dir: tempfile::TempDir,
}

impl TestEdge {
    pub fn tcp(&self) -> std::net::SocketAddr {
        self.handle.addrs().tcp
    }

    pub fn ws(&self) -> std::net::SocketAddr {
        self.handle.addrs().ws
    }

    pub fn internal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.handle.addrs().internal)
    }

    /// Posts pushes with the cluster secret and returns the delivered counts.
    pub async fn push(&self, pushes: Vec<EdgePush>) -> Vec<u32> {
        let response = self
            .post_push(Some(SECRET), EdgePushRequest { pushes }.encode_to_vec())
            .await;
        assert_eq!(response.status(), 200);
        EdgePushResponse::decode(response.bytes().await.unwrap())
            .unwrap()
            .delivered
    }

    /// Posts a raw body to /internal/push with an optional bearer secret.
    pub async fn post_push(&self, secret: Option<&str>, body: Vec<u8>) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(self.internal_url("/internal/push"))
            .body(body);
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        request.send().await.unwrap()
    }

    /// A new, unauthenticated client over `kind`.
    pub async fn connect(&self, kind: Kind) -> Client {
        match kind {
            Kind::Tcp => Client::tcp(self.tcp()).await,
            Kind::Ws => Client::ws(self.ws(), "/sub").await,
        }
    }

    /// A new client over `kind`, authenticated with a valid token for `key`.
    pub async fn client(&self, kind: Kind, key: &str, room: &str, accepts: &[i32]) -> Client {
        let mut client = self.connect(kind).await;
        client.auth_ok(&tokens::body_for(key, room, accepts)).await;
        client
    }

    /// Proves the edge is unharmed: every client in `others` still answers a heartbeat, and new TCP and
    /// WebSocket connections authenticate and answer heartbeats.
    /// The fresh connections are closed again before this returns.
    pub async fn assert_unaffected(&self, others: &mut [&mut Client]) {
        let before = self.handle.connection_count();
        for other in others.iter_mut() {
            other.heartbeat().await;
        }
        let fresh = format!("fresh-{}", uuid::Uuid::now_v7().simple());
        for kind in [Kind::Tcp, Kind::Ws] {
            let key = format!("{fresh}-{kind:?}");
            self.client(kind, &key, "", &[]).await.heartbeat().await;
        }
        self.wait_connections(before).await;
    }

    /// Waits until the edge counts `n` authenticated connections.
    pub async fn wait_connections(&self, n: usize) {
        wait_until(|| self.handle.connection_count() == n).await;
    }
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`].
pub async fn wait_until(mut condition: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the async `condition` until it holds, failing the test after [`PATIENCE`].
pub async fn wait_until_async<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts an edge with JWT auth (HS256 and RS256 test keys) after letting `tweak` adjust the config.
pub async fn start(tweak: impl FnOnce(&mut EdgeConfig)) -> TestEdge {
    start_with(AuthMode::Jwt, EdgeHooks::default(), tweak).await
}

/// Starts an edge with the given auth mode and hooks.
pub async fn start_with(
    mode: AuthMode,
    hooks: EdgeHooks,
    tweak: impl FnOnce(&mut EdgeConfig),
) -> TestEdge {
    // In a workspace build reqwest is compiled without a bundled TLS provider (other crates select
    // `rustls-no-provider`), so the test process installs ring, as the `rim` binary does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = EdgeConfig::local().unwrap();
    config.edge_auth = mode;
    config.edge_jwt_keys = tokens::write_key_files(dir.path());
    config.edge_jwt_issuer = tokens::ISSUER.into();
    config.edge_shutdown_timeout_ms = 3_000;
    tweak(&mut config);
    let verifier = rim_edge::auth::from_config(&config).unwrap();
    let handle = Edge::start(config, SECRET.into(), verifier, hooks)
        .await
        .unwrap();
    TestEdge { handle, dir }
}

pub fn key_push(id: &str, op: i32, body: &[u8], keys: &[&str]) -> EdgePush {
    EdgePush {
        message_id: id.into(),
        operation: op,
        body: body.to_vec().into(),
        record: 0,
        position: None,
        receipt_target: String::new(),
        target: Some(Target::Keys(EdgeKeys {
            keys: keys.iter().map(|k| k.to_string()).collect(),
        })),
    }
}

pub fn room_push(id: &str, op: i32, body: &[u8], room: &str) -> EdgePush {
    EdgePush {
        message_id: id.into(),
        operation: op,
        body: body.to_vec().into(),
        record: 0,
        position: None,
        receipt_target: String::new(),
        target: Some(Target::Room(room.into())),
    }
}

pub fn broadcast_push(id: &str, op: i32, body: &[u8], speed: i32) -> EdgePush {
    EdgePush {
        message_id: id.into(),
        operation: op,
        body: body.to_vec().into(),
        record: 0,
        position: None,
        receipt_target: String::new(),
        target: Some(Target::Broadcast(BroadcastTarget { speed })),
    }
}

/// Parses a hex string with optional spaces into bytes.
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
