//! The behavioural suite against [`PostgresStore`] on a real PostgreSQL (a throwaway cluster from
//! rim-testkit, a fresh database per test), plus what only a real database does: go away and come back.

mod suite;

use rim_store::postgres::{PoolSettings, PostgresStore, SESSIONS_PER_ROUND};
use rim_store::{NodeState, Store, StoreError};
use rim_testkit::postgres::TestPostgres;
use sqlx::Connection;
use std::future::Future;
use std::time::{Duration, Instant};

async fn open() -> PostgresStore {
    let url = TestPostgres::shared().fresh_database();
    PostgresStore::connect(&url, suite::settings())
        .await
        .unwrap()
}

suite::store_suite!(open());

/// How long a call may take to report an unreachable database (the pool's acquire timeout is 2 s).
const FAIL_FAST: Duration = Duration::from_secs(5);

/// Runs a store call that must fail with `Unavailable`, quickly.
async fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = Result<T, StoreError>>,
) {
    let started = Instant::now();
    let result = tokio::time::timeout(FAIL_FAST * 2, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung while the database was down"));
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{what}: {result:?}"
    );
    assert!(
        started.elapsed() < FAIL_FAST,
        "{what} took {:?} to fail",
        started.elapsed()
    );
}

/// Registers node `n1`, which the tests below read back once the database answers again.
async fn register_n1(store: &PostgresStore) {
    store
        .register_node(&suite::registration("n1"), suite::T0)
        .await
        .unwrap();
}

#[tokio::test]
async fn database_restart_fails_fast_then_recovers() {
    let pg = TestPostgres::start();
    let url = pg.fresh_database();
    let store = PostgresStore::connect(&url, suite::settings())
        .await
        .unwrap();
    register_n1(&store).await;
    let connect = [suite::connect("k1", 1, 1, suite::T0, "")];
    store
        .apply_session_events("n1", &connect, suite::T0)
        .await
        .unwrap();

    pg.stop();
    assert_unavailable("nodes", store.nodes()).await;
    assert_unavailable(
        "session batch",
        store.apply_session_events("n1", &connect, suite::T0),
    )
    .await;
    assert_unavailable("lookup", store.sessions_by_mids(&[1], suite::T0)).await;
    assert_unavailable("health", store.health()).await;
    assert_unavailable("connect", PostgresStore::connect(&url, suite::settings())).await;

    pg.start_again();
    // The pool replaces its broken connections by itself: the very next calls succeed.
    store.health().await.unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    let sessions = store.sessions_by_mids(&[1], suite::T0).await.unwrap();
    assert_eq!(sessions.len(), 1);
    let renew = [suite::renew("k1", 1, suite::T0 + 1, "")];
    assert_eq!(
        store
            .apply_session_events("n1", &renew, suite::T0 + 1)
            .await
            .unwrap()
            .renewed,
        1
    );
}

/// A statement stuck behind a lock that is not released (an operator's open transaction, a table
/// rewrite) fails as unavailable at the statement timeout, giving back its caller and its pooled
/// connection, and the store answers again once the lock is gone. A migration is not bounded by it.
#[tokio::test]
async fn a_statement_stuck_behind_a_lock_fails_at_the_statement_timeout() {
    let url = TestPostgres::shared().fresh_database();
    let timeout = Duration::from_millis(300);
    let pool = PoolSettings {
        max_connections: 2,
        statement_timeout: timeout,
        ..PoolSettings::default()
    };
    let store = PostgresStore::connect_with(&url, suite::settings(), pool)
        .await
        .unwrap();
    register_n1(&store).await;
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    // More calls than the pool has connections: each one's connection comes back when it fails.
    for _ in 0..3 {
        let started = Instant::now();
        let result = tokio::time::timeout(FAIL_FAST, store.nodes())
            .await
            .expect("a call behind the lock hung past the statement timeout");
        match result {
            Err(StoreError::Unavailable(message)) => assert!(
                message.contains("statement timeout"),
                "the reason names the timeout: {message}"
            ),
            other => panic!("nodes behind the lock: {other:?}"),
        }
        assert!(
            started.elapsed() >= timeout,
            "failed after {:?}, before the timeout",
            started.elapsed()
        );
    }
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(store.nodes().await.unwrap().len(), 1);
    // Migrations run without the bound: a new database is migrated under a timeout far below
    // what its migrations take.
    let tiny = PoolSettings {
        statement_timeout: Duration::from_millis(1),
        ..PoolSettings::default()
    };
    let fresh = TestPostgres::shared().fresh_database();
    PostgresStore::connect_with(&fresh, suite::settings(), tiny)
        .await
        .unwrap();
}

