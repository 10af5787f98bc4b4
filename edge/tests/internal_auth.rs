//! Who may push on `/internal/push`, and what: authentication on the headers before the body,
//! protocol operations refused by the edge itself, job tokens through a [`PushAuthority`], the
//! cluster secret only when allowed, and the endpoint over TLS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Kind, SECRET, key_push, start, start_with};
use prost::Message;
use rim_edge::EdgeHooks;
use rim_edge::config::AuthMode;
use rim_edge::internal::PushAuthority;
use rim_proto::schema::edge_push::Target;
use rim_proto::schema::{EdgePush, EdgePushRequest, EdgePushResponse, EdgeSuperseded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Admits one token: a stand-in for the edge's node credential (whose token checks rim-edgelink's
/// tests cover with real control-issued tokens).
struct OneToken;

impl PushAuthority for OneToken {
    fn admit(&self, token: &str) -> Result<(), String> {
        if token == "job-token" {
            Ok(())
        } else {
            Err("not a job token of this region".into())
        }
    }
}

fn request(pushes: Vec<EdgePush>) -> Vec<u8> {
    EdgePushRequest { pushes }.encode_to_vec()
}

#[tokio::test]
async fn an_oversized_unauthenticated_body_is_refused_before_it_is_sent() {
    let edge = start(|_| {}).await;
    let addr = edge.handle.addrs().internal;
    for authorization in ["", "authorization: Bearer wrong\r\n"] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /internal/push HTTP/1.1\r\nhost: {addr}\r\n{authorization}content-length: {}\r\n\r\n",
            1u64 << 30
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[0u8; 1024]).await.unwrap();
        let mut answer = vec![0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("no answer while the body was still coming")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        // The edge does not wait for the rest: the connection is closed after the answer.
        let mut rest = Vec::new();
        // End of stream or a reset: either way closed, which is what the timeout checks.
        let _closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("connection kept open for the unread body");
    }
    // Authenticated, a declared length over the limit is refused before reading too.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /internal/push HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {SECRET}\r\n\
         content-length: {}\r\n\r\n",
        1u64 << 30
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 413"));
}

#[tokio::test]
async fn pushes_of_protocol_operations_are_refused_by_the_edge() {
    let edge = start(|_| {}).await;
    let mut client = edge.client(Kind::Tcp, "k1", "", &[1000, 1001]).await;
    for op in [
        rim_proto::op::HEARTBEAT_REPLY,
        rim_proto::op::AUTH_REPLY,
        999,
    ] {
        let body = request(vec![
            key_push("fine", 1000, b"a", &["k1"]),
            key_push("bad", op, b"b", &["k1"]),
        ]);
        let response = edge.post_push(Some(SECRET), body).await;
        assert_eq!(response.status(), 400);
        let message = response.text().await.unwrap();
        assert!(
            message.contains(&format!("operation {op}")) && message.contains(">= 1000"),
            "{message}"
        );
    }
    // Nothing of a refused request was executed: the next push is the first the client gets.
    assert_eq!(
        edge.push(vec![key_push("later", 1001, b"c", &["k1"])])
            .await,
        vec![1]
    );
    let packet = client.recv().await;
    assert_eq!((packet.op, &packet.body[..]), (1001, &b"c"[..]));
    // A superseded notice carries no operation for clients and stays accepted.
    let notice = EdgePush {
        message_id: "close".into(),
        target: Some(Target::Superseded(EdgeSuperseded {
            key: "nobody".into(),
            connection_id: 1,
        })),
        ..EdgePush::default()
    };
    assert_eq!(edge.push(vec![notice]).await, vec![0]);
}

#[tokio::test]
async fn with_an_authority_job_tokens_push_and_the_secret_does_not() {
    let hooks = EdgeHooks {
        push_authority: Some(Arc::new(OneToken)),
        ..EdgeHooks::default()
    };
    let edge = start_with(AuthMode::Jwt, hooks, |_| {}).await;
    let mut client = edge.client(Kind::Tcp, "k1", "", &[1000, 1001]).await;
    let body = request(vec![key_push("m", 1000, b"x", &["k1"])]);
    for (token, status) in [
        (Some("job-token"), 200),
        (Some(SECRET), 401),
        (Some("edge-token"), 401),
        (None, 401),
    ] {
        let response = edge.post_push(token, body.clone()).await;
        assert_eq!(response.status(), status, "{token:?}");
        if status == 401 {
            let reason = response.text().await.unwrap();
            assert!(!reason.is_empty());
        }
    }
    assert_eq!(client.recv().await.body, &b"x"[..]);

    // During a migration the secret may be allowed as well.
    let hooks = EdgeHooks {
        push_authority: Some(Arc::new(OneToken)),
        ..EdgeHooks::default()
    };
    let edge = start_with(AuthMode::Jwt, hooks, |c| {
        c.internal.edge_internal_accept_cluster_secret = true;
    })
    .await;
    for token in ["job-token", SECRET] {
        assert_eq!(
            edge.post_push(Some(token), body.clone()).await.status(),
            200
        );
    }
}

#[tokio::test]
async fn the_internal_endpoint_speaks_tls_when_configured() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("internal.pem");
    let key = dir.path().join("internal.key");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let edge = start(|c| {
        c.internal.edge_internal_tls_cert = Some(cert);
        c.internal.edge_internal_tls_key = Some(key);
    })
    .await;
    let mut client = edge.client(Kind::Tcp, "k1", "", &[1000, 1001]).await;
    let port = edge.handle.addrs().internal.port();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let body = request(vec![key_push("tls", 1000, b"secure", &["k1"])]);
    let response = trusting
        .post(format!("https://localhost:{port}/internal/push"))
        .bearer_auth(SECRET)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = EdgePushResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.delivered, vec![1]);
    assert_eq!(client.recv().await.body, &b"secure"[..]);
    // Plain HTTP gets no answer, and a client that does not trust the certificate fails.
    let plain = reqwest::Client::new()
        .post(format!("http://localhost:{port}/internal/push"))
        .bearer_auth(SECRET)
        .body(body.clone())
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let untrusting = reqwest::Client::new()
        .post(format!("https://localhost:{port}/internal/push"))
        .bearer_auth(SECRET)
        .body(body)
        .send()
        .await;
    assert!(untrusting.is_err());
}
