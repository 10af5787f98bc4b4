//! Upstream client messages end to end over real sockets: a goim TCP client on a real edge whose
//! forwarder posts to a real control plane (PostgreSQL store), which hands the messages to a real
//! HTTP backend (axum on a free port) or to the Kafka-protocol broker; the client gets the verdict
//! as the reply, with the message's op, ver and seq.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use common::SECRET;
use metrics_exporter_prometheus::PrometheusBuilder;
use parking_lot::Mutex;
use prost::Message as _;
use rim_bus::BusProducer;
use rim_bus::kafka::{KafkaProducer, KafkaSettings};
use rim_bus::memory::MemoryBus;
use rim_control::{ControlConfig, RunningControl};
use rim_edge::config::AuthMode;
use rim_edge::{Edge, EdgeConfig, EdgeHandle, EdgeHooks};
use rim_edgelink::{LinkConfig, NodeCredentials, UpstreamForwarder};
use rim_proto::node_token::NodeRole;
use rim_proto::schema::edge_push::Target;
use rim_proto::schema::{
    EdgeKeys, EdgePush, UpstreamBatch, UpstreamRequest, UpstreamVerdict, UpstreamVerdicts,
};
use rim_proto::{Packet, op};
use rim_store::postgres::PostgresStore;
use rim_testkit::postgres::TestPostgres;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(10);

/// The region of the test edge.
const REGION: &str = "sh";

/// The business backend: records what it is sent, answers after `delay_ms`. A message whose body
/// is `refuse` is refused, any other accepted with a reply naming the identity it came with.
#[derive(Default)]
struct Backend {
    seen: Mutex<Vec<(Value, String, String)>>,
    delay_ms: AtomicU64,
}

async fn backend_answer(
    State(backend): State<Arc<Backend>>,
    headers: HeaderMap,
    Json(messages): Json<Vec<Value>>,
) -> Json<Vec<Value>> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let delay = backend.delay_ms.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let verdicts = messages
        .iter()
        .map(|message| {
            backend.seen.lock().push((
                message.clone(),
                header("x-rim-node-id"),
                header("x-rim-region"),
            ));
            let body = STANDARD
                .decode(message["body"].as_str().unwrap_or(""))
                .unwrap_or_default();
            if body == b"refuse" {
                json!({"accepted": false, "error": "not today"})
            } else {
                json!({"accepted": true,
                       "reply_text": format!("ok {} {} {}", message["mid"], message["key"], message["operation"])})
            }
        })
        .collect();
    Json(verdicts)
}

/// Starts the backend on a free port; answers it and its webhook URL.
async fn start_backend() -> (Arc<Backend>, String) {
    let backend = Arc::new(Backend::default());
    let app = axum::Router::new()
        .route("/upstream", axum::routing::post(backend_answer))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (backend, format!("http://{addr}/upstream"))
}

/// A control plane on a fresh PostgreSQL database, an edge whose forwarder posts to it.
struct Setup {
    edge: EdgeHandle,
    _control: RunningControl,
    _forwarder: Arc<UpstreamForwarder>,
}

async fn setup(
    config: ControlConfig,
    bus: Arc<dyn BusProducer>,
    tweak: impl FnOnce(&mut LinkConfig),
) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let database = TestPostgres::shared().fresh_database();
    let store = PostgresStore::connect(&database, rim_store::StoreSettings::default())
        .await
        .unwrap();
    let prometheus = PrometheusBuilder::new().build_recorder().handle();
    let control = rim_control::start(config, SECRET, Arc::new(store), bus, prometheus)
        .await
        .unwrap();
    let mut link = LinkConfig {
        edge_control_url: format!("http://{}", control.local_addr()),
        edge_node_id: Some("edge-up".into()),
        edge_region: REGION.into(),
        edge_upstream: true,
        ..LinkConfig::local().unwrap()
    };
    tweak(&mut link);
    let credentials = NodeCredentials::new(
        NodeRole::Edge,
        "edge-up",
        REGION,
        SECRET,
        &link.credential_settings(),
    )
    .unwrap();
    credentials.spawn(tokio_util::sync::CancellationToken::new());
    tokio::time::timeout(PATIENCE, credentials.ready())
        .await
        .expect("enrolled");
    let forwarder = UpstreamForwarder::start(&link, "edge-up", &credentials).unwrap();
    let mut edge_config = EdgeConfig::local().unwrap();
    edge_config.edge_auth = AuthMode::Insecure;
    let verifier = rim_edge::auth::from_config(&edge_config).unwrap();
    let hooks = EdgeHooks {
        upstream: forwarder.clone(),
        ..EdgeHooks::default()
    };
    let edge = Edge::start(edge_config, SECRET.into(), verifier, hooks)
        .await
        .unwrap();
    Setup {
        edge,
        _control: control,
        _forwarder: forwarder,
    }
}

