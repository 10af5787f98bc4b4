//! [`NodeDirectory`] over real stores: cached snapshots, refreshes for unknown nodes at a bounded
//! rate, invalidation, the region views a job worker needs, and the last good snapshot served while
//! PostgreSQL is down (with its age as a metric).

mod suite;

use metrics_exporter_prometheus::PrometheusBuilder;
use rim_store::memory::MemoryStore;
use rim_store::postgres::{PoolSettings, PostgresStore};
use rim_store::{DirectorySettings, NodeDirectory, NodeState, Store, StoreError};
use rim_testkit::postgres::TestPostgres;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn settings(max_age_ms: u64, floor_ms: u64) -> DirectorySettings {
    DirectorySettings {
        max_age: Duration::from_millis(max_age_ms),
        refresh_floor: Duration::from_millis(floor_ms),
    }
}

async fn memory_with(nodes: &[&str]) -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new(suite::settings()));
    for id in nodes {
        store
            .register_node(&suite::registration(id), suite::T0)
            .await
            .unwrap();
    }
    store
}

#[tokio::test]
async fn unknown_nodes_refresh_at_most_once_per_floor() {
    let store = memory_with(&["n1"]).await;
    let directory = NodeDirectory::new(store.clone(), "test", settings(60_000, 200));
    let first = directory.snapshot().await.unwrap();
    assert!(first.knows("n1"));
    store
        .register_node(&suite::registration("n2"), suite::T0)
        .await
        .unwrap();
    // Young snapshots are served as they are, even when they lack a node.
    let cached = directory.snapshot().await.unwrap();
    assert!(Arc::ptr_eq(&first, &cached));
    let cached = directory.snapshot_knowing(&["n2"]).await.unwrap();
    assert!(Arc::ptr_eq(&first, &cached), "re-read within the floor");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let refreshed = directory.snapshot_knowing(&["n1", "n2"]).await.unwrap();
    assert!(refreshed.knows("n2"));
    // A node the store does not know either costs one read per floor, not one per call.
    let again = directory.snapshot_knowing(&["ghost"]).await.unwrap();
    assert!(Arc::ptr_eq(&refreshed, &again));
}

#[tokio::test]
async fn invalidate_forces_a_reread() {
    let store = memory_with(&["n1"]).await;
    let directory = NodeDirectory::new(store.clone(), "test", settings(60_000, 100));
    assert_eq!(directory.snapshot().await.unwrap().nodes().len(), 1);
    store
        .set_node_state("n1", NodeState::Draining)
        .await
        .unwrap();
    assert_eq!(
        directory.snapshot().await.unwrap().nodes()[0].state,
        NodeState::Active
    );
    directory.invalidate();
    assert_eq!(
        directory.snapshot().await.unwrap().nodes()[0].state,
        NodeState::Draining
    );
}

#[tokio::test]
async fn region_views_list_live_edges_with_their_state() {
    let store = memory_with(&["a", "b", "c"]).await;
    let mut elsewhere = suite::registration("d");
    elsewhere.region = "bj".into();
    store.register_node(&elsewhere, suite::T0).await.unwrap();
    store
        .set_node_state("b", NodeState::Draining)
        .await
        .unwrap();
    store.set_node_state("c", NodeState::Dead).await.unwrap();
    let directory = NodeDirectory::new(store, "test", settings(60_000, 100));
    let snapshot = directory.snapshot().await.unwrap();
    let sh: Vec<(&str, NodeState, &str)> = snapshot
        .live_in("sh")
        .iter()
        .map(|n| (n.id.as_str(), n.state, n.push_url.as_str()))
        .collect();
    assert_eq!(
        sh,
        vec![
            ("a", NodeState::Active, "http://a:3109"),
            ("b", NodeState::Draining, "http://b:3109")
        ]
    );
    assert!(snapshot.live_in("nowhere").is_empty());
    assert_eq!(
        snapshot.live_regions().collect::<Vec<_>>(),
        vec!["bj", "sh"]
    );
    assert_eq!(snapshot.live_region("d"), Some("bj"));
    // A dead node is known (its sessions are gone) but has no live region.
    assert!(snapshot.knows("c"));
    assert_eq!(snapshot.live_region("c"), None);
    assert_eq!(snapshot.node("c").map(|n| n.state), Some(NodeState::Dead));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_snapshot_is_served_while_postgres_is_down() {
    let prometheus = PrometheusBuilder::new().install_recorder().unwrap();
    let pg = TestPostgres::start();
    let pool = PoolSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
        ..PoolSettings::default()
    };
    let url = pg.fresh_database();
    let store = Arc::new(
        PostgresStore::connect_with(&url, suite::settings(), pool)
            .await
            .unwrap(),
    );
    store
        .register_node(&suite::registration("n1"), suite::T0)
        .await
        .unwrap();
    let directory = NodeDirectory::new(store.clone(), "test", settings(50, 1_000));
    assert!(directory.snapshot().await.unwrap().knows("n1"));
    // A directory that never read anything has nothing to fall back on.
    let fresh = NodeDirectory::new(store.clone(), "fresh", settings(50, 1_000));

    pg.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The aged snapshot is served at once while a background read tries the store.
    let started = Instant::now();
    let stale = directory.snapshot().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert!(stale.knows("n1"));
    assert!(stale.age() >= Duration::from_millis(100));
    // Once that read failed (the pool gives up after 500 ms), callers are served at once, without
    // another read, until the floor has passed, even those asking for a node it lacks.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = Instant::now();
    for _ in 0..10 {
        assert!(directory.snapshot().await.unwrap().knows("n1"));
        assert!(
            directory
                .snapshot_knowing(&["n2"])
                .await
                .unwrap()
                .knows("n1")
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    let never = fresh.snapshot().await;
    assert!(
        matches!(never, Err(StoreError::Unavailable(_))),
        "{never:?}"
    );
    let text = prometheus.render();
    assert!(
        text.contains(r#"rim_node_directory_age_seconds{user="test"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"rim_node_directory_refresh_errors_total{user="test"}"#),
        "{text}"
    );

    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store
        .register_node(&suite::registration("n2"), suite::T0)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the database did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Back: the next refresh after the floor reads the store again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let back = directory.snapshot_knowing(&["n2"]).await.unwrap();
    assert!(back.knows("n2"));
    assert!(back.age() < Duration::from_secs(1));
}
