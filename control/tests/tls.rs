//! The control plane's listener over TLS (`control_tls_cert` / `control_tls_key`), on real sockets
//! with a test CA: nodes enroll and heartbeat over HTTPS (h2 by ALPN, and HTTP/1.1), the edge's
//! own control client does with its CA file (`edge_control_ca_file`), the business API answers
//! there too, while plain HTTP to the port, a client that does not trust the CA, and a
//! half-configured listener all fail.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rim_bus::memory::MemoryBus;
use rim_edgelink::{CallError, ControlClient};
use rim_proto::schema::{NodeEnrollment, NodeHeartbeat};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A CA's certificate (PEM), and a certificate for `localhost` signed by it, written as files.
struct TestPki {
    ca_pem: String,
    ca_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

fn test_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn test_pki() -> TestPki {
    let ca = test_ca();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (
        dir.path().join("control.pem"),
        dir.path().join("control.key"),
    );
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        ca_file,
        cert,
        key,
        _dir: dir,
    }
}

/// A client trusting only the CA `ca_pem`.
fn client_trusting(ca_pem: &str, http1_only: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let builder = reqwest::Client::builder().tls_certs_only([ca]);
    let builder = if http1_only {
        builder.http1_only()
    } else {
        builder
    };
    builder.build().unwrap()
}

/// A control instance serving HTTPS with `pki`, and a harness whose client trusts its CA.
async fn tls_harness(pki: &TestPki, http1_only: bool) -> Harness {
    let config = rim_control::ControlConfig {
        control_tls_cert: Some(pki.cert.clone()),
        control_tls_key: Some(pki.key.clone()),
        ..config()
    };
    let plain = start(config, memory_store(), Arc::new(MemoryBus::new(100))).await;
    let port = plain.control.local_addr().port();
    Harness {
        base: format!("https://localhost:{port}"),
        http: client_trusting(&pki.ca_pem, http1_only),
        ..plain
    }
}

/// Enrollment, registration, a heartbeat and a business call, answered over `h`'s connection in
/// `version`.
async fn node_lifecycle_over(h: &Harness, version: reqwest::Version) {
    let credential = h.enroll("edge", "edge-tls", "sh").await;
    assert!(!credential.token.is_empty());
    h.register("edge-tls", "sh").await;
    assert_eq!(h.heartbeat("edge-tls", 3, &[("live", 3)]).await, 204);
    let nodes = h.store.nodes().await.unwrap();
    let node = nodes.iter().find(|n| n.id == "edge-tls").unwrap();
    assert_eq!(node.connection_count, 3);

    let health = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.version(), version);
    assert_eq!(health.status(), 200);
    // The business API shares the port: creating a key is an admin call.
    assert!(!h.create_key("tls-team", &["push"]).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_enroll_and_heartbeat_over_https_with_h2_by_alpn() {
    let pki = test_pki();
    let h = tls_harness(&pki, false).await;
    node_lifecycle_over(&h, reqwest::Version::HTTP_2).await;
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_only_client_is_served_over_https_too() {
    let pki = test_pki();
    let h = tls_harness(&pki, true).await;
    node_lifecycle_over(&h, reqwest::Version::HTTP_11).await;
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edges_own_client_enrolls_and_heartbeats_with_its_ca_file() {
    let pki = test_pki();
    let h = tls_harness(&pki, false).await;
    let timeout = Duration::from_secs(5);
    // What an edge builds from `edge_control_url` = https://... and `edge_control_ca_file`.
    let enrolling = ControlClient::new(&h.base, SECRET, timeout, Some(&pki.ca_file)).unwrap();
    let credential = enrolling
        .enroll(&NodeEnrollment {
            role: "edge".into(),
            node_id: "edge-link".into(),
            region: "sh".into(),
        })
        .await
        .unwrap();
    let node = ControlClient::new(&h.base, &credential.token, timeout, Some(&pki.ca_file)).unwrap();
    node.register(&registration("edge-link", "sh"))
        .await
        .unwrap();
    let report = NodeHeartbeat {
        node_id: "edge-link".into(),
        connection_count: 7,
        ..NodeHeartbeat::default()
    };
    node.heartbeat(&report).await.unwrap();
    let nodes = h.store.nodes().await.unwrap();
    let stored = nodes.iter().find(|n| n.id == "edge-link").unwrap();
    assert_eq!(stored.connection_count, 7);

    // Without the CA file the same client is refused by its own TLS check.
    let untrusting = ControlClient::new(&h.base, SECRET, timeout, None).unwrap();
    let refused = untrusting.keys().await;
    assert!(
        matches!(refused, Err(CallError::Unavailable(_))),
        "{refused:?}"
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_fails() {
    let pki = test_pki();
    let h = tls_harness(&pki, false).await;
    let port = h.control.local_addr().port();
    let plain = reqwest::Client::new()
        .get(format!("http://localhost:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // The listener is still serving TLS afterwards.
    let health = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_trusting_the_ca_fails() {
    let pki = test_pki();
    let h = tls_harness(&pki, false).await;
    let stranger = client_trusting(&test_ca().pem(), false);
    let refused = stranger.get(h.url("/healthz")).send().await;
    let error = refused.expect_err("a client trusting another CA was answered");
    assert!(error.is_connect(), "{error:?}");
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_its_key_refuses_to_start() {
    let pki = test_pki();
    let config = rim_control::ControlConfig {
        control_tls_cert: Some(pki.cert.clone()),
        ..config()
    };
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let bus = Arc::new(MemoryBus::new(100));
    let started = rim_control::start(config, SECRET, memory_store(), bus, prometheus).await;
    let error = started
        .err()
        .expect("started with half a TLS configuration");
    assert!(error.to_string().contains("control_tls_key"), "{error:#}");
}
