//! One authenticated connection as the rest of the edge sees it.
//!
//! A `Channel` is shared (`Arc`) between the bucket that indexes it, the rooms it is in, and the task
//! that owns the socket. Pushers only touch its outbox and watch set, so they never wait for the socket.
//! It is kept small: it exists once per idle connection.
//!
//! What the client may change is bounded here: a room change ([`Channel::may_enter`]) must be granted
//! by the identity ([`crate::auth::rooms`]) and fit [`MAX_ROOM_LEN`]; the watch set never holds more
//! than [`MAX_WATCH_OPS`] operations ([`Channel::watch`]).
//!
//! A connection that opted in to rim's durable-delivery extension carries a boxed
//! [`RimState`] ([`Channel::rim`]): its stream floors (see [`crate::durable`]). A plain goim
//! connection carries none, and pays one pointer for the possibility.

use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use rim_proto::limits::{MAX_ROOM_LEN, MAX_WATCH_OPS};
use smallvec::SmallVec;

use crate::auth::{Identity, RoomGrant};
use crate::durable::RimState;
use crate::heartbeat::Deadline;
use crate::outbox::Outbox;
use rim_proto::durable::RimAuth;

/// Why a room change was refused; the text is sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomRefusal {
    /// The room id is longer than [`MAX_ROOM_LEN`] bytes.
    #[error("room id of {0} bytes is longer than {MAX_ROOM_LEN}")]
    TooLong(usize),
    /// The identity does not grant the room.
    #[error("room {0:?} is not granted to this connection (see the `rooms` of its token)")]
    Forbidden(String),
}

impl RoomRefusal {
    /// Stable label, sent as `reason` to the client.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLong(_) => "room_too_long",
            Self::Forbidden(_) => "room_forbidden",
        }
    }
}

/// A watch-set change refused because the set would hold this many operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the watch set would hold {0} operations, more than {MAX_WATCH_OPS}")]
pub struct WatchSetTooLarge(pub usize);

/// An authenticated connection: identity, room, watch set and send queue.
#[derive(Debug)]
pub struct Channel {
    id: u64,
    key: Arc<str>,
    mid: i64,
    /// Shared with every connection of the same platform (see [`crate::platforms`]).
    platform: Arc<str>,
    ip: IpAddr,
    /// Changed only under the lock of the channel's bucket, so bucket and channel always agree.
    pub(crate) room: Mutex<Rooms>,
    /// Other rooms the identity may enter.
    rooms: RoomGrant,
    /// Sorted, deduplicated ops of the key/user/broadcast pushes this connection accepts; a few
    /// are held inline, so the usual connection allocates nothing for them.
    watch: Mutex<WatchSet>,
    /// Packets waiting for the socket.
    pub outbox: Outbox,
    /// When the connection is closed unless it sends a heartbeat (see [`crate::heartbeat`]).
    heartbeat: Deadline,
    /// The durable-delivery state of a rim-aware connection.
    rim: Option<Box<RimState>>,
}

impl Channel {
    /// A channel for a verified identity (its room, room grant and watch set), not yet in any
    /// bucket; `key` is the identity's key or one the edge made up. The identity is trusted to be
    /// within bounds (the handshake checks them, [`Identity::check_bounds`]).
    pub fn new(id: u64, key: Arc<str>, identity: &Identity, ip: IpAddr) -> Self {
        let room: Option<Arc<str>> = Some(identity.room.as_str())
            .filter(|room| !room.is_empty())
            .map(Arc::from);
        let channel = Self {
            id,
            key,
            mid: identity.mid,
            platform: crate::platforms::shared(&identity.platform),
            ip,
            room: Mutex::new(Rooms {
                current: room.clone(),
                home: room,
            }),
            rooms: identity.rooms.clone(),
            watch: Mutex::new(WatchSet::new()),
            outbox: Outbox::default(),
            heartbeat: Deadline::default(),
            rim: None,
        };
        merge_ops(&mut channel.watch.lock(), &identity.accepts);
        channel
    }

