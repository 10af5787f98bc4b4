//! PROXY protocol v1 and v2 on the client listeners over real sockets: from a trusted network the
//! header's client address is the one the per-IP limit counts and the session reports; from anywhere
//! else a header is garbage and cannot dodge the limit.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use common::client::{BoxIo, Ended};
use common::{Client, TestEdge, start_with, tokens};
use parking_lot::Mutex;
use ppp::v2;
use rim_edge::EdgeHooks;
use rim_edge::channel::Channel;
use rim_edge::config::{AuthMode, ProxyListener};
use rim_edge::hooks::{ConnectAck, EdgeEvents};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Records the address of every connection that authenticated.
#[derive(Default)]
struct Addresses(Mutex<Vec<IpAddr>>);

impl EdgeEvents for Addresses {
    fn connected(&self, channel: &Channel) -> Option<ConnectAck> {
        self.0.lock().push(channel.ip());
        None
    }
}

/// An edge taking PROXY headers on TCP and WS from `trusted`, at most `per_ip` sockets per client.
async fn proxy_edge(trusted: &str, per_ip: usize) -> (TestEdge, Arc<Addresses>) {
    let addresses = Arc::new(Addresses::default());
    let hooks = EdgeHooks {
        events: addresses.clone(),
        ..EdgeHooks::default()
    };
    let edge = start_with(AuthMode::Jwt, hooks, |c| {
        c.edge_proxy_protocol = vec![ProxyListener::Tcp, ProxyListener::Ws];
        c.edge_proxy_trusted = vec![trusted.into()];
        c.edge_max_conns_per_ip = per_ip;
    })
    .await;
    (edge, addresses)
}

fn v1(client: &str) -> Vec<u8> {
    let family = if client.contains(':') { "TCP6" } else { "TCP4" };
    let server = if client.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    format!("PROXY {family} {client} {server} 40000 3101\r\n").into_bytes()
}

fn v2(client: &str) -> Vec<u8> {
    let source = SocketAddr::new(client.parse().unwrap(), 40000);
    let destination: SocketAddr = match source {
        SocketAddr::V4(_) => "127.0.0.1:3101".parse().unwrap(),
        SocketAddr::V6(_) => "[::1]:3101".parse().unwrap(),
    };
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap()
}

/// A socket to `addr` that has sent `header` first.
async fn with_header(addr: SocketAddr, header: &[u8]) -> BoxIo {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(header).await.unwrap();
    Box::new(socket)
}

/// A goim TCP client behind `header`, authenticated as `key`.
async fn proxied(edge: &TestEdge, header: &[u8], key: &str) -> Client {
    let mut client = Client::stream(with_header(edge.tcp(), header).await);
    client.auth_ok(&tokens::body_for(key, "", &[])).await;
    client
}

/// A goim TCP client behind `header` that the edge closes before any auth reply.
async fn assert_closed_before_auth(addr: SocketAddr, header: &[u8]) {
    let mut client = Client::stream(with_header(addr, header).await);
    client
        .send_raw(&rim_proto::Packet::new(1, 7, 1, tokens::body_for("x", "", &[])).to_bytes())
        .await;
    assert_eq!(client.ended().await, Ended::Stream);
}

#[tokio::test]
async fn trusted_v1_and_v2_headers_set_the_client_address_for_the_per_ip_limit() {
    let (edge, addresses) = proxy_edge("127.0.0.0/8", 2).await;
    let mut first = proxied(&edge, &v1("203.0.113.5"), "a").await;
    let mut second = proxied(&edge, &v2("203.0.113.5"), "b").await;
    // Two sockets from 203.0.113.5: the third one, in either version, is refused...
    assert_closed_before_auth(edge.tcp(), &v1("203.0.113.5")).await;
    assert_closed_before_auth(edge.tcp(), &v2("203.0.113.5")).await;
    // ...while other clients behind the same balancer (127.0.0.1) are not.
    let mut third = proxied(&edge, &v2("2001:db8::7"), "c").await;
    let mut fourth = proxied(&edge, &v1("198.51.100.1"), "d").await;
    let ws_io = with_header(edge.ws(), &v1("198.51.100.2")).await;
    let mut ws = Client::ws_over(ws_io, &format!("ws://{}/sub", edge.ws())).await;
    ws.auth_ok(&tokens::body_for("e", "", &[])).await;
    for client in [&mut first, &mut second, &mut third, &mut fourth, &mut ws] {
        client.heartbeat().await;
    }
    let ips =
        |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|ip| ip.parse().unwrap()).collect() };
    assert_eq!(
        *addresses.0.lock(),
        ips(&[
            "203.0.113.5",
            "203.0.113.5",
            "2001:db8::7",
            "198.51.100.1",
            "198.51.100.2"
        ]),
        "sessions carry the clients' addresses, never the balancer's"
    );
    assert_eq!(edge.handle.ip_count(), 4);
    // A closed proxied connection gives its slot back to its client address.
    drop(first);
    common::wait_until(|| edge.handle.connection_count() == 4).await;
    let _again = proxied(&edge, &v1("203.0.113.5"), "a2").await;
}

