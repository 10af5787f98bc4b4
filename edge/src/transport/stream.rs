//! goim over a byte stream (TCP, or TLS over TCP).
//!
//! Reading: a connection waiting for its next packet owns no read buffer ([`super::read`]); bytes that
//! arrive go into a buffer sized by what the next packet still needs (`rim_proto::stream::missing`),
//! which is let go as soon as it holds no partial packet. A bad header is rejected as soon as its 16
//! bytes are in, before any body is buffered.
//!
//! Writing: pushes are op-9 batches; TCP clients get only the inner packets (no outer header), and
//! everything queued goes out in one vectored write straight from the shared buffers (`gather`).

use std::io;

use bytes::BytesMut;
use rim_proto::Packet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::gather::{Framing, write_frames};
use super::read::read_more;
use super::{RecvError, Transport};
use crate::close::CloseReason;
use crate::outbox::Frame;

/// Smallest read into a partial packet; a packet announced by its header is read whole.
const READ_CHUNK: usize = 128;

/// A packet stream over any async byte stream.
#[derive(Debug)]
pub struct StreamTransport<S> {
    io: S,
    buf: BytesMut,
    max_body: usize,
}

impl<S> StreamTransport<S> {
    /// Wraps `io`, accepting client bodies up to `max_body` bytes.
    pub fn new(io: S, max_body: usize) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            max_body,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for StreamTransport<S> {
    async fn recv(&mut self) -> Result<Option<Packet>, RecvError> {
        loop {
            if let Some(packet) = rim_proto::stream::decode(&mut self.buf, self.max_body)? {
                if self.buf.is_empty() {
                    // Drop our share of the allocation: the packet body keeps what it needs.
                    self.buf = BytesMut::new();
                }
                return Ok(Some(packet));
            }
            let want = rim_proto::stream::missing(&self.buf, self.max_body).max(READ_CHUNK);
            if read_more(&mut self.io, &mut self.buf, want).await? == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(RecvError::Protocol("connection closed mid-packet".into())),
                };
            }
        }
    }

    async fn send(&mut self, frames: &[Frame]) -> io::Result<()> {
        write_frames(&mut self.io, frames, Framing::Stream).await?;
        self.io.flush().await
    }

    async fn close(&mut self, _reason: &CloseReason) {
        // Send FIN (and TLS close_notify), then read until the client closes too, so that unread
        // input does not turn our close into a reset that could discard the last reply.
        if self.io.shutdown().await.is_ok() {
            let mut sink = [0u8; 64];
            while matches!(self.io.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    }
}
