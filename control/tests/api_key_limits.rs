//! API keys with limits, over real sockets on a PostgreSQL store: a key's allowed target kinds
//! (403 with a message elsewhere) and rate (429 with `Retry-After` once its burst is spent, on both
//! API families), limits stored at creation and honoured after the key cache's re-verification,
//! the bearer scheme in any case, and `/metrics` only for a read-scope key.

mod common;

use common::*;
use reqwest::Method;
use rim_bus::memory::MemoryBus;
use rim_store::postgres::PostgresStore;
use rim_testkit::postgres::TestPostgres;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An instance on a fresh PostgreSQL database with a memory bus.
async fn harness() -> Harness {
    let database = TestPostgres::shared().fresh_database();
    let store = Arc::new(
        PostgresStore::connect(&database, rim_store::StoreSettings::default())
            .await
            .unwrap(),
    );
    start(config(), store, Arc::new(MemoryBus::new(10_000))).await
}

/// Creates a key with these limits (name and scopes added): status and body.
async fn create(h: &Harness, limits: Value) -> (u16, Value) {
    let mut body = json!({"name": "limited", "scopes": ["push", "read"]});
    if let (Some(body), Some(limits)) = (body.as_object_mut(), limits.as_object()) {
        body.extend(limits.clone());
    }
    Harness::call(
        h.with_key(Method::POST, "/v1/admin/api-keys", ADMIN_KEY)
            .json(&body),
    )
    .await
}

/// A `/v1` push to users with this key: the response.
async fn push_users(h: &Harness, key: &str) -> reqwest::Response {
    h.with_key(Method::POST, "/v1/push/users", key)
        .json(&json!({"mids": [7], "operation": 1000, "body_text": "hi"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_limited_to_some_target_kinds_gets_403_with_a_message_elsewhere() {
    let h = harness().await;
    let (status, created) = create(&h, json!({"target_kinds": ["mids", "keys"]})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["target_kinds"], json!(["mids", "keys"]));
    let key = created["secret"].as_str().unwrap();

    assert_eq!(push_users(&h, key).await.status(), 202);
    let (status, _) = Harness::call(
        h.with_key(Method::POST, "/v1/push/keys", key)
            .json(&json!({"keys": ["k"], "operation": 1000, "body_text": "hi"})),
    )
    .await;
    assert_eq!(status, 202);
    for (path, body) in [
        (
            "/v1/push/room",
            json!({"room": "live://1", "operation": 1000, "body_text": "hi"}),
        ),
        (
            "/v1/push/all",
            json!({"operation": 1000, "body_text": "hi"}),
        ),
    ] {
        let (status, answer) = Harness::call(h.with_key(Method::POST, path, key).json(&body)).await;
        assert_eq!(status, 403, "{path}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains("may not push to target kind") && message.contains("mids, keys"),
            "{message}"
        );
    }
    let (status, answer) = Harness::call(
        h.with_key(
            Method::POST,
            "/goim/push/room?operation=1000&type=live&room=1",
            key,
        )
        .body("x"),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["code"], -400);
    assert!(answer["message"].as_str().unwrap().contains("\"room\""));
    // The read scope is untouched by the target kinds.
    let (status, _) = Harness::call(h.with_key(Method::GET, "/v1/nodes", key)).await;
    assert_eq!(status, 200);

    // Nonsense limits are refused at creation.
    for bad in [
        json!({"target_kinds": []}),
        json!({"target_kinds": ["rooms"]}),
        json!({"rate_per_second": 0}),
        json!({"rate_burst": 5}),
    ] {
        let (status, answer) = create(&h, bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {answer}");
    }
}

#[tokio::test]
async fn a_rate_limited_key_gets_429_with_retry_after_and_recovers() {
    let h = harness().await;
    let (status, created) = create(&h, json!({"rate_per_second": 2, "rate_burst": 3})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["rate_limit"], json!({"per_second": 2, "burst": 3}));
    let key = created["secret"].as_str().unwrap();
    let unlimited = h.create_key("unlimited", &["push"]).await;

    let refused = drain(&h, key).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1, "one token comes back within half a second");
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(answer["error"], "too_many_requests");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("rate limit of 2 pushes/s (burst 3)"),
        "{answer}"
    );
    // The goim routes share the key's bucket.
    let (status, answer) = Harness::call(
        h.with_key(Method::POST, "/goim/push/mids?operation=1000&mids=7", key)
            .body("x"),
    )
    .await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["code"], -400);
    // The bucket was dry here (it refused): at 2/s the next token is due within 0.5 s, the one
    // after it no sooner than 1 s from now.
    let dry = Instant::now();
    // Other keys and the admin key are not slowed.
    for _ in 0..5 {
        assert_eq!(push_users(&h, &unlimited).await.status(), 202);
        assert_eq!(push_users(&h, ADMIN_KEY).await.status(), 202);
    }

    tokio::time::sleep_until((dry + Duration::from_millis(600)).into()).await;
    assert_eq!(push_users(&h, key).await.status(), 202, "a token came back");
    let second = push_users(&h, key).await.status();
    if dry.elapsed() < Duration::from_millis(1_000) {
        assert_eq!(second, 429, "only one token came back");
    } // else this machine was too slow to tell one token from two

    // Past the cache's re-verification (5 s) the bucket is kept, not refilled: after 5.5 s at
    // 2/s the burst of 3 is full again, so 3 more pass, plus one per half second the pushes take.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    drain(&h, key).await;
}

/// Pushes with `key` until one is refused: asserts that the full burst of 3 passed, plus at
/// most the tokens that came back (2/s) while the pushes took their time; answers the refusal.
async fn drain(h: &Harness, key: &str) -> reqwest::Response {
    let started = Instant::now();
    let mut passed = 0;
    loop {
        let response = push_users(h, key).await;
        if response.status() != 202 {
            let refilled = (started.elapsed().as_millis() / 500) as usize;
            assert!(
                (3..=3 + refilled).contains(&passed),
                "{passed} passed, expected 3 (+{refilled} refilled while pushing)"
            );
            return response;
        }
        passed += 1;
        assert!(passed <= 100, "the bucket never ran dry");
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case() {
    let h = harness().await;
    let key = h.create_key("case", &["push", "read"]).await;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let (status, answer) = Harness::call(
            h.http
                .get(h.url("/v1/nodes"))
                .header("authorization", format!("{scheme} {key}")),
        )
        .await;
        assert_eq!(status, 200, "{scheme}: {answer}");
    }
    let (status, _) = Harness::call(
        h.http
            .get(h.url("/v1/nodes"))
            .header("authorization", format!("Basic {key}")),
    )
    .await;
    assert_eq!(status, 401, "another scheme is no bearer token");
}

#[tokio::test]
async fn metrics_are_refused_without_a_read_key() {
    let h = harness().await;
    let pusher = h.create_key("pusher", &["push"]).await;
    let reader = h.create_key("reader", &["read"]).await;
    let (status, _) = Harness::call(h.http.get(h.url("/metrics"))).await;
    assert_eq!(status, 401);
    let (status, _) = Harness::call(h.with_key(Method::GET, "/metrics", "wrong")).await;
    assert_eq!(status, 401);
    let (status, _) = Harness::call(h.with_key(Method::GET, "/metrics", &pusher)).await;
    assert_eq!(status, 403);
    for key in [reader.as_str(), ADMIN_KEY] {
        let response = h
            .with_key(Method::GET, "/metrics", key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4"
        );
    }
}
