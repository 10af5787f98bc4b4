//! Admission bounds: connections per IP and in total.
//!
//! Checked at accept, before any TLS or WebSocket work, so a flood from one address costs almost
//! nothing. A [`Permit`] is held for the connection's lifetime and returns its slot when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// Counts open sockets per IP and in total, against configured maxima (0 = unlimited).
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
    /// Too many connections from this IP.
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

/// One admitted socket; releases its slot on drop.
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

    /// Distinct client IPs with an open socket.
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
    }
}
