//! Presence over real sockets and a real PostgreSQL: `GET /v1/presence` answers who of the asked
//! users is online across regions with their sessions, from what edges reported; the presence
//! webhook receives batched online/offline events as users get their first session and lose their
//! last, retried when the backend fails, with a bounded queue.

mod common;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::*;
use parking_lot::Mutex;
use reqwest::Method;
use rim_bus::memory::MemoryBus;
use rim_control::ControlConfig;
use rim_control::presence::{PresenceEvent, PresenceState, PresenceWebhook, WebhookSettings};
use rim_proto::schema::NodeHeartbeat;
use rim_store::postgres::PostgresStore;
use rim_testkit::postgres::TestPostgres;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

async fn harness(config: ControlConfig) -> Harness {
    let database = TestPostgres::shared().fresh_database();
    let store = PostgresStore::connect(&database, rim_store::StoreSettings::default())
        .await
        .unwrap();
    start(config, Arc::new(store), Arc::new(MemoryBus::new(1_000))).await
}

/// `GET /v1/presence?<query>` with `key`.
async fn presence(h: &Harness, query: &str, key: &str) -> (u16, Value) {
    Harness::call(h.with_key(Method::GET, &format!("/v1/presence?{query}"), key)).await
}

/// One session of a presence answer: key, node, region, room.
type SessionRow = (String, String, String, String);

/// Each online user of a presence answer with its sessions, and the offline users.
type Summary = (Vec<(i64, Vec<SessionRow>)>, Vec<i64>);

/// The `(key, node, region, room)` of each online user's sessions, and the offline list.
fn summary(answer: &Value) -> Summary {
    let online = answer["online"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| {
            let sessions = user["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let field = |name: &str| s[name].as_str().unwrap().to_owned();
                    (field("key"), field("node"), field("region"), field("room"))
                })
                .collect();
            (user["mid"].as_i64().unwrap(), sessions)
        })
        .collect();
    let offline = answer["offline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|mid| mid.as_i64().unwrap())
        .collect();
    (online, offline)
}

