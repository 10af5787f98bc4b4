//! The chaos suite: a running deployment loses one part at a time while numbered pushes flow, and
//! the clients count what arrived.
//!
//! Deployment (see `cluster`): region `east` with edges `east-1` and `east-2`, region `west` with
//! `west-1`, a `rim job` per region, one `rim control`, PostgreSQL and the broker. Two clients per
//! edge, each its own user, all in room `live://chaos`; clients reconnect to the other edge of
//! their region when theirs goes away. A pusher sends a room push and a push to every user each
//! tick; what the control plane accepted (2xx) must reach every client exactly once, in order,
//! unless the scenario took the client's own edge away.

mod cluster;

use cluster::pusher::{Pusher, Stream};
use cluster::recorder::Recorder;
use cluster::{Cluster, PATIENCE};
use serde_json::json;
use std::time::Duration;
use tokio::time::{Instant, sleep};

/// Time between two ticks of the pusher (each tick sends one room and one users push).
const TICK: Duration = Duration::from_millis(40);
/// Room of every client.
const ROOM: &str = "live://chaos";
/// How long an edge lane waits for an unreachable edge before settling its part (the job's
/// default deadline), plus the time a client may need to notice.
const LANE_DEADLINE: Duration = Duration::from_secs(5);
/// Longest pause another region's clients may see while one region's job or edge fails. Usually
/// ~0.1 s (pushes go out every 40 ms); on a loaded machine up to ~3 s was seen while the failed
/// region's consumer group rejoined: the other job's offset commit, which its loop awaits, waits
/// on the broker's group coordinator. Asynchronous commits would remove that coupling.
const OTHER_REGION_STALL: Duration = Duration::from_secs(5);

/// One client of the scenario.
struct Client {
    mid: i64,
    edge: String,
    region: String,
    recorder: Recorder,
}

/// A deployment with its clients and a running pusher.
struct Scenario {
    cluster: Cluster,
    clients: Vec<Client>,
    pusher: Pusher,
}

impl Scenario {
    async fn start() -> Scenario {
        let cluster = Cluster::two_regions().await;
        let mut clients = Vec::new();
        let layout = [
            ("east-1", "east-2", "east"),
            ("east-2", "east-1", "east"),
            ("west-1", "west-1", "west"),
        ];
        for (edge, fallback, region) in layout {
            for _ in 0..2 {
                let mid = 100 + clients.len() as i64;
                let addresses = [cluster.tcp_of(edge), cluster.tcp_of(fallback)];
                let recorder = cluster
                    .client(mid, &format!("key-{mid}"), ROOM, &addresses)
                    .await;
                clients.push(Client {
                    mid,
                    edge: edge.to_owned(),
                    region: region.to_owned(),
                    recorder,
                });
            }
        }
        let mids: Vec<i64> = clients.iter().map(|client| client.mid).collect();
        let streams = vec![
            Stream {
                tag: "room".into(),
                route: "/v1/push/room".into(),
                target: json!({"room": ROOM}),
            },
            Stream {
                tag: "users".into(),
                route: "/v1/push/users".into(),
                target: json!({"mids": mids}),
            },
        ];
        let pusher = Pusher::start(cluster.control_url.clone(), streams, TICK);
        // Warm up: faults start once pushes flow to every client (the jobs' first consumer-group
        // join takes a few seconds), so a stall measured later is the fault's, not the start's.
        for client in &clients {
            let got = client.recorder.wait_for("room", 1, PATIENCE).await;
            assert!(
                got > 0,
                "client {} never received a push\n{}",
                client.mid,
                cluster.logs()
            );
        }
        Scenario {
            cluster,
            clients,
            pusher,
        }
    }

    /// Stops the pusher and waits until every client in `judged` has every accepted push (or
    /// the patience ran out); then checks none was lost, duplicated or reordered for them.
    async fn stop_and_check(&mut self, judged: impl Fn(&Client) -> bool) {
        self.pusher.stop().await;
        let accepted = [self.pusher.accepted(0), self.pusher.accepted(1)];
        assert!(
            accepted.iter().all(|numbers| numbers.len() > 50),
            "too few pushes were accepted: {} and {} ({} refused)\n{}",
            accepted[0].len(),
            accepted[1].len(),
            self.pusher.refused(),
            self.cluster.logs()
        );
        let deadline = Instant::now() + PATIENCE;
        for client in self.clients.iter().filter(|client| judged(client)) {
            for (tag, numbers) in ["room", "users"].iter().zip(&accepted) {
                let left = deadline.saturating_duration_since(Instant::now());
                client.recorder.wait_for(tag, numbers.len(), left).await;
            }
        }
        sleep(Duration::from_millis(500)).await;
        for client in self.clients.iter().filter(|client| judged(client)) {
            for (tag, numbers) in ["room", "users"].iter().zip(&accepted) {
                let tally = client.recorder.tally_of(tag, numbers);
                assert_eq!(
                    (tally.lost, tally.duplicated, tally.out_of_order),
                    (0, 0, 0),
                    "{tag}: client {} on {} got {tally:?} of {} accepted\n{}",
                    client.mid,
                    client.edge,
                    numbers.len(),
                    self.cluster.logs()
                );
            }
        }
        println!(
            "accepted {} room and {} users pushes ({} refused, slowest answer {:?}); checked {} clients",
            accepted[0].len(),
            accepted[1].len(),
            self.pusher.refused(),
            self.pusher.slowest(),
            self.clients.iter().filter(|client| judged(client)).count()
        );
    }

