//! Extension points for the parts of rim that are not the edge.
//!
//! - [`EdgeEvents`]: told about session changes (connect, disconnect, room change). The edge→control
//!   client implements it to register sessions in batches. Calls happen on the connection's task, so
//!   implementations must not block: queue and return. A connect may hand back a [`ConnectAck`]: the
//!   edge holds the client's auth reply until it resolves (bounded by `edge_auth_report_timeout_ms`),
//!   so that a push sent as soon as the client is answered finds its session.
//! - [`UpstreamSink`]: receives what clients send upstream (op 4 and other business ops) and says
//!   what the client is answered: at once ([`UpstreamReply::Now`]; the default [`CountingSink`]
//!   answers goim's empty echo), or later ([`UpstreamReply::Later`]) through the message's
//!   [`ReplyTo`], which queues the reply on the connection's outbox like a push. A connection whose
//!   message waits for the business backend thus goes on reading and being written pushes; the
//!   edge link's forwarder (rim-edgelink `upstream`) answers that way with the backend's verdict.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rim_proto::Packet;

use crate::channel::Channel;
use crate::outbox::{Bounds, Frame, Offer};

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

/// A message a client sent upstream, with the connection it came on.
#[derive(Debug, Clone)]
pub struct UpstreamMessage {
    /// The sender's connection: its verified identity (key, mid, room, platform), and where a
    /// later reply goes ([`UpstreamMessage::reply_to`]).
    pub channel: Arc<Channel>,
    /// The packet as the client sent it (op, ver, seq and body unchanged).
    pub packet: Packet,
}

impl UpstreamMessage {
    /// Where the reply to this message goes when the sink answers it later.
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            channel: Arc::downgrade(&self.channel),
            ver: self.packet.ver,
            op: self.packet.op,
            seq: self.packet.seq,
        }
    }
}

/// What a client is answered for an upstream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamReply {
    /// Reply now with this body (the same op, ver and seq echoed); goim's reply is an empty body.
    Now(Bytes),
    /// Nothing now: the sink answers later with [`ReplyTo::send`], and the connection goes on
    /// meanwhile (pushes keep being written to it).
    Later,
}

/// The address of a reply sent later: the connection (held weakly, so a pending message does not
/// keep a closed connection's memory) and the header to echo.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    channel: Weak<Channel>,
    ver: i16,
    op: i32,
    seq: i32,
}

/// Replies are not refused for being behind: their number per connection is bounded by the sink
/// (a client cannot have more unanswered messages than it allows), so they cannot grow a queue
/// without bound; a client that is too far behind is closed by the push path's policy anyway.
const REPLY_BOUNDS: Bounds = Bounds {
    max_bytes: usize::MAX,
    max_age: Duration::MAX,
};

impl ReplyTo {
    /// The connection the reply is for, while it is open.
    pub fn channel(&self) -> Option<Arc<Channel>> {
        self.channel.upgrade()
    }

    /// Queues the reply (op, ver and seq of the message, `body`) on the connection's outbox and
    /// wakes its writer. False when the connection is gone or closing: the reply is dropped.
    pub fn send(&self, body: Bytes) -> bool {
        let Some(channel) = self.channel.upgrade() else {
            return false;
        };
        let reply = Packet::new(self.ver, self.op, self.seq, body).to_bytes();
        match channel.outbox.offer(Frame::Packet(reply), REPLY_BOUNDS) {
            Offer::Queued | Offer::QueuedAsleep => {
                // A wake owed by a pusher that queued before us is still coming; one more is
                // harmless (the writer drains until empty).
                channel.outbox.wake();
                true
            }
            Offer::Full(_) | Offer::Closed => false,
        }
    }
}

/// Where upstream client messages go. Awaited on the sender's connection task, so messages of one
/// connection arrive in order and a slow `deliver` slows only that connection; a sink that waits
/// for a backend should take the message, return [`UpstreamReply::Later`] and answer through
/// [`UpstreamMessage::reply_to`], so the connection is not held up meanwhile.
#[async_trait]
pub trait UpstreamSink: Send + Sync + 'static {
    /// Takes one upstream message; says what to answer now, if anything.
    async fn deliver(&self, message: UpstreamMessage) -> UpstreamReply;
}

/// The default sink: counts messages (`rim_edge_upstream_messages_total{op}`), drops them and
/// answers as goim does (the same op, an empty body).
#[derive(Debug, Default)]
pub struct CountingSink;

#[async_trait]
impl UpstreamSink for CountingSink {
    async fn deliver(&self, message: UpstreamMessage) -> UpstreamReply {
        crate::metrics::upstream(message.packet.op);
        UpstreamReply::Now(Bytes::new())
    }
}
