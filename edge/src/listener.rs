//! Accept loops for the client listeners (TCP, TLS, WS, WSS).
//!
//! Admission (per-IP and total bounds) is decided right at accept, before any TLS or HTTP work. Each
//! admitted socket's session runs in its own task, tracked so that shutdown can wait for it; the TLS
//! handshake, the WebSocket upgrade and auth together must finish within the handshake timeout. The
//! task is the session's future itself, sized for its transport (see [`spawn`]): an idle connection's
//! memory is mostly that one allocation.
//!
//! On a listener with the PROXY protocol ([`proxy`]) a connection from a trusted load balancer is
//! admitted once its header has named the client (read within the handshake timeout too), so the
//! per-IP bound and the session's address are the client's, not the balancer's.

pub mod proxy;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::ProxyListener;
use crate::limits::Permit;
use crate::metrics;
use crate::session;
use crate::state::Shared;
use crate::transport::Transport;
use crate::transport::stream::StreamTransport;
use crate::transport::upgrade;
use crate::transport::ws::{WsTransport, ws_config};
use proxy::ProxyPolicy;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The protocol a listener speaks.
#[derive(Clone)]
pub enum Kind {
    /// goim packets over plain TCP.
    Tcp,
    /// goim packets over TLS.
    Tls(TlsAcceptor),
    /// WebSocket at /sub.
    Ws,
    /// WebSocket over TLS at /sub.
    Wss(TlsAcceptor),
}

impl Kind {
    fn label(&self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls(_) => "tls",
            Self::Ws => "ws",
            Self::Wss(_) => "wss",
        }
    }

    /// The name `edge_proxy_protocol` gives this listener.
    fn proxy_name(&self) -> ProxyListener {
        match self {
            Self::Tcp => ProxyListener::Tcp,
            Self::Tls(_) => ProxyListener::Tls,
            Self::Ws => ProxyListener::Ws,
            Self::Wss(_) => ProxyListener::Wss,
        }
    }
}

/// Accepts connections until shutdown, spawning one tracked task per admitted socket; `proxy` says
/// which peers must start with a PROXY header.
pub async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    proxy: ProxyPolicy,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, listener = kind.label(), "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + shared.settings.handshake_timeout;
        let (kind, shared) = (kind.clone(), shared.clone());
        if proxy.expects_header(kind.proxy_name(), peer.ip()) {
            let tracker_for_header = tracker.clone();
            tracker.spawn(async move {
                let mut stream = stream;
                let Some(ip) = proxied_client(&mut stream, peer, deadline).await else {
                    return;
                };
                if let Some(permit) = admit(&shared, ip, &kind) {
                    spawn(
                        &tracker_for_header,
                        stream,
                        kind,
                        shared,
                        ip,
                        deadline,
                        permit,
                    );
                }
            });
        } else if let Some(permit) = admit(&shared, peer.ip(), &kind) {
            spawn(&tracker, stream, kind, shared, peer.ip(), deadline, permit);
        }
    }
}

/// Spawns the task of an admitted socket.
///
/// A connection's task is its session's future itself, for its own transport: no enclosing future
/// and no box, so an idle connection costs one allocation sized by what its transport needs (a plain
/// TCP connection does not carry the size of a TLS stream or a WebSocket). A transport that needs a
/// handshake first (TLS, the WebSocket upgrade) does it in a short-lived task that then spawns the
/// session's, so the handshake's state is gone once it is done.
fn spawn(
    tracker: &TaskTracker,
    stream: TcpStream,
    kind: Kind,
    shared: Arc<Shared>,
    ip: IpAddr,
    deadline: Instant,
    permit: Permit,
) {
    let max_body = shared.settings.max_body;
    match kind {
        Kind::Tcp => {
            let transport = StreamTransport::new(stream, max_body);
            tracker.spawn(session::run(transport, shared, ip, deadline, permit));
        }
        Kind::Tls(acceptor) => Handshake {
            rejected: "tls_handshake",
            tracker,
            deadline,
        }
        .then_run(
            async move {
                let tls = acceptor.accept(stream).await.ok()?;
                Some(StreamTransport::new(tls, max_body))
            },
            shared,
            ip,
            permit,
        ),
        Kind::Ws => Handshake {
            rejected: "ws_upgrade",
            tracker,
            deadline,
        }
        .then_run(
            async move {
                let ws = upgrade::accept(stream, ws_config(max_body)).await.ok()?;
                Some(WsTransport::new(ws, max_body))
            },
            shared,
            ip,
            permit,
        ),
        Kind::Wss(acceptor) => Handshake {
            rejected: "wss_handshake",
            tracker,
            deadline,
        }
        .then_run(
            async move {
                let tls = acceptor.accept(stream).await.ok()?;
                let ws = upgrade::accept(tls, ws_config(max_body)).await.ok()?;
                Some(WsTransport::new(ws, max_body))
            },
            shared,
            ip,
            permit,
        ),
    }
}

