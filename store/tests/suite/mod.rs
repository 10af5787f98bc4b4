//! The behavioural suite every [`Store`] must pass, written once and run against each store.
//!
//! Each behaviour is one `async fn` taking the store under test; [`store_suite!`] turns the list of
//! them into `#[tokio::test]`s for a given way of opening a fresh, empty store (`tests/memory.rs`,
//! `tests/postgres.rs`). Times are explicit (`now` is a parameter of every call), so expiry is tested
//! without sleeping (liveness excepted: the PostgreSQL store judges it by the database's clock).
//! `tests/directory.rs` uses only the fixtures (registrations, settings), hence the allowances.
#![allow(dead_code, unused_macros)]

use rim_proto::schema::session_event::Kind;
use rim_proto::schema::{NodeHeartbeat, NodeRegistration, RoomCount, SessionEvent};
use rim_store::{
    ApiKeyRecord, DisplacedSession, EndedUsers, ExpiryReport, NodeState, OnlineTotals, RateLimit,
    Region, RegistrationReport, RoomOnline, Scope, Session, SessionApplyReport, Store, StoreError,
    StoreSettings, TargetKind,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Session lifetime used by every suite store.
pub const TTL: i64 = 60_000;
/// A fixed "now" the tests count from.
pub const T0: i64 = 1_800_000_000_000;

/// The wall clock in the store's unit: for tests of liveness, which the PostgreSQL store judges by
/// the database's clock (the same machine's), whatever `now` the caller passes.
pub fn wall() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The settings every suite store is opened with.
pub fn settings() -> StoreSettings {
    StoreSettings {
        session_ttl_ms: TTL,
    }
}

/// Defines one `#[tokio::test]` per behaviour, each on a fresh store from `$open` (an async expression).
macro_rules! store_suite {
    ($open:expr) => {
        suite::store_suite!(@tests $open;
            register_heartbeat_and_unknown_node,
            invalid_registrations_are_rejected,
            regions_are_upserted_and_listed_by_name,
            regions_are_inserted_once_and_deleted_without_live_nodes,
            admin_drain_survives_heartbeats,
            admin_drain_survives_reregistration_until_lifted,
            new_boot_id_ends_the_previous_life,
            stopped_heartbeat_buries_the_node_at_once,
            sweeper_lease_has_one_holder_at_a_time,
            newest_sessions_per_user_are_kept,
            health_answers,
            connect_renew_disconnect,
            stale_disconnect_keeps_newer_session,
            duplicate_events_are_idempotent,
            out_of_order_events_in_one_batch,
            takeover_by_arrival_across_nodes_by_time_within_one,
            batch_equals_one_event_at_a_time,
            concurrent_takeovers_report_every_displaced_connection_once,
            sessions_expire,
            silent_nodes_die_with_their_sessions,
            admin_marking_dead_removes_sessions,
            room_counts_and_totals_over_live_nodes,
            top_rooms_filter_ties_and_limit,
            api_keys_lifecycle,
            lookups_by_mid_and_key_skip_expired
        );
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $open.await;
                suite::$name(&store).await;
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use store_suite;

/// A registration of `id` in region `sh` with distinct ports.
pub fn registration(id: &str) -> NodeRegistration {
    NodeRegistration {
        node_id: id.into(),
        region: "sh".into(),
        latitude: 31.2,
        longitude: 121.5,
        hostname: format!("{id}.example.test"),
        addresses: vec!["192.0.2.1".into(), "2001:db8::1".into()],
        tcp_port: 3101,
        ws_port: 3102,
        wss_port: 3103,
        push_url: format!("http://{id}:3109"),
        weight: 10,
        boot_id: "boot-1".into(),
    }
}

/// A heartbeat of `id` with these room counts.
pub fn heartbeat(id: &str, conns: u64, ips: u64, rooms: &[(&str, u64)]) -> NodeHeartbeat {
    NodeHeartbeat {
        node_id: id.into(),
        connection_count: conns,
        ip_count: ips,
        rooms: rooms
            .iter()
            .map(|(room, count)| RoomCount {
                room: (*room).into(),
                count: *count,
            })
            .collect(),
        draining: false,
        stopped: false,
        ..NodeHeartbeat::default()
    }
}

/// A connect of `key` (user `mid`) on connection `conn` at `at`, in `room`.
/// The users (with their nodes' region) a report says lost sessions without a disconnect.
pub fn ended(users: &[(i64, &str)]) -> EndedUsers {
    users
        .iter()
        .map(|(mid, region)| (*mid, (*region).to_owned()))
        .collect()
}

pub fn connect(key: &str, mid: i64, conn: u64, at: i64, room: &str) -> SessionEvent {
    SessionEvent {
        kind: Kind::Connect.into(),
        key: key.into(),
        mid,
        room: room.into(),
        platform: "android".into(),
        accepts: vec![1000, 1001],
        connection_id: conn,
        at_unix_ms: at,
        ip: "198.51.100.7".into(),
    }
}

/// A disconnect of `key` on connection `conn`.
pub fn disconnect(key: &str, conn: u64, at: i64) -> SessionEvent {
    SessionEvent {
        kind: Kind::Disconnect.into(),
        key: key.into(),
        connection_id: conn,
        at_unix_ms: at,
        ..SessionEvent::default()
    }
}

/// A renew of `key` on connection `conn`, now in `room`.
pub fn renew(key: &str, conn: u64, at: i64, room: &str) -> SessionEvent {
    SessionEvent {
        kind: Kind::Renew.into(),
        key: key.into(),
        room: room.into(),
        connection_id: conn,
        at_unix_ms: at,
        ..SessionEvent::default()
    }
}

fn report(connected: u64, disconnected: u64, renewed: u64, ignored: u64) -> SessionApplyReport {
    SessionApplyReport {
        connected,
        disconnected,
        renewed,
        ignored,
        displaced: Vec::new(),
    }
}

/// A displaced connection, for comparing with [`SessionApplyReport::displaced`].
fn displaced(key: &str, node: &str, conn: u64) -> DisplacedSession {
    DisplacedSession {
        key: key.into(),
        node_id: node.into(),
        connection_id: conn,
    }
}

/// The nodes' states, by id.
async fn states(store: &dyn Store) -> Vec<(String, NodeState)> {
    store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| (n.id, n.state))
        .collect()
}

async fn register(store: &dyn Store, ids: &[&str]) {
    for id in ids {
        store.register_node(&registration(id), T0).await.unwrap();
    }
}

async fn session(store: &dyn Store, key: &str, now: i64) -> Option<Session> {
    let mut found = store
        .sessions_by_keys(&[key.to_owned()], now)
        .await
        .unwrap();
    assert!(found.len() <= 1, "one session per key: {found:?}");
    found.pop()
}

/// Where a key lives: (node, connection id), for compact assertions.
async fn owner(store: &dyn Store, key: &str, now: i64) -> Option<(String, u64)> {
    session(store, key, now)
        .await
        .map(|s| (s.node_id, s.connection_id))
}

fn owned(node: &str, conn: u64) -> Option<(String, u64)> {
    Some((node.to_owned(), conn))
}

pub async fn register_heartbeat_and_unknown_node(store: &dyn Store) {
    register(store, &["n1"]).await;
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    let node = &nodes[0];
    assert_eq!((node.id.as_str(), node.region.as_str()), ("n1", "sh"));
    assert_eq!(
        (node.tcp_port, node.ws_port, node.wss_port),
        (3101, 3102, 3103)
    );
    assert_eq!(node.addresses, vec!["192.0.2.1", "2001:db8::1"]);
    assert_eq!(
        (node.hostname.as_str(), node.push_url.as_str()),
        ("n1.example.test", "http://n1:3109")
    );
    assert_eq!(
        (node.weight, node.state, node.boot_id.as_str()),
        (10, NodeState::Active, "boot-1")
    );
    assert_eq!((node.connection_count, node.ip_count), (0, 0));
    // The unknown region was created at the node's location.
    assert_eq!(
        store.regions().await.unwrap(),
        vec![Region {
            name: "sh".into(),
            latitude: 31.2,
            longitude: 121.5
        }]
    );

    let unknown = store
        .node_heartbeat(&heartbeat("ghost", 1, 1, &[]), T0)
        .await;
    assert!(matches!(unknown, Err(StoreError::UnknownNode(id)) if id == "ghost"));
    let unknown = store
        .apply_session_events("ghost", &[connect("k", 1, 1, T0, "")], T0)
        .await;
    assert!(matches!(unknown, Err(StoreError::UnknownNode(_))));
    let unknown = store.set_node_state("ghost", NodeState::Draining).await;
    assert!(matches!(unknown, Err(StoreError::UnknownNode(_))));

    store
        .node_heartbeat(&heartbeat("n1", 42, 7, &[]), T0 + 5_000)
        .await
        .unwrap();
    let node = store.nodes().await.unwrap().remove(0);
    assert_eq!((node.connection_count, node.ip_count), (42, 7));

    // Re-registering (a restart) refreshes metadata and keeps the last reported load.
    let mut moved = registration("n1");
    moved.tcp_port = 4101;
    store.register_node(&moved, T0 + 6_000).await.unwrap();
    let node = store.nodes().await.unwrap().remove(0);
    assert_eq!((node.tcp_port, node.connection_count), (4101, 42));
}

pub async fn invalid_registrations_are_rejected(store: &dyn Store) {
    let mut bad_port = registration("n1");
    bad_port.ws_port = 70_000;
    let mut no_id = registration("");
    no_id.node_id.clear();
    let mut off_globe = registration("n1");
    off_globe.latitude = 91.0;
    let mut no_region = registration("n1");
    no_region.region.clear();
    for reg in [bad_port, no_id, off_globe, no_region] {
        let result = store.register_node(&reg, T0).await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{reg:?} gave {result:?}"
        );
    }
    assert!(store.nodes().await.unwrap().is_empty());
    let bad_region = Region {
        name: "x".into(),
        latitude: f64::NAN,
        longitude: 0.0,
    };
    assert!(matches!(
        store.upsert_region(&bad_region).await,
        Err(StoreError::Invalid(_))
    ));
}

pub async fn regions_are_upserted_and_listed_by_name(store: &dyn Store) {
    let region = |name: &str, latitude: f64| Region {
        name: name.into(),
        latitude,
        longitude: 10.0,
    };
    for r in [
        region("sh", 31.0),
        region("eu-west", 50.0),
        region("Z", 1.0),
        region("sh", 32.0),
    ] {
        store.upsert_region(&r).await.unwrap();
    }
    assert_eq!(
        store.regions().await.unwrap(),
        vec![
            region("Z", 1.0),
            region("eu-west", 50.0),
            region("sh", 32.0)
        ]
    );
    // A node registering into a known region leaves the region's own location alone.
    register(store, &["n1"]).await;
    assert_eq!(store.regions().await.unwrap()[2], region("sh", 32.0));
}

pub async fn regions_are_inserted_once_and_deleted_without_live_nodes(store: &dyn Store) {
    let sh = Region {
        name: "sh".into(),
        latitude: 31.2,
        longitude: 121.5,
    };
    assert!(store.insert_region(&sh).await.unwrap());
    let moved = Region {
        latitude: 0.0,
        ..sh.clone()
    };
    assert!(!store.insert_region(&moved).await.unwrap(), "name taken");
    assert_eq!(store.regions().await.unwrap(), vec![sh.clone()]);
    assert!(matches!(
        store
            .insert_region(&Region {
                name: String::new(),
                ..sh.clone()
            })
            .await,
        Err(StoreError::Invalid(_))
    ));

    assert_eq!(
        store.delete_region("nowhere").await.unwrap(),
        rim_store::RegionRemoval::Unknown
    );
    // Live nodes (active or draining) keep their region; a dead one does not.
    register(store, &["n1", "n2"]).await;
    store
        .set_node_state("n2", NodeState::Draining)
        .await
        .unwrap();
    assert_eq!(
        store.delete_region("sh").await.unwrap(),
        rim_store::RegionRemoval::HasLiveNodes(vec!["n1".into(), "n2".into()])
    );
    assert_eq!(store.regions().await.unwrap(), vec![sh.clone()]);
    store.set_node_state("n1", NodeState::Dead).await.unwrap();
    store.set_node_state("n2", NodeState::Dead).await.unwrap();
    assert_eq!(
        store.delete_region("sh").await.unwrap(),
        rim_store::RegionRemoval::Removed
    );
    assert!(store.regions().await.unwrap().is_empty());
    assert!(store.nodes().await.unwrap().is_empty(), "dead nodes go too");
    // The region can be created again, and its nodes can come back.
    assert!(store.insert_region(&sh).await.unwrap());
    register(store, &["n1"]).await;
    assert_eq!(store.nodes().await.unwrap().len(), 1);
}

pub async fn admin_drain_survives_heartbeats(store: &dyn Store) {
    register(store, &["n1", "n2"]).await;
    store
        .set_node_state("n1", NodeState::Draining)
        .await
        .unwrap();
    store
        .node_heartbeat(&heartbeat("n1", 1, 1, &[]), T0)
        .await
        .unwrap();
    let mut draining = heartbeat("n2", 1, 1, &[]);
    draining.draining = true;
    store.node_heartbeat(&draining, T0).await.unwrap();
    let states: Vec<_> = store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.state)
        .collect();
    assert_eq!(states, vec![NodeState::Draining, NodeState::Draining]);
    // An edge that drained itself (shutdown) is active again when it registers.
    register(store, &["n2"]).await;
    assert_eq!(store.nodes().await.unwrap()[1].state, NodeState::Active);
}

