//! Business and edge API behaviour over real HTTP, with the in-memory store and bus: authentication,
//! bounds, malformed input, session-event ordering, pushes and what they put on the bus.

mod common;

use common::*;
use reqwest::Method;
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, IncomingPush};
use rim_proto::schema::push_message::Target;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// An instance with a memory store and a memory bus, and the bus itself for consuming.
async fn harness(config: rim_control::ControlConfig) -> (Harness, MemoryBus) {
    let bus = MemoryBus::new(10_000);
    (
        start(config, memory_store(), Arc::new(bus.clone())).await,
        bus,
    )
}

/// Everything currently on a region's log (waits briefly for at least one record).
async fn drain(bus: &MemoryBus, region: &str) -> Vec<IncomingPush> {
    let mut consumer = bus.consumer(region, "test");
    tokio::time::timeout(Duration::from_secs(2), consumer.next_batch(1000))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn business_routes_require_a_valid_key_with_the_right_scope() {
    let (h, _bus) = harness(config()).await;
    let (status, body) = Harness::call(
        h.http
            .post(h.url("/goim/push/mids?operation=1000&mids=1"))
            .body("x"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], -400);
    assert!(body["message"].as_str().unwrap().contains("API key"));
    let (status, body) =
        Harness::call(h.with_key(Method::GET, "/v1/nodes", "rimk_not-a-key")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );

    let reader = h.create_key("reader", &["read"]).await;
    let (status, _) = Harness::call(h.with_key(Method::GET, "/v1/online/total", &reader)).await;
    assert_eq!(status, 200);
    let (status, body) = Harness::call(
        h.with_key(Method::POST, "/goim/push/all?operation=1000", &reader)
            .body("x"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // X-Api-Key works as well as a bearer token.
    let pusher = h.create_key("pusher", &["push"]).await;
    let response = h
        .http
        .post(h.url("/goim/push/all?operation=1000"))
        .header("x-api-key", &pusher)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = Harness::call(h.with_key(Method::GET, "/v1/admin/api-keys", &pusher)).await;
    assert_eq!(status, 403);
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_keys_are_shown_once_stored_hashed_and_revocable() {
    let (h, _bus) = harness(config()).await;
    let secret = h.create_key("ops", &["read"]).await;
    let stored = h.store.api_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    let expected: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes()).into();
    assert_eq!(stored[0].secret_hash, expected.to_vec());
    let (status, listing) =
        Harness::call(h.with_key(Method::GET, "/v1/admin/api-keys", ADMIN_KEY)).await;
    assert_eq!(status, 200);
    assert!(
        !listing.to_string().contains(&secret),
        "the listing leaks the secret"
    );
    let id = listing["api_keys"][0]["id"].as_str().unwrap().to_owned();
    // Used once before revocation, so the instance has it cached as verified.
    let (status, _) = Harness::call(h.with_key(Method::GET, "/v1/online/total", &secret)).await;
    assert_eq!(status, 200);

    let (status, _) = Harness::call(h.with_key(
        Method::DELETE,
        &format!("/v1/admin/api-keys/{id}"),
        ADMIN_KEY,
    ))
    .await;
    assert_eq!(status, 204);
    let (status, _) = Harness::call(h.with_key(Method::GET, "/v1/online/total", &secret)).await;
    assert_eq!(status, 401, "a revoked key still works");
    let (status, _) =
        Harness::call(h.with_key(Method::DELETE, "/v1/admin/api-keys/nope", ADMIN_KEY)).await;
    assert_eq!(status, 404);
    let (status, body) = Harness::call(
        h.with_key(Method::POST, "/v1/admin/api-keys", ADMIN_KEY)
            .json(&json!({"name": "x", "scopes": ["root"]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_bodies_get_413_with_a_message() {
    let config = rim_control::ControlConfig {
        control_push_body_limit: 1024,
        ..config()
    };
    let (h, _bus) = harness(config).await;
    let big = vec![b'x'; 1025];
    let (status, body) = Harness::call(
        h.with_key(Method::POST, "/goim/push/all?operation=1000", ADMIN_KEY)
            .body(big.clone()),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], -400);
    assert!(body["message"].as_str().unwrap().contains("1024"), "{body}");
    // A chunked body without Content-Length is cut off while reading.
    assert_eq!(
        chunked_post(&h, "/goim/push/all?operation=1000", &big).await,
        413
    );
    assert_eq!(
        chunked_post(&h, "/goim/push/all?operation=1000", &big[..1000]).await,
        200
    );
    let text = String::from_utf8(big).unwrap();
    let (status, body) = Harness::call(
        h.with_key(Method::POST, "/v1/push/all", ADMIN_KEY)
            .json(&json!({"operation": 1000, "body_text": text})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    h.control.shutdown().await.unwrap();
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no Content-Length) over a raw socket; answers
/// the status code.
async fn chunked_post(h: &Harness, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(h.control.local_addr())
        .await
        .unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(100) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    socket.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    // The server may answer and close before reading everything; the status line is what counts.
    let _ = socket.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[tokio::test]
async fn malformed_queries_are_400_never_500() {
    let (h, _bus) = harness(config()).await;
    for path in [
        "/goim/online/top?type=live&limit=-1",
        "/goim/online/top?type=live&limit=abc",
        "/goim/online/top?type=live",
        "/goim/online/top?limit=5",
        "/goim/online/room?type=live",
    ] {
        let (status, body) = Harness::call(h.with_key(Method::GET, path, ADMIN_KEY)).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(-400)),
            "{path}: {body}"
        );
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    for path in [
        "/goim/push/mids?operation=1000&mids=1,abc",
        "/goim/push/mids?mids=1",
        "/goim/push/mids?operation=5&mids=1",
        "/goim/push/keys?operation=1000",
        "/goim/push/room?operation=1000&type=live",
        "/goim/push/all?operation=1000&speed=-3",
    ] {
        let (status, body) =
            Harness::call(h.with_key(Method::POST, path, ADMIN_KEY).body("x")).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(-400)),
            "{path}: {body}"
        );
    }
    for path in [
        "/v1/online/top?type=live&limit=0",
        "/v1/online/rooms?rooms=nope",
        "/v1/dns?lat=91&lon=0",
        "/v1/dns?lat=1",
    ] {
        let (status, body) = Harness::call(h.with_key(Method::GET, path, ADMIN_KEY)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "{path}: {body}"
        );
    }
    let (status, _) = Harness::call(
        h.with_key(Method::POST, "/v1/push/users", ADMIN_KEY)
            .body("{not json"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) =
        Harness::call(h.with_key(Method::POST, "/v1/push/users", ADMIN_KEY).json(
            &json!({"operation": 1000, "mids": [1], "body_text": "a", "body_base64": "YQ=="}),
        ))
        .await;
    assert_eq!(status, 400);
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn edge_api_checks_the_token_and_answers_404_for_unknown_nodes() {
    let (h, _bus) = harness(config()).await;
    let wrong = h
        .http
        .post(h.url("/edge/v1/register"))
        .bearer_auth(SECRET)
        .body(prost::Message::encode_to_vec(&registration("n1", "sh")))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let missing = h
        .http
        .post(h.url("/edge/v1/heartbeat"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);

    assert_eq!(h.heartbeat("ghost", 1, &[]).await, 404);
    let (status, body) = h
        .sessions("ghost", vec![connect("k", 1, 1, now(), "")])
        .await;
    assert_eq!(status, 404, "{body}");

    let token = h.enroll("edge", "n1", "sh").await.token;
    let garbage = h
        .http
        .post(h.url("/edge/v1/sessions"))
        .bearer_auth(&token)
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let mut bad = registration("n1", "sh");
    bad.latitude = 123.0;
    assert_eq!(h.edge("/edge/v1/register", &bad).await.status(), 400);

    h.register("n1", "sh").await;
    assert_eq!(h.heartbeat("n1", 1, &[("live://1", 1)]).await, 204);
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn session_batches_are_bounded() {
    let config = rim_control::ControlConfig {
        control_max_session_batch: 3,
        ..config()
    };
    let (h, _bus) = harness(config).await;
    h.register("n1", "sh").await;
    let at = now();
    let events = (0..4)
        .map(|i| connect(&format!("k{i}"), i, i as u64, at, ""))
        .collect();
    let (status, body) = h.sessions("n1", events).await;
    assert_eq!(status, 413, "{body}");
    // One invalid event is dropped and counted; the rest of its batch is applied.
    let (status, report) = h
        .sessions(
            "n1",
            vec![
                connect("", 1, 1, at, ""),
                connect("fine", 2, 2, at, "bad-room"),
                connect("ok", 3, 3, at, ""),
            ],
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["connected"].as_u64(), report["ignored"].as_u64()),
        (Some(1), Some(2)),
        "{report}"
    );
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn duplicate_and_out_of_order_session_events_keep_the_newest_session() {
    let (h, bus) = harness(config()).await;
    h.register("n1", "sh").await;
    h.register("n2", "sh").await;
    let t = now();
    // The same connect twice (an edge resending a batch whose answer it lost).
    let (status, report) = h
        .sessions(
            "n1",
            vec![connect("dev", 7, 1, t, ""), connect("dev", 7, 1, t, "")],
        )
        .await;
    assert_eq!(status, 200, "{report}");
    // The device moved to n2 (newer connect), then n1's late disconnect of the old connection arrives.
    let (status, _) = h
        .sessions("n2", vec![connect("dev", 7, 9, t + 10, "")])
        .await;
    assert_eq!(status, 200);
    let (status, report) = h.sessions("n1", vec![disconnect("dev", 7, 1, t + 5)]).await;
    assert_eq!(status, 200);
    assert_eq!(report["ignored"], 1, "{report}");
    // A connect of n2 older than n2's stored session (a replaced connection's, delivered late)
    // does not take the key back (across nodes, arrival order decides instead: see takeovers).
    let (status, report) = h
        .sessions("n2", vec![connect("dev", 7, 8, t + 5, "")])
        .await;
    assert_eq!(
        (status, report["ignored"].as_u64()),
        (200, Some(1)),
        "{report}"
    );

    let (status, body) = Harness::call(
        h.with_key(
            Method::POST,
            "/goim/push/keys?operation=1000&keys=dev",
            ADMIN_KEY,
        )
        .body("hi"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["sessions"], 1);
    let records = drain(&bus, "sh").await;
    assert_eq!(records.len(), 2, "{records:?}");
    // First the notice closing n1's connection, which n2's connect took the key from.
    assert_eq!(records[0].partition_key, "key:dev");
    assert_eq!(
        records[0].message.target,
        Some(Target::Superseded(rim_proto::schema::SupersededSession {
            key: "dev".into(),
            node_id: "n1".into(),
            connection_id: 1
        }))
    );
    match &records[1].message.target {
        Some(Target::Keys(keys)) => {
            assert_eq!(keys.keys.len(), 1);
            assert_eq!(
                (keys.keys[0].key.as_str(), keys.keys[0].node_id.as_str()),
                ("dev", "n2")
            );
        }
        other => panic!("unexpected target {other:?}"),
    }
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn pushes_fan_out_per_target_and_region_and_report_offline_targets() {
    let (h, bus) = harness(config()).await;
    h.register("sh-1", "sh").await;
    h.register("eu-1", "eu").await;
    let t = now();
    h.sessions(
        "sh-1",
        vec![
            connect("a", 1, 1, t, "live://9"),
            connect("b", 1, 2, t, ""),
            connect("c", 2, 3, t, ""),
        ],
    )
    .await;
    h.sessions("eu-1", vec![connect("d", 1, 4, t, "")]).await;

    let (status, body) = Harness::call(
        h.with_key(Method::POST, "/v1/push/users", ADMIN_KEY)
            .json(&json!({"operation": 1001, "mids": [1, 2, 3, 1], "body_base64": "AAEC"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["sessions"], 4);
    assert_eq!(body["records"], 3, "one record per (user, region): {body}");
    assert_eq!(body["offline_mids"], json!([3]));
    assert_eq!(body["regions"], json!(["eu", "sh"]));
    let message_id = body["message_id"].as_str().unwrap();
    assert_eq!(uuid_version(message_id), 7);

    let sh = drain(&bus, "sh").await;
    let mut keys: Vec<(String, Vec<String>)> = sh
        .iter()
        .map(|r| {
            assert_eq!(r.message.message_id, message_id);
            assert_eq!(r.message.operation, 1001);
            assert_eq!(&r.message.body[..], &[0, 1, 2]);
            let Some(Target::Keys(k)) = &r.message.target else {
                panic!("not a keys target")
            };
            (
                r.partition_key.clone(),
                k.keys.iter().map(|k| k.key.clone()).collect(),
            )
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("mid:1".into(), vec!["a".into(), "b".into()]),
            ("mid:2".into(), vec!["c".into()])
        ]
    );
    let eu = drain(&bus, "eu").await;
    assert_eq!(eu.len(), 1);
    assert_eq!(eu[0].partition_key, "mid:1");

    // goim shape: keys push, one record per key, offline key reported.
    let (status, body) = Harness::call(
        h.with_key(
            Method::POST,
            "/goim/push/keys?operation=1000&keys=a&keys=zzz,d",
            ADMIN_KEY,
        )
        .body("k"),
    )
    .await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert_eq!(body["data"]["offline_keys"], json!(["zzz"]));
    assert_eq!(body["data"]["records"], 2);

    // Room and broadcast go to every region with live nodes.
    let (_, body) = Harness::call(
        h.with_key(
            Method::POST,
            "/goim/push/room?operation=1000&type=live&room=9",
            ADMIN_KEY,
        )
        .body("r"),
    )
    .await;
    assert_eq!(body["data"]["regions"], json!(["eu", "sh"]));
    let (_, body) = Harness::call(
        h.with_key(
            Method::POST,
            "/goim/push/all?operation=1000&speed=5",
            ADMIN_KEY,
        )
        .body("b"),
    )
    .await;
    assert_eq!(body["data"]["records"], 2);
    let sh = drain(&bus, "sh").await;
    let last: Vec<&str> = sh
        .iter()
        .rev()
        .take(2)
        .map(|r| r.partition_key.as_str())
        .collect();
    assert_eq!(last, vec!["broadcast", "room:live://9"]);
    assert_eq!(
        sh.last().unwrap().message.target,
        Some(Target::Broadcast(rim_proto::schema::BroadcastTarget {
            speed: 5
        }))
    );
    h.control.shutdown().await.unwrap();
}

/// The version nibble of a UUID in text form.
fn uuid_version(text: &str) -> u32 {
    text.chars().nth(14).and_then(|c| c.to_digit(16)).unwrap()
}

#[tokio::test]
async fn online_counts_nodes_dns_and_draining() {
    let (h, _bus) = harness(config()).await;
    h.register("n1", "sh").await;
    h.register("n2", "sh").await;
    assert_eq!(
        h.heartbeat("n1", 10, &[("live://1000", 6), ("live://1001", 4)])
            .await,
        204
    );
    assert_eq!(h.heartbeat("n2", 5, &[("live://1000", 5)]).await, 204);

    let (_, body) =
        Harness::call(h.with_key(Method::GET, "/goim/online/top?type=live&limit=1", ADMIN_KEY))
            .await;
    assert_eq!(body["data"], json!([{"room_id": "1000", "count": 11}]));
    let (_, body) = Harness::call(h.with_key(
        Method::GET,
        "/goim/online/room?type=live&rooms=1000,1001&rooms=7",
        ADMIN_KEY,
    ))
    .await;
    assert_eq!(body["data"], json!({"1000": 11, "1001": 4, "7": 0}));
    let (_, body) = Harness::call(h.with_key(Method::GET, "/goim/online/total", ADMIN_KEY)).await;
    assert_eq!(body["data"]["conn_count"], 15);
    let (_, body) =
        Harness::call(h.with_key(Method::GET, "/v1/online/rooms?rooms=live://1000", ADMIN_KEY))
            .await;
    assert_eq!(body["rooms"]["live://1000"], 11);

    // HTTPDNS is public; both nodes answer until one is drained.
    let (status, body) =
        Harness::call(h.http.get(h.url("/v1/dns?lat=31.2&lon=121.5&platform=web"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ranked"].as_array().unwrap().len(), 2);
    let (status, _) =
        Harness::call(h.with_key(Method::POST, "/v1/admin/nodes/n1/drain", ADMIN_KEY)).await;
    assert_eq!(status, 204);
    let (_, body) = Harness::call(h.http.get(h.url("/goim/nodes/weighted?platform=web"))).await;
    assert_eq!(body["data"]["nodes"], json!(["n2.example.com"]), "{body}");
    let (_, body) = Harness::call(h.http.get(h.url("/v1/dns"))).await;
    let ranked: Vec<&str> = body["ranked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ranked, vec!["n2"]);
    let (status, _) =
        Harness::call(h.with_key(Method::POST, "/v1/admin/nodes/ghost/drain", ADMIN_KEY)).await;
    assert_eq!(status, 404);

    let (_, body) = Harness::call(h.with_key(Method::GET, "/v1/nodes", ADMIN_KEY)).await;
    let states: Vec<(&str, &str)> = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![("n1", "draining"), ("n2", "active")]);
    let (_, body) =
        Harness::call(h.with_key(Method::GET, "/goim/nodes/instances", ADMIN_KEY)).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 2);

    let (status, region) = Harness::call(
        h.with_key(Method::PUT, "/v1/admin/regions/eu", ADMIN_KEY)
            .json(&json!({"latitude": 50.1, "longitude": 8.7})),
    )
    .await;
    assert_eq!(status, 200, "{region}");
    let (_, body) = Harness::call(h.with_key(Method::GET, "/v1/admin/regions", ADMIN_KEY)).await;
    let names: Vec<&str> = body["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["eu", "sh"]);
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn goim_routes_can_be_opened_explicitly() {
    let config = rim_control::ControlConfig {
        goim_routes_open: true,
        ..config()
    };
    let (h, _bus) = harness(config).await;
    let (status, body) = Harness::call(
        h.http
            .post(h.url("/goim/push/mids?operation=1000&mids=5"))
            .body("x"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["offline_mids"], json!([5]));
    // The versioned API stays protected.
    let (status, _) = Harness::call(h.http.get(h.url("/v1/online/total"))).await;
    assert_eq!(status, 401);
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_served_v1_routes() {
    let (h, _bus) = harness(config()).await;
    let (status, doc) = Harness::call(h.http.get(h.url("/v1/openapi.json"))).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, methods) in paths {
        for method in methods.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    // Every documented route is served: an unserved one would hit the fallback (JSON 404 "no such
    // route") or 405; served ones answer anything else (401 without a key, 400, ...).
    for (method, path) in &documented {
        let concrete = path.replace("{name}", "r").replace("{id}", "x");
        let response = h
            .http
            .request(method.parse().unwrap(), h.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status != 405 && body["message"] != "no such route",
            "{method} {path} is documented but not served"
        );
    }
    // Every served /v1 route is documented.
    let served = [
        ("POST", "/v1/push/keys"),
        ("POST", "/v1/push/users"),
        ("POST", "/v1/push/room"),
        ("POST", "/v1/push/all"),
        ("GET", "/v1/online/total"),
        ("GET", "/v1/online/rooms"),
        ("GET", "/v1/online/top"),
        ("GET", "/v1/presence"),
        ("GET", "/v1/pushes/{id}"),
        ("GET", "/v1/nodes"),
        ("GET", "/v1/dns"),
        ("GET", "/v1/admin/regions"),
        ("POST", "/v1/admin/regions"),
        ("GET", "/v1/admin/regions/{name}"),
        ("PUT", "/v1/admin/regions/{name}"),
        ("DELETE", "/v1/admin/regions/{name}"),
        ("GET", "/v1/admin/api-keys"),
        ("POST", "/v1/admin/api-keys"),
        ("GET", "/v1/admin/api-keys/{id}"),
        ("DELETE", "/v1/admin/api-keys/{id}"),
        ("POST", "/v1/admin/nodes/{id}/drain"),
        ("POST", "/v1/admin/nodes/{id}/undrain"),
    ];
    for (method, path) in served {
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(documented.len(), served.len());
    h.control.shutdown().await.unwrap();
}

#[tokio::test]
async fn simultaneous_httpdns_clients_spread_over_a_regions_nodes() {
    let (h, _bus) = harness(config()).await;
    h.register("n1", "sh").await;
    h.register("n2", "sh").await;
    let mut first_n1 = 0;
    const ASKS: usize = 200;
    for _ in 0..ASKS {
        let (status, body) =
            Harness::call(h.http.get(h.url("/goim/nodes/weighted?platform=web"))).await;
        assert_eq!(status, 200, "{body}");
        if body["data"]["nodes"][0] == "n1.example.com" {
            first_n1 += 1;
        }
    }
    // Equal weights and loads: about half each (a fixed answer would give 0 or 200).
    assert!(
        (50..=150).contains(&first_n1),
        "n1 came first in {first_n1} of {ASKS} answers"
    );
    // A given seed replays its answer; the explained answer says how the client was located.
    let url = h.url("/v1/dns?seed=42&lat=31.2&lon=121.5");
    let (_, one) = Harness::call(h.http.get(&url)).await;
    let (_, two) = Harness::call(h.http.get(&url)).await;
    assert_eq!(one["answer"], two["answer"]);
    assert_eq!(one["located"]["source"], "query", "{one}");
    let (_, unlocated) = Harness::call(h.http.get(h.url("/v1/dns"))).await;
    assert_eq!(unlocated["located"]["source"], "unknown", "{unlocated}");
}
