//! Node identity on the edge API, on PostgreSQL: what a compromised edge's credential can and
//! cannot do, which tokens are refused, renewal, a heartbeat flooded with room names, and an
//! oversized unauthenticated body refused before it is read.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prost::Message;
use rim_bus::memory::MemoryBus;
use rim_proto::node_token::{AUDIENCE, ISSUER, NodeClaims, NodeRole};
use rim_proto::schema::{AuthRequest, NodeCredential, NodeHeartbeat, NodeKeys, RoomCount};
use rim_store::NodeState;
use rim_store::postgres::PostgresStore;
use rim_testkit::postgres::TestPostgres;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn harness() -> Harness {
    let database = TestPostgres::shared().fresh_database();
    let store = PostgresStore::connect(&database, rim_store::StoreSettings::default())
        .await
        .unwrap();
    start(config(), Arc::new(store), Arc::new(MemoryBus::new(1_000))).await
}

async fn status_and_message(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn node(h: &Harness, id: &str) -> rim_store::Node {
    let nodes = h.store.nodes().await.unwrap();
    nodes.into_iter().find(|n| n.id == id).unwrap()
}

/// A token with these claims signed with the newest key the store holds (what a thief of the
/// store's key could make), or with `other_key` under the real kid (a forgery).
async fn signed(h: &Harness, claims: &NodeClaims, forged: bool) -> String {
    let keys = h.store.node_signing_keys().await.unwrap();
    let newest = keys.last().unwrap();
    let private = if forged {
        let mut der = newest.private_key.clone();
        let last = der.len() - 1;
        der[last] ^= 0x55;
        der
    } else {
        newest.private_key.clone()
    };
    let header = Header {
        kid: Some(newest.kid.clone()),
        ..Header::new(Algorithm::EdDSA)
    };
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&private)).unwrap()
}

