//! A test client that records what arrived: every push body, in order, across reconnects.
//!
//! Pushes of the tests carry their sequence number as the body (`"<tag>:<n>"`), so a test can count
//! per sender what was lost and what came twice, and check order.

use parking_lot::Mutex;
use rim_client::{Session, SessionConfig, SessionEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a recorder saw.
#[derive(Default)]
struct Seen {
    bodies: Vec<(Instant, String)>,
}

/// A reconnecting client and the log of what it received.
pub struct Recorder {
    seen: Arc<Mutex<Seen>>,
    connects: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// Losses and duplicates of one tag's numbered pushes, as one client saw them.
#[derive(Debug, PartialEq, Eq)]
pub struct Tally {
    /// Distinct numbers received.
    pub received: usize,
    /// Numbers of `0..expected` that never arrived.
    pub lost: usize,
    /// Deliveries beyond the first of a number.
    pub duplicated: usize,
    /// Times a number arrived after a higher one.
    pub out_of_order: usize,
}

impl Recorder {
    /// Starts a session to `addresses` authenticating with `auth_body`.
    pub fn start(addresses: Vec<String>, auth_body: Vec<u8>) -> Recorder {
        let config = SessionConfig {
            addresses,
            auth_body: Arc::new(move || auth_body.clone()),
            httpdns: None,
            heartbeat: rim_client::AdaptiveHeartbeat::fixed(Duration::from_secs(20)),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let mut session = Session::start(config, 1024);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let connects = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let seen = seen.clone();
            let connects = connects.clone();
            async move {
                while let Some(event) = session.next().await {
                    match event {
                        SessionEvent::Connected { .. } => {
                            connects.fetch_add(1, Ordering::AcqRel);
                        }
                        SessionEvent::Push(push) if push.op == super::OPERATION => {
                            let body = String::from_utf8_lossy(&push.body).into_owned();
                            seen.lock().bodies.push((Instant::now(), body));
                        }
                        SessionEvent::Push(_)
                        | SessionEvent::Resolved { .. }
                        | SessionEvent::RoomRefused(_)
                        | SessionEvent::Durable(_)
                        | SessionEvent::Resume(_)
                        | SessionEvent::Disconnected { .. } => {}
                    }
                }
            }
        });
        Recorder {
            seen,
            connects,
            task,
        }
    }

    /// Waits until the session has authenticated `times` times in all.
    pub async fn wait_connected(&self, times: usize) {
        let deadline = tokio::time::Instant::now() + super::PATIENCE;
        while self.connects.load(Ordering::Acquire) < times {
            assert!(
                tokio::time::Instant::now() < deadline,
                "client never connected ({times} times)"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When each body tagged `tag` arrived, in arrival order.
    pub fn arrivals(&self, tag: &str) -> Vec<Instant> {
        let prefix = format!("{tag}:");
        self.seen
            .lock()
            .bodies
            .iter()
            .filter(|(_, body)| body.starts_with(&prefix))
            .map(|(at, _)| *at)
            .collect()
    }

    /// The longest time between two consecutive arrivals tagged `tag` within `from..until`
    /// (counting the edges of the window as arrivals), how long the client stalled, and how long
    /// after `from` that gap began.
    pub fn longest_gap_at(&self, tag: &str, from: Instant, until: Instant) -> (Duration, Duration) {
        let mut points: Vec<Instant> = self
            .arrivals(tag)
            .into_iter()
            .filter(|at| (from..until).contains(at))
            .collect();
        points.insert(0, from);
        points.push(until);
        points
            .windows(2)
            .map(|pair| (pair[1] - pair[0], pair[0] - from))
            .max()
            .unwrap_or_default()
    }

    /// How many bodies start with `tag:`.
    pub fn count(&self, tag: &str) -> usize {
        self.arrivals(tag).len()
    }

    /// Waits until at least `n` bodies tagged `tag` arrived (or the patience runs out), then
    /// returns how many did.
    pub async fn wait_for(&self, tag: &str, n: usize, patience: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let count = self.count(tag);
            if count >= n || tokio::time::Instant::now() >= deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Losses, duplicates and reorderings of `tag:0 .. tag:expected-1`.
    pub fn tally(&self, tag: &str, expected: usize) -> Tally {
        self.tally_of(tag, &(0..expected).collect::<Vec<_>>())
    }

    /// Losses (of the numbers in `expected`), duplicates and reorderings of pushes tagged `tag`.
    pub fn tally_of(&self, tag: &str, expected: &[usize]) -> Tally {
        let prefix = format!("{tag}:");
        let numbers: Vec<usize> = self
            .seen
            .lock()
            .bodies
            .iter()
            .filter_map(|(_, body)| body.strip_prefix(&prefix)?.parse().ok())
            .collect();
        let mut times: BTreeMap<usize, usize> = BTreeMap::new();
        let mut out_of_order = 0;
        let mut highest = None;
        for &n in &numbers {
            *times.entry(n).or_default() += 1;
            if highest.is_some_and(|h| n < h) {
                out_of_order += 1;
            }
            highest = highest.max(Some(n));
        }
        Tally {
            received: times.len(),
            lost: expected.iter().filter(|n| !times.contains_key(n)).count(),
            duplicated: times.values().map(|&t| t - 1).sum(),
            out_of_order,
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
