//! Hostile and broken input: each case closes only the offending connection, with a clear reason, and
//! is followed by proof that other connections are unaffected and a new connection still works.

mod common;

use common::client::Ended;
use common::{Client, Kind, TestEdge, hex, start, tokens};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes that break the packet header, valid on both transports, and the reason they must produce.
const HEADER_CASES: &[(&str, &str)] = &[
    (
        "00001011 0010 0001 00000002 00000001",
        "body of 4097 bytes exceeds the limit of 4096",
    ),
    (
        "7fffffff 0010 0001 00000002 00000001",
        "exceeds the limit of 4096",
    ),
    (
        "ffffffff 0010 0001 00000002 00000001",
        "packet length -1 is smaller than",
    ),
    (
        "80000000 0010 0001 00000002 00000001",
        "packet length -2147483648 is smaller than",
    ),
    (
        "0000000f 0010 0001 00000002 00000001",
        "packet length 15 is smaller than",
    ),
    (
        "00000000 0010 0001 00000002 00000001",
        "packet length 0 is smaller than",
    ),
    (
        "00000010 0020 0001 00000002 00000001",
        "header length 32 is not 16",
    ),
    (
        "00000010 0000 0001 00000002 00000001",
        "header length 0 is not 16",
    ),
];

/// WebSocket messages whose packet does not match the message.
const WS_CASES: &[(&str, &str)] = &[
    (
        "00000020 0010 0001 00000002 00000001 61626364",
        "claims 32 bytes but 20 are present",
    ),
    (
        "00000010 0010 0001 00000002 00000001 61626364",
        "claims 16 bytes but 20 are present",
    ),
    (
        "0001 6761726261676521",
        "10 bytes are too few for a 16-byte header",
    ),
    ("", "0 bytes are too few"),
];

/// Two bystanders (one per transport) that must keep working.
async fn bystanders(edge: &TestEdge) -> (Client, Client) {
    (
        edge.client(Kind::Tcp, "bystander-tcp", "live://1", &[])
            .await,
        edge.client(Kind::Ws, "bystander-ws", "live://1", &[]).await,
    )
}

/// Sends `bytes` (a stream write, or one WebSocket message) on a new connection, authenticated first
/// when `authed`, and checks that it is closed with a reason containing `reason` (WebSocket) and that
/// the edge is otherwise unharmed.
async fn assert_closes(edge: &TestEdge, kind: Kind, authed: bool, bytes: &[u8], reason: &str) {
    let (mut tcp, mut ws) = bystanders(edge).await;
    let mut victim = edge.connect(kind).await;
    if authed {
        victim
            .auth_ok(&tokens::body_for("victim", "live://1", &[]))
            .await;
    }
    victim.send_raw(bytes).await;
    match victim.ended().await {
        Ended::Ws(code, text) => {
            assert_eq!(code, 1002, "{text}");
            assert!(text.contains(reason), "{text:?} should contain {reason:?}");
        }
        Ended::Stream => assert_eq!(kind, Kind::Tcp),
        Ended::WsNoFrame => panic!("closed without a reason, expected {reason:?}"),
    }
    edge.wait_connections(2).await;
    edge.assert_unaffected(&mut [&mut tcp, &mut ws]).await;
    assert_eq!(edge.handle.room_online("live://1"), 2);
}

#[tokio::test]
async fn bad_headers_on_tcp() {
    let edge = start(|_| {}).await;
    for authed in [false, true] {
        for (bytes, reason) in HEADER_CASES {
            assert_closes(&edge, Kind::Tcp, authed, &hex(bytes), reason).await;
        }
    }
}

#[tokio::test]
async fn bad_headers_on_websocket() {
    let edge = start(|_| {}).await;
    for authed in [false, true] {
        for (bytes, reason) in HEADER_CASES.iter().chain(WS_CASES) {
            assert_closes(&edge, Kind::Ws, authed, &hex(bytes), reason).await;
        }
    }
}

