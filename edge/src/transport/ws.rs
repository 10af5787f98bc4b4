//! goim over WebSocket (WS, and WSS through TLS).
//!
//! Each binary message holds exactly one packet, whose length must equal the message length
//! (`rim_proto::message::decode`; goim trusted the header). Consecutive queued pushes leave as ONE op-9
//! message: a single push is its shared pre-encoded buffer as is, several are merged under one outer
//! header (up to [`MAX_BATCH`] bytes per message). Pings are answered by tungstenite; closes carry a
//! code and the reason text.

use std::io;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rim_proto::Packet;
use rim_proto::batch::Batch;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{
    CloseFrame, WebSocketConfig, frame::coding::CloseCode,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{RecvError, Transport};
use crate::close::CloseReason;
use crate::outbox::Frame;

/// Largest merged op-9 message; a longer run of pushes is split into several messages.
pub const MAX_BATCH: usize = 256 * 1024;
/// A close reason must fit a control frame (125 bytes, 2 of them the code).
const MAX_CLOSE_REASON: usize = 123;
/// How long a close waits for the client's closing handshake.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// WebSocket settings for client connections: small eagerly allocated buffers (idle memory matters more
/// than read throughput here) and incoming messages bounded by the client body limit.
pub fn ws_config(max_body: usize) -> WebSocketConfig {
    let max_message = max_body.saturating_add(rim_proto::HEADER_LEN);
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// A goim packet channel over a WebSocket.
#[derive(Debug)]
pub struct WsTransport<S> {
    ws: WebSocketStream<S>,
    max_body: usize,
}

impl<S> WsTransport<S> {
    /// Wraps an upgraded WebSocket, accepting client bodies up to `max_body` bytes.
    pub fn new(ws: WebSocketStream<S>, max_body: usize) -> Self {
        Self { ws, max_body }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for WsTransport<S> {
    async fn recv(&mut self) -> Result<Option<Packet>, RecvError> {
        loop {
            let message = match self.ws.next().await {
                None => return Ok(None),
                Some(Ok(message)) => message,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Ok(None),
                Some(Err(WsError::Io(error))) => return Err(RecvError::Io(error)),
                Some(Err(error)) => return Err(RecvError::Protocol(error.to_string())),
            };
            match message {
                Message::Binary(bytes) => {
                    return rim_proto::message::decode(bytes, self.max_body)
                        .map(Some)
                        .map_err(RecvError::from);
                }
                Message::Text(_) => {
                    return Err(RecvError::Protocol(
                        "text message: goim packets are binary messages".into(),
                    ));
                }
                Message::Close(_) => return Ok(None),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    async fn send(&mut self, frames: &[Frame]) -> io::Result<()> {
        let mut batch: Option<Batch> = None;
        let mut single: Option<&bytes::Bytes> = None;
        for frame in frames {
            match frame {
                Frame::Packet(packet) => {
                    flush_run(&mut self.ws, &mut single, &mut batch).await?;
                    feed(&mut self.ws, Message::Binary(packet.clone())).await?;
                }
                Frame::Push(push) => {
                    let run_len =
                        batch.as_ref().map_or(0, Batch::len) + single.map_or(0, |s| s.len());
                    if run_len + push.len() > MAX_BATCH {
                        flush_run(&mut self.ws, &mut single, &mut batch).await?;
                    }
                    match (&mut batch, single.take()) {
                        (Some(batch), _) => batch.push_batch(push),
                        (None, Some(first)) => {
                            let mut merged = Batch::with_capacity(first.len() + push.len());
                            merged.push_batch(first);
                            merged.push_batch(push);
                            batch = Some(merged);
                        }
                        (None, None) => single = Some(push),
                    }
                }
            }
        }
        flush_run(&mut self.ws, &mut single, &mut batch).await?;
        self.ws.flush().await.map_err(into_io)
    }

    async fn close(&mut self, reason: &CloseReason) {
        let mut text = reason.to_string();
        if text.len() > MAX_CLOSE_REASON {
            let mut cut = MAX_CLOSE_REASON;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let frame = CloseFrame {
            code: CloseCode::from(reason.ws_code()),
            reason: text.into(),
        };
        if self.ws.close(Some(frame)).await.is_ok() {
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while let Some(Ok(_)) = self.ws.next().await {}
            })
            .await;
        }
    }
}

/// Queues the pending run of pushes (one shared buffer, or a merged batch) as one message.
async fn flush_run<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    single: &mut Option<&bytes::Bytes>,
    batch: &mut Option<Batch>,
) -> io::Result<()> {
    if let Some(push) = single.take() {
        feed(ws, Message::Binary(push.clone())).await?;
    }
    if let Some(batch) = batch.take() {
        feed(ws, Message::Binary(batch.finish())).await?;
    }
    Ok(())
}

async fn feed<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    message: Message,
) -> io::Result<()> {
    ws.feed(message).await.map_err(into_io)
}

fn into_io(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        other => io::Error::other(other),
    }
}
