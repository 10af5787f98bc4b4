//! Extension points for the parts of rim that are not the edge.
//!
//! - [`EdgeEvents`]: told about session changes (connect, disconnect, room change). The edge→control
//!   client implements it to register sessions in batches. Calls happen on the connection's task, so
//!   implementations must not block: queue and return. A connect may hand back a [`ConnectAck`]: the
//!   edge holds the client's auth reply until it resolves (bounded by `edge_auth_report_timeout_ms`),
//!   so that a push sent as soon as the client is answered finds its session.
//! - [`UpstreamSink`]: receives what clients send upstream (op 4 and other business ops). The control
//!   plane will forward it to the business backend; for now [`CountingSink`] counts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::channel::Channel;

/// Resolves once a connect is known where pushes are resolved (the control plane applied it).
pub type ConnectAck = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Observer of session lifecycle events. Every method must return quickly without blocking.
pub trait EdgeEvents: Send + Sync + 'static {
    /// A connection authenticated and was registered (possibly replacing an older one with its key).
    /// Returns what the auth reply waits for, if anything (see [`ConnectAck`]).
    fn connected(&self, channel: &Channel) -> Option<ConnectAck> {
        let _ = channel;
        None
    }
    /// A connection ended. `still_owned` is false when a newer connection had already taken its key, so
    /// the session must not be removed ([`Channel::id`] tells them apart).
    fn disconnected(&self, channel: &Channel, still_owned: bool) {
        let _ = (channel, still_owned);
    }
    /// A connection changed room (`previous` is the room it left).
    fn room_changed(&self, channel: &Channel, previous: Option<&str>) {
        let _ = (channel, previous);
    }
}

/// The default observer: ignores every event.
#[derive(Debug, Default)]
pub struct NoEvents;

impl EdgeEvents for NoEvents {}

/// A message a client sent upstream.
#[derive(Debug, Clone)]
pub struct UpstreamMessage {
    /// Sender's connection key.
    pub key: Arc<str>,
    /// Sender's user id.
    pub mid: i64,
    /// Sender's connection id on this edge.
    pub connection_id: u64,
    /// The op the client used.
    pub op: i32,
    /// The body, unchanged.
    pub body: Bytes,
}

/// Where upstream client messages go. Awaited on the sender's connection task, so messages of one
/// connection arrive in order; a slow sink slows only that connection.
#[async_trait]
pub trait UpstreamSink: Send + Sync + 'static {
    /// Takes one upstream message.
    async fn deliver(&self, message: UpstreamMessage);
}

/// The default sink: counts messages (`rim_edge_upstream_messages_total{op}`) and drops them.
#[derive(Debug, Default)]
pub struct CountingSink;

#[async_trait]
impl UpstreamSink for CountingSink {
    async fn deliver(&self, message: UpstreamMessage) {
        crate::metrics::upstream(message.op);
    }
}