/// Control settings with the webhook at `url`.
fn webhook_config(url: &str) -> ControlConfig {
    ControlConfig {
        control_upstream_webhook_url: Some(url.into()),
        control_upstream_webhook_timeout_ms: 1_000,
        ..common::config()
    }
}

/// A goim TCP client.
struct Goim {
    io: TcpStream,
    buf: BytesMut,
}

impl Goim {
    /// Connects to `addr` and authenticates (the edge trusts the goim JSON in this test).
    async fn connect(addr: SocketAddr, mid: i64, key: &str, room: &str) -> Self {
        let mut client = Self {
            io: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        };
        let auth = json!({"mid": mid, "key": key, "room_id": room, "platform": "android", "accepts": [1000]});
        client.send(op::AUTH, 1, auth.to_string().as_bytes()).await;
        let reply = client.recv().await;
        assert_eq!((reply.op, reply.seq), (op::AUTH_REPLY, 1), "{reply:?}");
        client
    }

    async fn send(&mut self, op_code: i32, seq: i32, body: &[u8]) {
        let packet = Packet::new(1, op_code, seq, body.to_vec());
        self.io.write_all(&packet.to_bytes()).await.unwrap();
    }

    async fn recv(&mut self) -> Packet {
        loop {
            if let Some(packet) = rim_proto::stream::decode(&mut self.buf, usize::MAX).unwrap() {
                return packet;
            }
            let read = tokio::time::timeout(PATIENCE, self.io.read_buf(&mut self.buf))
                .await
                .expect("no packet in time")
                .unwrap();
            assert!(read > 0, "connection ended");
        }
    }

    /// The JSON body of the next packet, which must be the reply to `op_code` with `seq`.
    async fn refusal(&mut self, op_code: i32, seq: i32) -> Value {
        let reply = self.recv().await;
        assert_eq!((reply.op, reply.seq, reply.ver), (op_code, seq, 1));
        serde_json::from_slice(&reply.body).unwrap()
    }
}

