//! rim TLS: how rim's servers speak TLS, shared by the edge (client TLS/WSS listeners, the internal
//! push endpoint) and the control plane (its HTTPS listener).
//!
//! | module | idea |
//! |---|---|
//! | [`acceptor`] | an acceptor whose certificate reloads without a restart, with session tickets |
//! | [`listener`] | [`TlsListener`]: handshakes in their own tasks, for `axum::serve` |
//! | [`reload`] | files re-read when they change and on SIGHUP (certificates, the edge's JWT keys) |

pub mod acceptor;
pub mod listener;
pub mod reload;

pub use acceptor::{DEFAULT_RELOAD_INTERVAL, acceptor, reloading_acceptor};
pub use listener::TlsListener;
