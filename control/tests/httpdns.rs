//! The HTTPDNS answer at `GET /goim/nodes/weighted` is written from JSON pieces precomputed per
//! node snapshot: over real HTTP it must be goim's envelope around exactly the answer rim's
//! explained route computes for the same client and seed, and a new snapshot (a node drained, a
//! node registered) must change the bytes served.

mod common;

use common::*;
use reqwest::Method;
use rim_bus::memory::MemoryBus;
use serde_json::{Value, json};
use std::sync::Arc;

/// The raw response to `path`: status, content type and body bytes.
async fn raw(h: &Harness, path: &str) -> (u16, String, Vec<u8>) {
    let response = h.http.get(h.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

/// The goim answer for `query` (with a fixed seed), as bytes, checked against `/v1/dns`.
async fn weighted(h: &Harness, query: &str) -> Vec<u8> {
    let (status, content_type, body) = raw(h, &format!("/goim/nodes/weighted?{query}")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/json");
    let served: Value = serde_json::from_slice(&body).unwrap();
    let (_, explained) = Harness::call(h.http.get(h.url(&format!("/v1/dns?{query}")))).await;
    assert_eq!(
        served,
        json!({"code": 0, "message": "", "data": explained["answer"]}),
        "{query}"
    );
    body
}

#[tokio::test]
async fn the_precomputed_answer_is_the_computed_one_and_follows_each_new_snapshot() {
    let h = start(config(), memory_store(), Arc::new(MemoryBus::new(100))).await;
    h.register("n1", "sh").await;
    h.register("n2", "sh").await;
    let queries = |seed: u64| {
        [
            format!("seed={seed}"),
            format!("seed={seed}&platform=web"),
            format!("seed={seed}&platform=web&region=sh"),
            format!("seed={seed}&region=bj"),
            format!("seed={seed}&lat=31.2&lon=121.5&platform=web"),
            format!("seed={seed}&lat=40&lon=116"),
        ]
    };
    for seed in 0..20 {
        for query in queries(seed) {
            let body = weighted(&h, &query).await;
            // Encoded in goim's field order, compactly: what goim's clients were written against.
            assert!(
                body.starts_with(br#"{"code":0,"message":"","data":{"domain":"#),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    let before = weighted(&h, "seed=7&platform=web").await;

    // A drained node leaves the next snapshot, and so the bytes.
    let (status, _) =
        Harness::call(h.with_key(Method::POST, "/v1/admin/nodes/n1/drain", ADMIN_KEY)).await;
    assert_eq!(status, 204);
    let drained = weighted(&h, "seed=7&platform=web").await;
    assert_ne!(drained, before);
    let answer: Value = serde_json::from_slice(&drained).unwrap();
    assert_eq!(answer["data"]["nodes"], json!(["n2.example.com"]));

    // A node registered elsewhere, on other ports and addresses, is answered with its own.
    let mut bj = registration("n3", "bj");
    bj.addresses = vec!["10.9.0.3".into(), "10.9.0.4".into()];
    bj.tcp_port = 4101;
    bj.wss_port = 0;
    assert_eq!(h.edge("/edge/v1/register", &bj).await.status(), 204);
    let answer: Value = serde_json::from_slice(&weighted(&h, "seed=7&region=bj").await).unwrap();
    assert_eq!(answer["data"]["nodes"][0], "10.9.0.3", "{answer}");
    assert_eq!(answer["data"]["nodes"][1], "10.9.0.4", "{answer}");
    assert_eq!(answer["data"]["tcp_port"], 4101, "{answer}");
    assert_eq!(answer["data"].get("wss_port"), None, "{answer}");

    // Nothing left to answer: the empty answer says why.
    for node in ["n2", "n3"] {
        let path = format!("/v1/admin/nodes/{node}/drain");
        let (status, _) = Harness::call(h.with_key(Method::POST, &path, ADMIN_KEY)).await;
        assert_eq!(status, 204);
    }
    let answer: Value = serde_json::from_slice(&weighted(&h, "seed=7").await).unwrap();
    assert_eq!(answer["data"]["nodes"], json!([]), "{answer}");
    assert_eq!(answer["data"]["reason"]["draining"], 3, "{answer}");
    h.control.shutdown().await.unwrap();
}
