//! The job worker against real sockets: fake edges are small axum servers on free ports that record
//! what they receive and answer `EdgePushResponse`; the bus is the in-process bus and the edge
//! directory is a `StoreDirectory` over the memory store, where the edges register as they would.
//! The bus is the in-process bus (`rim dev`), and for the Kafka entry point (`rim job`) a real
//! Kafka-protocol broker (tansu).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use metrics_exporter_prometheus::PrometheusBuilder;
use prost::Message;
use rim_bus::kafka::{KafkaConsumer, KafkaProducer, KafkaSettings};
use rim_bus::memory::MemoryBus;
use rim_bus::{BusConsumer, BusProducer, OutgoingPush};
use rim_job::{DirectoryError, EdgeDirectory, EdgeTarget, JobConfig, StoreDirectory};
use rim_proto::schema::edge_push::Target as EdgeKind;
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{
    BroadcastTarget, EdgeKeys, EdgePushRequest, EdgePushResponse, KeyOnNode, KeysTarget,
    NodeRegistration, PushMessage, RoomTarget,
};
use rim_store::memory::MemoryStore;
use rim_store::{NodeState, Store, StoreSettings};
use rim_testkit::kafka::TestKafka;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "cluster-secret";
const REGION: &str = "sh";
const WAIT: Duration = Duration::from_secs(10);

/// What a fake edge saw.
#[derive(Default)]
struct EdgeLog {
    /// Requests it took, in arrival order.
    taken: Vec<EdgePushRequest>,
    /// `Authorization` headers of every request.
    authorizations: Vec<String>,
    /// Statuses to answer before taking anything (a failing edge).
    failures: VecDeque<StatusCode>,
    /// How long each request takes to answer (a slow edge).
    delay: Duration,
}

/// A fake edge's internal push endpoint on a real port.
struct FakeEdge {
    url: String,
    log: Arc<Mutex<EdgeLog>>,
    server: JoinHandle<()>,
}

impl FakeEdge {
    async fn start() -> Self {
        Self::serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn serve(listener: TcpListener) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(EdgeLog::default()));
        let app = Router::new()
            .route(rim_job::PUSH_PATH, post(take))
            .with_state(log.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, log, server }
    }

    fn fail_next(&self, statuses: &[StatusCode]) {
        self.log.lock().unwrap().failures.extend(statuses);
    }

    /// Ids and targets of the pushes it took, in order.
    fn taken(&self) -> Vec<(String, Option<EdgeKind>)> {
        let log = self.log.lock().unwrap();
        log.taken
            .iter()
            .flat_map(|request| request.pushes.iter())
            .map(|push| (push.message_id.clone(), push.target.clone()))
            .collect()
    }

    fn taken_ids(&self) -> Vec<String> {
        self.taken().into_iter().map(|(id, _)| id).collect()
    }
}

impl Drop for FakeEdge {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn take(State(log): State<Arc<Mutex<EdgeLog>>>, headers: HeaderMap, body: Bytes) -> Response {
    let delay = log.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let mut log = log.lock().unwrap();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    log.authorizations.push(authorization);
    if let Some(status) = log.failures.pop_front() {
        return status.into_response();
    }
    let Ok(request) = EdgePushRequest::decode(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let answer = EdgePushResponse {
        delivered: vec![1; request.pushes.len()],
    };
    log.taken.push(request);
    answer.encode_to_vec().into_response()
}

/// A region with its store, bus and config (short timeouts and backoff for tests).
/// The bus a test cluster runs on.
enum TestBus {
    Memory(MemoryBus),
    Kafka(Box<KafkaBus>),
}

/// A tansu broker with the clients of a test.
struct KafkaBus {
    settings: KafkaSettings,
    producer: KafkaProducer,
    // Dropped last: the clients above must not outlive their broker.
    broker: TestKafka,
}

/// A region with its store, bus and config (short timeouts and backoff for tests).
struct Cluster {
    store: Arc<MemoryStore>,
    bus: TestBus,
    config: JobConfig,
}

impl Cluster {
    /// `rim dev`'s setup: the in-process bus.
    fn new() -> Self {
        Self::on(TestBus::Memory(MemoryBus::new(10_000)))
    }

