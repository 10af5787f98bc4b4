//! The HTTP/1.1 WebSocket upgrade on the client listeners, done by hand.
//!
//! Doing it here rather than in tungstenite lets the edge answer every bad request with a proper HTTP
//! status (404 for a path other than `/sub`, 400 for a request that is not an upgrade, 431 for an
//! oversized head) instead of dropping the socket, accept `/sub` with any query string (goim refused
//! `/sub?x=1`), and bound the request head. Bytes a client sends right after its head are kept. The
//! frames that follow are the edge's own too ([`super::ws`]); only the accept key's derivation is
//! tungstenite's.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::ws::WsConfig;

/// Longest accepted request head.
const MAX_HEAD: usize = 8 * 1024;
/// Most request headers parsed.
const MAX_HEADERS: usize = 32;
/// The only path clients connect to (goim's).
pub const PATH: &str = "/sub";

/// Why an upgrade failed (the client was answered with an HTTP error where possible).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The request was refused with this HTTP status.
    #[error("refused with HTTP {0}")]
    Refused(u16),
    /// The socket closed or failed during the handshake.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A socket that completed the upgrade, with the bytes the client sent after its request head.
#[derive(Debug)]
pub struct Upgraded<S> {
    /// The socket.
    pub io: S,
    /// Bytes already read past the request head (the start of the first frames).
    pub rest: BytesMut,
    /// The framing limits to apply.
    pub config: WsConfig,
}

impl<S> Upgraded<S> {
    /// A socket whose upgrade happened elsewhere (tests, or an upgrade done by another server).
    pub fn new(io: S, config: WsConfig) -> Self {
        Self {
            io,
            rest: BytesMut::new(),
            config,
        }
    }
}

/// What a complete request head says, owned so the read buffer can be reused.
struct Head {
    status: Result<String, (u16, &'static str)>,
    len: usize,
}

/// Reads an upgrade request from `io`, answers it, and returns the upgraded socket.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    config: WsConfig,
) -> Result<Upgraded<S>, UpgradeError> {
    let mut buf = Vec::with_capacity(1024);
    let head = loop {
        buf.reserve(1024);
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        match parse(&buf) {
            Some(head) => break head,
            None if buf.len() >= MAX_HEAD => {
                break Head {
                    status: Err((431, "request head too large")),
                    len: buf.len(),
                };
            }
            None => {}
        }
    };
    let key = match head.status {
        Ok(key) => key,
        Err((status, why)) => {
            let body = format!("{why}\n");
            let response = format!(
                "HTTP/1.1 {status} {why}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            io.write_all(response.as_bytes()).await?;
            io.shutdown().await?;
            return Err(UpgradeError::Refused(status));
        }
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    io.write_all(response.as_bytes()).await?;
    let rest = BytesMut::from(&buf[head.len..]);
    Ok(Upgraded { io, rest, config })
}

/// Parses a complete head (None while incomplete); the status says whether it is a valid upgrade.
fn parse(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => {
            return Some(Head {
                status: Err((400, "malformed HTTP request")),
                len: buf.len(),
            });
        }
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let path = request.path.unwrap_or_default();
    let status = if request.method != Some("GET") {
        Err((405, "method not allowed"))
    } else if path.split('?').next() != Some(PATH) {
        Err((404, "not found: connect to /sub"))
    } else if !has_token("upgrade", "websocket")
        || !has_token("connection", "upgrade")
        || header("sec-websocket-version") != Some("13")
    {
        Err((400, "not a WebSocket upgrade"))
    } else {
        header("sec-websocket-key")
            .map(str::to_owned)
            .ok_or((400, "missing sec-websocket-key"))
    };
    Some(Head { status, len })
}
