//! Admission bounds: connections per client address and in total.
//!
//! Checked at accept, before any TLS or WebSocket work, so a flood from one address costs almost
//! nothing. A [`Permit`] is held for the connection's lifetime and returns its slot when dropped.
//!
//! The per-address bound counts IPv4 addresses one by one but IPv6 addresses by their /64
//! ([`limit_key`]): an ISP or a cloud hands a single host a whole /64, so keyed on the full address one
//! machine could open the limit's worth of connections from each of 2^64 addresses. IPv4-mapped IPv6
//! addresses (a dual-stack listener's IPv4 clients) count as the IPv4 address they carry.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use parking_lot::Mutex;

/// The address a connection from `ip` is counted under: an IPv4 address itself, an IPv6 address its
/// /64 (see the module docs).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
    }
}

/// Counts open sockets per client address ([`limit_key`]) and in total, against configured maxima
/// (0 = unlimited).
#[derive(Debug)]
pub struct Limiter {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    max_total: usize,
    total: std::sync::atomic::AtomicUsize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many connections from this IP (IPv6: this /64).
    PerIp,
    /// The edge is full.
    Total,
}

impl Refusal {
    /// Label for `rim_edge_rejected_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            Self::PerIp => "ip_limit",
            Self::Total => "capacity",
        }
    }
}

/// One admitted socket; releases its slot on drop (and counts the socket closed in
/// `rim_edge_sockets`, which [`crate::metrics::accepted`] counted open).
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Limiter {
    /// A limiter with the given maxima (0 = unlimited).
    pub fn new(max_per_ip: usize, max_total: usize) -> Self {
        Self {
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
            max_total,
            total: Default::default(),
        }
    }

    /// Admits a socket from `ip` or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        use std::sync::atomic::Ordering;
        let ip = limit_key(ip);
        let mut per_ip = self.per_ip.lock();
        if self.max_total != 0 && self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refusal::Total);
        }
        let count = per_ip.entry(ip).or_default();
        if self.max_per_ip != 0 && *count >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Distinct client addresses (IPv6: /64s) with an open socket.
    pub fn ip_count(&self) -> usize {
        self.per_ip.lock().len()
    }

    /// Open sockets (authenticated or not).
    pub fn socket_count(&self) -> usize {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut per_ip = self.limiter.per_ip.lock();
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.limiter
            .total
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::socket_closed();
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::{Limiter, Refusal, limit_key};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(limit_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(limit_key(ip("::1")), ip("::"));
    }

    #[test]
    fn one_64_shares_one_budget() {
        let limiter = Arc::new(Limiter::new(2, 0));
        let first = limiter.admit(ip("2001:db8:1:2::a")).unwrap();
        let _second = limiter.admit(ip("2001:db8:1:2::b")).unwrap();
        assert_eq!(
            limiter.admit(ip("2001:db8:1:2:dead:beef::1")).unwrap_err(),
            Refusal::PerIp
        );
        let _other = limiter.admit(ip("2001:db8:1:3::a")).unwrap();
        assert_eq!(limiter.ip_count(), 2);
        drop(first);
        let _again = limiter.admit(ip("2001:db8:1:2::c")).unwrap();
        let _v4 = limiter.admit(ip("::ffff:198.51.100.1")).unwrap();
        let _v4_again = limiter.admit(ip("198.51.100.1")).unwrap();
        assert_eq!(
            limiter.admit(ip("198.51.100.1")).unwrap_err(),
            Refusal::PerIp,
            "mapped and plain IPv4 are one address"
        );
    }
}
