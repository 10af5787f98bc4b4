//! One authenticated connection as the rest of the edge sees it.
//!
//! A `Channel` is shared (`Arc`) between the bucket that indexes it, the rooms it is in, and the task
//! that owns the socket. Pushers only touch its outbox and watch set, so they never wait for the socket.
//! It is kept small: it exists once per idle connection.

use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::auth::Identity;
use crate::outbox::Outbox;

/// An authenticated connection: identity, room, watch set and send queue.
#[derive(Debug)]
pub struct Channel {
    id: u64,
    key: Arc<str>,
    mid: i64,
    platform: Box<str>,
    ip: IpAddr,
    /// Changed only under the lock of the channel's bucket, so bucket and channel always agree.
    pub(crate) room: Mutex<Option<Arc<str>>>,
    /// Sorted, deduplicated ops of the key/user/broadcast pushes this connection accepts.
    watch: Mutex<Vec<i32>>,
    /// Packets waiting for the socket.
    pub outbox: Outbox,
}

impl Channel {
    /// A channel for a verified identity (its room and watch set), not yet in any bucket; `key` is the
    /// identity's key or one the edge made up.
    pub fn new(id: u64, key: Arc<str>, identity: &Identity, ip: IpAddr) -> Self {
        let room = Some(identity.room.as_str())
            .filter(|room| !room.is_empty())
            .map(Arc::from);
        let channel = Self {
            id,
            key,
            mid: identity.mid,
            platform: identity.platform.as_str().into(),
            ip,
            room: Mutex::new(room),
            watch: Mutex::new(Vec::new()),
            outbox: Outbox::default(),
        };
        channel.watch(&identity.accepts);
        channel
    }

    /// Unique id of this connection on this edge; a later connection with the same key has another.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Connection key (the push address).
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// User id (0 = anonymous).
    pub fn mid(&self) -> i64 {
        self.mid
    }

    /// Platform the client declared.
    pub fn platform(&self) -> &str {
        &self.platform
    }

    /// Client address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Current room, if any.
    pub fn room(&self) -> Option<Arc<str>> {
        self.room.lock().clone()
    }

    /// The watch set, sorted.
    pub fn accepts(&self) -> Vec<i32> {
        self.watch.lock().clone()
    }

    /// True if a key/user/broadcast push with this op should reach the connection.
    pub fn accepts_op(&self, op: i32) -> bool {
        self.watch.lock().binary_search(&op).is_ok()
    }

    /// Adds ops to the watch set.
    pub fn watch(&self, ops: &[i32]) {
        let mut watch = self.watch.lock();
        watch.extend_from_slice(ops);
        watch.sort_unstable();
        watch.dedup();
        watch.shrink_to_fit();
    }

    /// Removes ops from the watch set.
    pub fn unwatch(&self, ops: &[i32]) {
        let mut watch = self.watch.lock();
        watch.retain(|op| !ops.contains(op));
        watch.shrink_to_fit();
    }
}
