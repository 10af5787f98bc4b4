//! PROXY protocol (HAProxy's v1 text and v2 binary headers) on the client listeners.
//!
//! Behind an L4 load balancer every socket comes from the balancer, so the per-IP limit and the
//! address reported for each session would be the balancer's. A balancer configured to send a PROXY
//! header names the real client before the first byte of goim, HTTP or TLS. Since anyone can write
//! such a header, it is believed only from the networks in `edge_proxy_trusted`, and only on the
//! listeners named in `edge_proxy_protocol`:
//!
//! - from a trusted peer the connection must start with a header (parsed by the `ppp` crate); its
//!   source address replaces the peer's, and the connection is admitted under that address. A v2
//!   `LOCAL` header or a v1 `UNKNOWN` one (health checks) keeps the peer's address. A missing,
//!   malformed or oversized header closes the socket (`rim_edge_rejected_total{reason="proxy_header"}`).
//! - from anywhere else the connection is an ordinary direct client: the header is never looked for,
//!   so one sent anyway is garbage to the goim decoder, the HTTP upgrade or the TLS handshake, and
//!   closes that connection like any other garbage.
//!
//! The header is read exactly (never a byte past it), so what follows reaches the transport as sent.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use ppp::HeaderResult;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{EdgeConfig, ProxyListener};

/// The 12-byte signature that starts every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest v1 header, CRLF included (the protocol's own bound).
const V1_MAX_LEN: usize = 107;

/// Longest v2 payload (addresses and TLVs) accepted; IPv6 addresses take 36 bytes, UNIX ones 216.
const V2_MAX_PAYLOAD: usize = 1024;

/// Which listeners take PROXY headers, and from which networks.
#[derive(Debug, Clone, Default)]
pub struct ProxyPolicy {
    listeners: Vec<ProxyListener>,
    trusted: Vec<IpNet>,
}

/// Why a trusted peer's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection did not start with a PROXY signature.
    #[error("no PROXY header from a trusted peer")]
    Missing,
    /// The header is longer than this edge accepts.
    #[error("PROXY header too long")]
    TooLong,
    /// The header did not parse.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// The socket failed or closed while the header was read.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyPolicy {
    /// The policy of `edge_proxy_protocol` and `edge_proxy_trusted`; fails on a network that does not
    /// parse, or on listeners named without any trusted network.
    pub fn from_config(config: &EdgeConfig) -> anyhow::Result<Self> {
        let trusted = config
            .edge_proxy_trusted
            .iter()
            .filter(|net| !net.trim().is_empty())
            .map(|net| parse_network(net.trim()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            config.edge_proxy_protocol.is_empty() || !trusted.is_empty(),
            "edge_proxy_protocol needs edge_proxy_trusted: the networks of the load balancers whose \
             PROXY headers are believed"
        );
        Ok(Self {
            listeners: config.edge_proxy_protocol.clone(),
            trusted,
        })
    }

    /// True if a connection on `listener` from `peer` must start with a PROXY header.
    pub fn expects_header(&self, listener: ProxyListener, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.listeners.contains(&listener) && self.trusted.iter().any(|net| net.contains(&peer))
    }
}

/// A CIDR, or a bare address (one host).
fn parse_network(text: &str) -> anyhow::Result<IpNet> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| anyhow::anyhow!("edge_proxy_trusted: {text:?} is not a CIDR or an address"))
}

/// Reads one PROXY header (v1 or v2) from the start of `stream`, exactly; returns the client address
/// it names, or `None` when it names none (v2 `LOCAL`, v1 `UNKNOWN`, non-IP families).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyError> {
    let mut header = vec![0u8; 5];
    stream.read_exact(&mut header).await?;
    if header == b"PROXY" {
        while header.last() != Some(&b'\n') {
            if header.len() >= V1_MAX_LEN {
                return Err(ProxyError::TooLong);
            }
            header.push(stream.read_u8().await?);
        }
    } else if header[..] == V2_SIGNATURE[..5] {
        header.resize(16, 0);
        stream.read_exact(&mut header[5..]).await?;
        if header[..12] != V2_SIGNATURE {
            return Err(ProxyError::Missing);
        }
        let payload = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if payload > V2_MAX_PAYLOAD {
            return Err(ProxyError::TooLong);
        }
        header.resize(16 + payload, 0);
        stream.read_exact(&mut header[16..]).await?;
    } else {
        return Err(ProxyError::Missing);
    }
    source(HeaderResult::parse(&header))
}

/// The source address of a parsed header.
fn source(parsed: HeaderResult<'_>) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::{v1, v2};
    match parsed {
        HeaderResult::V1(Ok(header)) => Ok(match header.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(header)) => Ok(match (header.command, header.addresses) {
            (v2::Command::Local, _) => None,
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
        }),
        HeaderResult::V1(Err(error)) => Err(ProxyError::Malformed(error.to_string())),
        HeaderResult::V2(Err(error)) => Err(ProxyError::Malformed(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::{ProxyError, read_header};

    #[tokio::test]
    async fn headers_are_read_exactly_and_bounded() {
        let mut input: &[u8] = b"PROXY TCP4 203.0.113.9 10.0.0.1 4000 3101\r\nrest";
        let addr = read_header(&mut input).await.unwrap();
        assert_eq!(addr, Some("203.0.113.9:4000".parse().unwrap()));
        assert_eq!(input, b"rest", "nothing past the header is consumed");
        let mut unknown: &[u8] = b"PROXY UNKNOWN\r\n";
        assert_eq!(read_header(&mut unknown).await.unwrap(), None);
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(
            read_header(&mut long.as_bytes()).await,
            Err(ProxyError::TooLong)
        ));
        let mut garbage: &[u8] = b"GET /sub HTTP/1.1\r\n\r\n";
        assert!(matches!(
            read_header(&mut garbage).await,
            Err(ProxyError::Missing)
        ));
        let mut bad: &[u8] = b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n";
        assert!(matches!(
            read_header(&mut bad).await,
            Err(ProxyError::Malformed(_))
        ));
    }
}