pub async fn admin_drain_survives_reregistration_until_lifted(store: &dyn Store) {
    register(store, &["n1"]).await;
    store
        .set_node_state("n1", NodeState::Draining)
        .await
        .unwrap();
    // A restart (new boot id) and a plain re-registration keep the admin's drain.
    let mut restarted = registration("n1");
    restarted.boot_id = "boot-2".into();
    store.register_node(&restarted, T0 + 1).await.unwrap();
    register(store, &["n1"]).await;
    let node = store.nodes().await.unwrap().remove(0);
    assert_eq!(
        (node.state, node.drained_by_admin),
        (NodeState::Draining, true)
    );
    // The admin lifts it: active at once, and still active after the next registration.
    store.set_node_state("n1", NodeState::Active).await.unwrap();
    let node = store.nodes().await.unwrap().remove(0);
    assert_eq!(
        (node.state, node.drained_by_admin),
        (NodeState::Active, false)
    );
    register(store, &["n1"]).await;
    assert_eq!(states(store).await, vec![("n1".into(), NodeState::Active)]);
    // Lifting a drain does not resurrect a dead node; its next registration makes it active.
    store
        .set_node_state("n1", NodeState::Draining)
        .await
        .unwrap();
    store.set_node_state("n1", NodeState::Dead).await.unwrap();
    store.set_node_state("n1", NodeState::Active).await.unwrap();
    assert_eq!(states(store).await, vec![("n1".into(), NodeState::Dead)]);
    register(store, &["n1"]).await;
    assert_eq!(states(store).await, vec![("n1".into(), NodeState::Active)]);
}