    /// `rim job`'s setup: Kafka (a tansu broker), the worker started by `run_kafka_worker`.
    fn kafka() -> Self {
        let broker = TestKafka::start();
        let mut settings = KafkaSettings::new(broker.bootstrap());
        settings.partitions = 2;
        let mut cluster = Self::on(TestBus::Kafka(Box::new(KafkaBus {
            producer: KafkaProducer::new(&settings).unwrap(),
            settings,
            broker,
        })));
        cluster.config.job_kafka_brokers = cluster.settings().brokers.clone();
        cluster.config.job_topic_partitions = 2;
        cluster
    }

    fn on(bus: TestBus) -> Self {
        Self {
            store: Arc::new(MemoryStore::new(StoreSettings::default())),
            bus,
            config: JobConfig {
                job_region: REGION.into(),
                job_edge_timeout_ms: 500,
                job_retry_initial_ms: 20,
                job_retry_max_ms: 100,
                job_directory_cache_ms: 50,
                job_listen: "127.0.0.1:0".parse().unwrap(),
                ..JobConfig::default()
            },
        }
    }

    fn settings(&self) -> &KafkaSettings {
        match &self.bus {
            TestBus::Kafka(kafka) => &kafka.settings,
            TestBus::Memory(_) => panic!("not a Kafka cluster"),
        }
    }

    fn broker(&mut self) -> &mut TestKafka {
        match &mut self.bus {
            TestBus::Kafka(kafka) => &mut kafka.broker,
            TestBus::Memory(_) => panic!("not a Kafka cluster"),
        }
    }

    fn producer(&self) -> &dyn BusProducer {
        match &self.bus {
            TestBus::Memory(bus) => bus,
            TestBus::Kafka(kafka) => &kafka.producer,
        }
    }

    async fn consumer(&self) -> Box<dyn BusConsumer> {
        let group = self.config.group_id();
        match &self.bus {
            TestBus::Memory(bus) => Box::new(bus.consumer(REGION, &group)),
            // The worker's own member id: a successor of the stopped worker, as after a restart.
            TestBus::Kafka(kafka) => Box::new(
                KafkaConsumer::join(
                    &kafka.settings,
                    REGION,
                    &group,
                    self.config.group_instance_id().as_deref(),
                )
                .await
                .unwrap(),
            ),
        }
    }

    async fn register(&self, node_id: &str, region: &str, push_url: &str) {
        let registration = NodeRegistration {
            node_id: node_id.into(),
            region: region.into(),
            push_url: push_url.into(),
            hostname: "localhost".into(),
            weight: 1,
            ..NodeRegistration::default()
        };
        self.store.register_node(&registration, 1).await.unwrap();
    }

    /// Starts a worker through the entry point its bus would use in production.
    fn start_worker(&self) -> RunningWorker {
        self.start_worker_with(Arc::new(self.directory()))
    }

    /// The directory production uses: the store's nodes, cached briefly.
    fn directory(&self) -> StoreDirectory {
        StoreDirectory::new(self.store.clone(), self.config.directory_cache())
    }

    /// Starts a worker with this directory.
    fn start_worker_with(&self, directory: Arc<dyn EdgeDirectory>) -> RunningWorker {
        let (stop, stopped) = oneshot::channel::<()>();
        let config = self.config.clone();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = match &self.bus {
            TestBus::Memory(bus) => {
                let consumer = bus.consumer(REGION, &config.group_id());
                tokio::spawn(async move {
                    rim_job::run(&config, SECRET, consumer, directory, shutdown)
                        .await
                        .unwrap();
                })
            }
            // `rim job`'s entry point, with a Prometheus handle of its own (not installed globally).
            TestBus::Kafka(_) => tokio::spawn(async move {
                let prometheus = PrometheusBuilder::new().build_recorder().handle();
                rim_job::run_kafka_worker(&config, SECRET, directory, Some(prometheus), shutdown)
                    .await
                    .unwrap();
            }),
        };
        RunningWorker { stop, task }
    }

