//! Client authentication: JWT accepted / expired / badly signed / missing, key reload, insecure mode.

mod common;

use std::time::Duration;

use common::client::Ended;
use common::{Kind, start, start_with, tokens};
use rim_edge::EdgeHooks;
use rim_edge::auth::jwt::{JwtPolicy, JwtVerifier};
use rim_edge::auth::{AuthRequest, Verifier};
use rim_edge::config::AuthMode;

both_transports!(
    hs256_token_in_goim_json_is_accepted,
    rs256_token_as_whole_body_is_accepted,
    expired_token_is_refused,
    badly_signed_token_is_refused,
    missing_token_is_refused,
    wrong_issuer_is_refused,
    insecure_mode_trusts_goim_json,
);

/// After a refusal: the JSON error mentions `needle`, the close carries it on WebSocket, and the edge
/// still serves everyone.
async fn assert_refused(edge: &common::TestEdge, kind: Kind, body: &[u8], needle: &str) {
    let before = edge.handle.connection_count();
    let mut client = edge.connect(kind).await;
    let (error, ended) = client.auth_refused(body).await;
    assert!(
        error.contains(needle),
        "{error:?} should mention {needle:?}"
    );
    match ended {
        Ended::Ws(code, reason) => {
            assert_eq!(code, 1008);
            assert!(reason.starts_with("auth failed"), "{reason}");
        }
        Ended::Stream => assert_eq!(kind, Kind::Tcp),
        Ended::WsNoFrame => panic!("WebSocket closed without a reason"),
    }
    assert_eq!(edge.handle.connection_count(), before);
    edge.assert_unaffected(&mut []).await;
}

async fn hs256_token_in_goim_json_is_accepted(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut client = edge.client(kind, "k1", "live://5", &[1000]).await;
    assert_eq!(client.heartbeat().await, 1, "room from the claims");
    let push = common::key_push("m", 1000, b"hi", &["k1"]);
    assert_eq!(
        edge.push(vec![push]).await,
        [1],
        "key and accepts from the claims"
    );
}

async fn rs256_token_as_whole_body_is_accepted(kind: Kind) {
    let edge = start(|_| {}).await;
    let token = tokens::rs256(&tokens::claims("rs", "live://6", &[], 3600));
    let mut client = edge.connect(kind).await;
    client.auth_ok(token.as_bytes()).await;
    assert_eq!(client.heartbeat().await, 1);
    assert_eq!(edge.handle.room_online("live://6"), 1);
}

async fn expired_token_is_refused(kind: Kind) {
    let edge = start(|_| {}).await;
    let token = tokens::hs256(&tokens::claims("k", "", &[], -3600));
    assert_refused(&edge, kind, &tokens::token_body(&token), "Expired").await;
}

async fn badly_signed_token_is_refused(kind: Kind) {
    let edge = start(|_| {}).await;
    let token = tokens::hs256_with("not-the-secret", &tokens::claims("k", "", &[], 3600));
    assert_refused(&edge, kind, &tokens::token_body(&token), "InvalidSignature").await;
}

async fn missing_token_is_refused(kind: Kind) {
    let edge = start(|_| {}).await;
    let goim = tokens::goim_body(1, "k", "live://1", &[1000]);
    assert_refused(&edge, kind, &goim, "no token").await;
    assert_refused(&edge, kind, b"\xff\x00garbage", "no token").await;
}

async fn wrong_issuer_is_refused(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut claims = tokens::claims("k", "", &[], 3600);
    claims["iss"] = "someone-else".into();
    assert_refused(
        &edge,
        kind,
        &tokens::token_body(&tokens::hs256(&claims)),
        "Issuer",
    )
    .await;
}

async fn insecure_mode_trusts_goim_json(kind: Kind) {
    let edge = start_with(AuthMode::Insecure, EdgeHooks::default(), |_| {}).await;
    let mut client = edge.connect(kind).await;
    client
        .auth_ok(&tokens::goim_body(7, "dev", "live://1", &[1000]))
        .await;
    assert_eq!(client.heartbeat().await, 1);
    assert_eq!(
        edge.push(vec![common::key_push("m", 1000, b"x", &["dev"])])
            .await,
        [1]
    );
    assert_refused(&edge, kind, b"not json", "malformed").await;
}