    /// The same channel, rim-aware with the positions of its auth's `rim` field: it gets op-20
    /// pushes and is resumed (see [`crate::durable`]).
    /// Set before the channel is shared.
    pub fn rim_aware(mut self, auth: RimAuth) -> Self {
        self.rim = Some(Box::new(RimState::new(auth)));
        self
    }

    /// The durable-delivery state, if the connection is rim-aware.
    pub fn rim(&self) -> Option<&RimState> {
        self.rim.as_deref()
    }

    /// Whether the connection may move to `room` (empty: leave): its own room, a granted one, or none.
    pub fn may_enter(&self, room: &str) -> Result<(), RoomRefusal> {
        if room.len() > MAX_ROOM_LEN {
            return Err(RoomRefusal::TooLong(room.len()));
        }
        if room.is_empty()
            || self.room.lock().home.as_deref() == Some(room)
            || self.rooms.allows(room)
        {
            Ok(())
        } else {
            Err(RoomRefusal::Forbidden(room.to_owned()))
        }
    }

    /// Unique id of this connection on this edge; a later connection with the same key has another.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// [`Channel::id`] by reference, for the bucket's sets found by id.
    pub(crate) fn id_ref(&self) -> &u64 {
        &self.id
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

    /// The heartbeat deadline, moved forward by each heartbeat and watched by the edge's sweeper.
    pub fn heartbeat_deadline(&self) -> &Deadline {
        &self.heartbeat
    }

    /// Client address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Current room, if any.
    pub fn room(&self) -> Option<Arc<str>> {
        self.room.lock().current.clone()
    }

    /// The watch set, sorted.
    pub fn accepts(&self) -> Vec<i32> {
        self.watch.lock().to_vec()
    }

    /// True if a key/user/broadcast push with this op should reach the connection.
    pub fn accepts_op(&self, op: i32) -> bool {
        self.watch.lock().binary_search(&op).is_ok()
    }

    /// Adds ops to the watch set, unless it would then hold more than [`MAX_WATCH_OPS`] (the set is
    /// left as it was).
    pub fn watch(&self, ops: &[i32]) -> Result<(), WatchSetTooLarge> {
        let mut watch = self.watch.lock();
        let added = ops.iter().filter(|op| watch.binary_search(op).is_err());
        let mut new: Vec<i32> = added.copied().collect();
        new.sort_unstable();
        new.dedup();
        let size = watch.len() + new.len();
        if size > MAX_WATCH_OPS {
            return Err(WatchSetTooLarge(size));
        }
        merge_ops(&mut watch, &new);
        Ok(())
    }

    /// Removes ops from the watch set.
    pub fn unwatch(&self, ops: &[i32]) {
        let mut watch = self.watch.lock();
        watch.retain(|op| !ops.contains(op));
        watch.shrink_to_fit();
    }
}

/// The room a connection is in, and the one its identity names (always enterable again).
#[derive(Debug)]
pub(crate) struct Rooms {
    /// The room the connection is in.
    pub(crate) current: Option<Arc<str>>,
    home: Option<Arc<str>>,
}

impl Rooms {
    /// Makes `room`, the id as the bucket's room map holds it, the current room, and the home
    /// room too when it is the same room: every member of a room (in one bucket) then holds the
    /// same allocation of its id instead of a copy of its own.
    pub(crate) fn share(&mut self, room: Arc<str>) {
        if self.home.as_deref() == Some(&*room) {
            self.home = Some(room.clone());
        }
        self.current = Some(room);
    }
}

/// The ops a connection accepts: inline up to 4 (most clients name one or two).
type WatchSet = SmallVec<[i32; 4]>;

/// Adds `ops` to a sorted, deduplicated watch set.
fn merge_ops(watch: &mut WatchSet, ops: &[i32]) {
    watch.extend_from_slice(ops);
    watch.sort_unstable();
    watch.dedup();
    watch.shrink_to_fit();
}