/// A node holding more sessions than one statement removes dies with all of them in one sweep
/// (they go in rounds, so no statement nears the statement timeout), and other nodes keep theirs,
/// including one taken over from it during the sweep.
#[tokio::test]
async fn a_node_with_more_sessions_than_a_round_dies_with_all_of_them() {
    let url = TestPostgres::shared().fresh_database();
    let store = PostgresStore::connect(&url, suite::settings())
        .await
        .unwrap();
    let timeout = 400;
    for id in ["n1", "n2"] {
        store
            .register_node(&suite::registration(id), suite::wall())
            .await
            .unwrap();
    }
    let many = 2 * SESSIONS_PER_ROUND + 7;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO sessions (key, mid, node_id, room, platform, accepts, connection_id, ip, \
         connected_at, expires_at) \
         SELECT 'k' || g, g, 'n1', '', 'web', '{}', g, '127.0.0.1', 0, 9000000000000000 \
         FROM generate_series(1, $1) g",
    )
    .bind(many)
    .execute(&mut db)
    .await
    .unwrap();
    let kept = [suite::connect("other", many + 1, 1, suite::wall(), "")];
    store
        .apply_session_events("n2", &kept, suite::wall())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(timeout as u64 + 200)).await;
    store
        .node_heartbeat(&suite::heartbeat("n2", 1, 1, &[]), suite::wall())
        .await
        .unwrap();
    // One of n1's sessions is being taken over by n2 while the sweep runs: the sweep waits for
    // it, and then it is n2's and stays.
    let mut takeover = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; UPDATE sessions SET node_id = 'n2' WHERE key = 'k5'")
        .execute(&mut takeover)
        .await
        .unwrap();
    let sweep = {
        let store = store.clone();
        tokio::spawn(async move { store.expire(suite::wall(), timeout).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::raw_sql("COMMIT")
        .execute(&mut takeover)
        .await
        .unwrap();
    let swept = sweep.await.unwrap().unwrap();
    assert_eq!(swept.nodes_marked_dead, 1);
    assert_eq!(swept.sessions_removed, many as u64 - 1);
    assert_eq!(swept.ended_users.len(), many as usize - 1);
    assert!(!swept.ended_users.contains_key(&5), "user 5 is on n2 now");
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM sessions ORDER BY key")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(left, ["k5", "other"], "only n2's sessions are left");
}

#[tokio::test]
async fn malformed_url_is_invalid_and_unreachable_database_unavailable() {
    let result = PostgresStore::connect("not a url", suite::settings()).await;
    assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
    let port = rim_testkit::ports::free_port().unwrap();
    let pool = PoolSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
        ..PoolSettings::default()
    };
    let url = format!("postgres://postgres@127.0.0.1:{port}/none");
    assert_unavailable(
        "connect",
        PostgresStore::connect_with(&url, suite::settings(), pool),
    )
    .await;
}

#[tokio::test]
async fn liveness_is_judged_by_the_database_clock_not_the_callers() {
    let store = open().await;
    // A control instance whose clock is at the epoch registers and reports the node ...
    store
        .register_node(&suite::registration("n1"), 0)
        .await
        .unwrap();
    store
        .node_heartbeat(&suite::heartbeat("n1", 1, 1, &[]), 0)
        .await
        .unwrap();
    let node = store.nodes().await.unwrap().remove(0);
    assert!(
        (node.last_seen - suite::wall()).abs() < 5_000,
        "last_seen {} is not the database's now",
        node.last_seen
    );
    // ... and one ten minutes ahead sweeps with a one-minute timeout: the node is alive by the
    // database's clock, so nothing dies.
    let ahead = suite::wall() + 10 * 60_000;
    let report = store.expire(ahead, 60_000).await.unwrap();
    assert_eq!(report.nodes_marked_dead, 0);
    assert_eq!(store.nodes().await.unwrap()[0].state, NodeState::Active);
    // The sweeper lease is timed by the database too: a holder whose clock is behind cannot
    // keep a lease beyond its length.
    assert!(store.sweeper_lease("a", 200, 0).await.unwrap());
    assert!(!store.sweeper_lease("b", 200, ahead).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.sweeper_lease("b", 200, 0).await.unwrap());
}
