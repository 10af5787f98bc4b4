//! Buckets: connections sharded by key, each with its own rooms.
//!
//! goim's idea: instead of one global map behind one lock, N buckets chosen by a hash of the key, each
//! holding the channels of its keys and the part of every room made of them. Registering, leaving and
//! pushing touch one bucket; a room push visits every bucket (in parallel for large edges, see
//! `fanout`). Locks are held only for map operations: closing a replaced connection happens after the
//! lock is released, and only by flagging its outbox, so a takeover never blocks anyone.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::channel::Channel;

#[derive(Debug, Default)]
struct BucketInner {
    channels: HashMap<Arc<str>, Arc<Channel>>,
    /// room id -> (channel id -> channel)
    rooms: HashMap<Arc<str>, HashMap<u64, Arc<Channel>>>,
}

impl BucketInner {
    fn join(&mut self, room: &Arc<str>, channel: &Arc<Channel>) {
        self.rooms
            .entry(room.clone())
            .or_default()
            .insert(channel.id(), channel.clone());
    }

    fn leave(&mut self, room: &Arc<str>, channel_id: u64) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&channel_id);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}

/// All connections of the edge, sharded by key.
#[derive(Debug)]
pub struct Buckets {
    buckets: Box<[RwLock<BucketInner>]>,
    hasher: RandomState,
    count: AtomicUsize,
}

impl Buckets {
    /// Creates `count` buckets (at least one).
    pub fn new(count: usize) -> Self {
        Self {
            buckets: (0..count.max(1)).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            count: AtomicUsize::new(0),
        }
    }

    /// Number of buckets (the valid indices of [`Buckets::for_each`] and friends).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    fn bucket(&self, key: &str) -> &RwLock<BucketInner> {
        let index = self.hasher.hash_one(key) as usize % self.buckets.len();
        &self.buckets[index]
    }

    /// Adds a channel (and puts it in its room, if it has one). Returns the channel it replaced, whose
    /// owner must then be told to close; the caller does that after this returns (no lock held).
    pub fn register(&self, channel: &Arc<Channel>) -> Option<Arc<Channel>> {
        let room = channel.room();
        let mut bucket = self.bucket(channel.key()).write();
        let old = bucket
            .channels
            .insert(channel.key().clone(), channel.clone());
        if let Some(old) = &old
            && let Some(old_room) = old.room.lock().take()
        {
            bucket.leave(&old_room, old.id());
        }
        if let Some(room) = &room {
            bucket.join(room, channel);
        }
        if old.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        old
    }

    /// Removes a channel from its bucket and room, unless a newer connection took its key (then only
    /// its own room membership goes). Returns true if the key was still this channel's.
    pub fn unregister(&self, channel: &Channel) -> bool {
        let mut bucket = self.bucket(channel.key()).write();
        if let Some(room) = channel.room.lock().take() {
            bucket.leave(&room, channel.id());
        }
        let owned = bucket
            .channels
            .get(channel.key())
            .is_some_and(|current| current.id() == channel.id());
        if owned {
            bucket.channels.remove(channel.key());
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        owned
    }

    /// Moves a channel to `room` (`None` = no room). Returns the room it left.
    pub fn change_room(&self, channel: &Arc<Channel>, room: Option<Arc<str>>) -> Option<Arc<str>> {
        let mut bucket = self.bucket(channel.key()).write();
        let mut current = channel.room.lock();
        if let Some(old) = &*current {
            bucket.leave(old, channel.id());
        }
        // A replaced channel is no longer indexed: it must not re-enter a room.
        let indexed = bucket
            .channels
            .get(channel.key())
            .is_some_and(|c| c.id() == channel.id());
        if let (Some(room), true) = (&room, indexed) {
            bucket.join(room, channel);
        }
        std::mem::replace(&mut *current, room.filter(|_| indexed))
    }

    /// The channel holding `key`, if any.
    pub fn get(&self, key: &str) -> Option<Arc<Channel>> {
        self.bucket(key).read().channels.get(key).cloned()
    }

    /// Connections in `room` on this edge.
    pub fn room_online(&self, room: &str) -> usize {
        self.buckets
            .iter()
            .map(|b| b.read().rooms.get(room).map_or(0, HashMap::len))
            .sum()
    }

    /// Online count of every non-empty room on this edge.
    pub fn room_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for bucket in self.buckets.iter() {
            for (room, members) in &bucket.read().rooms {
                *counts.entry(room.to_string()).or_default() += members.len();
            }
        }
        counts
    }

    /// Authenticated connections on this edge.
    pub fn connection_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Calls `f` for every member of `room` in bucket `index`, under that bucket's read lock (`f` must
    /// not block).
    pub fn for_each_in_room(&self, index: usize, room: &str, mut f: impl FnMut(&Arc<Channel>)) {
        if let Some(members) = self.buckets[index].read().rooms.get(room) {
            members.values().for_each(&mut f);
        }
    }

    /// Calls `f` for every channel of bucket `index`, under its read lock (`f` must not block).
    pub fn for_each(&self, index: usize, mut f: impl FnMut(&Arc<Channel>)) {
        self.buckets[index]
            .read()
            .channels
            .values()
            .for_each(&mut f);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Buckets;
    use crate::auth::Identity;
    use crate::channel::Channel;

    fn channel(id: u64, key: &str, room: &str) -> Arc<Channel> {
        let identity = Identity {
            room: room.into(),
            ..Identity::default()
        };
        Arc::new(Channel::new(
            id,
            Arc::from(key),
            &identity,
            [127, 0, 0, 1].into(),
        ))
    }

    #[test]
    fn takeover_and_stale_disconnect() {
        let buckets = Buckets::new(4);
        let old = channel(1, "k", "live://1");
        assert!(buckets.register(&old).is_none());
        let new = channel(2, "k", "live://1");
        let replaced = buckets.register(&new).unwrap();
        assert_eq!(replaced.id(), 1);
        assert_eq!(buckets.room_online("live://1"), 1);
        assert_eq!(buckets.connection_count(), 1);
        assert!(
            !buckets.unregister(&old),
            "a stale disconnect keeps the new session"
        );
        assert_eq!(buckets.get("k").unwrap().id(), 2);
        assert_eq!(buckets.room_online("live://1"), 1);
        assert_eq!(buckets.change_room(&old, Some(Arc::from("live://2"))), None);
        assert_eq!(
            buckets.room_online("live://2"),
            0,
            "a replaced channel joins no room"
        );
        assert!(buckets.unregister(&new));
        assert_eq!(buckets.connection_count(), 0);
        assert!(buckets.room_counts().is_empty());
    }
}
