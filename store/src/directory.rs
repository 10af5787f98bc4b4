//! [`NodeDirectory`]: the one cached view of the node table that control and the job workers share.
//!
//! Every push needs node → region (control picks the Kafka topic) or a region's live edges (the
//! job delivers to them); reading every node per push would cost a query each, so the directory
//! keeps a [`NodeSnapshot`] for `max_age`. Rules:
//! - **Unknown node ids** (a node that registered after the last read) force a refresh, at most one
//!   per `refresh_floor`, so a burst of pushes naming a node the store does not know costs one read.
//! - **Single flight, stale while revalidating**: one read at a time; once a snapshot is older than
//!   `max_age`, callers are served it at once while one background read refreshes it (after an
//!   [`NodeDirectory::invalidate`], callers wait for the re-read instead).
//! - **Store errors never drop the snapshot**: while the store fails, the last good snapshot is
//!   served (a short PostgreSQL blip must not halt pushes and deliveries), failed reads are retried
//!   at most once per `refresh_floor`, and only a directory that never read anything reports the
//!   error. The age of what is served is the gauge `rim_node_directory_age_seconds{user}` and failed
//!   reads count in `rim_node_directory_refresh_errors_total{user}`, `user` naming the role.
//!
//! Staleness is safe in both directions: a node missing from the snapshot forces a refresh, and a
//! node that died since is harmless (its sessions are gone; deliveries to it are settled by the job).

use crate::Store;
use crate::error::StoreError;
use crate::model::{Node, NodeState};
use parking_lot::RwLock;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a directory trusts a read, and how often it may re-read for unknown nodes or after a
/// failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectorySettings {
    /// A snapshot younger than this is served without asking the store.
    pub max_age: Duration,
    /// Reads forced by unknown node ids, and retries after a failed read, are at least this far
    /// apart.
    pub refresh_floor: Duration,
}

impl DirectorySettings {
    /// Snapshots trusted for `max_age`, forced refreshes at most every 100 ms (never more often
    /// than `max_age`).
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            refresh_floor: Duration::from_millis(100).min(max_age),
        }
    }
}

/// One read of the node table, indexed for the push path.
#[derive(Debug)]
pub struct NodeSnapshot {
    read_at: Instant,
    /// Every node as read, by id.
    nodes: Vec<Node>,
    /// Index into `nodes` by node id.
    by_id: HashMap<String, usize>,
    /// Live (active or draining) nodes of each region.
    live_by_region: HashMap<String, Vec<Node>>,
}

impl NodeSnapshot {
    /// Indexes a read of the node table taken at `read_at`.
    pub fn new(nodes: Vec<Node>, read_at: Instant) -> Self {
        let by_id = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| (node.id.clone(), index))
            .collect();
        let mut live_by_region: HashMap<String, Vec<Node>> = HashMap::new();
        for node in nodes.iter().filter(|n| n.state != NodeState::Dead) {
            live_by_region
                .entry(node.region.clone())
                .or_default()
                .push(node.clone());
        }
        Self {
            read_at,
            nodes,
            by_id,
            live_by_region,
        }
    }

    /// Every node as read (dead ones included), by id.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node with this id, in any state.
    pub fn node(&self, node_id: &str) -> Option<&Node> {
        self.by_id.get(node_id).map(|&index| &self.nodes[index])
    }

    /// Whether the read knew this node id at all (in any state).
    pub fn knows(&self, node_id: &str) -> bool {
        self.by_id.contains_key(node_id)
    }

    /// The region of a live (active or draining) node; `None` for unknown or dead nodes.
    pub fn live_region(&self, node_id: &str) -> Option<&str> {
        self.node(node_id)
            .filter(|node| node.state != NodeState::Dead)
            .map(|node| node.region.as_str())
    }

    /// The live (active or draining) nodes of a region, by id; empty for an unknown region. What
    /// a job worker delivers room and broadcast pushes to (`push_url`, and `state` to tell a
    /// draining edge).
    pub fn live_in(&self, region: &str) -> &[Node] {
        self.live_by_region
            .get(region)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Regions that have at least one live node, sorted.
    pub fn live_regions(&self) -> impl Iterator<Item = &str> {
        self.live_by_region
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
            .into_iter()
    }

    /// How old the read is.
    pub fn age(&self) -> Duration {
        self.read_at.elapsed()
    }
}