#[tokio::test]
async fn a_trusted_peer_must_send_a_valid_header() {
    let (edge, addresses) = proxy_edge("127.0.0.1", 0).await;
    // No header at all: the goim bytes are not a PROXY header.
    assert_closed_before_auth(edge.tcp(), b"").await;
    assert_closed_before_auth(edge.tcp(), b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n").await;
    assert_closed_before_auth(
        edge.tcp(),
        format!("PROXY {}\r\n", "A".repeat(200)).as_bytes(),
    )
    .await;
    // A v2 LOCAL header (a balancer's health check) names nobody: the peer's address is used.
    let local = v2::Builder::new(v2::Version::Two | v2::Command::Local, 0)
        .build()
        .unwrap();
    let mut client = proxied(&edge, &local, "health").await;
    client.heartbeat().await;
    assert_eq!(
        *addresses.0.lock(),
        ["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
}

#[tokio::test]
async fn headers_from_untrusted_peers_are_garbage_and_do_not_dodge_the_limit() {
    let (edge, addresses) = proxy_edge("10.0.0.0/8", 1).await;
    // A direct client from 127.0.0.1 (not a trusted balancer) is served as itself.
    let mut direct = edge.connect(common::Kind::Tcp).await;
    direct.auth_ok(&tokens::body_for("direct", "", &[])).await;
    // Claiming to be someone else does not give a second slot: refused by the per-IP limit.
    assert_closed_before_auth(edge.tcp(), &v1("203.0.113.5")).await;
    drop(direct);
    common::wait_until(|| edge.handle.socket_count() == 0).await;
    // With a free slot, the header is garbage to the goim decoder (TCP) and to the HTTP upgrade (WS).
    assert_closed_before_auth(edge.tcp(), &v1("203.0.113.5")).await;
    assert_closed_before_auth(edge.tcp(), &v2("203.0.113.5")).await;
    let ws_io = with_header(edge.ws(), &v1("203.0.113.5")).await;
    let url = format!("ws://{}/sub", edge.ws());
    assert!(
        tokio_tungstenite::client_async(url, ws_io).await.is_err(),
        "a WebSocket upgrade after a PROXY header must fail"
    );
    assert_eq!(
        *addresses.0.lock(),
        ["127.0.0.1".parse::<IpAddr>().unwrap()],
        "no session ever carried a claimed address"
    );
    edge.assert_unaffected(&mut []).await;
}

#[tokio::test]
async fn proxy_protocol_without_trusted_networks_does_not_start() {
    let mut config = rim_edge::EdgeConfig::local().unwrap();
    config.edge_auth = AuthMode::Insecure;
    config.edge_proxy_protocol = vec![ProxyListener::Tcp];
    let verifier = rim_edge::auth::from_config(&config).unwrap();
    let error = rim_edge::Edge::start(
        config.clone(),
        "s".into(),
        verifier.clone(),
        EdgeHooks::default(),
    )
    .await
    .err()
    .expect("must not start");
    assert!(error.to_string().contains("edge_proxy_trusted"), "{error}");
    config.edge_proxy_trusted = vec!["10.0.0.0/33".into()];
    let error = rim_edge::Edge::start(config, "s".into(), verifier, EdgeHooks::default())
        .await
        .err()
        .expect("must not start");
    assert!(error.to_string().contains("10.0.0.0/33"), "{error}");
}

/// IPv6 clients are limited per /64: over a listener on `::1`, PROXY headers from the trusted
/// loopback balancer name distinct addresses of one /64 and of another.
#[tokio::test]
async fn ipv6_clients_are_limited_per_64() {
    let edge = start_with(AuthMode::Jwt, EdgeHooks::default(), |c| {
        c.edge_tcp_listen = "[::1]:0".into();
        c.edge_proxy_protocol = vec![ProxyListener::Tcp];
        c.edge_proxy_trusted = vec!["::1/128".into()];
        c.edge_max_conns_per_ip = 2;
    })
    .await;
    assert!(edge.tcp().is_ipv6());
    let _a = proxied(&edge, &v2("2001:db8:1:2::a"), "a").await;
    let _b = proxied(&edge, &v1("2001:db8:1:2:ffff:ffff:ffff:ffff"), "b").await;
    // A third address of the same /64 is the same host as far as the limit goes.
    assert_closed_before_auth(edge.tcp(), &v2("2001:db8:1:2:dead:beef:0:1")).await;
    let mut other = proxied(&edge, &v2("2001:db8:1:3::a"), "c").await;
    other.heartbeat().await;
    assert_eq!(edge.handle.ip_count(), 2);
}

/// Without PROXY, direct IPv6 clients from `::1` share the budget of `::/64`.
#[tokio::test]
async fn direct_ipv6_clients_share_their_64s_budget() {
    let edge = common::start(|c| {
        c.edge_tcp_listen = "[::1]:0".into();
        c.edge_max_conns_per_ip = 1;
    })
    .await;
    let mut first = edge.connect(common::Kind::Tcp).await;
    first.auth_ok(&tokens::body_for("first", "", &[])).await;
    assert_closed_before_auth(edge.tcp(), b"").await;
    first.heartbeat().await;
}