fn session(key: &str, node: &str, region: &str, room: &str) -> SessionRow {
    (key.into(), node.into(), region.into(), room.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_answers_who_is_online_across_regions_with_their_sessions() {
    let h = harness(config()).await;
    h.register("east-1", "east").await;
    h.register("west-1", "west").await;
    let t = now();
    h.sessions(
        "east-1",
        vec![
            connect("phone", 1, 1, t, "live://1"),
            connect("k2", 2, 2, t, ""),
        ],
    )
    .await;
    h.sessions("west-1", vec![connect("laptop", 1, 3, t, "")])
        .await;
    let (status, answer) = presence(&h, "mids=3,1&mids=2,1", ADMIN_KEY).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        summary(&answer),
        (
            vec![
                (
                    1,
                    vec![
                        session("laptop", "west-1", "west", ""),
                        session("phone", "east-1", "east", "live://1"),
                    ]
                ),
                (2, vec![session("k2", "east-1", "east", "")]),
            ],
            vec![3]
        )
    );
    assert_eq!(answer["online"][0]["sessions"][1]["platform"], "android");
    assert_eq!(
        answer["online"][0]["sessions"][1]["connected_at_unix_ms"],
        t
    );

    // A disconnect takes the user offline; a stopped edge takes its sessions with it.
    h.sessions("east-1", vec![disconnect("k2", 2, 2, now())])
        .await;
    let stopped = NodeHeartbeat {
        node_id: "west-1".into(),
        stopped: true,
        ..NodeHeartbeat::default()
    };
    assert_eq!(h.edge("/edge/v1/heartbeat", &stopped).await.status(), 204);
    let (status, answer) = presence(&h, "mids=1,2", ADMIN_KEY).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        summary(&answer),
        (
            vec![(1, vec![session("phone", "east-1", "east", "live://1")])],
            vec![2]
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_needs_the_read_scope_and_a_bounded_list_of_real_users() {
    let h = harness(ControlConfig {
        control_max_targets: 3,
        ..config()
    })
    .await;
    let reader = h.create_key("reader", &["read"]).await;
    let pusher = h.create_key("pusher", &["push"]).await;
    assert_eq!(presence(&h, "mids=1", &reader).await.0, 200);
    assert_eq!(presence(&h, "mids=1", &pusher).await.0, 403);
    assert_eq!(presence(&h, "mids=1", "no-such-key").await.0, 401);
    for bad in ["", "mids=", "mids=1,2,3,4", "mids=0", "mids=1,x", "other=1"] {
        let (status, answer) = presence(&h, bad, &reader).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(answer["message"].is_string(), "{bad}: {answer}");
    }
    // Duplicates count once.
    let (status, answer) = presence(&h, "mids=1,1,2,2,3", &reader).await;
    assert_eq!((status, answer["offline"].clone()), (200, json!([1, 2, 3])));
}

/// A business backend receiving presence webhooks: records every posted array, fails the first
/// `fail_first` posts with 500.
#[derive(Clone, Default)]
struct Backend {
    posts: Arc<Mutex<Vec<Vec<Value>>>>,
    attempts: Arc<AtomicUsize>,
    fail_first: usize,
}

impl Backend {
    /// Serves on a free port; answers its URL.
    async fn serve(self) -> String {
        async fn receive(
            State(backend): State<Backend>,
            Json(events): Json<Vec<Value>>,
        ) -> StatusCode {
            let attempt = backend.attempts.fetch_add(1, Ordering::SeqCst);
            if attempt < backend.fail_first {
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            backend.posts.lock().push(events);
            StatusCode::NO_CONTENT
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/presence", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/presence", post(receive))
            .with_state(self);
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// Every event received so far, as `(mid, state, region)`, in order.
    fn events(&self) -> Vec<(i64, String, String)> {
        self.posts
            .lock()
            .iter()
            .flatten()
            .map(|e| {
                (
                    e["mid"].as_i64().unwrap(),
                    e["state"].as_str().unwrap().to_owned(),
                    e["region"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Waits until `n` events arrived (or 10 s), then a little longer for any extra ones.
    async fn wait_for(&self, n: usize) -> Vec<(i64, String, String)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.events().len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.events()
    }
}

fn event(mid: i64, state: &str, region: &str) -> (i64, String, String) {
    (mid, state.into(), region.into())
}

fn webhook_config(url: String) -> ControlConfig {
    ControlConfig {
        control_presence_webhook_url: Some(url),
        control_presence_webhook_batch_ms: 50,
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_hears_first_sessions_come_and_last_sessions_go() {
    let backend = Backend::default();
    let h = harness(webhook_config(backend.clone().serve().await)).await;
    h.register("east-1", "east").await;
    h.register("west-1", "west").await;
    let t = now();
    // User 1's first session: online; its second (other region): nothing.
    h.sessions("east-1", vec![connect("a", 1, 1, t, "")]).await;
    assert_eq!(backend.wait_for(1).await, vec![event(1, "online", "east")]);
    h.sessions("west-1", vec![connect("b", 1, 2, t, "")]).await;
    // Ending one of two: nothing; ending the last: offline, in the region that reported it.
    h.sessions("east-1", vec![disconnect("a", 1, 1, now())])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backend.events().len(), 1);
    h.sessions("west-1", vec![disconnect("b", 1, 2, now())])
        .await;
    assert_eq!(
        backend.wait_for(2).await,
        vec![event(1, "online", "east"), event(1, "offline", "west")]
    );
    // Connected and gone within one batch: never online as far as anyone can tell. A stale
    // disconnect (another connection id) and an anonymous user: nothing either.
    h.sessions(
        "east-1",
        vec![
            connect("c", 2, 3, now(), ""),
            disconnect("c", 2, 3, now()),
            connect("d", 3, 4, now(), ""),
            disconnect("d", 3, 99, now()),
            connect("anon", 0, 5, now(), ""),
        ],
    )
    .await;
    let events = backend.wait_for(3).await;
    assert_eq!(events[2..], [event(3, "online", "east")]);
    // The event's time is the edge's time of the user's last event in the batch.
    let posted = backend.posts.lock().concat();
    assert_eq!(posted[0]["at_unix_ms"], t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_whose_sessions_end_without_a_disconnect_go_offline() {
    let backend = Backend::default();
    let h = harness(ControlConfig {
        control_sweep_interval_ms: 100,
        control_node_timeout_ms: 600,
        ..webhook_config(backend.clone().serve().await)
    })
    .await;
    h.register("east-1", "east").await;
    h.register("west-1", "west").await;
    // User 5 only on east-1; user 6 on both edges.
    h.sessions("east-1", vec![connect("a", 5, 1, now(), "")])
        .await;
    h.sessions("east-1", vec![connect("b", 6, 2, now(), "")])
        .await;
    h.sessions("west-1", vec![connect("c", 6, 3, now(), "")])
        .await;
    assert_eq!(
        backend.wait_for(2).await,
        vec![event(5, "online", "east"), event(6, "online", "east")]
    );
    // east-1 goes silent while west-1 keeps reporting: the sweeper declares east-1 dead, and
    // user 5, left without a session, goes offline; user 6 still has one on west-1.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while backend.events().len() < 3 && tokio::time::Instant::now() < deadline {
        assert_eq!(h.heartbeat("west-1", 1, &[]).await, 204);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        backend.wait_for(3).await[2..],
        [event(5, "offline", "east")]
    );
    // west-1 restarts (a new boot id): its previous life's sessions end, and user 6 with them.
    let mut restarted = registration("west-1", "west");
    restarted.boot_id = "boot-2".into();
    let response = h.edge("/edge/v1/register", &restarted).await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        backend.wait_for(4).await[3..],
        [event(6, "offline", "west")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_expires_unrenewed_goes_offline() {
    let backend = Backend::default();
    let database = TestPostgres::shared().fresh_database();
    let settings = rim_store::StoreSettings {
        session_ttl_ms: 500,
    };
    let store = PostgresStore::connect(&database, settings).await.unwrap();
    let config = ControlConfig {
        control_sweep_interval_ms: 100,
        ..webhook_config(backend.clone().serve().await)
    };
    let h = start(config, Arc::new(store), Arc::new(MemoryBus::new(1_000))).await;
    h.register("east-1", "east").await;
    h.sessions("east-1", vec![connect("a", 7, 1, now(), "")])
        .await;
    // The node stays alive; the session is never renewed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while backend.events().len() < 2 && tokio::time::Instant::now() < deadline {
        assert_eq!(h.heartbeat("east-1", 1, &[]).await, 204);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        backend.wait_for(2).await,
        vec![event(7, "online", "east"), event(7, "offline", "east")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_retried_and_events_are_batched() {
    let backend = Backend {
        fail_first: 2,
        ..Backend::default()
    };
    let h = harness(ControlConfig {
        control_presence_webhook_batch_ms: 500,
        ..webhook_config(backend.clone().serve().await)
    })
    .await;
    h.register("east-1", "east").await;
    for mid in 1..=3 {
        h.sessions(
            "east-1",
            vec![connect(&format!("k{mid}"), mid, mid as u64, now(), "")],
        )
        .await;
    }
    let events = backend.wait_for(3).await;
    assert_eq!(
        events,
        vec![
            event(1, "online", "east"),
            event(2, "online", "east"),
            event(3, "online", "east")
        ]
    );
    // Three batches' events in one post, delivered on the third attempt.
    assert_eq!(backend.posts.lock().len(), 1);
    assert_eq!(backend.attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_while_the_webhook_hangs() {
    // reqwest needs the process's rustls provider (control's start installs it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A backend that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/presence", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn({
        let held = held.clone();
        async move {
            while let Ok((socket, _)) = listener.accept().await {
                held.lock().push(socket);
            }
        }
    });
    let webhook = PresenceWebhook::start(WebhookSettings {
        url,
        batch_interval: Duration::from_millis(10),
        timeout: Duration::from_secs(30),
        queue: 2,
    })
    .unwrap();
    let event = |mid| PresenceEvent {
        mid,
        state: PresenceState::Online,
        at_unix_ms: 1,
        region: "east".into(),
    };
    // The first is taken into a post that hangs; two more wait; the fourth finds the queue full.
    assert!(webhook.offer(event(1)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while held.lock().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook was never called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(webhook.offer(event(2)));
    assert!(webhook.offer(event(3)));
    assert!(!webhook.offer(event(4)));
}
