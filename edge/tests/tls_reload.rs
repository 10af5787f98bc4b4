//! TLS certificate rotation without a restart, and session resumption, over real sockets.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, TestEdge, start, tokens};
use rustls::HandshakeKind;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A fresh self-signed certificate for "localhost": (cert PEM, key PEM, cert DER).
fn certificate() -> (String, String, Vec<u8>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (
        generated.cert.pem(),
        generated.signing_key.serialize_pem(),
        generated.cert.der().to_vec(),
    )
}

/// A client config trusting only `cert_der`, limited to `versions`.
fn client_config(
    cert_der: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(cert_der.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

async fn handshake(
    addr: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// The DER of the certificate the server presented.
fn served(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Writes a key and certificate pair as a deployment would (key first, then certificate).
fn install(cert_path: &Path, key_path: &Path, pair: &(String, String, Vec<u8>)) {
    std::fs::write(key_path, &pair.1).unwrap();
    std::fs::write(cert_path, &pair.0).unwrap();
}

async fn tls_edge(pair: &(String, String, Vec<u8>)) -> (TestEdge, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    install(&cert, &key, pair);
    let (c, k) = (cert.clone(), key.clone());
    let edge = start(move |config| {
        config.edge_tls_cert = Some(c);
        config.edge_tls_key = Some(k);
        config.edge_tls_reload_ms = 20;
    })
    .await;
    (edge, cert, key)
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_without_a_restart() {
    let old = certificate();
    let (edge, cert_path, key_path) = tls_edge(&old).await;
    let addr = edge.handle.addrs().tls.unwrap();
    let trusts_old = client_config(&old.2, rustls::DEFAULT_VERSIONS);
    let stream = handshake(addr, &trusts_old).await.unwrap();
    assert_eq!(served(&stream), old.2);
    let mut open = Client::stream(Box::new(stream));
    open.auth_ok(&tokens::body_for("open", "", &[1000])).await;

    let new = certificate();
    install(&cert_path, &key_path, &new);
    let trusts_new = client_config(&new.2, rustls::DEFAULT_VERSIONS);
    common::wait_until_async(|| async { handshake(addr, &trusts_new).await.is_ok() }).await;
    let stream = handshake(addr, &trusts_new).await.unwrap();
    assert_eq!(
        served(&stream),
        new.2,
        "new connections get the new certificate"
    );
    let mut fresh = Client::stream(Box::new(stream));
    fresh.auth_ok(&tokens::body_for("fresh", "", &[1000])).await;
    // (A fresh client: `trusts_old` holds a ticket and would resume its session, which is fine.)
    let fresh_trusting_old = client_config(&old.2, rustls::DEFAULT_VERSIONS);
    assert!(
        handshake(addr, &fresh_trusting_old).await.is_err(),
        "the old certificate is no longer served"
    );
    // The connection opened before the rotation is unaffected.
    open.heartbeat().await;
    assert_eq!(
        edge.push(vec![common::key_push(
            "m",
            1000,
            b"both",
            &["open", "fresh"]
        )])
        .await,
        [2]
    );
    assert_eq!(open.recv().await.body, &b"both"[..]);
    assert_eq!(fresh.recv().await.body, &b"both"[..]);

    // A broken file (or a key that does not match) keeps the certificate in force.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    std::fs::write(&key_path, certificate().1).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stream = handshake(addr, &trusts_new).await.unwrap();
    assert_eq!(served(&stream), new.2);
}

async fn resumes(versions: &[&'static rustls::SupportedProtocolVersion]) {
    let pair = certificate();
    let (edge, _, _) = tls_edge(&pair).await;
    let addr = edge.handle.addrs().tls.unwrap();
    let config = client_config(&pair.2, versions);
    let first = handshake(addr, &config).await.unwrap();
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Full)
    );
    // Reading the auth reply also takes in the session tickets sent after the handshake.
    let mut client = Client::stream(Box::new(first));
    client.auth_ok(&tokens::body_for("k", "", &[])).await;
    drop(client);
    for round in 0..3 {
        let again = handshake(addr, &config).await.unwrap();
        assert_eq!(
            again.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "reconnect {round} was a full handshake"
        );
        let mut client = Client::stream(Box::new(again));
        client.auth_ok(&tokens::body_for("k", "", &[])).await;
        client.heartbeat().await;
    }
}

#[tokio::test]
async fn reconnects_resume_the_tls13_session() {
    resumes(&[&rustls::version::TLS13]).await;
}

#[tokio::test]
async fn reconnects_resume_the_tls12_session() {
    resumes(&[&rustls::version::TLS12]).await;
}
