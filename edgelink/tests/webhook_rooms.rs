//! The business webhook grants rooms too: its `rooms` answer reaches the edge through control, and a
//! room change outside it is refused (op 13 with a JSON error) while the connection stays in its room.

mod common;

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;
use common::{TestEdge, link_config, memory_store, start_control, unused_addr};
use rim_bus::memory::MemoryBus;
use rim_edgelink::WebhookVerifier;
use rim_proto::op;
use serde_json::{Value, json};

/// Token "granted" may enter live://8 and every chat room; token "plain" only its own room.
async fn business_auth(Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let mut identity = json!({"mid": 5, "key": body["token"], "room_id": "live://7"});
    if body["token"] == "granted" {
        identity["rooms"] = json!(["live://8", "chat://*"]);
    }
    (StatusCode::OK, Json(identity))
}

async fn change_room(client: &mut common::GoimClient, room: &str) -> Vec<u8> {
    client.send(op::CHANGE_ROOM, room.as_bytes()).await;
    let reply = client.recv().await;
    assert_eq!(reply.op, op::CHANGE_ROOM_REPLY);
    reply.body.to_vec()
}

fn refusal_reason(body: &[u8]) -> String {
    let answer: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not a refusal: {:?}", String::from_utf8_lossy(body)));
    answer["reason"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn room_changes_follow_the_rooms_the_webhook_grants() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = format!("http://{}/auth", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/auth", post(business_auth));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let bus = Arc::new(MemoryBus::new(100));
    let control = start_control(unused_addr(), memory_store(), bus, Some(backend)).await;
    let link = link_config(control.local_addr(), "edge-webhook-rooms");
    let credentials = common::edge_credentials(&link);
    credentials.ready().await;
    let verifier = Arc::new(WebhookVerifier::new(&link, &credentials).unwrap());
    let edge = TestEdge::start(link, Some(verifier)).await;

    let mut granted = edge.client().await;
    let reply = granted.auth(br#"{"token": "granted"}"#).await;
    assert!(reply.body.is_empty(), "{:?}", reply.body);
    assert_eq!(change_room(&mut granted, "live://8").await, b"live://8");
    assert_eq!(change_room(&mut granted, "chat://a").await, b"chat://a");
    let refused = change_room(&mut granted, "live://9").await;
    assert_eq!(refusal_reason(&refused), "room_forbidden");
    assert_eq!(edge.handle.room_online("chat://a"), 1);

    let mut plain = edge.client().await;
    let reply = plain.auth(br#"{"token": "plain"}"#).await;
    assert!(reply.body.is_empty(), "{:?}", reply.body);
    let refused = change_room(&mut plain, "live://8").await;
    assert_eq!(refusal_reason(&refused), "room_forbidden");
    assert_eq!(change_room(&mut plain, "").await, b"");
    assert_eq!(change_room(&mut plain, "live://7").await, b"live://7");
}
