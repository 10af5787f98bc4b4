//! Remembering recent deliveries to drop the duplicates of at-least-once delivery.
//!
//! Job workers deliver at least once: a retry after a lost answer, or a job restarting from its last
//! Kafka commit, resends pushes the edge already fanned out. One *delivery* is named by the pair
//! (message id, record index): a push to several users or keys is several bus records sharing the
//! message id, each with its own record index, and each must be executed once (deduplicating by the
//! message id alone dropped every record after the first).
//!
//! The memory of deliveries is a **time window** (`edge_dedup_window_ms`, 5 minutes by default: more
//! than the job's whole retry horizon and the redelivery after a job restart), so how long a
//! duplicate is recognised does not depend on the push rate. It is bounded in memory too
//! (`edge_dedup_capacity` entries): each entry is a 64-bit keyed hash of the pair and the time it was
//! seen (16 bytes, plus about as much in the hash set; roughly 32 bytes an entry, so the default
//! 1,048,576 entries stay under ~40 MiB). When the bound forces out deliveries still inside the window,
//! the window is effectively shorter than configured: that is counted
//! (`rim_edge_dedup_evictions_total`) and logged as a warning (rate-limited), since duplicates older
//! than what is remembered are delivered again.
//!
//! Two different deliveries collide only if their 64-bit hashes do (a chance of about n / 2^64 per
//! delivery with n remembered; the hasher is keyed per process), in which case the later one would be
//! taken for a duplicate.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use crate::metrics;
use crate::ratelog::RateLimit;

static EVICTION_LOG: RateLimit = RateLimit::new(1);

/// What [`RecentDeliveries::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window: execute it.
    New,
    /// Already executed within the window: skip it.
    Duplicate,
}

/// The deliveries executed within the window, oldest first; see the module docs.
#[derive(Debug)]
pub struct RecentDeliveries {
    seen: HashSet<u64>,
    /// (hash, milliseconds since `origin` when it was seen), in the order seen.
    order: VecDeque<(u64, u64)>,
    hasher: RandomState,
    origin: Instant,
    window_ms: u64,
    capacity: usize,
}

impl RecentDeliveries {
    /// Remembers deliveries for `window`, at most `capacity` of them (a zero window or capacity
    /// disables deduplication).
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            hasher: RandomState::new(),
            origin: Instant::now(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            capacity,
        }
    }

    /// Records the delivery (`message_id`, `record`) seen at `now`; says whether it is new. A
    /// delivery without a message id is always new.
    pub fn insert(&mut self, message_id: &str, record: u32, now: Instant) -> Seen {
        if message_id.is_empty() || self.capacity == 0 || self.window_ms == 0 {
            return Seen::New;
        }
        let at = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX);
        self.expire(at);
        let hash = self.hasher.hash_one((message_id, record));
        if !self.seen.insert(hash) {
            return Seen::Duplicate;
        }
        self.order.push_back((hash, at));
        if self.order.len() > self.capacity {
            self.evict_young();
        }
        Seen::New
    }

    /// Deliveries remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Forgets the deliveries seen a whole window before `at`.
    fn expire(&mut self, at: u64) {
        while let Some(&(hash, seen_at)) = self.order.front() {
            if at.saturating_sub(seen_at) < self.window_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&hash);
        }
    }

    /// Forgets the oldest delivery although it is still inside the window (the memory bound).
    fn evict_young(&mut self) {
        if let Some((hash, _)) = self.order.pop_front() {
            self.seen.remove(&hash);
            metrics::dedup_evicted();
            if let Some(suppressed) = EVICTION_LOG.allow() {
                tracing::warn!(
                    capacity = self.capacity,
                    window_ms = self.window_ms,
                    suppressed,
                    "dedup memory full: forgetting deliveries younger than the window \
                     (raise edge_dedup_capacity); their duplicates would be delivered again"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{RecentDeliveries, Seen};

    #[test]
    fn records_of_one_message_are_distinct_deliveries() {
        let mut recent = RecentDeliveries::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        assert_eq!(recent.insert("m", 0, now), Seen::New);
        assert_eq!(recent.insert("m", 1, now), Seen::New);
        assert_eq!(recent.insert("m", 0, now), Seen::Duplicate);
        assert_eq!(recent.insert("m", 1, now), Seen::Duplicate);
        assert_eq!(recent.insert("", 0, now), Seen::New);
        assert_eq!(recent.insert("", 0, now), Seen::New);
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn deliveries_are_forgotten_after_the_window_not_before() {
        let mut recent = RecentDeliveries::new(Duration::from_secs(300), 100);
        let start = Instant::now();
        assert_eq!(recent.insert("a", 0, start), Seen::New);
        let almost = start + Duration::from_millis(299_999);
        assert_eq!(recent.insert("a", 0, almost), Seen::Duplicate);
        assert_eq!(recent.insert("b", 0, almost), Seen::New);
        let after = start + Duration::from_secs(300);
        assert_eq!(recent.insert("a", 0, after), Seen::New, "a's window ended");
        assert_eq!(recent.insert("b", 0, after), Seen::Duplicate, "b's did not");
    }

    #[test]
    fn the_memory_bound_forgets_the_oldest_first() {
        let mut recent = RecentDeliveries::new(Duration::from_secs(300), 2);
        let now = Instant::now();
        for id in ["a", "b", "c"] {
            assert_eq!(recent.insert(id, 0, now), Seen::New);
        }
        assert_eq!(recent.len(), 2);
        assert_eq!(recent.insert("c", 0, now), Seen::Duplicate);
        assert_eq!(recent.insert("a", 0, now), Seen::New, "a was evicted by c");
    }

    #[test]
    fn a_zero_window_or_capacity_disables_it() {
        let now = Instant::now();
        for mut recent in [
            RecentDeliveries::new(Duration::ZERO, 10),
            RecentDeliveries::new(Duration::from_secs(1), 0),
        ] {
            assert_eq!(recent.insert("a", 0, now), Seen::New);
            assert_eq!(recent.insert("a", 0, now), Seen::New);
            assert!(recent.is_empty());
        }
    }
}
