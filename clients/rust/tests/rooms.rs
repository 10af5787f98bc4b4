//! Room changes against a real rim edge (JWT auth, a token granting only some rooms) over a real
//! socket: a refusal is a typed [`RoomRefused`], the connection stays open, and a session keeps and
//! re-joins its old room instead of the refused one.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rim_client::{
    AdaptiveHeartbeat, ClientError, Connection, RoomRefusalReason, RoomRefused, Session,
    SessionConfig, SessionEvent,
};
use rim_edge::config::AuthMode;
use rim_edge::{Edge, EdgeConfig, EdgeHandle, EdgeHooks};
use rim_proto::limits::MAX_ROOM_LEN;
use rim_proto::op;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "hs256-client-test-secret-with-enough-entropy";
const ISSUER: &str = "rim-client-test";
const PATIENCE: Duration = Duration::from_secs(10);

/// An edge verifying HS256 tokens signed with [`SECRET`]; the temp dir holds the key file.
async fn edge() -> (EdgeHandle, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hs256.key");
    std::fs::write(&key, SECRET).unwrap();
    let mut config = EdgeConfig::local().unwrap();
    config.edge_auth = AuthMode::Jwt;
    config.edge_jwt_keys = vec![key];
    config.edge_jwt_issuer = ISSUER.into();
    let verifier = rim_edge::auth::from_config(&config).unwrap();
    let handle = Edge::start(
        config,
        "cluster-secret".into(),
        verifier,
        EdgeHooks::default(),
    )
    .await
    .unwrap();
    (handle, dir)
}

/// goim's auth JSON with a token for `key` in `live://1` that may also enter `live://1000`.
fn auth_body(key: &str) -> Vec<u8> {
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    let claims = json!({"mid": 7, "key": key, "room_id": "live://1", "rooms": ["live://1000"],
        "accepts": [1000], "exp": exp, "iss": ISSUER});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    json!({"platform": "web", "token": token})
        .to_string()
        .into_bytes()
}

fn heartbeat() -> AdaptiveHeartbeat {
    AdaptiveHeartbeat::fixed(Duration::from_secs(30))
}

async fn recv(connection: &mut Connection) -> Result<rim_client::Push, ClientError> {
    tokio::time::timeout(PATIENCE, connection.recv())
        .await
        .expect("an answer from the edge")
}

#[tokio::test]
async fn a_refused_room_change_is_a_typed_error_and_the_connection_stays_open() {
    let (edge, _dir) = edge().await;
    let addr = edge.addrs().tcp.to_string();
    let (mut connection, _) = Connection::connect(&addr, &auth_body("k1"), heartbeat())
        .await
        .unwrap();

    connection.change_room("live://2").await.unwrap();
    match recv(&mut connection).await {
        Err(ClientError::RoomRefused(refused)) => {
            assert_eq!(refused.room, "live://2");
            assert_eq!(refused.reason, RoomRefusalReason::Forbidden);
            assert!(refused.message.contains("not granted"), "{refused}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let too_long = format!("live://{}", "x".repeat(MAX_ROOM_LEN));
    connection.change_room(&too_long).await.unwrap();
    let Err(ClientError::RoomRefused(RoomRefused { room, reason, .. })) =
        recv(&mut connection).await
    else {
        panic!("expected a refusal of the too-long room");
    };
    assert_eq!((room, reason), (too_long, RoomRefusalReason::TooLong));

    // Still open, and a granted room is confirmed as before: op 13 echoing it.
    connection.change_room("live://1000").await.unwrap();
    let push = recv(&mut connection).await.unwrap();
    assert_eq!(
        (push.op, push.body.as_ref()),
        (op::CHANGE_ROOM_REPLY, &b"live://1000"[..])
    );
    assert_eq!(connection.unanswered_rooms().count(), 0);
}

/// The session's next event, ignoring HTTPDNS and disconnect reports.
async fn next(session: &mut Session) -> SessionEvent {
    loop {
        let event = tokio::time::timeout(PATIENCE, session.next())
            .await
            .expect("a session event")
            .expect("session alive");
        if !matches!(
            event,
            SessionEvent::Resolved { .. } | SessionEvent::Disconnected { .. }
        ) {
            return event;
        }
    }
}

#[tokio::test]
async fn a_session_keeps_and_rejoins_its_old_room_after_a_refusal() {
    let (edge, _dir) = edge().await;
    let addr = edge.addrs().tcp.to_string();
    let config = SessionConfig {
        addresses: vec![addr.clone()],
        auth_body: Arc::new(|| auth_body("k2")),
        heartbeat: heartbeat(),
        httpdns: None,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    let mut session = Session::start(config, 16);
    assert!(matches!(
        next(&mut session).await,
        SessionEvent::Connected { .. }
    ));
    session.change_room("live://1000");
    match next(&mut session).await {
        SessionEvent::Push(push) => {
            assert_eq!(
                (push.op, push.body.as_ref()),
                (op::CHANGE_ROOM_REPLY, &b"live://1000"[..])
            );
        }
        other => panic!("expected the confirmation, got {other:?}"),
    }
    session.change_room("live://2");
    match next(&mut session).await {
        SessionEvent::RoomRefused(refused) => {
            assert_eq!(refused.room, "live://2");
            assert_eq!(refused.reason, RoomRefusalReason::Forbidden);
        }
        other => panic!("expected the refusal, got {other:?}"),
    }

    // Another connection with the same key takes the session's place; the session comes back and
    // re-joins live://1000 (confirmed), not live://2 (refused).
    let (intruder, _) = Connection::connect(&addr, &auth_body("k2"), heartbeat())
        .await
        .unwrap();
    assert!(matches!(
        next(&mut session).await,
        SessionEvent::Connected { .. }
    ));
    drop(intruder);
    match next(&mut session).await {
        SessionEvent::Push(push) => {
            assert_eq!(
                (push.op, push.body.as_ref()),
                (op::CHANGE_ROOM_REPLY, &b"live://1000"[..])
            );
        }
        other => panic!("expected the old room to be re-joined, got {other:?}"),
    }
}