pub async fn new_boot_id_ends_the_previous_life(store: &dyn Store) {
    register(store, &["n1", "n2"]).await;
    let batch = [
        connect("k1", 1, 1, T0, "r://1"),
        connect("k2", 2, 2, T0, ""),
    ];
    store.apply_session_events("n1", &batch, T0).await.unwrap();
    store
        .apply_session_events("n2", &[connect("k3", 3, 3, T0, "")], T0)
        .await
        .unwrap();
    store
        .node_heartbeat(&heartbeat("n1", 2, 1, &[("r://1", 1)]), T0)
        .await
        .unwrap();
    // The same life registering again (after a 404) keeps its sessions.
    let same = store
        .register_node(&registration("n1"), T0 + 1)
        .await
        .unwrap();
    assert_eq!(same, RegistrationReport::default());
    assert_eq!(owner(store, "k1", T0 + 1).await, owned("n1", 1));
    // An edge without boot ids changes nothing either.
    let mut legacy = registration("n1");
    legacy.boot_id.clear();
    let report = store.register_node(&legacy, T0 + 2).await.unwrap();
    assert_eq!(report, RegistrationReport::default());
    assert_eq!(owner(store, "k1", T0 + 2).await, owned("n1", 1));
    // The stored boot id is now empty: the next life cannot be told apart from it, so nothing ends.
    let report = store
        .register_node(&registration("n1"), T0 + 3)
        .await
        .unwrap();
    assert_eq!(report, RegistrationReport::default());

    // A restart: the previous life's sessions and room counts end at once; other nodes keep theirs.
    let mut restarted = registration("n1");
    restarted.boot_id = "boot-2".into();
    let report = store.register_node(&restarted, T0 + 4).await.unwrap();
    assert_eq!(
        report,
        RegistrationReport {
            restarted: true,
            sessions_ended: 2,
            ended_users: ended(&[(1, "sh"), (2, "sh")]),
        }
    );
    assert_eq!(owner(store, "k1", T0 + 4).await, None);
    assert_eq!(owner(store, "k2", T0 + 4).await, None);
    assert_eq!(owner(store, "k3", T0 + 4).await, owned("n2", 3));
    assert_eq!(
        store.room_online(&["r://1".into()]).await.unwrap()["r://1"],
        0
    );
    let node = store.nodes().await.unwrap().remove(0);
    assert_eq!(
        (node.state, node.boot_id.as_str()),
        (NodeState::Active, "boot-2")
    );
    // The new life reports its connections.
    store
        .apply_session_events("n1", &[connect("k1", 1, 9, T0 + 5, "")], T0 + 5)
        .await
        .unwrap();
    assert_eq!(owner(store, "k1", T0 + 5).await, owned("n1", 9));
}

pub async fn stopped_heartbeat_buries_the_node_at_once(store: &dyn Store) {
    register(store, &["n1", "n2"]).await;
    store
        .apply_session_events("n1", &[connect("k1", 1, 1, T0, "")], T0)
        .await
        .unwrap();
    store
        .apply_session_events("n2", &[connect("k2", 2, 2, T0, "")], T0)
        .await
        .unwrap();
    let mut last = heartbeat("n1", 0, 0, &[("r://1", 4)]);
    last.draining = true;
    last.stopped = true;
    store.node_heartbeat(&last, T0 + 1).await.unwrap();
    assert_eq!(
        states(store).await,
        vec![
            ("n1".into(), NodeState::Dead),
            ("n2".into(), NodeState::Active)
        ]
    );
    assert_eq!(owner(store, "k1", T0 + 1).await, None);
    assert_eq!(owner(store, "k2", T0 + 1).await, owned("n2", 2));
    assert_eq!(
        store.room_online(&["r://1".into()]).await.unwrap()["r://1"],
        0
    );
    // Stopped means dead: the node must register again before it reports anything.
    let late = store
        .apply_session_events("n1", &[connect("k3", 3, 3, T0 + 2, "")], T0 + 2)
        .await;
    assert!(matches!(late, Err(StoreError::UnknownNode(_))), "{late:?}");
    let again = store.node_heartbeat(&last, T0 + 2).await;
    assert!(
        matches!(again, Err(StoreError::UnknownNode(_))),
        "{again:?}"
    );
}

