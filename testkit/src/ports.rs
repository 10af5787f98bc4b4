//! Free loopback ports for servers started by tests.
//!
//! A port found by binding port 0 comes from the kernel's ephemeral range, the same range every
//! outgoing connection on the machine draws its source port from: between the moment a test learns
//! the port and the moment its server (often another process) binds it, a client connection of a
//! parallel test may take it ("Address already in use"). So ports are drawn at random from below the
//! ephemeral range, where the kernel never assigns anything by itself, and checked by binding them.
//!
//! Within one process the ports follow each other from a random start, so one test never gets the
//! same port twice (drawing each at random did: two edges of one test cluster were once told the
//! same port, about a 1-in-200 chance per cluster of 15 ports). Only another test process starting
//! near the same number can collide, and the bind check makes that rarer still.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports handed out: below Linux's default ephemeral range (32768-60999) and above the well-known
/// and commonly registered service ports.
const RANGE: std::ops::Range<u16> = 12_000..32_000;

/// How many random ports are tried before falling back to the kernel's choice.
const ATTEMPTS: usize = 64;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Servers we start ourselves take an already-bound listener instead whenever they can; this is for
/// servers that must be told a port (other processes, PostgreSQL, the broker).
pub fn free_port() -> std::io::Result<u16> {
    for _ in 0..ATTEMPTS {
        let port = next_port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The next port of [`RANGE`] after the one this process handed out last (from a random start).
fn next_port() -> u16 {
    static CURSOR: OnceLock<AtomicU32> = OnceLock::new();
    let cursor = CURSOR.get_or_init(|| AtomicU32::new(u32::from(random_port() - RANGE.start)));
    let span = u32::from(RANGE.end - RANGE.start);
    // The remainder is below `span`, which fits a u16.
    RANGE.start + (cursor.fetch_add(1, Ordering::Relaxed) % span) as u16
}

/// A port of [`RANGE`], different for every call (randomly keyed hasher, time and process id).
fn random_port() -> u16 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    let span = u64::from(RANGE.end - RANGE.start);
    // The remainder is below `span`, which fits a u16.
    RANGE.start + (hasher.finish() % span) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_bind() {
        for _ in 0..50 {
            let port = free_port().expect("a free port");
            assert!(RANGE.contains(&port), "{port} outside {RANGE:?}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port binds");
        }
    }

    #[test]
    fn one_process_never_gets_a_port_twice() {
        let ports: Vec<u16> = (0..500)
            .map(|_| free_port().expect("a free port"))
            .collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }

    #[test]
    fn random_starts_differ_between_calls() {
        let ports: std::collections::HashSet<u16> = (0..20).map(|_| random_port()).collect();
        assert!(ports.len() > 10, "only {} distinct ports", ports.len());
    }
}
