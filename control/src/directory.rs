//! A short-lived cache of the node list: which region each node serves and which regions are live.
//!
//! Every push needs node → region (to pick the Kafka topic) and room/broadcast pushes need the set
//! of regions with live nodes. Reading all nodes from PostgreSQL per push would cost a query each,
//! so each control instance keeps the list for `node_cache_ms`. Staleness is safe in both
//! directions: a node missing from the cache (just registered) forces one refresh, and a node that
//! died since is harmless (the job worker finds nothing to deliver there). Refreshes are
//! single-flight: concurrent pushes wait for one store read instead of each issuing their own.

use crate::observe::timed_store;
use parking_lot::RwLock;
use rim_store::{Node, NodeState, Store, StoreError};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One read of the node list.
#[derive(Debug, Default)]
pub struct NodeSnapshot {
    /// Region of every known node, by node id (dead nodes included: their sessions are gone).
    region_of: HashMap<String, (String, NodeState)>,
    /// Regions with at least one active or draining node (draining nodes still hold clients).
    live_regions: BTreeSet<String>,
    /// The nodes as read, for the balancer.
    nodes: Vec<Node>,
}

impl NodeSnapshot {
    fn new(nodes: Vec<Node>) -> Self {
        let region_of = nodes
            .iter()
            .map(|n| (n.id.clone(), (n.region.clone(), n.state)))
            .collect();
        let live_regions = nodes
            .iter()
            .filter(|n| n.state != NodeState::Dead)
            .map(|n| n.region.clone())
            .collect();
        Self {
            region_of,
            live_regions,
            nodes,
        }
    }

    /// Every node as read from the store.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The region of a live (active or draining) node; `None` for unknown or dead nodes.
    pub fn live_region(&self, node_id: &str) -> Option<&str> {
        match self.region_of.get(node_id) {
            Some((region, state)) if *state != NodeState::Dead => Some(region),
            _ => None,
        }
    }

    /// Regions that have at least one live node, sorted.
    pub fn live_regions(&self) -> impl Iterator<Item = &str> {
        self.live_regions.iter().map(String::as_str)
    }
}

/// The cached node list of one control instance.
pub struct NodeDirectory {
    store: Arc<dyn Store>,
    ttl: Duration,
    current: RwLock<Option<(Instant, Arc<NodeSnapshot>)>>,
    refresh: tokio::sync::Mutex<()>,
}

impl NodeDirectory {
    /// A directory that trusts a read of the store for `ttl`.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The cached snapshot if it is younger than `max_age`.
    fn cached(&self, max_age: Duration) -> Option<Arc<NodeSnapshot>> {
        match &*self.current.read() {
            Some((at, snapshot)) if at.elapsed() <= max_age => Some(snapshot.clone()),
            _ => None,
        }
    }

    /// A snapshot no older than the configured TTL.
    pub async fn snapshot(&self) -> Result<Arc<NodeSnapshot>, StoreError> {
        match self.cached(self.ttl) {
            Some(snapshot) => Ok(snapshot),
            None => self.refresh_older_than(self.ttl).await,
        }
    }

    /// A snapshot that knows every node of `node_ids` if the store does: refreshes once when one is
    /// missing (a node that registered after the last read).
    pub async fn snapshot_with(
        &self,
        node_ids: impl Iterator<Item = &str>,
    ) -> Result<Arc<NodeSnapshot>, StoreError> {
        let snapshot = self.snapshot().await?;
        let mut node_ids = node_ids;
        if node_ids.all(|id| snapshot.region_of.contains_key(id)) {
            return Ok(snapshot);
        }
        // Anything read after this call started is fresh enough; a tiny bound keeps a burst of
        // pushes to an unknown node from issuing a read each.
        self.refresh_older_than(Duration::from_millis(20)).await
    }

    /// Forgets the cached list (after this instance changed a node's state).
    pub fn invalidate(&self) {
        *self.current.write() = None;
    }

    /// Reads the store unless another caller refreshed within `max_age` while we waited.
    async fn refresh_older_than(&self, max_age: Duration) -> Result<Arc<NodeSnapshot>, StoreError> {
        let _only_one = self.refresh.lock().await;
        if let Some(snapshot) = self.cached(max_age) {
            return Ok(snapshot);
        }
        let nodes = timed_store("nodes", self.store.nodes()).await?;
        let snapshot = Arc::new(NodeSnapshot::new(nodes));
        *self.current.write() = Some((Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }
}
