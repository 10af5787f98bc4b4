//! Buckets: connections sharded by key, each with its own rooms.
//!
//! goim's idea: instead of one global map behind one lock, N buckets chosen by a hash of the key, each
//! holding the channels of its keys and the part of every room made of them. Registering, leaving and
//! pushing touch one bucket; a room push visits every bucket (in parallel for large edges, see
//! `fanout`). Locks are held only for map operations: closing a replaced connection happens after the
//! lock is released, and only by flagging its outbox, so a takeover never blocks anyone.
//!
//! A connection has one entry in its bucket's key index and one in its room's member set, so both
//! are sets of `Arc<Channel>` found by the channel's own key or id (`ByKey`, `ById`) rather than
//! maps that would store the key or id a second time beside it. A room's members in one bucket share
//! the one allocation of the room's id that keys the room (`Rooms::share` in `crate::channel`)
//! instead of a copy each.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::channel::Channel;

/// A channel in the key index: hashed and compared by its key, and found by it.
#[derive(Debug)]
struct ByKey(Arc<Channel>);

impl Hash for ByKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self.0.key()).hash(state);
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for ByKey {}

impl Borrow<str> for ByKey {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

/// A room member: hashed and compared by the channel's id, and found by it.
#[derive(Debug)]
struct ById(Arc<Channel>);

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id() == other.0.id()
    }
}

impl Eq for ById {}

impl Borrow<u64> for ById {
    fn borrow(&self) -> &u64 {
        self.0.id_ref()
    }
}

#[derive(Debug, Default)]
struct BucketInner {
    channels: HashSet<ByKey>,
    /// room id -> members
    rooms: HashMap<Arc<str>, HashSet<ById>>,
}

impl BucketInner {
    /// Adds `channel` to `room`; returns the room's id as the room map holds it, for the channel
    /// to share.
    fn join(&mut self, room: &Arc<str>, channel: &Arc<Channel>) -> Arc<str> {
        let entry = self.rooms.entry(room.clone());
        let shared = entry.key().clone();
        entry.or_default().insert(ById(channel.clone()));
        shared
    }

    fn leave(&mut self, room: &Arc<str>, channel_id: u64) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&channel_id);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// True if the key index holds this very channel (not a newer one with its key).
    fn indexes(&self, channel: &Channel) -> bool {
        self.channels
            .get(&**channel.key())
            .is_some_and(|current| current.0.id() == channel.id())
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
        let mut bucket = self.bucket(channel.key()).write();
        let old = bucket
            .channels
            .replace(ByKey(channel.clone()))
            .map(|old| old.0);
        if let Some(old) = &old
            && let Some(old_room) = old.room.lock().current.take()
        {
            bucket.leave(&old_room, old.id());
        }
        let mut rooms = channel.room.lock();
        if let Some(room) = &rooms.current {
            let shared = bucket.join(room, channel);
            rooms.share(shared);
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
        if let Some(room) = channel.room.lock().current.take() {
            bucket.leave(&room, channel.id());
        }
        let owned = bucket.indexes(channel);
        if owned {
            bucket.channels.remove(&**channel.key());
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        owned
    }

    /// Moves a channel to `room` (`None` = no room). Returns the room it left.
    pub fn change_room(&self, channel: &Arc<Channel>, room: Option<Arc<str>>) -> Option<Arc<str>> {
        let mut bucket = self.bucket(channel.key()).write();
        let mut rooms = channel.room.lock();
        if let Some(old) = &rooms.current {
            bucket.leave(old, channel.id());
        }
        let previous = rooms.current.take();
        // A replaced channel is no longer indexed: it must not re-enter a room.
        if let Some(room) = room
            && bucket.indexes(channel)
        {
            let shared = bucket.join(&room, channel);
            rooms.share(shared);
        }
        previous
    }

    /// The channel holding `key`, if any.
    pub fn get(&self, key: &str) -> Option<Arc<Channel>> {
        let bucket = self.bucket(key).read();
        bucket.channels.get(key).map(|found| found.0.clone())
    }

    /// Connections in `room` on this edge.
    pub fn room_online(&self, room: &str) -> usize {
        self.buckets
            .iter()
            .map(|b| b.read().rooms.get(room).map_or(0, HashSet::len))
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
            members.iter().for_each(|member| f(&member.0));
        }
    }

    /// Calls `f` for every channel of bucket `index`, under its read lock (`f` must not block).
    pub fn for_each(&self, index: usize, mut f: impl FnMut(&Arc<Channel>)) {
        self.buckets[index]
            .read()
            .channels
            .iter()
            .for_each(|indexed| f(&indexed.0));
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

    #[test]
    fn members_of_a_room_share_its_id() {
        let buckets = Buckets::new(1);
        let a = channel(1, "a", "live://1");
        let b = channel(2, "b", "live://1");
        assert!(!Arc::ptr_eq(&a.room().unwrap(), &b.room().unwrap()));
        buckets.register(&a);
        buckets.register(&b);
        assert!(Arc::ptr_eq(&a.room().unwrap(), &b.room().unwrap()));
        assert!(
            b.may_enter("live://1").is_ok(),
            "the shared id is still the identity's own room"
        );
        let entered = Some(Arc::from("live://2"));
        buckets.change_room(&b, entered.clone());
        let c = channel(3, "c", "live://2");
        buckets.register(&c);
        assert!(Arc::ptr_eq(&b.room().unwrap(), &c.room().unwrap()));
        assert!(Arc::ptr_eq(&b.room().unwrap(), entered.as_ref().unwrap()));
        assert_eq!(
            buckets.change_room(&b, Some(Arc::from("live://1"))),
            entered
        );
        assert!(Arc::ptr_eq(&a.room().unwrap(), &b.room().unwrap()));
        assert_eq!(buckets.room_online("live://1"), 2);
        assert_eq!(buckets.room_online("live://2"), 1);
        assert!(buckets.unregister(&a) && buckets.unregister(&b) && buckets.unregister(&c));
        assert!(buckets.room_counts().is_empty());
    }
}
