//! End to end through the production path: real `rim control` on PostgreSQL and the
//! Kafka-protocol broker, a real `rim job` per region, real edges in two regions, and JWT clients
//! that count what arrived.
//!
//! Layout: region `east` has edges `east-1` and `east-2`, region `west` has `west-1`. Users 2, 3
//! and 4 sit on `east-1` (several targets of one push on one edge: the case that once reached only
//! the first), user 5 on `east-2`, user 6 on `west-1`, and user 7 has one device in each region.
//! Every push is numbered; each client must get each number exactly once, in order, and the API's
//! answer must count the connections that received it.

mod cluster;

use cluster::recorder::Recorder;
use cluster::{Cluster, OPERATION, PATIENCE};
use serde_json::{Value, json};
use std::time::Duration;

/// Pushes of each kind in a run.
const PUSHES: usize = 20;

/// The clients of the layout above, with their user, key and edge.
struct Clients {
    all: Vec<(i64, String, Recorder)>,
}

impl Clients {
    async fn connect(cluster: &Cluster) -> Clients {
        let layout: [(i64, &str, &str); 8] = [
            (2, "k2", "east-1"),
            (3, "k3", "east-1"),
            (4, "k4", "east-1"),
            (5, "k5", "east-2"),
            (6, "k6", "west-1"),
            (7, "k7-east", "east-2"),
            (7, "k7-west", "west-1"),
            // Not addressed by the user and key pushes: only room and broadcast reach it.
            (8, "k8", "east-1"),
        ];
        let mut all = Vec::new();
        for (mid, key, edge) in layout {
            let room = if mid % 2 == 0 {
                "live://even"
            } else {
                "live://odd"
            };
            let recorder = cluster
                .client(mid, key, room, &[cluster.tcp_of(edge)])
                .await;
            all.push((mid, key.to_owned(), recorder));
        }
        Clients { all }
    }

    /// Waits until every client in `expected` has `PUSHES` bodies of `tag`, then checks that each
    /// client got exactly what it should: every number once, in order, or nothing.
    async fn check(&self, cluster: &Cluster, tag: &str, expected: impl Fn(i64, &str) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        for (mid, key, recorder) in &self.all {
            if expected(*mid, key) {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                recorder.wait_for(tag, PUSHES, left).await;
            }
        }
        // Let stragglers (duplicates, misdeliveries) arrive before judging.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (mid, key, recorder) in &self.all {
            let tally = recorder.tally(tag, PUSHES);
            let wanted = if expected(*mid, key) { PUSHES } else { 0 };
            assert_eq!(
                (tally.received, tally.duplicated, tally.out_of_order),
                (wanted, 0, 0),
                "{tag}: user {mid} key {key} got {tally:?}\n{}",
                cluster.logs()
            );
        }
    }
}

/// A heartbeat period longer than any test.
fn heartbeat() -> rim_client::AdaptiveHeartbeat {
    rim_client::AdaptiveHeartbeat::fixed(Duration::from_secs(60))
}

