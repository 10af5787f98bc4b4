//! Which edges a region has right now, and where to reach them.
//!
//! Room and broadcast pushes go to every live edge of the region; key pushes to the edge named in
//! the push. The worker asks an [`EdgeDirectory`] for that list per batch; the implementation over
//! the store ([`StoreDirectory`]) is a view of the store's [`NodeDirectory`], the same cache the
//! control plane uses: a short-lived snapshot of the node table, re-read when a push names an
//! unknown node, and served as the last good snapshot while the store is unavailable.
//! Draining edges are live (they still hold connections) and marked as draining, so a lane does not
//! wait for one that is stopping; dead ones are not listed (their sessions are gone, so pushes to
//! them are dropped).

use async_trait::async_trait;
use rim_store::{DirectorySettings, NodeDirectory, NodeSnapshot, NodeState, Store};
use std::sync::Arc;
use std::time::Duration;

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
    /// asked when pushes name edges (`node_ids`) the cached answer lacks (nodes that just
    /// registered).
    async fn refreshed_edges(
        &self,
        region: &str,
        node_ids: &[&str],
    ) -> Result<Arc<[EdgeTarget]>, DirectoryError>;
}

/// An [`EdgeDirectory`] over the store's nodes, through a [`NodeDirectory`] cache.
pub struct StoreDirectory {
    nodes: NodeDirectory,
}

impl StoreDirectory {
    /// A directory re-reading the store's nodes when its copy is older than `ttl`.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            nodes: NodeDirectory::new(store, "job", DirectorySettings::new(ttl)),
        }
    }
}

/// The live edges of `region` in `snapshot`, as the lanes need them.
fn targets(snapshot: &NodeSnapshot, region: &str) -> Arc<[EdgeTarget]> {
    snapshot
        .live_in(region)
        .iter()
        .map(|node| EdgeTarget {
            node_id: node.id.clone(),
            push_url: node.push_url.clone(),
            draining: node.state == NodeState::Draining,
        })
        .collect()
}

#[async_trait]
impl EdgeDirectory for StoreDirectory {
    async fn live_edges(&self, region: &str) -> Result<Arc<[EdgeTarget]>, DirectoryError> {
        let snapshot = self
            .nodes
            .snapshot()
            .await
            .map_err(|err| DirectoryError(err.to_string()))?;
        Ok(targets(&snapshot, region))
    }

    async fn refreshed_edges(
        &self,
        region: &str,
        node_ids: &[&str],
    ) -> Result<Arc<[EdgeTarget]>, DirectoryError> {
        let snapshot = self
            .nodes
            .snapshot_knowing(node_ids)
            .await
            .map_err(|err| DirectoryError(err.to_string()))?;
        Ok(targets(&snapshot, region))
    }
}