/// The cached node table of one process (see the module docs). Cheap to share: clones share one
/// cache.
#[derive(Clone)]
pub struct NodeDirectory {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    settings: DirectorySettings,
    /// Role label of the metrics (`control`, `job`).
    user: &'static str,
    current: RwLock<Option<Arc<NodeSnapshot>>>,
    /// When [`NodeDirectory::invalidate`] was last called: snapshots read before are not fresh.
    invalidated_at: RwLock<Option<Instant>>,
    /// Held while reading the store; remembers when the last read failed.
    refresh: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for NodeDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDirectory")
            .field("user", &self.inner.user)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl NodeDirectory {
    /// A directory over `store`; `user` labels its metrics (the role using it).
    pub fn new(store: Arc<dyn Store>, user: &'static str, settings: DirectorySettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                settings,
                user,
                current: RwLock::new(None),
                invalidated_at: RwLock::new(None),
                refresh: Arc::new(tokio::sync::Mutex::new(None)),
            }),
        }
    }

    /// A snapshot no older than `max_age` while the store answers; the last good one (however old)
    /// while it does not. An aged snapshot is served at once while one caller's read refreshes it
    /// in the background; after [`NodeDirectory::invalidate`] the caller waits for the re-read.
    /// Fails only if the store never answered.
    pub async fn snapshot(&self) -> Result<Arc<NodeSnapshot>, StoreError> {
        let inner = &self.inner;
        let current = inner.current.read().clone();
        let Some(snapshot) = current else {
            let mut last_failure = inner.refresh.clone().lock_owned().await;
            // Read while we waited for the lock?
            let current = inner.current.read().clone();
            return match current {
                Some(snapshot) => inner.served(snapshot),
                None => inner.refresh_locked(&mut last_failure, None).await,
            };
        };
        if inner.is_fresh(&snapshot) {
            return inner.served(snapshot);
        }
        if inner.was_invalidated(&snapshot) {
            let mut last_failure = inner.refresh.clone().lock_owned().await;
            let current = inner.current.read().clone();
            return match current.filter(|s| inner.is_fresh(s)) {
                Some(newer) => inner.served(newer),
                None => {
                    inner
                        .refresh_locked(&mut last_failure, Some(snapshot))
                        .await
                }
            };
        }
        // Aged: whoever gets the lock refreshes in the background; everyone is served at once.
        if let Ok(mut last_failure) = inner.refresh.clone().try_lock_owned() {
            let background = inner.clone();
            let fallback = snapshot.clone();
            tokio::spawn(async move {
                // The outcome is the new snapshot (or the logged failure) for later callers.
                let _ = background
                    .refresh_locked(&mut last_failure, Some(fallback))
                    .await;
            });
        }
        inner.served(snapshot)
    }

    /// Like [`NodeDirectory::snapshot`], but one that knows every node of `node_ids` if the store
    /// does: re-reads once when one is missing (a node that registered after the last read), unless
    /// the snapshot is younger than `refresh_floor` (then the node is unknown to the store too).
    pub async fn snapshot_knowing(
        &self,
        node_ids: &[&str],
    ) -> Result<Arc<NodeSnapshot>, StoreError> {
        let inner = &self.inner;
        let snapshot = self.snapshot().await?;
        if node_ids.iter().all(|id| snapshot.knows(id))
            || snapshot.age() < inner.settings.refresh_floor
        {
            return Ok(snapshot);
        }
        let started = Instant::now();
        let mut last_failure = inner.refresh.clone().lock_owned().await;
        // Someone else read while we waited: anything read after this call started will do.
        let current = inner.current.read().clone();
        if let Some(newer) = current.filter(|s| s.read_at >= started) {
            return inner.served(newer);
        }
        inner
            .refresh_locked(&mut last_failure, Some(snapshot))
            .await
    }

    /// Makes the next call re-read (after this process changed a node's state). The current
    /// snapshot stays as the fallback.
    pub fn invalidate(&self) {
        *self.inner.invalidated_at.write() = Some(Instant::now());
    }
}

impl Inner {
    fn was_invalidated(&self, snapshot: &NodeSnapshot) -> bool {
        self.invalidated_at
            .read()
            .is_some_and(|at| snapshot.read_at <= at)
    }

    fn is_fresh(&self, snapshot: &NodeSnapshot) -> bool {
        !self.was_invalidated(snapshot) && snapshot.age() <= self.settings.max_age
    }

    /// Records the age of what is served.
    fn served(&self, snapshot: Arc<NodeSnapshot>) -> Result<Arc<NodeSnapshot>, StoreError> {
        metrics::gauge!("rim_node_directory_age_seconds", "user" => self.user)
            .set(snapshot.age().as_secs_f64());
        Ok(snapshot)
    }

    /// Reads the store (the refresh lock is held), unless the last read failed less than
    /// `refresh_floor` ago; on failure serves `fallback` if there is one.
    async fn refresh_locked(
        &self,
        last_failure: &mut Option<Instant>,
        fallback: Option<Arc<NodeSnapshot>>,
    ) -> Result<Arc<NodeSnapshot>, StoreError> {
        if let Some(fallback) = &fallback
            && last_failure.is_some_and(|at| at.elapsed() < self.settings.refresh_floor)
        {
            return self.served(fallback.clone());
        }
        let read_at = Instant::now();
        match self.store.nodes().await {
            Ok(nodes) => {
                *last_failure = None;
                let snapshot = Arc::new(NodeSnapshot::new(nodes, read_at));
                *self.current.write() = Some(snapshot.clone());
                self.served(snapshot)
            }
            Err(error) => {
                *last_failure = Some(Instant::now());
                metrics::counter!("rim_node_directory_refresh_errors_total", "user" => self.user)
                    .increment(1);
                match fallback {
                    Some(snapshot) => {
                        tracing::warn!(user = self.user, %error, age_s = snapshot.age().as_secs_f64(),
                            "node directory refresh failed; serving the last good snapshot");
                        self.served(snapshot)
                    }
                    None => Err(error),
                }
            }
        }
    }
}