pub async fn sweeper_lease_has_one_holder_at_a_time(store: &dyn Store) {
    // Real time: the PostgreSQL store times the lease by the database's clock.
    let lease_ms = 600;
    assert!(store.sweeper_lease("a", lease_ms, wall()).await.unwrap());
    assert!(!store.sweeper_lease("b", lease_ms, wall()).await.unwrap());
    // The holder renews.
    assert!(store.sweeper_lease("a", lease_ms, wall()).await.unwrap());
    assert!(!store.sweeper_lease("b", lease_ms, wall()).await.unwrap());
    // A holder that stops renewing loses it once it runs out.
    tokio::time::sleep(Duration::from_millis(lease_ms as u64 + 200)).await;
    assert!(store.sweeper_lease("b", lease_ms, wall()).await.unwrap());
    assert!(!store.sweeper_lease("a", lease_ms, wall()).await.unwrap());
}

pub async fn newest_sessions_per_user_are_kept(store: &dyn Store) {
    register(store, &["n1", "n2"]).await;
    // User 7 has five sessions connected at different times, on two nodes; user 8 has one.
    let batch = [
        connect("a", 7, 1, T0 + 10, ""),
        connect("b", 7, 2, T0 + 50, ""),
        connect("c", 7, 3, T0 + 30, ""),
        connect("x", 8, 9, T0, ""),
    ];
    store
        .apply_session_events("n1", &batch, T0 + 60)
        .await
        .unwrap();
    let batch = [
        connect("d", 7, 4, T0 + 40, ""),
        connect("e", 7, 5, T0 + 40, ""),
    ];
    store
        .apply_session_events("n2", &batch, T0 + 60)
        .await
        .unwrap();
    let keys = |sessions: Vec<Session>| sessions.into_iter().map(|s| s.key).collect::<Vec<_>>();
    // The two newest of user 7 (d and e tie; d first by key), all of user 8, ordered by key.
    let newest = store
        .newest_sessions_by_mids(&[7, 8], 2, T0 + 60)
        .await
        .unwrap();
    assert_eq!(keys(newest), vec!["b", "d", "x"]);
    let newest = store
        .newest_sessions_by_mids(&[7], 4, T0 + 60)
        .await
        .unwrap();
    assert_eq!(keys(newest), vec!["b", "c", "d", "e"]);
    assert!(
        store
            .newest_sessions_by_mids(&[7], 0, T0 + 60)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.sessions_by_mids(&[7], T0 + 60).await.unwrap().len(),
        5
    );
}

pub async fn health_answers(store: &dyn Store) {
    store.health().await.unwrap();
}

pub async fn connect_renew_disconnect(store: &dyn Store) {
    register(store, &["n1"]).await;
    let applied = store
        .apply_session_events("n1", &[connect("k1", 7, 1, T0, "live://1")], T0)
        .await
        .unwrap();
    assert_eq!(applied, report(1, 0, 0, 0));
    let stored = session(store, "k1", T0).await.unwrap();
    assert_eq!(
        stored,
        Session {
            key: "k1".into(),
            mid: 7,
            node_id: "n1".into(),
            room: "live://1".into(),
            platform: "android".into(),
            accepts: vec![1000, 1001],
            connection_id: 1,
            ip: "198.51.100.7".into(),
            connected_at: T0,
            expires_at: T0 + TTL,
        }
    );

    let later = T0 + 30_000;
    let applied = store
        .apply_session_events("n1", &[renew("k1", 1, later, "live://2")], later)
        .await
        .unwrap();
    assert_eq!(applied, report(0, 0, 1, 0));
    let renewed = session(store, "k1", later).await.unwrap();
    assert_eq!(
        (renewed.room.as_str(), renewed.expires_at),
        ("live://2", later + TTL)
    );
    assert_eq!(renewed.connected_at, T0);

    let applied = store
        .apply_session_events("n1", &[disconnect("k1", 1, later + 1)], later + 1)
        .await
        .unwrap();
    assert_eq!(applied, report(0, 1, 0, 0));
    assert_eq!(session(store, "k1", later + 1).await, None);
}

pub async fn stale_disconnect_keeps_newer_session(store: &dyn Store) {
    register(store, &["n1", "n2"]).await;
    store
        .apply_session_events("n1", &[connect("k1", 7, 1, T0, "")], T0)
        .await
        .unwrap();
    // The device reconnects through another node before the first node reports the disconnect.
    store
        .apply_session_events("n2", &[connect("k1", 7, 9, T0 + 10, "")], T0 + 10)
        .await
        .unwrap();
    let stale = [
        renew("k1", 1, T0 + 20, "old://room"),
        disconnect("k1", 1, T0 + 20),
    ];
    let applied = store
        .apply_session_events("n1", &stale, T0 + 20)
        .await
        .unwrap();
    assert_eq!(applied, report(0, 0, 0, 2));
    let kept = session(store, "k1", T0 + 20).await.unwrap();
    assert_eq!(
        (
            kept.node_id.as_str(),
            kept.connection_id,
            kept.room.as_str()
        ),
        ("n2", 9, "")
    );
    // A new connection on the same node with another id is not removed by the old id either.
    store
        .apply_session_events(
            "n2",
            &[
                connect("k1", 7, 10, T0 + 30, ""),
                disconnect("k1", 9, T0 + 31),
            ],
            T0 + 31,
        )
        .await
        .unwrap();
    assert_eq!(owner(store, "k1", T0 + 31).await, owned("n2", 10));
}

