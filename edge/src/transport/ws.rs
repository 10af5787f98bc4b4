//! goim over WebSocket (WS, and WSS through TLS), framed by hand ([`super::wsframe`]).
//!
//! Each binary message holds exactly one packet, whose length must equal the message length
//! (`rim_proto::message::decode`; goim trusted the header). Consecutive queued pushes leave as ONE op-9
//! message: a single push is its shared pre-encoded buffer as is, several are sent under one outer
//! header (up to [`MAX_BATCH`] bytes per message), all written straight from the shared buffers
//! ([`super::gather`]): the connection keeps no write buffer, so a burst of large pushes leaves
//! nothing behind. As on TCP, a connection waiting for its next frame owns no read buffer
//! ([`super::read`]), and one holding a partial frame reads what the frame still needs.
//!
//! Pings are answered with pongs, a client's close is answered with a close echoing its code, and the
//! edge's own closes carry a code and the reason text. Control replies written while reading are kept
//! with their progress in the transport, so a read cancelled mid-reply resumes it before anything
//! else is written and frames never interleave.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rim_proto::Packet;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::gather::{Framing, write_frames};
use super::read::read_more;
use super::wsframe::{self, ClientFrame, Decoded};
use super::{RecvError, Transport};
use crate::close::CloseReason;
use crate::outbox::Frame;

pub use super::gather::MAX_BATCH;
pub use super::upgrade::Upgraded;

/// A close reason must fit a control frame (125 bytes, 2 of them the code).
const MAX_CLOSE_REASON: usize = wsframe::MAX_CONTROL - 2;
/// How long a close waits for the client's closing handshake.
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// Smallest read into a partial frame; a frame announced by its header is read whole.
const READ_CHUNK: usize = 128;

/// Limits of the WebSocket framing for client connections.
#[derive(Debug, Clone, Copy)]
pub struct WsConfig {
    /// Largest message (and frame) a client may send.
    pub max_message: usize,
}

/// WebSocket settings for client connections: incoming messages bounded by the client body limit.
pub fn ws_config(max_body: usize) -> WsConfig {
    WsConfig {
        max_message: max_body.saturating_add(rim_proto::HEADER_LEN),
    }
}

/// A goim packet channel over a WebSocket.
#[derive(Debug)]
pub struct WsTransport<S> {
    io: S,
    /// Bytes read and not yet decoded (empty and unallocated between messages).
    buf: BytesMut,
    /// The fragments of a message still in progress.
    partial: BytesMut,
    /// A fragmented message is in progress (its fragments so far are in `partial`).
    fragmented: bool,
    /// Control frames (pong, close reply) not yet fully written.
    control: BytesMut,
    /// A data write was abandoned part-way: the stream can carry no further frame.
    torn: bool,
    max_message: usize,
    max_body: usize,
}

impl<S> WsTransport<S> {
    /// Wraps an upgraded WebSocket, accepting client bodies up to `max_body` bytes.
    pub fn new(ws: Upgraded<S>, max_body: usize) -> Self {
        Self {
            io: ws.io,
            buf: ws.rest,
            partial: BytesMut::new(),
            fragmented: false,
            control: BytesMut::new(),
            torn: false,
            max_message: ws.config.max_message,
            max_body,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WsTransport<S> {
    /// Reads the next complete frame; `None` at end of stream. Cancel-safe (state lives in `self`).
    async fn read_frame(&mut self) -> Result<Option<ClientFrame>, RecvError> {
        loop {
            let missing = match wsframe::decode(&mut self.buf, self.max_message) {
                Ok(Decoded::Frame(frame)) => {
                    if self.buf.is_empty() {
                        // Let go of the read allocation; the payload keeps what it needs.
                        self.buf = BytesMut::new();
                    }
                    return Ok(Some(frame));
                }
                Ok(Decoded::Missing(missing)) => missing,
                Err(why) => return Err(RecvError::Protocol(why)),
            };
            let want = missing.max(READ_CHUNK);
            if read_more(&mut self.io, &mut self.buf, want).await? == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(RecvError::Protocol("connection closed mid-frame".into())),
                };
            }
        }
    }

    /// Writes the pending control frames. Cancel-safe: progress is kept in `self.control`.
    async fn write_control(&mut self) -> io::Result<()> {
        while !self.control.is_empty() {
            let written = self.io.write(&self.control).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.control.advance(written);
        }
        self.control = BytesMut::new();
        Ok(())
    }

    /// Answers a client's close with a close echoing its code, without waiting for a slow socket
    /// (a zero timeout still polls the write once).
    async fn reply_to_close(&mut self, payload: &[u8]) {
        let code = payload.get(..2).unwrap_or_default();
        wsframe::put_frame(&mut self.control, wsframe::OP_CLOSE, code);
        let _ = tokio::time::timeout(Duration::ZERO, self.write_control()).await;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for WsTransport<S> {
    async fn recv(&mut self) -> Result<Option<Packet>, RecvError> {
        loop {
            let Some(frame) = self.read_frame().await? else {
                return Ok(None);
            };
            match frame.opcode {
                wsframe::OP_BINARY | wsframe::OP_CONTINUATION => {
                    if (frame.opcode == wsframe::OP_CONTINUATION) != self.fragmented {
                        return Err(RecvError::Protocol(
                            "WebSocket fragments out of order".into(),
                        ));
                    }
                    let message = if frame.fin && !self.fragmented {
                        frame.payload
                    } else {
                        if self.partial.len() + frame.payload.len() > self.max_message {
                            return Err(RecvError::Protocol(format!(
                                "WebSocket message exceeds the limit of {}",
                                self.max_message
                            )));
                        }
                        self.partial.extend_from_slice(&frame.payload);
                        self.fragmented = !frame.fin;
                        if self.fragmented {
                            continue;
                        }
                        std::mem::take(&mut self.partial)
                    };
                    return rim_proto::message::decode(message.freeze(), self.max_body)
                        .map(Some)
                        .map_err(RecvError::from);
                }
                wsframe::OP_TEXT => {
                    return Err(RecvError::Protocol(
                        "text message: goim packets are binary messages".into(),
                    ));
                }
                wsframe::OP_PING => {
                    wsframe::put_frame(&mut self.control, wsframe::OP_PONG, &frame.payload);
                    self.write_control().await?;
                }
                wsframe::OP_CLOSE => {
                    self.reply_to_close(&frame.payload).await;
                    return Ok(None);
                }
                _ => {} // a pong
            }
        }
    }

    async fn send(&mut self, frames: &[Frame]) -> io::Result<()> {
        self.write_control().await?;
        self.torn = true;
        write_frames(&mut self.io, frames, Framing::WebSocket).await?;
        self.torn = false;
        self.io.flush().await
    }

    async fn close(&mut self, reason: &CloseReason) {
        if self.torn || self.write_control().await.is_err() {
            // A frame was left half written: no close frame can follow it.
            let _ = self.io.shutdown().await;
            return;
        }
        let mut text = reason.to_string();
        if text.len() > MAX_CLOSE_REASON {
            let mut cut = MAX_CLOSE_REASON;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let mut payload = reason.ws_code().to_be_bytes().to_vec();
        payload.extend_from_slice(text.as_bytes());
        wsframe::put_frame(&mut self.control, wsframe::OP_CLOSE, &payload);
        if self.write_control().await.is_ok() && self.io.flush().await.is_ok() {
            // Wait for the client's close (or its end of stream), ignoring anything before it.
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while let Ok(Some(frame)) = self.read_frame().await {
                    if frame.opcode == wsframe::OP_CLOSE {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = self.io.shutdown().await;
    }
}
