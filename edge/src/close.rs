//! Why a connection ends, in one place.
//!
//! Every close has a reason that is counted (`rim_edge_closes_total{reason}`), logged, and, where the
//! transport allows, told to the client: WebSocket close frames carry a code and this text.

use std::fmt;

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
    /// A newer connection authenticated with the same key.
    Replaced,
    /// The send queue was full: the client does not read fast enough.
    SlowConsumer,
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
            Self::SlowConsumer => "slow_consumer",
            Self::Shutdown => "shutdown",
            Self::Io => "io_error",
        }
    }

    /// WebSocket close code (RFC 6455 section 7.4) that matches the reason.
    pub fn ws_code(&self) -> u16 {
        match self {
            Self::ClientClosed => 1000,
            Self::Protocol(_) => 1002,
            Self::AuthFailed(_) => 1008,
            Self::HandshakeTimeout | Self::HeartbeatTimeout => 1008,
            Self::Replaced => 4000,
            Self::SlowConsumer => 1013,
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
            Self::Replaced => f.write_str("replaced by a newer connection with the same key"),
            Self::SlowConsumer => f.write_str("slow consumer: send queue full"),
            Self::Shutdown => f.write_str("server shutting down"),
            Self::Io => f.write_str("socket error"),
        }
    }
}