fn claims(node: &str, role: NodeRole, exp_from_now: i64) -> NodeClaims {
    let now = (rim_control::now_ms() / 1000) as u64;
    NodeClaims {
        sub: node.into(),
        role,
        region: "sh".into(),
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        iat: now,
        nbf: now,
        exp: now.saturating_add_signed(exp_from_now),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_edges_credential_acts_for_its_own_node_only() {
    let h = harness().await;
    let attacker = h.enroll("edge", "edge-a", "sh").await.token;
    let victim = h.enroll("edge", "edge-b", "sh").await.token;
    let mut victim_registration = registration("edge-b", "sh");
    victim_registration.push_url = "http://10.0.0.2:3109".into();
    let response = h
        .edge_with(&victim, "/edge/v1/register", &victim_registration)
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        h.edge_with(
            &attacker,
            "/edge/v1/register",
            &registration("edge-a", "sh")
        )
        .await
        .status(),
        204
    );
    let (status, _) = h
        .sessions("edge-b", vec![connect("victim-key", 7, 1, now(), "")])
        .await;
    assert_eq!(status, 200);

    // Re-register the victim with the attacker's push URL: refused, the victim's URL stays.
    let mut hijack = victim_registration.clone();
    hijack.push_url = "http://attacker.example:3109".into();
    let (status, message) =
        status_and_message(h.edge_with(&attacker, "/edge/v1/register", &hijack).await).await;
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("\\\"edge-a\\\"") || message.contains("edge-a"),
        "{message}"
    );
    assert_eq!(node(&h, "edge-b").await.push_url, "http://10.0.0.2:3109");

    // Move itself into another region (to receive that region's pushes): refused.
    let (status, message) = status_and_message(
        h.edge_with(
            &attacker,
            "/edge/v1/register",
            &registration("edge-a", "bj"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403, "{message}");

    // Report the victim's sessions away, or sessions on the victim's node: refused.
    let batch = rim_proto::schema::SessionBatch {
        node_id: "edge-b".into(),
        events: vec![disconnect("victim-key", 7, 1, now())],
    };
    let (status, _) =
        status_and_message(h.edge_with(&attacker, "/edge/v1/sessions", &batch).await).await;
    assert_eq!(status, 403);
    let forged_connect = rim_proto::schema::SessionBatch {
        node_id: "edge-b".into(),
        events: vec![connect("planted", 9, 5, now(), "")],
    };
    let (status, _) = status_and_message(
        h.edge_with(&attacker, "/edge/v1/sessions", &forged_connect)
            .await,
    )
    .await;
    assert_eq!(status, 403);
    let sessions = h
        .store
        .sessions_by_keys(&["victim-key".into(), "planted".into()], now())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].node_id, "edge-b");

    // Declare the victim stopped (dead, sessions gone) by a heartbeat: refused.
    let kill = NodeHeartbeat {
        node_id: "edge-b".into(),
        stopped: true,
        ..NodeHeartbeat::default()
    };
    assert_eq!(
        h.edge_with(&attacker, "/edge/v1/heartbeat", &kill)
            .await
            .status(),
        403
    );
    assert_eq!(node(&h, "edge-b").await.state, NodeState::Active);

    // Ask the auth webhook as the victim: refused before the webhook is involved.
    let ask = AuthRequest {
        node_id: "edge-b".into(),
        ..AuthRequest::default()
    };
    assert_eq!(
        h.edge_with(&attacker, "/edge/v1/auth", &ask).await.status(),
        403
    );

    // Its own node it may still run.
    let own = rim_proto::schema::SessionBatch {
        node_id: "edge-a".into(),
        events: vec![connect("mine", 8, 1, now(), "")],
    };
    assert_eq!(
        h.edge_with(&attacker, "/edge/v1/sessions", &own)
            .await
            .status(),
        200
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_and_forged_expired_wrong_role_or_unknown_key_tokens_are_refused() {
    let h = harness().await;
    let body = registration("edge-a", "sh");
    // The cluster secret is the enrollment credential only.
    let (status, message) =
        status_and_message(h.edge_with(SECRET, "/edge/v1/register", &body).await).await;
    assert_eq!(status, 401, "{message}");
    // Enrollment needs the secret, and a known role.
    let wrong = h
        .http
        .post(h.url("/edge/v1/enroll"))
        .bearer_auth("not-the-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let admin = rim_proto::schema::NodeEnrollment {
        role: "admin".into(),
        node_id: "x".into(),
        region: "sh".into(),
    };
    let response = h
        .http
        .post(h.url("/edge/v1/enroll"))
        .bearer_auth(SECRET)
        .body(admin.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // A job worker's token is no edge's.
    let job = h.enroll("job", "edge-a", "sh").await.token;
    let (status, message) =
        status_and_message(h.edge_with(&job, "/edge/v1/register", &body).await).await;
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("job"), "{message}");

    // Forged: the real kid, another key.
    let forged = signed(&h, &claims("edge-a", NodeRole::Edge, 600), true).await;
    assert_eq!(
        h.edge_with(&forged, "/edge/v1/register", &body)
            .await
            .status(),
        401
    );
    // Tampered: a real token with its claims rewritten to another node.
    let real = h.enroll("edge", "edge-z", "sh").await.token;
    let parts: Vec<&str> = real.split('.').collect();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let rewritten = URL_SAFE_NO_PAD.encode(payload.replace("edge-z", "edge-a"));
    let tampered = format!("{}.{rewritten}.{}", parts[0], parts[2]);
    assert_eq!(
        h.edge_with(&tampered, "/edge/v1/register", &body)
            .await
            .status(),
        401
    );
    // Another algorithm in the header (HMAC with the public key as secret, or none).
    for alg in [r#"{"alg":"HS256","kid":"k"}"#, r#"{"alg":"none"}"#] {
        let header = URL_SAFE_NO_PAD.encode(alg);
        let token = format!("{header}.{}.{}", parts[1], parts[2]);
        let (status, message) =
            status_and_message(h.edge_with(&token, "/edge/v1/register", &body).await).await;
        assert_eq!(status, 401, "{alg}: {message}");
    }
    // Expired (beyond the leeway), and not yet valid.
    let expired = signed(&h, &claims("edge-a", NodeRole::Edge, -120), false).await;
    let (status, message) =
        status_and_message(h.edge_with(&expired, "/edge/v1/register", &body).await).await;
    assert_eq!(status, 401);
    assert!(message.to_lowercase().contains("expired"), "{message}");
    let mut early = claims("edge-a", NodeRole::Edge, 600);
    early.nbf += 300;
    let early = signed(&h, &early, false).await;
    assert_eq!(
        h.edge_with(&early, "/edge/v1/register", &body)
            .await
            .status(),
        401
    );
    // Unknown kid.
    let mut unknown = Header::new(Algorithm::EdDSA);
    unknown.kid = Some("g99-unknown".into());
    let keys = h.store.node_signing_keys().await.unwrap();
    let token = jsonwebtoken::encode(
        &unknown,
        &claims("edge-a", NodeRole::Edge, 600),
        &EncodingKey::from_ed_der(&keys[0].private_key),
    )
    .unwrap();
    let (status, message) =
        status_and_message(h.edge_with(&token, "/edge/v1/register", &body).await).await;
    assert_eq!(status, 401);
    assert!(message.contains("g99-unknown"), "{message}");
    // A well-made token of the store's key works (the checks above are not refusing everything).
    let good = signed(&h, &claims("edge-a", NodeRole::Edge, 600), false).await;
    assert_eq!(
        h.edge_with(&good, "/edge/v1/register", &body)
            .await
            .status(),
        204
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_renew_with_themselves_and_the_keys_are_public() {
    let h = harness().await;
    let first = h.enroll("edge", "edge-a", "sh").await;
    let renew = |token: &str| {
        h.http
            .post(h.url("/edge/v1/renew"))
            .bearer_auth(token.to_owned())
            .send()
    };
    let response = renew(&first.token).await.unwrap();
    assert_eq!(response.status(), 200);
    let renewed = NodeCredential::decode(response.bytes().await.unwrap()).unwrap();
    assert!(renewed.expires_at_unix_ms >= first.expires_at_unix_ms);
    assert_eq!(
        h.edge_with(
            &renewed.token,
            "/edge/v1/register",
            &registration("edge-a", "sh")
        )
        .await
        .status(),
        204
    );
    // The secret does not renew anything, and neither does an expired token.
    assert_eq!(renew(SECRET).await.unwrap().status(), 401);
    let expired = signed(&h, &claims("edge-a", NodeRole::Edge, -120), false).await;
    assert_eq!(renew(&expired).await.unwrap().status(), 401);
    // A job token renews as a job token.
    let job = h.enroll("job", "job-1", "sh").await;
    let response = renew(&job.token).await.unwrap();
    let renewed = NodeCredential::decode(response.bytes().await.unwrap()).unwrap();
    let keys = rim_proto::node_token::KeySet::from_wire(&renewed.keys);
    assert_eq!(
        keys.verify(&renewed.token, NodeRole::Job).unwrap().sub,
        "job-1"
    );
    let response = h.http.get(h.url("/edge/v1/keys")).send().await.unwrap();
    let public = NodeKeys::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(public.keys, renewed.keys);
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_flooded_with_room_names_keeps_the_node_alive_and_its_sessions() {
    let h = harness().await;
    h.register("edge-a", "sh").await;
    let (status, _) = h
        .sessions("edge-a", vec![connect("k", 1, 1, now(), "live://1")])
        .await;
    assert_eq!(status, 200);
    let token = h.enroll("edge", "edge-a", "sh").await.token;
    // More distinct long rooms than control keeps, and some that are not rooms at all.
    let total = rim_proto::MAX_HEARTBEAT_ROOMS + 2_000;
    let mut rooms: Vec<RoomCount> = (0..total)
        .map(|i| RoomCount {
            room: format!("live://{i:06}-{}", "x".repeat(80)),
            count: 1 + (i % 7) as u64,
        })
        .collect();
    rooms.push(RoomCount {
        room: "not a room".into(),
        count: 3,
    });
    let report = NodeHeartbeat {
        node_id: "edge-a".into(),
        connection_count: 1,
        ip_count: 1,
        rooms,
        ..NodeHeartbeat::default()
    };
    let started = Instant::now();
    let response = h.edge_with(&token, "/edge/v1/heartbeat", &report).await;
    let (status, message) = status_and_message(response).await;
    assert_eq!(status, 204, "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let node = node(&h, "edge-a").await;
    assert_eq!(node.state, NodeState::Active);
    let kept = h.store.top_rooms("live", usize::MAX).await.unwrap();
    assert_eq!(kept.len(), rim_proto::MAX_HEARTBEAT_ROOMS);
    // The largest rooms were kept: every room of 7, none of 1 (the 2,000 smallest went).
    assert!(kept.iter().all(|room| room.count >= 2), "{:?}", kept.last());
    let sevens = (0..total).filter(|i| i % 7 == 6).count();
    assert_eq!(kept.iter().filter(|room| room.count == 7).count(), sevens);
    let sessions = h
        .store
        .sessions_by_keys(&["k".into()], now())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    // A heartbeat whose only room is malformed is a heartbeat all the same.
    let malformed = NodeHeartbeat {
        node_id: "edge-a".into(),
        rooms: vec![RoomCount {
            room: "nope".into(),
            count: 1,
        }],
        ..NodeHeartbeat::default()
    };
    assert_eq!(
        h.edge_with(&token, "/edge/v1/heartbeat", &malformed)
            .await
            .status(),
        204
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_unauthenticated_body_is_refused_before_it_is_sent() {
    let h = harness().await;
    let addr = h.control.local_addr();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /edge/v1/sessions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-protobuf\r\n\
         content-length: {}\r\n\r\n",
        1u64 << 30
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[0u8; 1024]).await.unwrap();
    // The answer comes while almost all of the declared gigabyte is still unsent.
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("no answer while the body was still coming")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    h.control.shutdown().await.unwrap();
}
