//! Which edges a region has right now, and where to reach them.
//!
//! Room and broadcast pushes go to every live edge of the region; key pushes to the edge named in
//! the push. The worker asks an [`EdgeDirectory`] for that list per batch, so the implementation
//! over the store ([`StoreDirectory`]) caches the node list briefly instead of querying per batch.
//! Draining edges are live (they still hold connections) and marked as draining, so a lane does not
//! wait for one that is stopping; dead ones are not listed (their sessions are gone, so pushes to
//! them are dropped).

use async_trait::async_trait;
use rim_store::{NodeState, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A cached list younger than this is reused even when a refresh is asked for, so a burst of
/// pushes naming an unknown edge costs one store query, not one per batch.
const REFRESH_FLOOR: Duration = Duration::from_millis(100);

/// An edge a worker delivers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeTarget {
    /// The edge's node id (key pushes name it).
    pub node_id: String,
    /// Base URL of its internal push endpoint (`/internal/push` is appended).
    pub push_url: String,
    /// The edge is draining (finishing its connections, or stopping): a refused connection or a 503
    /// from it is final, not worth waiting for.
    pub draining: bool,
}

/// The directory could not answer (the store is unavailable); the worker retries later.
#[derive(Debug, thiserror::Error)]
#[error("edge directory unavailable: {0}")]
pub struct DirectoryError(
    /// What went wrong, for the log.
    pub String,
);

/// Lists a region's live edges.
#[async_trait]
pub trait EdgeDirectory: Send + Sync + 'static {
    /// The region's edges that are not dead, possibly from a short-lived cache.
    async fn live_edges(&self, region: &str) -> Result<Arc<[EdgeTarget]>, DirectoryError>;

    /// Like [`EdgeDirectory::live_edges`], but re-read unless the cached answer is very recent:
    /// asked when a push names an edge the cached answer lacks (a node that just registered).
    async fn refreshed_edges(&self, region: &str) -> Result<Arc<[EdgeTarget]>, DirectoryError>;
}

/// An [`EdgeDirectory`] over the store's node table, cached for a configurable time.
pub struct StoreDirectory {
    store: Arc<dyn Store>,
    ttl: Duration,
    cache: Mutex<Option<Snapshot>>,
}

/// Live edges of every region, as read at `read_at`.
struct Snapshot {
    read_at: Instant,
    by_region: HashMap<String, Arc<[EdgeTarget]>>,
}

impl StoreDirectory {
    /// A directory re-reading the store's nodes when its copy is older than `ttl`.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            cache: Mutex::new(None),
        }
    }

    /// The region's edges from a snapshot no older than `max_age`. One reader at a time refreshes;
    /// the others wait for its answer instead of querying too.
    async fn edges(
        &self,
        region: &str,
        max_age: Duration,
    ) -> Result<Arc<[EdgeTarget]>, DirectoryError> {
        let mut cache = self.cache.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|snapshot| snapshot.read_at.elapsed() <= max_age);
        if !fresh {
            let nodes = self
                .store
                .nodes()
                .await
                .map_err(|err| DirectoryError(err.to_string()))?;
            let mut by_region: HashMap<String, Vec<EdgeTarget>> = HashMap::new();
            for node in nodes
                .into_iter()
                .filter(|node| node.state != NodeState::Dead)
            {
                by_region.entry(node.region).or_default().push(EdgeTarget {
                    node_id: node.id,
                    push_url: node.push_url,
                    draining: node.state == NodeState::Draining,
                });
            }
            *cache = Some(Snapshot {
                read_at: Instant::now(),
                by_region: by_region
                    .into_iter()
                    .map(|(region, edges)| (region, edges.into()))
                    .collect(),
            });
        }
        Ok(cache
            .as_ref()
            .and_then(|snapshot| snapshot.by_region.get(region).cloned())
            .unwrap_or_else(|| Arc::from(Vec::new())))
    }
}

#[async_trait]
impl EdgeDirectory for StoreDirectory {
    async fn live_edges(&self, region: &str) -> Result<Arc<[EdgeTarget]>, DirectoryError> {
        self.edges(region, self.ttl).await
    }

    async fn refreshed_edges(&self, region: &str) -> Result<Arc<[EdgeTarget]>, DirectoryError> {
        self.edges(region, REFRESH_FLOOR.min(self.ttl)).await
    }
}
