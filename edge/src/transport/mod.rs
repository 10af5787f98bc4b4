//! The two ways goim packets travel, behind one trait.
//!
//! - [`stream::StreamTransport`]: a byte stream of packets (TCP, TLS over TCP);
//! - [`ws::WsTransport`]: one packet per WebSocket binary message, pushes batched as op 9 (WS, WSS);
//! - [`upgrade`]: the HTTP/1.1 upgrade that turns a socket into a WebSocket;
//! - [`read`]: reading with no buffer held while a connection waits for its next packet;
//! - `gather`: both write queued frames straight from the shared push buffers in vectored writes, so
//!   no connection keeps a write buffer.
//!
//! The connection logic (`session`) is written once against [`Transport`] and compiled for each.

mod gather;
pub mod read;
pub mod stream;
pub mod upgrade;
pub mod ws;
pub mod wsframe;

use std::future::Future;
use std::io;

use rim_proto::{DecodeError, Packet};

use crate::close::CloseReason;
use crate::outbox::Frame;

/// Why reading a packet failed; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The bytes are not a valid packet.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The transport's own framing was broken (bad WebSocket frame, text message, truncated packet).
    #[error("{0}")]
    Protocol(String),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl RecvError {
    /// The close reason to report for this error.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            Self::Decode(error) => CloseReason::Protocol(error.to_string()),
            Self::Protocol(why) => CloseReason::Protocol(why.clone()),
            Self::Io(_) => CloseReason::Io,
        }
    }
}

/// A client connection able to receive packets and send frames.
pub trait Transport: Send {
    /// Reads the next packet; `Ok(None)` when the client closed cleanly. Cancel-safe: dropping the
    /// future loses no bytes, so it can sit in a `select!`.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Packet>, RecvError>> + Send;

    /// Writes `frames` in order, as few writes as the transport allows, and flushes.
    fn send(&mut self, frames: &[Frame]) -> impl Future<Output = io::Result<()>> + Send;

    /// Tells the client why it is being closed where the transport can, then closes. Best effort;
    /// callers bound it with a timeout.
    fn close(&mut self, reason: &CloseReason) -> impl Future<Output = ()> + Send;
}