pub async fn duplicate_events_are_idempotent(store: &dyn Store) {
    register(store, &["n1"]).await;
    let batch = [
        connect("k1", 1, 1, T0, "a://1"),
        connect("k2", 2, 2, T0, "a://1"),
        renew("k2", 2, T0 + 5, "a://2"),
        disconnect("k1", 1, T0 + 6),
    ];
    let first = store
        .apply_session_events("n1", &batch, T0 + 10)
        .await
        .unwrap();
    assert_eq!(first, report(2, 1, 1, 0));
    let before = store
        .sessions_by_keys(&["k1".into(), "k2".into()], T0 + 10)
        .await
        .unwrap();
    // The edge retries the whole batch (its first answer was lost): the outcome does not change.
    let second = store
        .apply_session_events("n1", &batch, T0 + 10)
        .await
        .unwrap();
    assert_eq!(second, report(2, 1, 1, 0));
    let after = store
        .sessions_by_keys(&["k1".into(), "k2".into()], T0 + 10)
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].key.as_str(), after[0].room.as_str()),
        ("k2", "a://2")
    );
    // The same disconnect twice removes once.
    let twice = [disconnect("k2", 2, T0 + 11), disconnect("k2", 2, T0 + 11)];
    let applied = store
        .apply_session_events("n1", &twice, T0 + 11)
        .await
        .unwrap();
    assert_eq!(applied, report(0, 1, 0, 1));
    assert_eq!(session(store, "k2", T0 + 11).await, None);
}

pub async fn out_of_order_events_in_one_batch(store: &dyn Store) {
    register(store, &["n1"]).await;
    let batch = [
        // A disconnect reported before the connect it belongs to removes nothing.
        disconnect("k1", 1, T0 + 5),
        connect("k1", 1, 1, T0, ""),
        // The newer connection's connect arrives before the older one's.
        connect("k2", 2, 20, T0 + 20, ""),
        connect("k2", 2, 10, T0 + 10, ""),
        // A connect and its disconnect in one batch leave nothing behind.
        connect("k3", 3, 3, T0, ""),
        disconnect("k3", 3, T0 + 1),
        // A renew after a reconnect within the batch renews the new connection.
        connect("k4", 4, 40, T0, "r://0"),
        connect("k4", 4, 41, T0 + 1, "r://1"),
        renew("k4", 40, T0 + 2, "r://stale"),
        renew("k4", 41, T0 + 2, "r://2"),
    ];
    let applied = store
        .apply_session_events("n1", &batch, T0 + 30)
        .await
        .unwrap();
    // k4's first connection was replaced by its second within the batch.
    assert_eq!(
        applied,
        SessionApplyReport {
            displaced: vec![displaced("k4", "n1", 40)],
            ..report(5, 1, 1, 3)
        }
    );
    assert_eq!(owner(store, "k1", T0 + 30).await, owned("n1", 1));
    assert_eq!(owner(store, "k2", T0 + 30).await, owned("n1", 20));
    assert_eq!(owner(store, "k3", T0 + 30).await, None);
    let k4 = session(store, "k4", T0 + 30).await.unwrap();
    assert_eq!(
        (k4.connection_id, k4.room.as_str(), k4.connected_at),
        (41, "r://2", T0 + 1)
    );
    // Events without a key or of an unknown kind are ignored, not fatal.
    let odd = [
        connect("", 1, 1, T0, ""),
        SessionEvent {
            kind: 99,
            key: "k1".into(),
            ..SessionEvent::default()
        },
    ];
    assert_eq!(
        store
            .apply_session_events("n1", &odd, T0 + 31)
            .await
            .unwrap(),
        report(0, 0, 0, 2)
    );
    assert_eq!(owner(store, "k1", T0 + 31).await, owned("n1", 1));
}

pub async fn takeover_by_arrival_across_nodes_by_time_within_one(store: &dyn Store) {
    register(store, &["n1", "n2"]).await;
    store
        .apply_session_events("n2", &[connect("k1", 1, 5, T0 + 100, "")], T0 + 100)
        .await
        .unwrap();
    // Within one node the edge's clock orders: a late connect of a replaced connection is ignored.
    let late = store
        .apply_session_events("n2", &[connect("k1", 1, 4, T0 + 99, "")], T0 + 200)
        .await
        .unwrap();
    assert_eq!(late, report(0, 0, 0, 1));
    let kept = session(store, "k1", T0 + 200).await.unwrap();
    assert_eq!(
        (kept.node_id.as_str(), kept.connection_id, kept.expires_at),
        ("n2", 5, T0 + 100 + TTL)
    );
    // Across nodes the arrival order decides, whatever the other edge's clock says: n1 takes the
    // key although its clock is behind, and n2's connection is reported displaced.
    let taken = store
        .apply_session_events("n1", &[connect("k1", 1, 1, T0 + 50, "")], T0 + 200)
        .await
        .unwrap();
    assert_eq!(
        taken,
        SessionApplyReport {
            displaced: vec![displaced("k1", "n2", 5)],
            ..report(1, 0, 0, 0)
        }
    );
    assert_eq!(owner(store, "k1", T0 + 200).await, owned("n1", 1));
    // The displaced connection's disconnect and renew change nothing.
    let stale = [renew("k1", 5, T0 + 201, ""), disconnect("k1", 5, T0 + 202)];
    let applied = store
        .apply_session_events("n2", &stale, T0 + 202)
        .await
        .unwrap();
    assert_eq!(applied, report(0, 0, 0, 2));
    assert_eq!(owner(store, "k1", T0 + 202).await, owned("n1", 1));
    // A duplicate connect displaces nothing; another connection of the same node does.
    let again = store
        .apply_session_events("n1", &[connect("k1", 1, 1, T0 + 50, "")], T0 + 203)
        .await
        .unwrap();
    assert_eq!(again, report(1, 0, 0, 0));
    let newer = store
        .apply_session_events("n1", &[connect("k1", 1, 2, T0 + 60, "")], T0 + 204)
        .await
        .unwrap();
    assert_eq!(newer.displaced, vec![displaced("k1", "n1", 1)], "{newer:?}");
    // In one batch: a connection connected and replaced there is reported too, as one by one.
    let batch = [
        connect("k2", 2, 7, T0 + 70, ""),
        connect("k2", 2, 8, T0 + 71, ""),
        connect("k1", 1, 3, T0 + 72, ""),
        disconnect("k1", 3, T0 + 73),
    ];
    let applied = store
        .apply_session_events("n2", &batch, T0 + 205)
        .await
        .unwrap();
    assert_eq!(
        applied,
        SessionApplyReport {
            displaced: vec![displaced("k2", "n2", 7), displaced("k1", "n1", 2)],
            ..report(3, 1, 0, 0)
        }
    );
    assert_eq!(owner(store, "k1", T0 + 205).await, None);
    assert_eq!(owner(store, "k2", T0 + 205).await, owned("n2", 8));
}

/// Deterministic pseudo-random numbers (an LCG), so a failing sequence can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