    async fn publish(&self, pushes: Vec<(&str, &str, Target)>) {
        let pushes = pushes
            .into_iter()
            .map(|(key, id, target)| OutgoingPush {
                region: REGION.into(),
                partition_key: key.into(),
                message: PushMessage {
                    message_id: id.into(),
                    operation: 1000,
                    body: id.as_bytes().to_vec().into(),
                    accepted_at_unix_ms: 1,
                    record: 0,
                    position: None,
                    receipt_target: String::new(),
                    target: Some(target),
                },
            })
            .collect();
        self.producer().publish(pushes).await.unwrap();
    }

    /// The ids the worker's group would get next: what it has not committed, up to a marker
    /// (published with the same key as the pushes of the Kafka tests, so it comes after them).
    async fn uncommitted(&self) -> Vec<String> {
        self.publish(vec![("key:a", "marker", room("none"))]).await;
        let mut consumer = self.consumer().await;
        let mut ids = Vec::new();
        while ids.last().map(String::as_str) != Some("marker") {
            let batch = tokio::time::timeout(WAIT, consumer.next_batch(100))
                .await
                .unwrap()
                .unwrap();
            ids.extend(batch.into_iter().map(|push| push.message.message_id));
        }
        ids.pop();
        ids
    }
}

struct RunningWorker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningWorker {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn keys(pairs: &[(&str, &str)]) -> Target {
    Target::Keys(KeysTarget {
        keys: pairs
            .iter()
            .map(|(key, node_id)| KeyOnNode {
                key: (*key).into(),
                node_id: (*node_id).into(),
            })
            .collect(),
    })
}

fn room(name: &str) -> Target {
    Target::Room(RoomTarget { room: name.into() })
}

fn edge_keys(list: &[&str]) -> Option<EdgeKind> {
    Some(EdgeKind::Keys(EdgeKeys {
        keys: list.iter().map(|key| (*key).into()).collect(),
    }))
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn keys_go_to_their_edge_rooms_and_broadcasts_to_every_edge_of_the_region() {
    let cluster = Cluster::new();
    let (n1, n2, elsewhere) = (
        FakeEdge::start().await,
        FakeEdge::start().await,
        FakeEdge::start().await,
    );
    cluster.register("n1", REGION, &n1.url).await;
    cluster.register("n2", REGION, &n2.url).await;
    cluster.register("n3", "eu", &elsewhere.url).await;
    let worker = cluster.start_worker();

    cluster
        .publish(vec![
            (
                "key:a",
                "m0",
                keys(&[("a", "n1"), ("b", "n2"), ("c", "n1")]),
            ),
            ("room:live://1", "m1", room("live://1")),
            (
                "broadcast",
                "m2",
                Target::Broadcast(BroadcastTarget { speed: 5 }),
            ),
            ("key:d", "m3", keys(&[("d", "n2")])),
        ])
        .await;
    eventually("both edges took their pushes", || {
        n1.taken().len() == 3 && n2.taken().len() == 4
    })
    .await;

    let room_push = Some(EdgeKind::Room("live://1".into()));
    let broadcast = Some(EdgeKind::Broadcast(BroadcastTarget { speed: 5 }));
    assert_eq!(
        n1.taken(),
        vec![
            ("m0".into(), edge_keys(&["a", "c"])),
            ("m1".into(), room_push.clone()),
            ("m2".into(), broadcast.clone()),
        ]
    );
    assert_eq!(
        n2.taken(),
        vec![
            ("m0".into(), edge_keys(&["b"])),
            ("m1".into(), room_push),
            ("m2".into(), broadcast),
            ("m3".into(), edge_keys(&["d"])),
        ]
    );
    assert!(
        elsewhere.taken().is_empty(),
        "an edge of another region got pushes"
    );
    for edge in [&n1, &n2] {
        let log = edge.log.lock().unwrap();
        assert!(
            log.authorizations
                .iter()
                .all(|auth| auth == &format!("Bearer {SECRET}"))
        );
    }

    worker.stop().await;
    assert!(
        cluster.uncommitted().await.is_empty(),
        "taken pushes are committed"
    );
}

#[tokio::test]
async fn an_edge_gets_its_pushes_in_order_across_batches_and_failures() {
    let mut cluster = Cluster::new();
    cluster.config.job_batch_size = 3;
    let (n1, n2) = (FakeEdge::start().await, FakeEdge::start().await);
    cluster.register("n1", REGION, &n1.url).await;
    cluster.register("n2", REGION, &n2.url).await;
    n1.fail_next(&[
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::UNAUTHORIZED,
    ]);
    let worker = cluster.start_worker();

    let mut expected = Vec::new();
    for round in 0..10 {
        let (key_id, room_id) = (format!("k{round}"), format!("r{round}"));
        cluster
            .publish(vec![
                ("key:a", &key_id, keys(&[("a", "n1")])),
                ("room:live://1", &room_id, room("live://1")),
            ])
            .await;
        expected.extend([key_id, room_id]);
    }
    eventually("n1 took every push", || n1.taken().len() == 20).await;
    assert_eq!(n1.taken_ids(), expected, "n1 order");
    eventually("n2 took the room pushes", || n2.taken().len() == 10).await;
    let rooms: Vec<String> = expected
        .iter()
        .filter(|id| id.starts_with('r'))
        .cloned()
        .collect();
    assert_eq!(n2.taken_ids(), rooms, "n2 order");
    assert!(
        n1.log.lock().unwrap().authorizations.len() > 3,
        "the failed requests were retried"
    );

    worker.stop().await;
    assert!(cluster.uncommitted().await.is_empty());
}

/// A worker whose one edge takes 200 ms per request, every push a batch (so a part of the edge's
/// lane) of its own: pushes queue behind the requests in flight.
async fn behind_a_slow_edge() -> (Cluster, FakeEdge, RunningWorker) {
    let mut cluster = Cluster::new();
    cluster.config.job_batch_size = 1;
    let edge = FakeEdge::start().await;
    edge.log.lock().unwrap().delay = Duration::from_millis(200);
    cluster.register("n1", REGION, &edge.url).await;
    let worker = cluster.start_worker();
    (cluster, edge, worker)
}

#[tokio::test]
async fn pushes_queued_behind_a_slow_edge_leave_together_and_in_order() {
    let (cluster, edge, worker) = behind_a_slow_edge().await;

    // One room: its pushes may not overtake each other, so they go one delivery at a time.
    let ids: Vec<String> = (0..20).map(|n| format!("r{n}")).collect();
    for id in &ids {
        cluster
            .publish(vec![("room:live://1", id, room("live://1"))])
            .await;
    }
    eventually("the edge took every push", || {
        edge.taken().len() == ids.len()
    })
    .await;
    assert_eq!(edge.taken_ids(), ids, "order");
    let requests = edge.log.lock().unwrap().taken.len();
    assert!(
        requests <= 3,
        "{requests} requests for {} pushes queued behind a slow edge: they should leave together",
        ids.len()
    );

    worker.stop().await;
    assert!(cluster.uncommitted().await.is_empty());
}

/// Pushes to three rooms, round robin (as a live show's rooms get them): `(id, room)` in order.
fn round_robin_rooms(count: usize) -> Vec<(String, &'static str)> {
    let rooms = ["live://1", "live://2", "live://3"];
    (0..count)
        .map(|n| (format!("m{n}"), rooms[n % rooms.len()]))
        .collect()
}

/// The room of each push of each request, in order.
fn rooms_per_request(edge: &FakeEdge) -> Vec<Vec<String>> {
    let log = edge.log.lock().unwrap();
    log.taken
        .iter()
        .map(|request| {
            request
                .pushes
                .iter()
                .map(|push| match &push.target {
                    Some(EdgeKind::Room(room_id)) => room_id.clone(),
                    other => panic!("not a room push: {other:?}"),
                })
                .collect()
        })
        .collect()
}

/// Every room's pushes reached the edge in the order they were sent.
fn assert_each_rooms_order(edge: &FakeEdge, sent: &[(String, &str)]) {
    for room_id in ["live://1", "live://2", "live://3"] {
        let expected: Vec<&str> = sent
            .iter()
            .filter(|(_, to)| *to == room_id)
            .map(|(id, _)| id.as_str())
            .collect();
        let taken: Vec<String> = edge
            .taken()
            .into_iter()
            .filter(|(_, target)| matches!(target, Some(EdgeKind::Room(to)) if to == room_id))
            .map(|(id, _)| id)
            .collect();
        assert_eq!(taken, expected, "{room_id} order");
    }
}

#[tokio::test]
async fn room_pushes_queued_behind_busy_rooms_leave_room_by_room() {
    let (cluster, edge, worker) = behind_a_slow_edge().await;

    // The first push of each room goes at once; the rest queue behind them. When room 1's
    // request returns, rooms 2 and 3 are still in flight: the delivery that starts takes every
    // queued push to room 1 (not only the first, which would leave one push per request).
    let sent = round_robin_rooms(30);
    for (id, room_id) in &sent {
        cluster
            .publish(vec![(&format!("room:{room_id}"), id, room(room_id))])
            .await;
    }
    eventually("the edge took every push", || {
        edge.taken().len() == sent.len()
    })
    .await;
    let requests = rooms_per_request(&edge);
    assert!(
        requests.len() <= 6,
        "{} requests for 30 pushes to 3 rooms queued behind a slow edge: {requests:?}",
        requests.len()
    );
    assert_each_rooms_order(&edge, &sent);

    worker.stop().await;
    assert!(cluster.uncommitted().await.is_empty());
}

#[tokio::test]
async fn room_pushes_leaving_in_one_request_are_next_to_their_rooms_others() {
    let mut cluster = Cluster::new();
    cluster.config.job_batch_size = 64;
    let edge = FakeEdge::start().await;
    cluster.register("n1", REGION, &edge.url).await;
    // Published before the worker starts: its first read takes them all, as one part.
    let sent = round_robin_rooms(30);
    let pushes = sent
        .iter()
        .map(|(id, room_id)| (format!("room:{room_id}"), id.as_str(), room(room_id)))
        .collect::<Vec<_>>();
    cluster
        .publish(
            pushes
                .iter()
                .map(|(key, id, target)| (key.as_str(), *id, target.clone()))
                .collect(),
        )
        .await;
    let worker = cluster.start_worker();
    eventually("the edge took every push", || {
        edge.taken().len() == sent.len()
    })
    .await;
    // The edge sends consecutive pushes to one room as one frame per connection: in each
    // request, a room's pushes are one run.
    for rooms in rooms_per_request(&edge) {
        let runs = rooms.chunk_by(|a, b| a == b).count();
        let mut distinct = rooms.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(runs, distinct.len(), "a room twice apart in {rooms:?}");
    }
    assert_each_rooms_order(&edge, &sent);

    worker.stop().await;
    assert!(cluster.uncommitted().await.is_empty());
}

#[tokio::test]
async fn nothing_is_committed_while_an_edge_is_down_and_it_gets_the_push_after_a_restart() {
    edge_down_then_restarted(Cluster::new(), Duration::from_millis(500)).await;
}

/// A key push to an edge that is down stays uncommitted (however long the worker tries, `settle`),
/// and after the edge comes up a new worker delivers it before the marker, then commits everything.
async fn edge_down_then_restarted(cluster: Cluster, settle: Duration) {
    let port = rim_testkit::ports::free_port().unwrap();
    cluster
        .register("n1", REGION, &format!("http://127.0.0.1:{port}"))
        .await;
    let worker = cluster.start_worker();
    cluster
        .publish(vec![("key:a", "m0", keys(&[("a", "n1")]))])
        .await;
    tokio::time::sleep(settle).await;
    worker.stop().await;
    assert_eq!(
        cluster.uncommitted().await,
        ["m0"],
        "the edge never took it"
    );

    let edge = FakeEdge::serve(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let worker = cluster.start_worker();
    // The marker of the check above is a room push: the edge gets it too, after m0.
    eventually("the edge got the push after the restart", || {
        edge.taken_ids() == ["m0", "marker"]
    })
    .await;
    worker.stop().await;
    assert!(cluster.uncommitted().await.is_empty());
}

#[tokio::test]
async fn a_dead_edges_part_is_dropped_so_the_batch_completes() {
    let cluster = Cluster::new();
    let live = FakeEdge::start().await;
    let closed_port = rim_testkit::ports::free_port().unwrap();
    cluster.register("live", REGION, &live.url).await;
    cluster
        .register("down", REGION, &format!("http://127.0.0.1:{closed_port}"))
        .await;
    let worker = cluster.start_worker();

    cluster
        .publish(vec![("room:live://1", "m0", room("live://1"))])
        .await;
    eventually("the live edge took the push", || live.taken_ids() == ["m0"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster
        .store
        .set_node_state("down", NodeState::Dead)
        .await
        .unwrap();
    // A later push must not wait behind the dead edge's retries: once its part is dropped, the
    // first batch completes and everything after it is committed too.
    cluster
        .publish(vec![("room:live://1", "m1", room("live://1"))])
        .await;
    eventually("the live edge took the next push", || {
        live.taken_ids() == ["m0", "m1"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;
    assert!(
        cluster.uncommitted().await.is_empty(),
        "the dead edge's part was dropped"
    );
}

#[tokio::test]
async fn a_request_over_the_edge_limit_is_split_not_lost() {
    let cluster = Cluster::new();
    let edge = FakeEdge::start().await;
    cluster.register("n1", REGION, &edge.url).await;
    edge.fail_next(&[StatusCode::PAYLOAD_TOO_LARGE]);
    let worker = cluster.start_worker();
    let ids: Vec<String> = (0..4).map(|n| format!("m{n}")).collect();
    cluster
        .publish(
            ids.iter()
                .map(|id| ("room:live://1", id.as_str(), room("live://1")))
                .collect(),
        )
        .await;
    eventually("all pushes arrived", || edge.taken_ids().len() == 4).await;
    assert_eq!(edge.taken_ids(), ids);
    worker.stop().await;
    assert!(cluster.uncommitted().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_worker_delivers_in_order_and_commits() {
    let cluster = Cluster::kafka();
    let (n1, n2) = (FakeEdge::start().await, FakeEdge::start().await);
    cluster.register("n1", REGION, &n1.url).await;
    cluster.register("n2", REGION, &n2.url).await;
    let worker = cluster.start_worker();
    for round in 0..5 {
        let (key_id, room_id) = (format!("k{round}"), format!("r{round}"));
        cluster
            .publish(vec![
                ("key:a", &key_id, keys(&[("a", "n1")])),
                ("key:a", &room_id, room("live://1")),
            ])
            .await;
    }
    eventually("n1 took every push", || n1.taken().len() == 10).await;
    assert_eq!(
        n1.taken_ids(),
        ["k0", "r0", "k1", "r1", "k2", "r2", "k3", "r3", "k4", "r4"]
    );
    assert_eq!(n1.taken()[0].1, edge_keys(&["a"]));
    eventually("n2 took the room pushes", || {
        n2.taken_ids() == ["r0", "r1", "r2", "r3", "r4"]
    })
    .await;
    worker.stop().await;
    assert!(
        cluster.uncommitted().await.is_empty(),
        "taken pushes are committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_worker_leaves_uncommitted_what_a_down_edge_did_not_take() {
    edge_down_then_restarted(Cluster::kafka(), Duration::from_secs(2)).await;
}

/// The store-backed directory behind a switch that makes it fail, as when PostgreSQL is down.
struct SwitchedDirectory {
    inner: StoreDirectory,
    down: AtomicBool,
}

impl SwitchedDirectory {
    fn check(&self) -> Result<(), DirectoryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(DirectoryError("store is down".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl EdgeDirectory for SwitchedDirectory {
    async fn live_edges(&self, region: &str) -> Result<Arc<[EdgeTarget]>, DirectoryError> {
        self.check()?;
        self.inner.live_edges(region).await
    }

    async fn refreshed_edges(
        &self,
        region: &str,
        node_ids: &[&str],
    ) -> Result<Arc<[EdgeTarget]>, DirectoryError> {
        self.check()?;
        self.inner.refreshed_edges(region, node_ids).await
    }
}

#[tokio::test]
async fn a_batch_waits_while_the_directory_is_down_and_is_delivered_after() {
    let cluster = Cluster::new();
    let edge = FakeEdge::start().await;
    cluster.register("n1", REGION, &edge.url).await;
    let directory = Arc::new(SwitchedDirectory {
        inner: cluster.directory(),
        down: AtomicBool::new(true),
    });
    let worker = cluster.start_worker_with(directory.clone());
    cluster
        .publish(vec![("key:a", "m0", keys(&[("a", "n1")]))])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        edge.taken().is_empty(),
        "nothing can be routed without the directory"
    );

    directory.down.store(false, Ordering::SeqCst);
    eventually("the held batch was delivered", || {
        edge.taken_ids() == ["m0"]
    })
    .await;
    worker.stop().await;
    assert!(cluster.uncommitted().await.is_empty());
}

/// `GET http://<addr><path>`: status and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://{addr}{path}")).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(err) => (0, err.to_string()),
    }
}

/// Polls `/healthz` until its status is `status`; returns the last body.
async fn healthz_becomes(addr: std::net::SocketAddr, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (answered, body) = get(addr, "/healthz").await;
        if answered == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz still answers {answered} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_worker_health_endpoint_tells_the_truth_about_its_bus() {
    // The test's own HTTP client needs the process's TLS provider, as in the `rim` binary.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cluster = Cluster::kafka();
    let addr =
        std::net::SocketAddr::from(([127, 0, 0, 1], rim_testkit::ports::free_port().unwrap()));
    cluster.config.job_listen = addr;
    let worker = cluster.start_worker();
    assert_eq!(healthz_becomes(addr, 200).await, "ok");
    let (status, _) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "Prometheus text from the handle it was given");

    cluster.broker().stop();
    let reason = healthz_becomes(addr, 503).await;
    assert!(reason.contains("unhealthy"), "{reason}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_worker_delivers_again_after_the_broker_restarted_with_nothing() {
    let mut cluster = Cluster::kafka();
    // `rim job`'s own retry pauses (up to 5 s), as in a deployment: with the tests' short pauses a
    // consumer that returned one stale error per read still recovered within seconds.
    let defaults = JobConfig::default();
    cluster.config.job_retry_initial_ms = defaults.job_retry_initial_ms;
    cluster.config.job_retry_max_ms = defaults.job_retry_max_ms;
    let defaults = JobConfig::default();
    cluster.config.job_retry_initial_ms = defaults.job_retry_initial_ms;
    cluster.config.job_retry_max_ms = defaults.job_retry_max_ms;
    let edge = FakeEdge::start().await;
    cluster.register("n1", REGION, &edge.url).await;
    let worker = cluster.start_worker();
    cluster
        .publish(vec![("key:a", "before", keys(&[("a", "n1")]))])
        .await;
    eventually("the edge got the push before the restart", || {
        edge.taken_ids() == ["before"]
    })
    .await;

    // Every topic, group and offset is gone; neither the worker nor the producer is restarted.
    // Down for 10 s: after restarts of 3 s, librdkafka 2.12.1 crashed (SIGSEGV in
    // `rd_kafka_metadata_update_op`, a leader change for a topic id it cannot resolve) in about one
    // run of four even with the consumer's metadata refresh, and in two of four without it.
    cluster.broker().stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.broker().start_again();
    let restarted = tokio::time::Instant::now();
    let after = PushMessage {
        message_id: "after".into(),
        operation: 1000,
        accepted_at_unix_ms: 1,
        target: Some(keys(&[("a", "n1")])),
        ..PushMessage::default()
    };
    loop {
        let published = cluster
            .producer()
            .publish(vec![OutgoingPush {
                region: REGION.into(),
                partition_key: "key:a".into(),
                message: after.clone(),
            }])
            .await;
        match published {
            Ok(()) => break,
            Err(err) => assert!(
                restarted.elapsed() < Duration::from_secs(60),
                "still cannot publish: {err}"
            ),
        }
    }
    // About 7 s here; 43 s when every stale error queued during the outage cost a pause.
    let deadline = restarted + Duration::from_secs(30);
    while !edge.taken_ids().contains(&"after".to_owned()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never delivered after the broker restart: {:?}",
            edge.taken_ids()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "delivered again {:?} after the broker restart",
        restarted.elapsed()
    );
    worker.stop().await;
}
