//! Remembering recent push ids to drop duplicates.
//!
//! Job workers deliver at least once (a retry after a lost response resends pushes the edge already
//! fanned out), so the edge keeps the last N message ids and skips any push it has seen. Bounded: the
//! oldest id is forgotten when a new one arrives at capacity.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// A bounded set of the most recent ids, oldest evicted first.
#[derive(Debug)]
pub struct RecentIds {
    seen: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl RecentIds {
    /// Remembers up to `capacity` ids (0 disables deduplication).
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Records `id`; returns false if it was already there (a duplicate). Empty ids are never
    /// duplicates.
    pub fn insert(&mut self, id: &str) -> bool {
        if id.is_empty() || self.capacity == 0 {
            return true;
        }
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        let id: Arc<str> = Arc::from(id);
        self.seen.insert(id.clone());
        self.order.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::RecentIds;

    #[test]
    fn forgets_the_oldest_at_capacity() {
        let mut ids = RecentIds::new(2);
        assert!(ids.insert("a"));
        assert!(!ids.insert("a"));
        assert!(ids.insert("b"));
        assert!(ids.insert("c"));
        assert!(ids.insert("a"), "a was evicted by c");
        assert!(!ids.insert("c"));
        assert!(ids.insert(""));
        assert!(ids.insert(""));
    }
}