/// A transport handshake to complete (by the deadline of auth) before the session starts.
struct Handshake<'a> {
    /// The `rim_edge_rejected_total` reason when it fails or times out.
    rejected: &'static str,
    tracker: &'a TaskTracker,
    deadline: Instant,
}

impl Handshake<'_> {
    /// Runs `handshake` in a short-lived task, which spawns the session's own task over the
    /// transport it yields (see [`spawn`]).
    fn then_run<T: Transport + 'static>(
        self,
        handshake: impl Future<Output = Option<T>> + Send + 'static,
        shared: Arc<Shared>,
        ip: IpAddr,
        permit: Permit,
    ) {
        let (tracker, deadline, rejected) = (self.tracker.clone(), self.deadline, self.rejected);
        self.tracker.spawn(async move {
            match tokio::time::timeout_at(deadline, handshake).await {
                Ok(Some(transport)) => {
                    tracker.spawn(session::run(transport, shared, ip, deadline, permit));
                }
                _ => metrics::rejected(rejected),
            }
        });
    }
}

/// The client a trusted peer's PROXY header names (the peer itself for a header that names none);
/// `None`, counted and logged, when the header is missing, malformed or not there by `deadline`.
async fn proxied_client(
    stream: &mut TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<IpAddr> {
    let error = match tokio::time::timeout_at(deadline, proxy::read_header(stream)).await {
        Ok(Ok(source)) => return Some(source.map_or(peer.ip(), |s| s.ip()).to_canonical()),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no PROXY header within the handshake timeout".to_owned(),
    };
    metrics::rejected("proxy_header");
    tracing::debug!(%peer, %error, "connection refused");
    None
}

/// Admits a socket from `ip` (counting it), or counts and logs why not.
fn admit(shared: &Arc<Shared>, ip: IpAddr, kind: &Kind) -> Option<Permit> {
    match shared.limiter.admit(ip) {
        Ok(permit) => {
            metrics::accepted(kind.label());
            Some(permit)
        }
        Err(refusal) => {
            metrics::rejected(refusal.label());
            tracing::debug!(%ip, reason = refusal.label(), "connection refused");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    //! An idle connection's memory is mostly its task, so these bounds catch a future that grows by
    //! accident (for example a handshake result kept alive across the whole session).

    use std::sync::Arc;

    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use crate::auth::insecure::InsecureVerifier;
    use crate::bucket::Buckets;
    use crate::config::EdgeConfig;
    use crate::fanout::{Fanout, FanoutSettings};
    use crate::hooks::{CountingSink, NoEvents};
    use crate::limits::Limiter;
    use crate::session;
    use crate::state::{Settings, Shared};
    use crate::transport::stream::StreamTransport;
    use crate::transport::ws::{Upgraded, WsTransport, ws_config};

    #[tokio::test]
    async fn idle_connection_tasks_stay_small() {
        let config = EdgeConfig::local().unwrap();
        let token = CancellationToken::new();
        let buckets = Arc::new(Buckets::new(1));
        let fanout = Fanout::new(
            buckets.clone(),
            FanoutSettings::from_config(&config),
            token.clone(),
        );
        let limiter = Arc::new(Limiter::new(0, 0));
        let shared = Arc::new(Shared::new(
            Settings::from_config(&config),
            buckets,
            fanout,
            Arc::new(InsecureVerifier::new()),
            Arc::new(NoEvents),
            Arc::new(CountingSink),
            limiter.clone(),
            token,
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ip = addr.ip();
        let permit = limiter.admit(ip).unwrap();
        let transport = StreamTransport::new(TcpStream::connect(addr).await.unwrap(), 4096);
        let session = session::run(transport, shared.clone(), ip, Instant::now(), permit);
        let tcp = std::mem::size_of_val(&session);
        let permit = limiter.admit(ip).unwrap();
        let socket = TcpStream::connect(addr).await.unwrap();
        let ws = Upgraded::new(socket, ws_config(4096));
        let transport = WsTransport::new(ws, 4096);
        let session = session::run(transport, shared, ip, Instant::now(), permit);
        let ws = std::mem::size_of_val(&session);
        eprintln!("session futures: TCP {tcp} bytes, WebSocket {ws} bytes");
        assert!(tcp <= TCP_LIMIT, "TCP session future is {tcp} bytes");
        assert!(ws <= WS_LIMIT, "WebSocket session future is {ws} bytes");
    }

    /// Bounds a little above what this test measured (a debug build: TCP 560 bytes, WebSocket 736;
    /// 840 and 944 with a heartbeat timer and a shutdown registration in every session, see
    /// `crate::heartbeat`), so that a future growing by a timer or a buffer fails it.
    const TCP_LIMIT: usize = 640;
    const WS_LIMIT: usize = 832;
}
