//! Client auth through control's business webhook, against a tiny fake business backend.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;
use common::{TestEdge, link_config, memory_store, session_appears, start_control, unused_addr};
use rim_bus::memory::MemoryBus;
use rim_edge::auth::AuthRequest;
use rim_edge::{AuthError, Verifier};
use rim_edgelink::WebhookVerifier;
use serde_json::{Value, json};

/// The business backend: token "good" is user 77 in room live://7, anything else is refused.
async fn business_auth(Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if body["token"] == "good" {
        let identity =
            json!({"mid": 77, "key": "webhook-key", "room_id": "live://7", "accepts": [1000]});
        (StatusCode::OK, Json(identity))
    } else {
        (StatusCode::FORBIDDEN, Json(json!({"reason": "bad token"})))
    }
}

/// Starts the fake backend; returns its URL.
async fn start_backend() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/auth", post(business_auth));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/auth")
}

fn request(body: &[u8]) -> AuthRequest<'_> {
    AuthRequest {
        body,
        client_ip: IpAddr::from([127, 0, 0, 1]),
    }
}

#[tokio::test]
async fn clients_are_accepted_or_refused_by_the_business_webhook() {
    let store = memory_store();
    let bus = Arc::new(MemoryBus::new(100));
    let control = start_control(
        unused_addr(),
        store.clone(),
        bus,
        Some(start_backend().await),
    )
    .await;
    let link = link_config(control.local_addr(), "edge-webhook");
    let credentials = common::edge_credentials(&link);
    credentials.ready().await;
    let verifier = Arc::new(WebhookVerifier::new(&link, &credentials).unwrap());
    let edge = TestEdge::start(link, Some(verifier)).await;

    // Accepted: the identity is the webhook's, not the client's claims.
    let mut accepted = edge.client().await;
    let reply = accepted
        .auth(
            json!({"mid": 1, "key": "claimed", "token": "good"})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert!(reply.body.is_empty(), "{:?}", reply.body);
    let stored = session_appears(&store, "webhook-key").await;
    assert_eq!((stored.mid, stored.room.as_str()), (77, "live://7"));

    // Refused: the webhook's reason reaches the client, and the connection is closed.
    let mut refused = edge.client().await;
    let reply = refused
        .auth(json!({"token": "bad"}).to_string().as_bytes())
        .await;
    let answer: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(answer["reason"], "rejected", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("bad token"),
        "{answer}"
    );
    refused.closed().await;

    assert!(edge.shutdown().await);
    control.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_webhook_or_without_control_the_client_is_refused_with_a_clear_reason() {
    let control = start_control(
        unused_addr(),
        memory_store(),
        Arc::new(MemoryBus::new(10)),
        None,
    )
    .await;
    let link = link_config(control.local_addr(), "edge-no-webhook");
    let credentials = common::edge_credentials(&link);
    credentials.ready().await;
    let verifier = WebhookVerifier::new(&link, &credentials).unwrap();
    match verifier.verify(request(b"{\"token\":\"good\"}")).await {
        Err(AuthError::Unavailable(reason)) => {
            assert!(reason.contains("no auth webhook"), "{reason}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }

    // A node that could not enroll (wrong secret) has no token control accepts.
    let unenrolled = rim_edgelink::NodeCredentials::new(
        rim_proto::node_token::NodeRole::Edge,
        "edge-no-webhook",
        common::REGION,
        "not-the-secret",
        &link.credential_settings(),
    )
    .unwrap();
    unenrolled.spawn(tokio_util::sync::CancellationToken::new());
    let wrong_secret = WebhookVerifier::new(&link, &unenrolled).unwrap();
    assert!(matches!(
        wrong_secret.verify(request(b"{}")).await,
        Err(AuthError::Unavailable(_))
    ));
    control.shutdown().await.unwrap();

    let down = link_config(unused_addr(), "edge-no-control");
    let verifier = WebhookVerifier::new(&down, &common::edge_credentials(&down)).unwrap();
    match verifier.verify(request(b"{\"token\":\"good\"}")).await {
        Err(AuthError::Unavailable(reason)) => {
            assert!(
                reason.contains("control plane could not decide"),
                "{reason}"
            )
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}