/// Bytes from hex digits (spaces ignored).
fn hex(digits: &str) -> Vec<u8> {
    let digits: Vec<u8> = digits
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// A key push of op 1000.
fn key_push(id: &str, body: &[u8], key: &str) -> EdgePush {
    EdgePush {
        message_id: id.into(),
        operation: 1000,
        body: body.to_vec().into(),
        target: Some(Target::Keys(EdgeKeys {
            keys: vec![key.into()],
        })),
        ..EdgePush::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_gets_the_verified_identity_and_the_client_its_verdict() {
    let (backend, url) = start_backend().await;
    let setup = setup(webhook_config(&url), Arc::new(MemoryBus::new(100)), |_| {}).await;
    let mut client = Goim::connect(setup.edge.addrs().tcp, 42, "k42", "live://7").await;

    // The body claims another user: it is carried as the body, the identity is the connection's.
    client.send(op::SEND_MSG, 7, br#"{"mid":999}"#).await;
    let reply = client.recv().await;
    assert_eq!(
        reply,
        Packet::new(1, op::SEND_MSG, 7, &b"ok 42 \"k42\" 4"[..]),
        "the backend's reply, the message's op, ver and seq"
    );
    client.send(2001, 8, b"business").await;
    assert_eq!(
        client.recv().await,
        Packet::new(1, 2001, 8, &b"ok 42 \"k42\" 2001"[..])
    );
    client.send(op::SEND_MSG, 9, b"refuse").await;
    assert_eq!(
        client.refusal(op::SEND_MSG, 9).await,
        json!({"error": "not today", "reason": "upstream_refused"})
    );

    let seen = backend.seen.lock().clone();
    assert_eq!(seen.len(), 3);
    let (first, node, region) = &seen[0];
    assert_eq!((node.as_str(), region.as_str()), ("edge-up", REGION));
    assert_eq!(first["mid"], 42);
    assert_eq!(first["key"], "k42");
    assert_eq!(first["room"], "live://7");
    assert_eq!(first["platform"], "android");
    assert_eq!(first["operation"], op::SEND_MSG);
    assert_eq!(first["node_id"], "edge-up");
    assert_eq!(first["region"], REGION);
    assert_eq!(first["body"], STANDARD.encode(br#"{"mid":999}"#));
    assert!(first["at_unix_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(seen[1].0["operation"], 2001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_does_not_stop_pushes_to_that_connection() {
    let (backend, url) = start_backend().await;
    backend.delay_ms.store(800, Ordering::Relaxed);
    let config = ControlConfig {
        control_upstream_webhook_timeout_ms: 5_000,
        ..webhook_config(&url)
    };
    let setup = setup(config, Arc::new(MemoryBus::new(100)), |_| {}).await;
    let mut client = Goim::connect(setup.edge.addrs().tcp, 5, "slow", "").await;
    client.send(op::SEND_MSG, 3, b"wait for me").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A connection that waited for the verdict would write the reply first and the push after it.
    assert_eq!(
        setup.edge.push(&key_push("p1", b"meanwhile", "slow")).await,
        1
    );
    let push = client.recv().await;
    assert_eq!(
        (push.op, &push.body[..]),
        (1000, &b"meanwhile"[..]),
        "the push is written while the verdict is pending"
    );
    let reply = client.recv().await;
    assert_eq!(
        reply,
        Packet::new(1, op::SEND_MSG, 3, &b"ok 5 \"slow\" 4"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_is_down_gets_the_client_a_refusal() {
    // Nobody listens on this port.
    let port = rim_testkit::ports::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/upstream");
    let setup = setup(webhook_config(&url), Arc::new(MemoryBus::new(100)), |_| {}).await;
    let mut client = Goim::connect(setup.edge.addrs().tcp, 6, "down", "").await;
    client.send(op::SEND_MSG, 7, b"anyone?").await;
    // The byte example of docs/rim-protocol-extension.md ("Upstream").
    let mut expected = hex("00000050 0010 0001 00000004 00000007");
    expected
        .extend_from_slice(br#"{"error":"upstream unavailable","reason":"upstream_unavailable"}"#);
    assert_eq!(client.recv().await.to_bytes().to_vec(), expected);
    // The connection stays open and usable.
    client.send(op::HEARTBEAT, 5, b"").await;
    assert_eq!(client.recv().await.op, op::HEARTBEAT_REPLY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connections_are_refused_unless_allowed() {
    let (backend, url) = start_backend().await;
    let refusing = setup(webhook_config(&url), Arc::new(MemoryBus::new(100)), |_| {}).await;
    let mut anonymous = Goim::connect(refusing.edge.addrs().tcp, 0, "nobody", "").await;
    anonymous.send(op::SEND_MSG, 2, b"hello").await;
    let refusal = anonymous.refusal(op::SEND_MSG, 2).await;
    assert_eq!(refusal["reason"], "anonymous");
    assert!(backend.seen.lock().is_empty(), "the backend was not asked");

    let config = ControlConfig {
        control_upstream_allow_anonymous: true,
        ..webhook_config(&url)
    };
    let allowing = setup(config, Arc::new(MemoryBus::new(100)), |_| {}).await;
    let mut anonymous = Goim::connect(allowing.edge.addrs().tcp, 0, "nobody", "").await;
    anonymous.send(op::SEND_MSG, 2, b"hello").await;
    assert_eq!(
        anonymous.recv().await,
        Packet::new(1, op::SEND_MSG, 2, &b"ok 0 \"nobody\" 4"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_unanswered_bound_is_refused_and_stays_connected() {
    let (backend, url) = start_backend().await;
    backend.delay_ms.store(600, Ordering::Relaxed);
    let setup = setup(
        webhook_config(&url),
        Arc::new(MemoryBus::new(100)),
        |link| {
            link.edge_upstream_max_pending = 2;
        },
    )
    .await;
    let mut client = Goim::connect(setup.edge.addrs().tcp, 8, "eager", "").await;
    for seq in [10, 11, 12] {
        client.send(op::SEND_MSG, seq, b"more").await;
    }
    // The third is refused at once, ahead of the two replies still pending.
    let refusal = client.refusal(op::SEND_MSG, 12).await;
    assert_eq!(refusal["reason"], "too_many_pending");
    for seq in [10, 11] {
        let reply = client.recv().await;
        assert_eq!(
            (reply.seq, &reply.body[..]),
            (seq, &b"ok 8 \"eager\" 4"[..]),
            "replies in the order sent"
        );
    }
    // Answered messages no longer count: the client may send again.
    client.send(op::SEND_MSG, 13, b"again").await;
    assert_eq!(client.recv().await.seq, 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mode_produces_to_the_region_topic_keyed_by_mid() {
    use rdkafka::Message as _;
    use rdkafka::consumer::{Consumer, StreamConsumer};

    let broker = rim_testkit::kafka::TestKafka::start();
    let bus = Arc::new(KafkaProducer::new(&KafkaSettings::new(broker.bootstrap())).unwrap());
    let config = ControlConfig {
        control_upstream_kafka_topic_prefix: Some("rim-upstream-".into()),
        ..common::config()
    };
    let setup = setup(config, bus, |_| {}).await;
    let mut client = Goim::connect(setup.edge.addrs().tcp, 77, "k77", "").await;
    client.send(op::SEND_MSG, 21, b"to kafka").await;
    assert_eq!(
        client.recv().await,
        Packet::new(1, op::SEND_MSG, 21, Vec::new()),
        "accepted once the broker has it: an empty reply"
    );

    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "upstream-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["rim-upstream-sh"]).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record in time")
        .unwrap();
    assert_eq!(record.topic(), "rim-upstream-sh");
    assert_eq!(record.key(), Some(&b"77"[..]), "keyed by the user id");
    let value: Value = serde_json::from_slice(record.payload().unwrap()).unwrap();
    assert_eq!(value["mid"], 77);
    assert_eq!(value["key"], "k77");
    assert_eq!(value["region"], REGION);
    assert_eq!(value["body"], STANDARD.encode(b"to kafka"));
}

/// A backend that answers every batch with `answer`.
async fn start_fixed_backend(answer: Value) -> String {
    let app = axum::Router::new().route(
        "/upstream",
        axum::routing::post(move || {
            let answer = answer.clone();
            async move { Json(answer) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/upstream")
}

/// `messages` copies of one message of user 1, from node `node_id`.
fn batch(node_id: &str, messages: usize) -> UpstreamBatch {
    let message = UpstreamRequest {
        mid: 1,
        key: "k1".into(),
        operation: op::SEND_MSG,
        body: b"x".to_vec().into(),
        ..UpstreamRequest::default()
    };
    UpstreamBatch {
        node_id: node_id.into(),
        messages: vec![message; messages],
    }
}

/// Posts `batch` to the upstream route with `token`; the status and the decoded verdicts.
async fn post_batch(
    harness: &common::Harness,
    token: &str,
    batch: &UpstreamBatch,
) -> (u16, Vec<UpstreamVerdict>) {
    let response = harness.edge_with(token, "/edge/v1/upstream", batch).await;
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    let verdicts = UpstreamVerdicts::decode(body)
        .map(|answer| answer.verdicts)
        .unwrap_or_default();
    (status, verdicts)
}

/// The reason of a refused verdict's JSON reply.
fn reason(verdict: &UpstreamVerdict) -> String {
    assert!(!verdict.accepted, "{verdict:?}");
    let body: Value = serde_json::from_slice(&verdict.reply).unwrap();
    body["reason"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_route_takes_only_the_own_node_s_bounded_batches() {
    let url = start_fixed_backend(json!([{"accepted": true}])).await;
    let config = ControlConfig {
        control_upstream_max_batch: 3,
        ..webhook_config(&url)
    };
    let harness = common::start(config, common::memory_store(), Arc::new(MemoryBus::new(10))).await;
    let credential = harness.enroll("edge", "edge-api", REGION).await;
    let (status, verdicts) = post_batch(&harness, &credential.token, &batch("edge-api", 1)).await;
    assert_eq!((status, verdicts.len()), (200, 1));
    assert!(verdicts[0].accepted);
    assert_eq!(
        post_batch(&harness, &credential.token, &batch("another-edge", 1))
            .await
            .0,
        403,
        "a batch for another node"
    );
    assert_eq!(
        post_batch(&harness, &credential.token, &batch("edge-api", 4))
            .await
            .0,
        413
    );
    assert_eq!(
        post_batch(&harness, SECRET, &batch("edge-api", 1)).await.0,
        401,
        "the cluster secret is no node token"
    );
}

#[tokio::test]
async fn unusable_webhook_answers_refuse_every_message_as_unavailable() {
    for answer in [
        json!([{"accepted": true}]),
        json!({"accepted": true}),
        json!([{"accepted": true, "reply_text": "a", "reply_base64": "Yg=="}, {"accepted": true}]),
        json!([{"accepted": true, "reply_base64": "not base64!"}, {"accepted": true}]),
    ] {
        let url = start_fixed_backend(answer.clone()).await;
        let harness = common::start(
            webhook_config(&url),
            common::memory_store(),
            Arc::new(MemoryBus::new(10)),
        )
        .await;
        let credential = harness.enroll("edge", "edge-api", REGION).await;
        let (status, verdicts) =
            post_batch(&harness, &credential.token, &batch("edge-api", 2)).await;
        assert_eq!((status, verdicts.len()), (200, 2), "{answer}");
        for verdict in &verdicts {
            assert_eq!(reason(verdict), "upstream_unavailable", "{answer}");
        }
    }
}

#[tokio::test]
async fn replies_come_as_text_or_base64_and_refusals_with_the_backend_s_error() {
    let url = start_fixed_backend(json!([
        {"accepted": true, "reply_base64": STANDARD.encode([0u8, 1, 2])},
        {"accepted": true},
        {"accepted": false, "error": "spam"},
        {"accepted": false},
    ]))
    .await;
    let harness = common::start(
        webhook_config(&url),
        common::memory_store(),
        Arc::new(MemoryBus::new(10)),
    )
    .await;
    let credential = harness.enroll("edge", "edge-api", REGION).await;
    let (_, verdicts) = post_batch(&harness, &credential.token, &batch("edge-api", 4)).await;
    assert_eq!(&verdicts[0].reply[..], &[0, 1, 2]);
    assert!(verdicts[1].accepted && verdicts[1].reply.is_empty());
    assert_eq!(reason(&verdicts[2]), "upstream_refused");
    assert_eq!(verdicts[2].error, "spam");
    assert_eq!(reason(&verdicts[3]), "upstream_refused");
}

#[tokio::test]
async fn without_a_backend_messages_are_refused_and_bad_configurations_do_not_start() {
    let harness = common::start(
        common::config(),
        common::memory_store(),
        Arc::new(MemoryBus::new(10)),
    )
    .await;
    let credential = harness.enroll("edge", "edge-api", REGION).await;
    let (_, verdicts) = post_batch(&harness, &credential.token, &batch("edge-api", 1)).await;
    assert_eq!(reason(&verdicts[0]), "upstream_unavailable");

    let prometheus = PrometheusBuilder::new().build_recorder().handle();
    let both = ControlConfig {
        control_upstream_kafka_topic_prefix: Some("rim-upstream-".into()),
        ..webhook_config("http://127.0.0.1:1/upstream")
    };
    let kafka_on_memory = ControlConfig {
        control_upstream_kafka_topic_prefix: Some("rim-upstream-".into()),
        ..common::config()
    };
    for config in [both, kafka_on_memory] {
        let started = rim_control::start(
            config,
            SECRET,
            common::memory_store(),
            Arc::new(MemoryBus::new(10)),
            prometheus.clone(),
        )
        .await;
        assert!(started.is_err());
    }
}

/// Many connections sending at once: every reply comes back to its connection in the order of its
/// messages (seq), with the reply for its own identity. Prints the rate and latency it saw (run with
/// `--no-capture` to read them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_get_their_replies_in_order() {
    const CLIENTS: i64 = 50;
    const MESSAGES: i32 = 20;
    let (backend, url) = start_backend().await;
    let setup = setup(
        webhook_config(&url),
        Arc::new(MemoryBus::new(100)),
        |link| {
            link.edge_upstream_max_pending = MESSAGES as usize;
        },
    )
    .await;
    let tcp = setup.edge.addrs().tcp;
    let started = tokio::time::Instant::now();
    let clients = (1..=CLIENTS).map(|mid| {
        tokio::spawn(async move {
            let key = format!("c{mid}");
            let mut client = Goim::connect(tcp, mid, &key, "").await;
            let sent = tokio::time::Instant::now();
            for seq in 1..=MESSAGES {
                client.send(op::SEND_MSG, seq, b"m").await;
            }
            for seq in 1..=MESSAGES {
                let reply = client.recv().await;
                let expected = format!("ok {mid} \"{key}\" 4");
                assert_eq!((reply.seq, &reply.body[..]), (seq, expected.as_bytes()));
            }
            sent.elapsed()
        })
    });
    let mut latencies = Vec::new();
    for client in clients.collect::<Vec<_>>() {
        latencies.push(client.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let total = (CLIENTS * i64::from(MESSAGES)) as usize;
    assert_eq!(backend.seen.lock().len(), total);
    eprintln!(
        "{total} upstream messages from {CLIENTS} connections in {elapsed:?} ({:.0}/s); \
         time to a connection's last reply: p50 {:?}, max {:?}",
        total as f64 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
}
