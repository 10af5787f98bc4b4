//! The auth hook (`POST /edge/v1/auth`) against a real business backend: a small HTTP server on a
//! free port that accepts, refuses, stalls or breaks depending on the client's token.

mod common;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use prost::Message;
use rim_bus::memory::MemoryBus;
use rim_control::ControlConfig;
use rim_proto::schema::{AuthRequest, AuthResponse};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The business backend: decides by the `token` of the forwarded client body.
async fn business(headers: HeaderMap, Json(client): Json<Value>) -> (StatusCode, Json<Value>) {
    assert_eq!(headers["x-rim-node-id"], "n1");
    assert_eq!(headers["x-rim-client-ip"], "198.51.100.7");
    match client["token"].as_str() {
        Some("good") => (
            StatusCode::OK,
            Json(
                json!({"mid": 42, "key": "dev-42", "room_id": "live://7", "platform": "ios", "accepts": [1000, 1001]}),
            ),
        ),
        Some("banned") => (
            StatusCode::FORBIDDEN,
            Json(json!({"reason": "account banned"})),
        ),
        Some("slow") => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, Json(json!({"mid": 1})))
        }
        Some("bad-room") => (
            StatusCode::OK,
            Json(json!({"mid": 1, "room_id": "no-type"})),
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({}))),
    }
}

/// Starts the business backend; answers its webhook URL.
async fn start_business() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/auth", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/auth", post(business));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Asks the hook about a client body; answers the status and the decoded AuthResponse.
async fn ask(h: &Harness, token: &str) -> (u16, AuthResponse) {
    let request = AuthRequest {
        node_id: "n1".into(),
        body: json!({"mid": 999, "token": token})
            .to_string()
            .into_bytes()
            .into(),
        client_ip: "198.51.100.7".into(),
    };
    let response = h.edge("/edge/v1/auth", &request).await;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (status, AuthResponse::decode(bytes).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_answers_the_business_identity_or_its_refusal() {
    let config = ControlConfig {
        control_auth_webhook_url: Some(start_business().await),
        control_auth_webhook_timeout_ms: 500,
        ..config()
    };
    let h = start(config, memory_store(), Arc::new(MemoryBus::new(10))).await;

    let (status, answer) = ask(&h, "good").await;
    assert_eq!(status, 200);
    assert!(answer.accepted);
    // The identity is the backend's, not the client's claimed mid 999.
    assert_eq!(
        (answer.mid, answer.key.as_str(), answer.room.as_str()),
        (42, "dev-42", "live://7")
    );
    assert_eq!(
        (answer.platform.as_str(), answer.accepts.as_slice()),
        ("ios", &[1000, 1001][..])
    );

    let (status, answer) = ask(&h, "banned").await;
    assert_eq!(status, 200);
    assert!(!answer.accepted);
    assert_eq!(answer.reason, "account banned");

    for token in ["slow", "broken", "bad-room"] {
        let (status, _) = ask(&h, token).await;
        assert_eq!(status, 502, "token {token}");
    }
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_webhook_the_hook_refuses_with_404() {
    let h = start(config(), memory_store(), Arc::new(MemoryBus::new(10))).await;
    let (status, answer) = ask(&h, "good").await;
    assert_eq!(status, 404);
    assert!(!answer.accepted);
    assert!(
        answer.reason.contains("no auth webhook"),
        "{}",
        answer.reason
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_webhook_fills_only_the_auth_bound() {
    let config = ControlConfig {
        control_auth_webhook_url: Some(start_business().await),
        control_auth_webhook_timeout_ms: 2_000,
        control_auth_max_in_flight: 1,
        control_edge_max_in_flight: 1,
        control_max_in_flight: 1,
        ..config()
    };
    let h = start(config, memory_store(), Arc::new(MemoryBus::new(10))).await;
    h.register("n1", "sh").await;
    // A slow webhook call holds the auth hook's only slot: other auth calls are refused at once,
    // while heartbeats and the business API, bounded apart, still answer.
    let probe = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (status, _) = ask(&h, "good").await;
            if status == 503 {
                let heartbeat = h.heartbeat("n1", 0, &[]).await;
                let (business, _) =
                    Harness::call(h.with_key(reqwest::Method::GET, "/v1/online/total", ADMIN_KEY))
                        .await;
                return (heartbeat, business);
            }
            assert_eq!(status, 200);
            assert!(std::time::Instant::now() < deadline, "never shed");
        }
    };
    let ((status, _), (heartbeat, business)) = tokio::join!(ask(&h, "slow"), probe);
    assert_eq!(status, 502);
    assert_eq!(heartbeat, 204, "a heartbeat was starved by the auth hook");
    assert_eq!(
        business, 200,
        "the business API was starved by the auth hook"
    );
    // The slot is free again.
    assert_eq!(ask(&h, "good").await.0, 200);
    h.control.shutdown().await.unwrap();
}
