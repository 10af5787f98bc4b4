//! Why a store call failed, in terms the API layer can map to status codes.

/// A store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The node id was never registered (the edge API answers 404 and the edge re-registers).
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    /// The request itself is wrong (duplicate id, bad value); a 4xx for the caller.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backing database is unreachable or failed; callers answer 503 and may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}