pub async fn batch_equals_one_event_at_a_time(store: &dyn Store) {
    register(store, &["n1", "n2"]).await;
    // Few keys: every key has many events per batch (replayed); many keys: most keys have one
    // event per batch (written directly), some several. Both must equal one-by-one application.
    for (round, key_space) in [(0, 12), (1, 400), (2, 60)] {
        batches_match_single_events(store, round, key_space).await;
    }
}

/// Applies random event sequences on two nodes both as batches (keys prefixed `b{round}/`) and one
/// event per call (`s{round}/`), and compares what the store reports and keeps.
async fn batches_match_single_events(store: &dyn Store, round: u64, key_space: u64) {
    let mut rng = Lcg(7 + round);
    // Few connection ids and a narrow time window make replacements, stale and out-of-order
    // events frequent.
    let mut batches: Vec<(&str, Vec<SessionEvent>)> = Vec::new();
    for _ in 0..8 {
        let node = if rng.below(2) == 0 { "n1" } else { "n2" };
        let events = (0..150)
            .map(|_| {
                let key = format!("k{}", rng.below(key_space));
                let conn = rng.below(4);
                let at = T0 + rng.below(1_000) as i64;
                let room = format!("r://{}", rng.below(3));
                match rng.below(3) {
                    0 => connect(&key, conn as i64, conn, at, &room),
                    1 => disconnect(&key, conn, at),
                    _ => renew(&key, conn, at, &room),
                }
            })
            .collect();
        batches.push((node, events));
    }
    let (batch_prefix, single_prefix) = (format!("b{round}/"), format!("s{round}/"));
    let prefixed = |event: &SessionEvent, prefix: &str| SessionEvent {
        key: format!("{prefix}{}", event.key),
        ..event.clone()
    };
    let (mut batched, mut single) = (SessionApplyReport::default(), SessionApplyReport::default());
    // Displaced keys lose their prefix, so both runs' displacements compare.
    let add = |sum: &mut SessionApplyReport, r: SessionApplyReport| {
        sum.connected += r.connected;
        sum.disconnected += r.disconnected;
        sum.renewed += r.renewed;
        sum.ignored += r.ignored;
        sum.displaced.extend(r.displaced.into_iter().map(|d| {
            DisplacedSession {
                key: d
                    .key
                    .split_once('/')
                    .map(|(_, k)| k.to_owned())
                    .unwrap_or(d.key),
                ..d
            }
        }));
    };
    for (step, (node, events)) in batches.iter().enumerate() {
        let now = T0 + 1_000 * step as i64;
        let batch: Vec<_> = events.iter().map(|e| prefixed(e, &batch_prefix)).collect();
        add(
            &mut batched,
            store.apply_session_events(node, &batch, now).await.unwrap(),
        );
        for event in events {
            let one = [prefixed(event, &single_prefix)];
            add(
                &mut single,
                store.apply_session_events(node, &one, now).await.unwrap(),
            );
        }
    }
    assert!(!batched.displaced.is_empty(), "round {round}");
    assert_eq!(batched, single, "round {round}");
    let live = async |prefix: &str| {
        let keys: Vec<String> = (0..key_space).map(|k| format!("{prefix}k{k}")).collect();
        let sessions = store.sessions_by_keys(&keys, T0 + 8_000).await.unwrap();
        sessions
            .into_iter()
            .map(|s| Session {
                key: s.key.trim_start_matches(prefix).to_owned(),
                ..s
            })
            .collect::<Vec<_>>()
    };
    let from_batches = live(&batch_prefix).await;
    assert!(!from_batches.is_empty());
    assert_eq!(from_batches, live(&single_prefix).await, "round {round}");
}