/// The number of connections an answer says it targeted (goim envelope or /v1 answer).
fn targeted(answer: &Value) -> u64 {
    let report = answer.get("data").unwrap_or(answer);
    report
        .get("sessions")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("answer without a session count: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_of_every_push_is_reached_once_in_order() {
    let cluster = Cluster::two_regions().await;
    let clients = Clients::connect(&cluster).await;

    // Users, through goim's route (repeated and comma-separated parameters) and /v1.
    for n in 0..PUSHES {
        let (status, answer) = cluster
            .goim(
                &format!("/goim/push/mids?operation={OPERATION}&mids=2&mids=3,4&mids=5&mids=7"),
                &format!("goim-mids:{n}"),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(targeted(&answer), 6, "{answer}");
    }
    clients
        .check(&cluster, "goim-mids", |mid, _| {
            [2, 3, 4, 5, 7].contains(&mid)
        })
        .await;
    for n in 0..PUSHES {
        let (status, answer) = cluster
            .v1(
                "/v1/push/users",
                json!({"mids": [2, 3, 6, 7], "operation": OPERATION, "body_text": format!("v1-users:{n}")}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(targeted(&answer), 5, "{answer}");
    }
    clients
        .check(&cluster, "v1-users", |mid, _| [2, 3, 6, 7].contains(&mid))
        .await;

    // Keys, several on one edge, over both regions.
    for n in 0..PUSHES {
        let (status, answer) = cluster
            .goim(
                &format!("/goim/push/keys?operation={OPERATION}&keys=k2&keys=k3,k4&keys=k7-west"),
                &format!("goim-keys:{n}"),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(targeted(&answer), 4, "{answer}");
    }
    clients
        .check(&cluster, "goim-keys", |_, key| {
            ["k2", "k3", "k4", "k7-west"].contains(&key)
        })
        .await;
    for n in 0..PUSHES {
        let (status, answer) = cluster
            .v1(
                "/v1/push/keys",
                json!({"keys": ["k3", "k4", "k5", "k6"], "operation": OPERATION, "body_text": format!("v1-keys:{n}")}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(targeted(&answer), 4, "{answer}");
    }
    clients
        .check(&cluster, "v1-keys", |_, key| {
            ["k3", "k4", "k5", "k6"].contains(&key)
        })
        .await;

    // A room spread over three edges and two regions (users 2, 4, 6, 8), and everyone.
    for n in 0..PUSHES {
        let (status, answer) = cluster
            .goim(
                &format!("/goim/push/room?operation={OPERATION}&type=live&room=even"),
                &format!("room:{n}"),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(targeted(&answer), 4, "{answer}");
    }
    clients.check(&cluster, "room", |mid, _| mid % 2 == 0).await;
    for n in 0..PUSHES {
        let (status, answer) = cluster
            .v1(
                "/v1/push/all",
                json!({"operation": OPERATION, "body_text": format!("all:{n}")}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(targeted(&answer), 8, "{answer}");
    }
    clients.check(&cluster, "all", |_, _| true).await;
}

/// Pushes to two rooms, to users and to keys sent at the same time, each stream one push after
/// another: the durable writer, the job's lanes and the edges carry them side by side (several
/// rooms in one batch, one request, one write), and every client still gets each of its streams
/// once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_to_rooms_users_and_keys_each_arrive_once_in_order() {
    let cluster = Cluster::two_regions().await;
    let clients = Clients::connect(&cluster).await;
    let streams = [
        ("/v1/push/room", "even", json!({"room": "live://even"})),
        ("/v1/push/room", "odd", json!({"room": "live://odd"})),
        ("/v1/push/users", "users", json!({"mids": [2, 3, 5]})),
        ("/v1/push/keys", "keys", json!({"keys": ["k4", "k6"]})),
    ];
    let cluster = &cluster;
    let sent = streams.iter().map(|(path, tag, target)| async move {
        for n in 0..PUSHES {
            let mut body = target.clone();
            body["operation"] = json!(OPERATION);
            body["body_text"] = json!(format!("{tag}:{n}"));
            let (status, answer) = cluster.v1(path, body).await;
            assert_eq!(status, 202, "{tag}:{n}: {answer}");
        }
    });
    futures_util::future::join_all(sent).await;
    clients.check(cluster, "even", |mid, _| mid % 2 == 0).await;
    clients.check(cluster, "odd", |mid, _| mid % 2 == 1).await;
    clients
        .check(cluster, "users", |mid, _| [2, 3, 5].contains(&mid))
        .await;
    clients
        .check(cluster, "keys", |_, key| ["k4", "k6"].contains(&key))
        .await;
}

/// A push sent the moment a client has its auth reply reaches it: the edge reports the session
/// to control before answering, so control never answers "offline" for a client that is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_right_after_the_auth_reply_is_delivered() {
    const ROUNDS: i64 = 100;
    let cluster = Cluster::start(&["east"], &[("east-1", "east")]).await;
    let edge = cluster.tcp_of("east-1");
    for round in 0..ROUNDS {
        let mid = 1_000 + round;
        let token = Cluster::token(mid, &format!("fresh-{round}"), "");
        let (mut connection, _) = rim_client::Connection::connect(&edge, &token, heartbeat())
            .await
            .expect("connect and authenticate");
        let (status, answer) = cluster
            .v1(
                "/v1/push/users",
                json!({"mids": [mid], "operation": OPERATION, "body_text": format!("fresh:{round}")}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(
            targeted(&answer),
            1,
            "round {round}: the push right after auth was not addressed to the client: {answer}"
        );
        let push = tokio::time::timeout(PATIENCE, connection.recv())
            .await
            .expect("the push arrives")
            .expect("connection alive");
        assert_eq!(push.body, format!("fresh:{round}").as_bytes());
    }
}

/// A key taken over on another edge, in another region, closes the old connection (control
/// decides the order and tells the old edge through its region's job); pushes to the key reach
/// the new connection only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_over_on_another_edge_closes_the_old_connection() {
    let cluster = Cluster::two_regions().await;
    let token = Cluster::token(42, "shared-key", "");
    let (mut old, _) =
        rim_client::Connection::connect(&cluster.tcp_of("east-1"), &token, heartbeat())
            .await
            .expect("first connection");
    let (mut new, _) =
        rim_client::Connection::connect(&cluster.tcp_of("west-1"), &token, heartbeat())
            .await
            .expect("second connection");
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Err(error) = old.recv().await {
                return error;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the old connection stayed open\n{}", cluster.logs()));
    println!("old connection ended: {ended}");
    let (status, answer) = cluster
        .v1(
            "/v1/push/keys",
            json!({"keys": ["shared-key"], "operation": OPERATION, "body_text": "to the new one"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(targeted(&answer), 1, "{answer}");
    let push = tokio::time::timeout(PATIENCE, new.recv())
        .await
        .expect("the push arrives")
        .expect("the new connection is alive");
    assert_eq!(push.body, "to the new one".as_bytes());
}
