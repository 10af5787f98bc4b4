//! The reporter's side of restart hygiene, on the wire, against a fake control plane that records
//! what it is told: every life of an edge registers with its own boot id (a re-registration within
//! one life keeps it), and a stopping edge's last heartbeat says `stopped`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::link_config;
use parking_lot::Mutex;
use prost::Message;
use rim_edge::EdgeAddrs;
use rim_edgelink::SessionReporter;
use rim_proto::schema::{NodeHeartbeat, NodeRegistration};

/// What the fake control plane was told.
#[derive(Default)]
struct Heard {
    registrations: Mutex<Vec<NodeRegistration>>,
    heartbeats: Mutex<Vec<NodeHeartbeat>>,
    /// Answer the next heartbeat 404 ("unknown node"), as a control plane that lost its store.
    forget_once: AtomicBool,
}

async fn register(State(heard): State<Arc<Heard>>, body: Bytes) -> StatusCode {
    let registration = NodeRegistration::decode(body).unwrap();
    heard.registrations.lock().push(registration);
    StatusCode::OK
}

async fn heartbeat(State(heard): State<Arc<Heard>>, body: Bytes) -> StatusCode {
    if heard.forget_once.swap(false, Ordering::SeqCst) {
        return StatusCode::NOT_FOUND;
    }
    heard
        .heartbeats
        .lock()
        .push(NodeHeartbeat::decode(body).unwrap());
    StatusCode::OK
}

/// Enrollment: a token this fake control plane accepts (it checks none).
async fn enroll() -> Response {
    let credential = rim_proto::schema::NodeCredential {
        token: "fake-token".into(),
        expires_at_unix_ms: i64::MAX / 2,
        keys: Vec::new(),
    };
    credential.encode_to_vec().into_response()
}

async fn sessions() -> Response {
    let report = rim_store::SessionApplyReport::default();
    axum::Json(report).into_response()
}

async fn fake_control() -> (SocketAddr, Arc<Heard>) {
    let heard = Arc::new(Heard::default());
    let app = axum::Router::new()
        .route("/edge/v1/register", post(register))
        .route("/edge/v1/heartbeat", post(heartbeat))
        .route("/edge/v1/sessions", post(sessions))
        .route("/edge/v1/enroll", post(enroll))
        .with_state(heard.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, heard)
}

fn addrs() -> EdgeAddrs {
    let loopback = "127.0.0.1:9".parse().unwrap();
    EdgeAddrs {
        tcp: loopback,
        ws: loopback,
        tls: None,
        wss: None,
        internal: loopback,
    }
}

#[tokio::test]
async fn every_life_registers_with_its_own_boot_id() {
    let (control, heard) = fake_control().await;
    let link = link_config(control, "edge-boot");
    let first = SessionReporter::new(link.clone());
    first
        .start(&common::edge_credentials(&link), &addrs())
        .unwrap();
    common::eventually("the first registration", || async {
        (heard.registrations.lock().len() == 1).then_some(())
    })
    .await;
    // Control forgets the node: the same life registers again, with the same boot id.
    heard.forget_once.store(true, Ordering::SeqCst);
    common::eventually("the re-registration", || async {
        (heard.registrations.lock().len() == 2).then_some(())
    })
    .await;
    first.shutdown(common::PATIENCE).await;

    let second = SessionReporter::new(link.clone());
    second
        .start(&common::edge_credentials(&link), &addrs())
        .unwrap();
    common::eventually("the next life's registration", || async {
        (heard.registrations.lock().len() == 3).then_some(())
    })
    .await;
    second.shutdown(common::PATIENCE).await;

    let boots: Vec<String> = heard
        .registrations
        .lock()
        .iter()
        .map(|r| r.boot_id.clone())
        .collect();
    assert_eq!(boots[0], first.boot_id());
    assert_eq!(boots[1], boots[0], "one life, one boot id");
    assert_eq!(boots[2], second.boot_id());
    assert_ne!(boots[2], boots[0], "a new life, a new boot id");
    assert!(boots.iter().all(|b| b.len() == 32));
}

#[tokio::test]
async fn the_last_heartbeat_of_a_stopping_edge_says_stopped() {
    let (control, heard) = fake_control().await;
    let link = link_config(control, "edge-stop");
    let reporter = SessionReporter::new(link.clone());
    reporter
        .start(&common::edge_credentials(&link), &addrs())
        .unwrap();
    common::eventually("a heartbeat", || async {
        (!heard.heartbeats.lock().is_empty()).then_some(())
    })
    .await;
    assert!(reporter.shutdown(common::PATIENCE).await);
    let heartbeats = heard.heartbeats.lock();
    let (last, earlier) = heartbeats.split_last().unwrap();
    assert!(last.stopped && last.draining, "{last:?}");
    assert!(
        earlier.iter().all(|h| !h.stopped),
        "stopped only at the end"
    );
}