pub async fn concurrent_takeovers_report_every_displaced_connection_once(store: &dyn Store) {
    let nodes = ["n0", "n1", "n2", "n3"];
    register(store, &nodes).await;
    // Each node connects every key once per round with a new connection id, so every connect
    // applies (another node's session is taken over by arrival order, an own one is older) and
    // displaces the key's previous connection, whatever order the racing batches take.
    let keys = 200u64;
    let rounds = 5u64;
    let conn = |node: usize, round: u64| round * 10 + node as u64;
    let at = |round: u64| T0 + round as i64 * 10;
    let writers = nodes.iter().enumerate().map(|(n, node)| async move {
        let mut displaced = Vec::new();
        for round in 0..rounds {
            let batch: Vec<_> = (0..keys)
                .map(|k| connect(&format!("k{k}"), k as i64, conn(n, round), at(round), ""))
                .collect();
            let applied = store.apply_session_events(node, &batch, T0).await.unwrap();
            assert_eq!(applied.connected, keys, "{node} round {round}");
            displaced.extend(applied.displaced);
        }
        displaced
    });
    let displaced: Vec<DisplacedSession> = futures_util::future::join_all(writers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut by_key: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for d in displaced {
        by_key
            .entry(d.key)
            .or_default()
            .push((d.node_id, d.connection_id));
    }
    let all: Vec<String> = (0..keys).map(|k| format!("k{k}")).collect();
    let sessions = store.sessions_by_keys(&all, T0).await.unwrap();
    assert_eq!(sessions.len(), keys as usize);
    let every: Vec<(String, u64)> = (0..nodes.len())
        .flat_map(|n| (0..rounds).map(move |r| (nodes[n].to_owned(), conn(n, r))))
        .collect();
    for session in sessions {
        // Every connection but the owner was displaced exactly once.
        let mut seen = by_key.remove(&session.key).unwrap_or_default();
        seen.push((session.node_id.clone(), session.connection_id));
        seen.sort();
        let mut expected = every.clone();
        expected.sort();
        assert_eq!(seen, expected, "{session:?}");
    }
}

pub async fn sessions_expire(store: &dyn Store) {
    register(store, &["n1"]).await;
    let batch = [connect("k1", 1, 1, T0, ""), connect("k2", 2, 2, T0, "")];
    store.apply_session_events("n1", &batch, T0).await.unwrap();
    // k2 is renewed half-way; k1 is not.
    let half = T0 + TTL / 2;
    store
        .apply_session_events("n1", &[renew("k2", 2, half, "")], half)
        .await
        .unwrap();
    store
        .node_heartbeat(&heartbeat("n1", 1, 1, &[]), T0 + TTL)
        .await
        .unwrap();
    let keys = ["k1".to_owned(), "k2".to_owned()];
    assert_eq!(
        store
            .sessions_by_keys(&keys, T0 + TTL - 1)
            .await
            .unwrap()
            .len(),
        2
    );
    // Expired sessions are not returned even before a sweep removes them.
    let live = store.sessions_by_keys(&keys, T0 + TTL).await.unwrap();
    assert_eq!(
        live.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
        vec!["k2"]
    );
    let swept = store.expire(T0 + TTL, 30_000).await.unwrap();
    assert_eq!(
        swept,
        ExpiryReport {
            nodes_marked_dead: 0,
            sessions_removed: 1,
            ended_users: ended(&[(1, "sh")]),
        }
    );
    // A renew cannot bring a removed session back.
    let applied = store
        .apply_session_events("n1", &[renew("k1", 1, T0 + TTL, "")], T0 + TTL)
        .await
        .unwrap();
    assert_eq!(applied, report(0, 0, 0, 1));
    assert_eq!(
        store.sessions_by_keys(&keys, T0 + TTL).await.unwrap().len(),
        1
    );
    assert_eq!(
        store.expire(T0 + TTL, 30_000).await.unwrap(),
        ExpiryReport::default()
    );
}

pub async fn silent_nodes_die_with_their_sessions(store: &dyn Store) {
    // Real time with a short timeout: the PostgreSQL store judges liveness by the database's
    // clock, whatever `now` the caller passes.
    let timeout = 400;
    let t = wall();
    for id in ["n1", "n2"] {
        store.register_node(&registration(id), t).await.unwrap();
    }
    // An anonymous session (user 0) goes with its node too, but names no one who went offline.
    let on_n1 = [connect("k1", 1, 1, t, ""), connect("k0", 0, 9, t, "")];
    store.apply_session_events("n1", &on_n1, t).await.unwrap();
    store
        .apply_session_events("n2", &[connect("k2", 2, 2, t, "")], t)
        .await
        .unwrap();
    store
        .node_heartbeat(&heartbeat("n1", 10, 5, &[("r://1", 3)]), t)
        .await
        .unwrap();
    store
        .node_heartbeat(&heartbeat("n2", 20, 6, &[("r://1", 4)]), t)
        .await
        .unwrap();
    let not_yet = store.expire(wall(), timeout).await.unwrap();
    assert_eq!(not_yet, ExpiryReport::default());
    tokio::time::sleep(Duration::from_millis(timeout as u64 + 200)).await;
    // Only n2 keeps reporting.
    store
        .node_heartbeat(&heartbeat("n2", 20, 6, &[("r://1", 4)]), wall())
        .await
        .unwrap();
    let swept = store.expire(wall(), timeout).await.unwrap();
    assert_eq!(
        swept,
        ExpiryReport {
            nodes_marked_dead: 1,
            sessions_removed: 2,
            ended_users: ended(&[(1, "sh")]),
        }
    );
    assert_eq!(
        states(store).await,
        vec![
            ("n1".into(), NodeState::Dead),
            ("n2".into(), NodeState::Active)
        ]
    );
    let now = wall();
    assert_eq!(owner(store, "k1", now).await, None);
    assert_eq!(owner(store, "k2", now).await, owned("n2", 2));
    assert_eq!(
        store.room_online(&["r://1".into()]).await.unwrap()["r://1"],
        4
    );
    assert_eq!(
        store.online_totals().await.unwrap(),
        OnlineTotals {
            conn_count: 20,
            ip_count: 6
        }
    );
    // A dead node must register again before it may report.
    let late = store
        .node_heartbeat(&heartbeat("n1", 10, 5, &[]), now)
        .await;
    assert!(matches!(late, Err(StoreError::UnknownNode(_))));
    let late = store
        .apply_session_events("n1", &[connect("k3", 3, 3, now, "")], now)
        .await;
    assert!(matches!(late, Err(StoreError::UnknownNode(_))));
    // A dead node is not swept again (n2 reported recently enough).
    assert_eq!(
        store.expire(wall(), timeout).await.unwrap(),
        ExpiryReport::default()
    );
    let now = wall();
    store.register_node(&registration("n1"), now).await.unwrap();
    store
        .apply_session_events("n1", &[connect("k3", 3, 3, now, "")], now)
        .await
        .unwrap();
    assert_eq!(owner(store, "k3", now).await, owned("n1", 3));
    // Registering stamps `last_seen` with the store's clock: this machine's, for both stores.
    let n1 = store.nodes().await.unwrap().remove(0);
    assert!((n1.last_seen - now).abs() < 5_000, "{n1:?} at {now}");
}

pub async fn admin_marking_dead_removes_sessions(store: &dyn Store) {
    register(store, &["n1"]).await;
    store
        .apply_session_events("n1", &[connect("k1", 1, 1, T0, "")], T0)
        .await
        .unwrap();
    store
        .node_heartbeat(&heartbeat("n1", 1, 1, &[("r://1", 1)]), T0)
        .await
        .unwrap();
    store.set_node_state("n1", NodeState::Dead).await.unwrap();
    assert_eq!(owner(store, "k1", T0).await, None);
    assert_eq!(
        store.room_online(&["r://1".into()]).await.unwrap()["r://1"],
        0
    );
    assert_eq!(
        store.online_totals().await.unwrap(),
        OnlineTotals::default()
    );
}

pub async fn room_counts_and_totals_over_live_nodes(store: &dyn Store) {
    register(store, &["n1", "n2", "n3"]).await;
    // A room listed twice in one heartbeat is summed; empty rooms are dropped.
    let n1 = heartbeat(
        "n1",
        100,
        50,
        &[
            ("live://1", 10),
            ("live://2", 5),
            ("live://1", 2),
            ("live://9", 0),
        ],
    );
    store.node_heartbeat(&n1, T0).await.unwrap();
    store
        .node_heartbeat(&heartbeat("n2", 200, 70, &[("live://1", 3)]), T0)
        .await
        .unwrap();
    store
        .node_heartbeat(&heartbeat("n3", 1000, 900, &[("live://1", 1000)]), T0)
        .await
        .unwrap();
    store.set_node_state("n3", NodeState::Dead).await.unwrap();
    // Draining nodes still hold connections, so they count.
    store
        .set_node_state("n2", NodeState::Draining)
        .await
        .unwrap();
    let rooms = ["live://1", "live://2", "live://9", "nobody://0"].map(String::from);
    let online = store.room_online(&rooms).await.unwrap();
    let expected: HashMap<String, u64> = [
        ("live://1", 15),
        ("live://2", 5),
        ("live://9", 0),
        ("nobody://0", 0),
    ]
    .into_iter()
    .map(|(room, count)| (room.to_owned(), count))
    .collect();
    assert_eq!(online, expected);
    assert_eq!(
        store.online_totals().await.unwrap(),
        OnlineTotals {
            conn_count: 300,
            ip_count: 120
        }
    );
    // The next heartbeat replaces the node's rooms.
    store
        .node_heartbeat(&heartbeat("n1", 1, 1, &[("live://2", 1)]), T0 + 1)
        .await
        .unwrap();
    let online = store.room_online(&rooms[..2]).await.unwrap();
    assert_eq!((online["live://1"], online["live://2"]), (3, 1));
}

pub async fn top_rooms_filter_ties_and_limit(store: &dyn Store) {
    register(store, &["n1", "n2", "n3"]).await;
    let n1 = heartbeat(
        "n1",
        0,
        0,
        &[
            ("live://a", 5),
            ("live://b", 7),
            ("live://c", 2),
            ("game://x", 50),
            ("livex://z", 99),
        ],
    );
    store.node_heartbeat(&n1, T0).await.unwrap();
    let n2 = heartbeat(
        "n2",
        0,
        0,
        &[("live://a", 2), ("live://d", 7), ("live:/e", 60)],
    );
    store.node_heartbeat(&n2, T0).await.unwrap();
    store
        .node_heartbeat(&heartbeat("n3", 0, 0, &[("live://c", 100)]), T0)
        .await
        .unwrap();
    store.set_node_state("n3", NodeState::Dead).await.unwrap();
    let room = |room: &str, count: u64| RoomOnline {
        room: room.into(),
        count,
    };
    // a: 5+2 = 7 ties with b and d (ordered by id); c only counts its live node.
    assert_eq!(
        store.top_rooms("live", 10).await.unwrap(),
        vec![
            room("live://a", 7),
            room("live://b", 7),
            room("live://d", 7),
            room("live://c", 2)
        ]
    );
    assert_eq!(
        store.top_rooms("live", 2).await.unwrap(),
        vec![room("live://a", 7), room("live://b", 7)]
    );
    assert_eq!(
        store.top_rooms("game", 10).await.unwrap(),
        vec![room("game://x", 50)]
    );
    assert!(store.top_rooms("live", 0).await.unwrap().is_empty());
    assert!(store.top_rooms("none", 5).await.unwrap().is_empty());
}

pub async fn api_keys_lifecycle(store: &dyn Store) {
    let key = |id: &str, hash: &[u8]| ApiKeyRecord {
        id: id.into(),
        secret_hash: hash.to_vec(),
        name: format!("key {id}"),
        scopes: vec![Scope::Push, Scope::Read],
        created_at: T0,
        revoked_at: None,
        target_kinds: None,
        rate_limit: None,
    };
    // Limits survive the round trip.
    let b = ApiKeyRecord {
        target_kinds: Some(vec![TargetKind::Mids, TargetKind::Keys]),
        rate_limit: Some(RateLimit {
            per_second: 50,
            burst: 100,
        }),
        ..key("b", &[2; 32])
    };
    let a = key("a", &[1; 32]);
    store.insert_api_key(&b).await.unwrap();
    store.insert_api_key(&a).await.unwrap();
    let admin = ApiKeyRecord {
        scopes: vec![Scope::Admin],
        ..key("c", &[3; 32])
    };
    store.insert_api_key(&admin).await.unwrap();
    assert_eq!(
        store.api_keys().await.unwrap(),
        vec![a.clone(), b.clone(), admin.clone()]
    );
    assert_eq!(
        store.api_key_by_hash(&[2; 32]).await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(store.api_key_by_hash(&[9; 32]).await.unwrap(), None);

    let same_id = store.insert_api_key(&key("a", &[4; 32])).await;
    assert!(
        matches!(same_id, Err(StoreError::Invalid(_))),
        "{same_id:?}"
    );
    let same_hash = store.insert_api_key(&key("d", &[1; 32])).await;
    assert!(
        matches!(same_hash, Err(StoreError::Invalid(_))),
        "{same_hash:?}"
    );
    assert_eq!(store.api_keys().await.unwrap().len(), 3);

    assert!(store.revoke_api_key("a", T0 + 5).await.unwrap());
    // Revoking again keeps the first revocation time.
    assert!(store.revoke_api_key("a", T0 + 9).await.unwrap());
    assert!(!store.revoke_api_key("nope", T0 + 9).await.unwrap());
    let revoked = store.api_key_by_hash(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(T0 + 5));
    assert_eq!(
        store
            .api_key_by_hash(&[2; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
}

pub async fn lookups_by_mid_and_key_skip_expired(store: &dyn Store) {
    register(store, &["n1", "n2"]).await;
    store
        .apply_session_events(
            "n1",
            &[
                connect("phone", 7, 1, T0, ""),
                connect("anon", 0, 2, T0, ""),
            ],
            T0,
        )
        .await
        .unwrap();
    let later = T0 + TTL / 2;
    let batch = [
        connect("tablet", 7, 3, later, ""),
        connect("other", 8, 4, later, ""),
    ];
    store
        .apply_session_events("n2", &batch, later)
        .await
        .unwrap();
    let keys_of = |sessions: Vec<Session>| sessions.into_iter().map(|s| s.key).collect::<Vec<_>>();
    // Repeated and unknown ids are harmless; results come ordered by key.
    let mine = store.sessions_by_mids(&[7, 7, 99], later).await.unwrap();
    assert_eq!(keys_of(mine), vec!["phone", "tablet"]);
    let both = store.sessions_by_mids(&[8, 7], later).await.unwrap();
    assert_eq!(keys_of(both), vec!["other", "phone", "tablet"]);
    // After the first sessions' expiry only the later ones are live.
    let after = T0 + TTL;
    assert_eq!(
        keys_of(store.sessions_by_mids(&[7, 0], after).await.unwrap()),
        vec!["tablet"]
    );
    let keys = ["tablet", "phone", "tablet", "missing", "anon"].map(String::from);
    assert_eq!(
        keys_of(store.sessions_by_keys(&keys, later).await.unwrap()),
        vec!["anon", "phone", "tablet"]
    );
    assert_eq!(
        keys_of(store.sessions_by_keys(&keys, after).await.unwrap()),
        vec!["tablet"]
    );
    assert!(store.sessions_by_mids(&[], after).await.unwrap().is_empty());
    assert!(store.sessions_by_keys(&[], after).await.unwrap().is_empty());
}