#[tokio::test]
async fn oversized_keys_and_platforms_are_refused_with_the_bound() {
    use rim_proto::limits::{MAX_KEY_LEN, MAX_PLATFORM_LEN};
    let edge = start_with(AuthMode::Insecure, EdgeHooks::default(), |_| {}).await;
    let body = |key: &str, platform: &str| {
        serde_json::json!({"mid": 1, "key": key, "room_id": "live://1", "platform": platform})
            .to_string()
            .into_bytes()
    };
    let longest = "k".repeat(MAX_KEY_LEN);
    let mut ok = edge.connect(Kind::Tcp).await;
    ok.auth_ok(&body(&longest, &"p".repeat(MAX_PLATFORM_LEN)))
        .await;
    for kind in [Kind::Tcp, Kind::Ws] {
        let too_long = format!("{longest}k");
        let needle = format!("longer than {MAX_KEY_LEN}");
        assert_refused(&edge, kind, &body(&too_long, "web"), &needle).await;
        let platform = "p".repeat(MAX_PLATFORM_LEN + 1);
        let needle = format!("longer than {MAX_PLATFORM_LEN}");
        assert_refused(&edge, kind, &body("k2", &platform), &needle).await;
    }
    assert_eq!(
        ok.heartbeat().await,
        1,
        "the connection within the bounds stays"
    );
}

#[tokio::test]
async fn empty_key_gets_a_generated_one() {
    let edge = start_with(AuthMode::Insecure, EdgeHooks::default(), |_| {}).await;
    let mut a = edge.connect(Kind::Tcp).await;
    a.auth_ok(&tokens::goim_body(1, "", "live://1", &[])).await;
    let mut b = edge.connect(Kind::Tcp).await;
    b.auth_ok(&tokens::goim_body(1, "", "live://1", &[])).await;
    assert_eq!(
        a.heartbeat().await,
        2,
        "two distinct generated keys, neither replaced"
    );
}

fn request(body: &[u8]) -> AuthRequest<'_> {
    AuthRequest {
        body,
        client_ip: [127, 0, 0, 1].into(),
    }
}

#[tokio::test]
async fn keys_reload_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hs.key");
    let (old_secret, new_secret) = (
        "old-secret-of-at-least-thirty-two-bytes",
        "new-secret-of-at-least-thirty-two-bytes",
    );
    std::fs::write(&path, old_secret).unwrap();
    let verifier =
        std::sync::Arc::new(JwtVerifier::load(vec![path.clone()], JwtPolicy::default()).unwrap());
    let claims = tokens::claims("k", "", &[], 3600);
    let old = tokens::token_body(&tokens::hs256_with(old_secret, &claims));
    let new = tokens::token_body(&tokens::hs256_with(new_secret, &claims));
    assert!(verifier.verify(request(&old)).await.is_ok());
    assert!(verifier.verify(request(&new)).await.is_err());

    // Explicit reload.
    std::fs::write(&path, new_secret).unwrap();
    verifier.reload().unwrap();
    assert!(verifier.verify(request(&new)).await.is_ok());
    assert!(verifier.verify(request(&old)).await.is_err());

    // A broken file keeps the keys in force.
    std::fs::write(&path, "").unwrap();
    assert!(verifier.reload().is_err());
    assert!(verifier.verify(request(&new)).await.is_ok());

    // The watcher picks up a changed file by itself.
    JwtVerifier::watch(&verifier, Duration::from_millis(20));
    std::fs::write(&path, old_secret).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    let give_up = tokio::time::Instant::now() + common::PATIENCE;
    while verifier.verify(request(&old)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "watcher did not reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn jwt_mode_without_keys_does_not_start() {
    let mut config = rim_edge::EdgeConfig::local().unwrap();
    config.edge_jwt_keys.clear();
    let error = rim_edge::auth::from_config(&config)
        .err()
        .expect("must fail");
    assert!(error.to_string().contains("key file"), "{error}");
}