#[tokio::test]
async fn garbage_bytes() {
    let edge = start(|_| {}).await;
    let garbage = b"this is not a goim packet, just text \x00\xff\x13\x37";
    assert_closes(&edge, Kind::Tcp, false, garbage, "").await;
    assert_closes(&edge, Kind::Tcp, true, garbage, "").await;
    assert_closes(&edge, Kind::Ws, false, garbage, "protocol error").await;
    assert_closes(&edge, Kind::Ws, true, garbage, "protocol error").await;
}

#[tokio::test]
async fn oversized_websocket_message() {
    let edge = start(|_| {}).await;
    let mut big = hex("00001410 0010 0001 00000004 00000001");
    big.resize(0x1410, b'x');
    assert_closes(&edge, Kind::Ws, true, &big, "protocol error").await;
}

#[tokio::test]
async fn text_websocket_message() {
    let edge = start(|_| {}).await;
    let (mut tcp, mut ws) = bystanders(&edge).await;
    let mut victim = edge.connect(Kind::Ws).await;
    victim.send_text("{\"mid\":1}").await;
    let ended = victim.ended().await;
    assert!(
        matches!(&ended, Ended::Ws(1002, text) if text.contains("binary")),
        "{ended:?}"
    );
    edge.assert_unaffected(&mut [&mut tcp, &mut ws]).await;
}

#[tokio::test]
async fn stream_closed_mid_packet() {
    let edge = start(|_| {}).await;
    let (mut tcp, mut ws) = bystanders(&edge).await;
    let mut half = tokio::net::TcpStream::connect(edge.tcp()).await.unwrap();
    half.write_all(&hex("00000020 0010 0001 00000007"))
        .await
        .unwrap();
    half.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(common::PATIENCE, half.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "edge did not close");
    edge.assert_unaffected(&mut [&mut tcp, &mut ws]).await;
}

/// Sends raw bytes to the WebSocket port and returns the HTTP status line of the answer.
async fn http_answer(edge: &TestEdge, request: &[u8]) -> String {
    let mut socket = tokio::net::TcpStream::connect(edge.ws()).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(common::PATIENCE, socket.read_to_end(&mut answer))
        .await
        .expect("edge did not answer and close")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn http_requests_that_are_not_upgrades() {
    let edge = start(|_| {}).await;
    let (mut tcp, mut ws) = bystanders(&edge).await;
    let cases: [(&[u8], &str); 5] = [
        (b"GET /sub HTTP/1.1\r\nHost: edge\r\n\r\n", "HTTP/1.1 400"),
        (
            b"GET /other HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            "HTTP/1.1 404",
        ),
        (
            b"POST /sub HTTP/1.1\r\nHost: edge\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 405",
        ),
        (
            b"\x00\x00\x00\x10\x00\x10\x00\x01\x00\x00\x00\x07\x00\x00\x00\x01",
            "HTTP/1.1 400",
        ),
        (b"\x16\x03\x01\x02\x00 not http\r\n\r\n", "HTTP/1.1 400"),
    ];
    for (request, status) in cases {
        let answer = http_answer(&edge, request).await;
        assert!(answer.starts_with(status), "{answer:?} should be {status}");
        edge.assert_unaffected(&mut [&mut tcp, &mut ws]).await;
    }
    let mut long_head = b"GET /sub HTTP/1.1\r\nX-Filler: ".to_vec();
    long_head.resize(9000, b'a');
    assert!(
        http_answer(&edge, &long_head)
            .await
            .starts_with("HTTP/1.1 431")
    );
    edge.assert_unaffected(&mut [&mut tcp, &mut ws]).await;
}

#[tokio::test]
async fn connections_per_ip_are_bounded() {
    let edge = start(|c| c.edge_max_conns_per_ip = 3).await;
    let (mut tcp, mut ws) = bystanders(&edge).await;
    let mut third = edge.client(Kind::Tcp, "third", "", &[]).await;
    let mut refused = edge.connect(Kind::Tcp).await;
    assert_eq!(refused.ended().await, Ended::Stream);
    third.heartbeat().await;
    drop(third);
    edge.wait_connections(2).await;
    common::wait_until(|| edge.handle.socket_count() == 2).await;
    assert_eq!(edge.handle.ip_count(), 1);
    edge.assert_unaffected(&mut [&mut tcp, &mut ws]).await;
}
