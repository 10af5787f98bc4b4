//! Why a connection ends, in one place.
//!
//! Every close has a reason that is counted (`rim_edge_closes_total{reason}`), logged, and, where the
//! transport allows, told to the client: WebSocket close frames carry a code and this text.

use std::fmt;

use crate::outbox::Behind;

/// The reason a connection is closed by the edge or was closed by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection (EOF or a WebSocket close frame).
    ClientClosed,
    /// The client broke the protocol (bad length, garbage, ...); the text says how.
    Protocol(String),
    /// The client's credentials were refused; the text is shown to it.
    AuthFailed(String),
    /// No auth within the handshake timeout.
    HandshakeTimeout,
    /// No heartbeat within heartbeat interval × max missed.
    HeartbeatTimeout,
    /// A newer connection authenticated with the same key on this edge.
    Replaced,
    /// The control plane said a newer connection took the key (on another edge, or one this edge
    /// had not seen yet); told to the client exactly like [`CloseReason::Replaced`].
    Superseded,
    /// The client fell too far behind (in bytes or in time) on what it was sent.
    SlowConsumer(Behind),
    /// The edge is shutting down.
    Shutdown,
    /// The socket failed (reset, broken pipe, TLS error).
    Io,
}

impl CloseReason {
    /// Short stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Protocol(_) => "protocol_error",
            Self::AuthFailed(_) => "auth_failed",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::Replaced => "replaced",
            Self::Superseded => "superseded",
            Self::SlowConsumer(_) => "slow_consumer",
            Self::Shutdown => "shutdown",
            Self::Io => "io_error",
        }
    }

    /// True if what was queued for the connection is still written before it closes: a connection
    /// that lost its key was counted as reached by those pushes, and one closed by a shutdown gets
    /// what was queued before it. (A slow consumer is not written to any more.)
    pub fn delivers_queued(&self) -> bool {
        matches!(self, Self::Replaced | Self::Superseded | Self::Shutdown)
    }

    /// WebSocket close code (RFC 6455 section 7.4) that matches the reason.
    pub fn ws_code(&self) -> u16 {
        match self {
            Self::ClientClosed => 1000,
            Self::Protocol(_) => 1002,
            Self::AuthFailed(_) => 1008,
            Self::HandshakeTimeout | Self::HeartbeatTimeout => 1008,
            Self::Replaced | Self::Superseded => 4000,
            Self::SlowConsumer(_) => 1013,
            Self::Shutdown => 1001,
            Self::Io => 1011,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientClosed => f.write_str("client closed"),
            Self::Protocol(why) => write!(f, "protocol error: {why}"),
            Self::AuthFailed(why) => write!(f, "auth failed: {why}"),
            Self::HandshakeTimeout => f.write_str("no auth within the handshake timeout"),
            Self::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            Self::Replaced | Self::Superseded => {
                f.write_str("replaced by a newer connection with the same key")
            }
            Self::SlowConsumer(Behind::Bytes) => {
                f.write_str("slow consumer: too many bytes not yet read")
            }
            Self::SlowConsumer(Behind::Time) => {
                f.write_str("slow consumer: pushes not read for too long")
            }
            Self::Shutdown => f.write_str("server shutting down"),
            Self::Io => f.write_str("socket error"),
        }
    }
}