    /// Asserts that no client in `judged` waited longer than `bound` for a room push in `window`.
    fn assert_no_stall(
        &self,
        judged: impl Fn(&Client) -> bool,
        window: (Instant, Instant),
        bound: Duration,
    ) {
        for client in self.clients.iter().filter(|client| judged(client)) {
            let (gap, at) = client.recorder.longest_gap_at("room", window.0, window.1);
            assert!(
                gap <= bound,
                "client {} on {} stalled {gap:?} from {at:?} into the window (bound {bound:?})\n{}",
                client.mid,
                client.edge,
                self.cluster.logs()
            );
            println!(
                "client {} on {}: longest gap {gap:?}, from {at:?} into the window",
                client.mid, client.edge
            );
        }
    }
}

/// `rim job` of `east` is SIGKILLed and started again after `downtime`: nothing accepted is lost
/// or duplicated, east delivers again within 10 s of the restart, west never stalls.
async fn job_killed_and_restarted(downtime: Duration) {
    let mut scenario = Scenario::start().await;
    sleep(Duration::from_secs(3)).await;
    let killed = Instant::now();
    scenario
        .cluster
        .jobs
        .get_mut("east")
        .expect("east job")
        .kill();
    sleep(downtime).await;
    scenario.cluster.start_job("east");
    let restarted = Instant::now();
    sleep(Duration::from_secs(12)).await;
    let end = Instant::now();
    scenario.stop_and_check(|_| true).await;
    scenario.assert_no_stall(|c| c.region == "west", (killed, end), OTHER_REGION_STALL);
    scenario.assert_no_stall(
        |c| c.region == "east",
        (restarted, end),
        Duration::from_secs(10),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_killed_and_restarted_after_1s() {
    job_killed_and_restarted(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_killed_and_restarted_after_15s() {
    job_killed_and_restarted(Duration::from_secs(15)).await;
}

/// One of the two east edges goes away (SIGKILL, or a graceful stop for good): the other edge's
/// clients lose nothing and stall at most the lane deadline; the lost edge's clients reconnect to
/// the other edge and receive again.
async fn edge_lost(graceful: bool) {
    let mut scenario = Scenario::start().await;
    sleep(Duration::from_secs(3)).await;
    let lost = Instant::now();
    let edge = scenario.cluster.edge("east-1");
    if graceful {
        edge.process.stop();
    } else {
        edge.process.kill();
    }
    sleep(Duration::from_secs(12)).await;
    let end = Instant::now();
    for client in scenario.clients.iter().filter(|c| c.edge == "east-1") {
        client.recorder.wait_connected(2).await;
    }
    scenario.stop_and_check(|c| c.edge != "east-1").await;
    scenario.assert_no_stall(
        |c| c.edge == "east-2",
        (lost, end),
        LANE_DEADLINE + Duration::from_secs(2),
    );
    scenario.assert_no_stall(|c| c.region == "west", (lost, end), OTHER_REGION_STALL);
    for client in scenario.clients.iter().filter(|c| c.edge == "east-1") {
        let after = client.recorder.arrivals("room");
        assert!(
            after.iter().any(|at| *at > lost + Duration::from_secs(1)),
            "client {} of the lost edge received nothing after reconnecting\n{}",
            client.mid,
            scenario.cluster.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_killed() {
    edge_lost(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_stopped_for_good() {
    edge_lost(true).await;
}

/// `rim control` is SIGKILLed and started again: everything it answered 2xx is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_killed() {
    let mut scenario = Scenario::start().await;
    sleep(Duration::from_secs(3)).await;
    scenario.cluster.control.kill();
    sleep(Duration::from_secs(2)).await;
    scenario.cluster.control.restart();
    scenario.cluster.wait_for_control().await;
    sleep(Duration::from_secs(8)).await;
    scenario.stop_and_check(|_| true).await;
}

/// PostgreSQL is down for 10 s: pushes may be refused meanwhile, but everything accepted is
/// delivered, and user pushes are accepted again within 10 s of PostgreSQL being back (then 50 more,
/// at whatever rate this machine's load allows; the rates before and after are printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_10s() {
    let mut scenario = Scenario::start().await;
    let before = scenario.pusher.accepted(1).len();
    sleep(Duration::from_secs(3)).await;
    let baseline = scenario.pusher.accepted(1).len() - before;
    tokio::task::block_in_place(|| scenario.cluster.postgres.stop());
    sleep(Duration::from_secs(10)).await;
    tokio::task::block_in_place(|| scenario.cluster.postgres.start_again());
    let back_at = Instant::now();
    let back = scenario.pusher.accepted(1).len();
    let refused = scenario.pusher.refused();
    let accepted_since = |scenario: &Scenario| scenario.pusher.accepted(1).len() - back;
    while accepted_since(&scenario) == 0 {
        assert!(
            back_at.elapsed() < Duration::from_secs(10),
            "no user push was accepted within 10 s of PostgreSQL coming back ({} refused)\n{}",
            scenario.pusher.refused() - refused,
            scenario.cluster.logs()
        );
        sleep(Duration::from_millis(50)).await;
    }
    let recovered = back_at.elapsed();
    while accepted_since(&scenario) <= 50 {
        assert!(
            back_at.elapsed() < PATIENCE,
            "user pushes stopped being accepted after PostgreSQL came back: {} in {:?}\n{}",
            accepted_since(&scenario),
            back_at.elapsed(),
            scenario.cluster.logs()
        );
        sleep(Duration::from_millis(50)).await;
    }
    println!(
        "user pushes accepted again {recovered:?} after PostgreSQL came back; 50 more took {:?} \
         ({:.1}/s before the outage)",
        back_at.elapsed() - recovered,
        baseline as f64 / 3.0
    );
    scenario.stop_and_check(|_| true).await;
}

/// The broker restarts (its in-memory topics are gone): pushes flow again, end to end, without
/// restarting any rim process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted() {
    let mut scenario = Scenario::start().await;
    sleep(Duration::from_secs(3)).await;
    // Down for 10 s, as a broker restart takes: librdkafka 2.12 can crash on a Fetch answer from
    // a broker that came back within a few seconds with none of its topics (seen with tansu).
    tokio::task::block_in_place(|| scenario.cluster.kafka.stop());
    sleep(Duration::from_secs(10)).await;
    tokio::task::block_in_place(|| scenario.cluster.kafka.start_again());
    let restarted = Instant::now();
    // What the old broker held in memory and had not delivered is gone with it: judge only what
    // is accepted from here on.
    let from = scenario.pusher.accepted(0).len();
    let deadline = restarted + PATIENCE;
    loop {
        let flowing = scenario.clients.iter().all(|client| {
            client
                .recorder
                .arrivals("room")
                .iter()
                .any(|at| *at > restarted + Duration::from_secs(1))
        });
        if flowing {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pushes did not flow again after the broker restarted\n{}",
            scenario.cluster.logs()
        );
        sleep(Duration::from_millis(200)).await;
    }
    println!(
        "delivering again {:?} after the broker restart",
        restarted.elapsed()
    );
    // Push on for 5 s and until enough pushes were accepted since the restart to judge delivery
    // by (a loaded machine stretches the pusher's ticks).
    let flowing_at = Instant::now();
    loop {
        let since = scenario.pusher.accepted(0).len() - from;
        if since > 50 && flowing_at.elapsed() >= Duration::from_secs(5) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "too few pushes accepted after the restart: {since} in {:?} ({} refused in all)\n{}",
            restarted.elapsed(),
            scenario.pusher.refused(),
            scenario.cluster.logs()
        );
        sleep(Duration::from_millis(200)).await;
    }
    scenario.pusher.stop().await;
    let accepted: Vec<usize> = scenario.pusher.accepted(0)[from..].to_vec();
    println!(
        "{} room pushes accepted since the restart ({:?})",
        accepted.len(),
        restarted.elapsed()
    );
    let recent = &accepted[accepted.len() / 2..];
    sleep(Duration::from_secs(3)).await;
    for client in &scenario.clients {
        let tally = client.recorder.tally_of("room", recent);
        assert_eq!(
            (tally.lost, tally.duplicated),
            (0, 0),
            "client {} lost pushes accepted after the broker was back: {tally:?}\n{}",
            client.mid,
            scenario.cluster.logs()
        );
    }
}
