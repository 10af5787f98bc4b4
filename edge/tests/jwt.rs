//! Token attacks over real sockets: algorithms outside the pinned list (and the HMAC-with-the-RSA-
//! public-key confusion), missing or wrong audience, not-yet-valid tokens, unknown `kid`s, JWKS
//! rotation served by a local HTTP server (refetch on unknown `kid`, rate limit, last good set kept
//! through an outage), and short HMAC secrets refused at start.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Kind, TestEdge, start, tokens};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};

const RS_PUBLIC: &str = include_str!("fixtures/jwt-rs256-public.pem");

/// Signs `claims` with `alg`, `key` and an optional `kid`.
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> Vec<u8> {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    tokens::token_body(&jsonwebtoken::encode(&header, claims, key).unwrap())
}

fn hs_key(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

/// Valid claims (as [`tokens::claims`]) with `extra` merged in.
fn claims_with(extra: Value) -> Value {
    let mut claims = tokens::claims("k", "", &[], 3600);
    for (name, value) in extra.as_object().unwrap() {
        claims[name] = value.clone();
    }
    claims
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Authenticates `body` over TCP and returns the refusal's text (asserting it is one).
async fn refusal(edge: &TestEdge, body: &[u8]) -> String {
    let mut client = edge.connect(Kind::Tcp).await;
    client.auth_refused(body).await.0
}

async fn assert_refused(edge: &TestEdge, body: &[u8], needle: &str) {
    let error = refusal(edge, body).await;
    assert!(
        error.contains(needle),
        "{error:?} should mention {needle:?}"
    );
}

async fn assert_accepted(edge: &TestEdge, body: &[u8]) {
    let mut client = edge.connect(Kind::Tcp).await;
    client.auth_ok(body).await;
}

#[tokio::test]
async fn algorithms_outside_the_pinned_list_are_refused() {
    let edge = start(|_| {}).await;
    let claims = claims_with(json!({}));
    let hs512 = sign(Algorithm::HS512, None, &claims, &hs_key(tokens::HS_SECRET));
    assert_refused(&edge, &hs512, "HS512 is not accepted").await;
    assert_accepted(&edge, &tokens::token_body(&tokens::hs256(&claims))).await;

    let rs_only = start(|c| c.edge_jwt_algorithms = vec!["RS256".into()]).await;
    let hs256 = tokens::token_body(&tokens::hs256(&claims));
    assert_refused(&rs_only, &hs256, "HS256 is not accepted").await;
    assert_accepted(&rs_only, &tokens::token_body(&tokens::rs256(&claims))).await;
}

#[tokio::test]
async fn hmac_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: the attacker knows the RSA public key and uses it as an HMAC secret.
    let edge = start(|_| {}).await;
    let forged = sign(
        Algorithm::HS256,
        None,
        &claims_with(json!({})),
        &hs_key(RS_PUBLIC),
    );
    assert_refused(&edge, &forged, "InvalidSignature").await;
    let forged_trimmed = sign(
        Algorithm::HS256,
        None,
        &claims_with(json!({})),
        &hs_key(RS_PUBLIC.trim()),
    );
    assert_refused(&edge, &forged_trimmed, "InvalidSignature").await;
}

#[tokio::test]
async fn audience_is_required_when_configured() {
    let edge = start(|c| c.edge_jwt_audience = vec!["rim-edge".into(), "rim-edge-eu".into()]).await;
    let missing = tokens::token_body(&tokens::hs256(&claims_with(json!({}))));
    assert_refused(&edge, &missing, "aud").await;
    let wrong = tokens::token_body(&tokens::hs256(&claims_with(json!({"aud": "billing"}))));
    assert_refused(&edge, &wrong, "InvalidAudience").await;
    let wrong_list = claims_with(json!({"aud": ["billing", "reports"]}));
    let wrong_list = tokens::token_body(&tokens::hs256(&wrong_list));
    assert_refused(&edge, &wrong_list, "InvalidAudience").await;
    for aud in [json!("rim-edge"), json!(["billing", "rim-edge-eu"])] {
        let right = tokens::token_body(&tokens::hs256(&claims_with(json!({ "aud": aud }))));
        assert_accepted(&edge, &right).await;
    }
    // Without a configured audience a token's `aud` is not checked (tokens made for rim pass).
    let open = start(|_| {}).await;
    let any = tokens::token_body(&tokens::hs256(&claims_with(json!({"aud": "billing"}))));
    assert_accepted(&open, &any).await;
}

#[tokio::test]
async fn not_yet_valid_tokens_are_refused() {
    let edge = start(|c| c.edge_jwt_leeway_s = 5).await;
    let early = claims_with(json!({"nbf": now() + 600}));
    assert_refused(
        &edge,
        &tokens::token_body(&tokens::hs256(&early)),
        "ImmatureSignature",
    )
    .await;
    let within_leeway = claims_with(json!({"nbf": now() + 2}));
    assert_accepted(&edge, &tokens::token_body(&tokens::hs256(&within_leeway))).await;
    let valid = claims_with(json!({"nbf": now() - 10}));
    assert_accepted(&edge, &tokens::token_body(&tokens::hs256(&valid))).await;
}

#[tokio::test]
async fn keys_are_chosen_by_kid() {
    let second = "second-hs256-secret-of-enough-length!";
    let edge = start(|c| {
        let dir = c.edge_jwt_keys[0].parent().unwrap().to_owned();
        let path = dir.join("second.key");
        std::fs::write(&path, second).unwrap();
        c.edge_jwt_keys = vec![
            format!("first={}", c.edge_jwt_keys[0].display()).into(),
            format!("second={}", path.display()).into(),
        ];
    })
    .await;
    let claims = claims_with(json!({}));
    let first = hs_key(tokens::HS_SECRET);
    assert_accepted(
        &edge,
        &sign(Algorithm::HS256, Some("first"), &claims, &first),
    )
    .await;
    assert_accepted(
        &edge,
        &sign(Algorithm::HS256, Some("second"), &claims, &hs_key(second)),
    )
    .await;
    // A kid selects its key only: the first secret under the second's id does not verify.
    assert_refused(
        &edge,
        &sign(Algorithm::HS256, Some("second"), &claims, &first),
        "InvalidSignature",
    )
    .await;
    assert_refused(
        &edge,
        &sign(Algorithm::HS256, Some("third"), &claims, &first),
        "unknown key id (kid) \"third\"",
    )
    .await;
    // No kid: every key of the family is tried (today's tokens keep working).
    assert_accepted(&edge, &sign(Algorithm::HS256, None, &claims, &first)).await;
}

#[tokio::test]
async fn short_hmac_secrets_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "secret\n").unwrap();
    let mut config = rim_edge::EdgeConfig::local().unwrap();
    config.edge_jwt_keys = vec![short];
    let error = rim_edge::auth::from_config(&config)
        .err()
        .expect("a 6-byte secret must not start");
    let text = format!("{error:#}");
    assert!(
        text.contains("HMAC secret of 6 bytes") && text.contains("at least 32"),
        "{text}"
    );
    let mut config = rim_edge::EdgeConfig::local().unwrap();
    config.edge_jwt_algorithms = vec!["HS257".into()];
    config.edge_jwt_keys = vec![dir.path().join("unused")];
    let error = rim_edge::auth::from_config(&config)
        .err()
        .expect("unknown algorithm");
    assert!(error.to_string().contains("HS257"), "{error}");
}

