//! A TLS listener for `axum::serve`: the edge's internal endpoint and the control plane's HTTPS
//! listener accept through it.
//!
//! `axum::serve` takes one connection at a time from its listener; handshaking inside `accept` would
//! let one client that never finishes its handshake stall every other. Here a background task
//! accepts TCP connections and handshakes each in its own task (bounded by [`HANDSHAKE_TIMEOUT`]),
//! and `accept` only hands out connections whose handshake completed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake completed, waiting for the server to take them.
const HANDSHAKEN_BACKLOG: usize = 64;

/// A listener yielding TLS streams for `axum::serve`: a background task accepts TCP connections
/// and runs each handshake in its own task, bounded in time, so a slow or silent client never holds
/// up the others.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener`, handshaking with `acceptor`, until `stop` is cancelled.
    pub fn spawn(listener: TcpListener, acceptor: TlsAcceptor, stop: CancellationToken) -> Self {
        let (sender, ready) = mpsc::channel(HANDSHAKEN_BACKLOG);
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "TLS listener accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            // The server stopped if nobody receives: the stream just closes.
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Self { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended (shutdown): nothing will come; graceful shutdown ends serve.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