/// One ES256 key pair: its signing key and its public JWK with `kid`.
struct EcKey {
    signing: EncodingKey,
    jwk: Value,
}

impl EcKey {
    fn generate(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw();
        assert_eq!((point.len(), point[0]), (65, 4), "uncompressed P-256 point");
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        Self { signing, jwk }
    }

    fn token(&self, kid: &str) -> Vec<u8> {
        sign(
            Algorithm::ES256,
            Some(kid),
            &claims_with(json!({})),
            &self.signing,
        )
    }
}

/// A JWKS server: what it serves (None: answers 500) and how often it was asked.
#[derive(Clone, Default)]
struct KeyServer {
    document: Arc<Mutex<Option<Value>>>,
    hits: Arc<AtomicUsize>,
}

impl KeyServer {
    async fn start(keys: &[&EcKey]) -> (Self, SocketAddr) {
        let server = Self::default();
        server.serve(keys);
        let app = Router::new()
            .route("/jwks", get(answer))
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (server, addr)
    }

    fn serve(&self, keys: &[&EcKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        *self.document.lock() = Some(json!({ "keys": keys }));
    }

    fn fail(&self) {
        *self.document.lock() = None;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn answer(State(server): State<KeyServer>) -> Result<axum::Json<Value>, StatusCode> {
    server.hits.fetch_add(1, Ordering::SeqCst);
    let document = server.document.lock().clone();
    document
        .map(axum::Json)
        .ok_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[tokio::test]
async fn jwks_keys_rotate_without_a_restart() {
    const MIN_REFETCH: Duration = Duration::from_millis(400);
    let (old, new) = (EcKey::generate("2026-old"), EcKey::generate("2026-new"));
    let (server, addr) = KeyServer::start(&[&old]).await;
    let edge = start(|c| {
        c.edge_jwt_keys.clear();
        c.edge_jwt_algorithms = vec!["ES256".into()];
        c.edge_jwt_jwks_urls = vec![format!("http://{addr}/jwks")];
        c.edge_jwt_jwks_min_refetch_ms = MIN_REFETCH.as_millis() as u64;
    })
    .await;
    assert_accepted(&edge, &old.token("2026-old")).await;
    // The kid names the key: the old key's token under the new id does not verify anywhere.
    assert_refused(&edge, &old.token("2026-other"), "unknown key id").await;

    // The provider publishes the new key beside the old one; the first token naming it makes the
    // edge fetch again (the regular refresh is minutes away).
    tokio::time::sleep(MIN_REFETCH).await;
    server.serve(&[&old, &new]);
    let before = server.hits();
    assert_accepted(&edge, &new.token("2026-new")).await;
    assert_eq!(server.hits(), before + 1, "one fetch for the unknown kid");
    assert_accepted(&edge, &old.token("2026-old")).await;

    // Made-up kids cannot make the edge hammer the key server: at most one fetch per interval.
    tokio::time::sleep(MIN_REFETCH).await;
    let before = server.hits();
    let forged: Vec<_> = (0..20)
        .map(|i| {
            let edge = &edge;
            let body = new.token(&format!("forged-{i}"));
            async move { refusal(edge, &body).await }
        })
        .collect();
    for error in futures_util::future::join_all(forged).await {
        assert!(error.contains("unknown key id"), "{error}");
    }
    assert_eq!(server.hits(), before + 1, "20 unknown kids, one fetch");

    // The provider retires the old key.
    tokio::time::sleep(MIN_REFETCH).await;
    server.serve(&[&new]);
    assert_refused(
        &edge,
        &EcKey::generate("2027").token("2027"),
        "unknown key id",
    )
    .await;
    assert_refused(&edge, &old.token("2026-old"), "unknown key id").await;
    assert_accepted(&edge, &new.token("2026-new")).await;

    // The provider fails: the last good set stays in force.
    tokio::time::sleep(MIN_REFETCH).await;
    server.fail();
    let before = server.hits();
    assert_refused(&edge, &old.token("2026-old"), "unknown key id").await;
    assert_eq!(server.hits(), before + 1, "the failed fetch happened");
    assert_accepted(&edge, &new.token("2026-new")).await;
}

#[tokio::test]
async fn an_unreachable_jwks_makes_auth_unavailable_not_open() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let edge = start(|c| {
        c.edge_jwt_keys.clear();
        c.edge_jwt_algorithms = vec!["ES256".into()];
        c.edge_jwt_jwks_urls = vec![format!("http://{addr}/jwks")];
    })
    .await;
    let key = EcKey::generate("k");
    let error = refusal(&edge, &key.token("k")).await;
    assert!(error.starts_with("auth unavailable"), "{error}");
}
