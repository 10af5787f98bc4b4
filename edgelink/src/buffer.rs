//! What the control plane has yet to hear about this edge's sessions, coalesced per key.
//!
//! The control plane only needs the *latest state* of each key, and the store's rules make a short
//! summary of any history correct: a connect replaces whatever the key had (this buffer stamps events
//! with a clock that never goes backwards, so a later connect is never older), and a disconnect
//! removes only its own connection. So instead of a log of events, the buffer keeps one [`Entry`] per
//! key — the key's current connection, whether control has been told about it, whether it ended —
//! and a FIFO of keys with something unsent. A key then costs one event whatever happened to it:
//! connect (new connection), renew (room change or periodic renewal of a known one) or disconnect
//! (its connection ended after control was told). A connection that ends before it was ever sent
//! costs nothing.
//!
//! Memory is bounded: live entries are bounded by the edge's own connection limit (and are needed
//! anyway for renewals and for reporting everything again after control forgot the node), and
//! ended entries waiting for their disconnect are capped at `capacity`. Past the cap the oldest
//! waiting disconnect is dropped and counted: its session expires at the control plane by TTL, since
//! nothing renews it. The latest state of a live connection is never dropped.
//!
//! Rooms, keys and text fields are checked against the edge API's bounds here, so one odd client
//! (a room that is not `type://id`, a huge key) cannot get a whole batch refused.
//!
//! # Knowing when a connect has reached control
//!
//! Every unsent change has a position in the unsent FIFO, and [`Buffer::take`] always hands out the
//! lowest positions first, so once the batches holding everything taken up to position `p`
//! ([`Buffer::taken_up_to`]) are accepted, every change queued at a position `<= p` has reached
//! control. A connect's position ([`Buffer::position`]) is therefore all that is needed to wait for
//! it: the reporter publishes the highest accepted position and the auth reply waits until it passes
//! the connect's. A key that changes again before it is sent keeps its position (and a newer
//! connection of the key inherits it), so what is sent at that position is always the key's latest
//! state.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use rim_edge::channel::Channel;
use rim_proto::schema::session_event::Kind;
use rim_proto::schema::{RoomCount, SessionEvent};

use rim_proto::limits::{MAX_KEY_LEN, MAX_PLATFORM_LEN, MAX_ROOM_LEN};
/// Most accepted operations the edge API takes per session.
const MAX_ACCEPTS: usize = rim_proto::limits::MAX_WATCH_OPS;

/// A connection as the control plane should know it.
#[derive(Debug, Clone)]
struct Conn {
    id: u64,
    mid: i64,
    room: Option<Arc<str>>,
    platform: Box<str>,
    accepts: Box<[i32]>,
    ip: IpAddr,
    at_unix_ms: i64,
}

/// The buffered state of one key.
#[derive(Debug)]
struct Entry {
    conn: Conn,
    /// The connection is still open.
    alive: bool,
    /// A connect for `conn` was handed out for sending (it may be applied already).
    announced: bool,
    /// Position in the unsent FIFO, when something is unsent.
    dirty: Option<u64>,
    /// Position in the ended FIFO, when the connection ended and its disconnect is unsent.
    ended: Option<u64>,
}

/// What a call to the buffer did, for the reporter's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Noted {
    /// The event changed what control must hear.
    Queued,
    /// The event was about a connection that a newer one of its key replaced; nothing to tell.
    Superseded,
    /// The key cannot be reported (longer than the edge API allows).
    Unreportable,
}

/// Live figures for a node heartbeat.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Load {
    /// Open authenticated connections.
    pub connections: u64,
    /// Distinct IPs among them.
    pub ips: u64,
    /// The largest non-empty reportable rooms with their counts, by room.
    pub rooms: Vec<RoomCount>,
    /// Rooms left out of `rooms` (beyond the heartbeat's bound).
    pub omitted_rooms: u64,
    /// Connections in the rooms left out.
    pub omitted_room_connections: u64,
}

/// The coalescing session buffer of one edge.
#[derive(Debug)]
pub(crate) struct Buffer {
    entries: HashMap<Arc<str>, Entry>,
    /// Keys with an unsent change, in the order they first changed.
    dirty: BTreeMap<u64, Arc<str>>,
    /// Keys whose connection ended and whose disconnect is unsent, oldest first.
    ended: BTreeMap<u64, Arc<str>>,
    next_seq: u64,
    /// Highest FIFO position handed out by [`Buffer::take`].
    taken_up_to: u64,
    /// Latest event time handed out: event times never go backwards.
    last_at: i64,
    /// Most entries in `ended`.
    capacity: usize,
    rooms: HashMap<Arc<str>, u64>,
    ips: HashMap<IpAddr, u64>,
    live: u64,
    dropped: u64,
}

impl Buffer {
    /// An empty buffer keeping at most `capacity` ended connections waiting for their disconnect.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            dirty: BTreeMap::new(),
            ended: BTreeMap::new(),
            next_seq: 0,
            taken_up_to: 0,
            last_at: 0,
            capacity: capacity.max(1),
            rooms: HashMap::new(),
            ips: HashMap::new(),
            live: 0,
            dropped: 0,
        }
    }

    /// A connection authenticated at `now_ms`; it becomes its key's current connection unless a
    /// newer one already is.
    pub(crate) fn connected(&mut self, channel: &Channel, now_ms: i64) -> Noted {
        if channel.key().len() > MAX_KEY_LEN {
            return Noted::Unreportable;
        }
        if let Some(entry) = self.entries.get(channel.key())
            && entry.conn.id > channel.id()
        {
            return Noted::Superseded;
        }
        self.last_at = self.last_at.max(now_ms);
        let conn = Conn {
            id: channel.id(),
            mid: channel.mid(),
            room: channel.room().filter(|room| reportable_room(room)),
            platform: truncate(channel.platform(), MAX_PLATFORM_LEN).into(),
            accepts: channel.accepts().into_iter().take(MAX_ACCEPTS).collect(),
            ip: channel.ip(),
            at_unix_ms: self.last_at,
        };
        self.count_live(&conn, 1);
        let key = channel.key().clone();
        let previous = self.entries.insert(
            key.clone(),
            Entry {
                conn,
                alive: true,
                announced: false,
                dirty: None,
                ended: None,
            },
        );
        if let Some(previous) = previous {
            if previous.alive {
                self.count_live(&previous.conn, -1);
            }
            if let Some(seq) = previous.ended {
                self.ended.remove(&seq);
            }
            self.restore_dirty(&key, previous.dirty);
        }
        self.mark_dirty(&key);
        Noted::Queued
    }

    /// A connection ended. Whether it is the key's current connection is decided by connection id,
    /// not by the edge's `still_owned` flag: when a newer connection took the key but its connect
    /// has not reached the buffer yet, ending this one here (sending its disconnect before the
    /// newer connect) is still right.
    pub(crate) fn disconnected(&mut self, channel: &Channel) -> Noted {
        let key = channel.key();
        let Some(entry) = self.entries.get_mut(key) else {
            return Noted::Superseded;
        };
        if entry.conn.id != channel.id() || !entry.alive {
            return Noted::Superseded;
        }
        entry.alive = false;
        let conn = entry.conn.clone();
        let announced = entry.announced;
        self.count_live(&conn, -1);
        if !announced {
            // Control never heard of it: forget it entirely.
            if let Some(entry) = self.entries.remove(key)
                && let Some(seq) = entry.dirty
            {
                self.dirty.remove(&seq);
            }
            return Noted::Queued;
        }
        let seq = self.seq();
        self.ended.insert(seq, key.clone());
        if let Some(entry) = self.entries.get_mut(key) {
            entry.ended = Some(seq);
        }
        self.mark_dirty(key);
        self.evict_ended();
        Noted::Queued
    }

    /// A connection changed room.
    pub(crate) fn room_changed(&mut self, channel: &Channel) -> Noted {
        let key = channel.key();
        let room = channel.room().filter(|room| reportable_room(room));
        let Some(entry) = self.entries.get(key) else {
            return Noted::Superseded;
        };
        if entry.conn.id != channel.id() || !entry.alive {
            return Noted::Superseded;
        }
        let old = entry.conn.clone();
        self.count_live(&old, -1);
        if let Some(entry) = self.entries.get_mut(key) {
            entry.conn.room = room;
            let new = entry.conn.clone();
            self.count_live(&new, 1);
        }
        self.mark_dirty(key);
        Noted::Queued
    }

    /// Queues a renewal of every live session control knows; returns how many.
    pub(crate) fn renew_all(&mut self) -> usize {
        let keys: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.alive && e.announced && e.dirty.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        for key in &keys {
            self.mark_dirty(key);
        }
        keys.len()
    }

    /// Control forgot this node (it was unknown or declared dead): every live connection must be
    /// connected again. Ended ones keep their pending disconnect (harmless if control has nothing).
    pub(crate) fn reannounce_all(&mut self) -> usize {
        let keys: Vec<Arc<str>> = self
            .entries
            .iter_mut()
            .filter(|(_, e)| e.alive)
            .map(|(key, entry)| {
                entry.announced = false;
                key.clone()
            })
            .collect();
        for key in &keys {
            self.mark_dirty(key);
        }
        keys.len()
    }

    /// Takes up to `max` events to send, oldest change first, one per key.
    pub(crate) fn take(&mut self, max: usize) -> Vec<SessionEvent> {
        let mut events = Vec::with_capacity(max.min(self.dirty.len()));
        while events.len() < max {
            let Some((seq, key)) = self.dirty.pop_first() else {
                break;
            };
            self.taken_up_to = seq;
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            entry.dirty = None;
            let kind = match (entry.alive, entry.announced) {
                (true, false) => Kind::Connect,
                (true, true) => Kind::Renew,
                (false, _) => Kind::Disconnect,
            };
            events.push(event(kind, &key, &entry.conn));
            match kind {
                Kind::Disconnect => {
                    if let Some(seq) = entry.ended {
                        self.ended.remove(&seq);
                    }
                    self.entries.remove(&key);
                }
                _ => entry.announced = true,
            }
        }
        events
    }

    /// The position in the unsent FIFO of `key`'s unsent change, if it has one.
    pub(crate) fn position(&self, key: &str) -> Option<u64> {
        self.entries.get(key).and_then(|entry| entry.dirty)
    }

    /// The highest position [`Buffer::take`] has handed out: once what it handed out is accepted,
    /// every change at a position up to this one has reached control.
    pub(crate) fn taken_up_to(&self) -> u64 {
        self.taken_up_to
    }

    /// Keys with an unsent change.
    pub(crate) fn unsent(&self) -> usize {
        self.dirty.len()
    }

    /// Ended connections whose disconnect is unsent.
    pub(crate) fn ended(&self) -> usize {
        self.ended.len()
    }

    /// Disconnects dropped because too many were waiting, since the start.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Current live figures, listing at most `max_rooms` rooms: the largest (ties by name), so a
    /// heartbeat stays bounded whatever rooms clients choose; the rest are summed.
    pub(crate) fn load(&self, max_rooms: usize) -> Load {
        let mut largest: Vec<(&Arc<str>, u64)> = self
            .rooms
            .iter()
            .map(|(room, count)| (room, *count))
            .collect();
        let mut omitted_rooms = 0;
        let mut omitted_room_connections = 0u64;
        if largest.len() > max_rooms {
            largest.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            for (_, count) in largest.drain(max_rooms..) {
                omitted_rooms += 1;
                omitted_room_connections = omitted_room_connections.saturating_add(count);
            }
        }
        let mut rooms: Vec<RoomCount> = largest
            .into_iter()
            .map(|(room, count)| RoomCount {
                room: room.to_string(),
                count,
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        Load {
            connections: self.live,
            ips: self.ips.len() as u64,
            rooms,
            omitted_rooms,
            omitted_room_connections,
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Queues `key` unless it is queued already (it keeps its place).
    fn mark_dirty(&mut self, key: &Arc<str>) {
        let seq = self.next_seq + 1;
        if let Some(entry) = self.entries.get_mut(key)
            && entry.dirty.is_none()
        {
            entry.dirty = Some(seq);
            self.next_seq = seq;
            self.dirty.insert(seq, key.clone());
        }
    }

    /// Gives a replaced entry's queue position to its successor, so the key keeps its place.
    fn restore_dirty(&mut self, key: &Arc<str>, seq: Option<u64>) {
        if let (Some(seq), Some(entry)) = (seq, self.entries.get_mut(key)) {
            entry.dirty = Some(seq);
        }
    }

    /// Drops the oldest waiting disconnects beyond the capacity.
    fn evict_ended(&mut self) {
        while self.ended.len() > self.capacity {
            let Some((_, key)) = self.ended.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&key)
                && let Some(seq) = entry.dirty
            {
                self.dirty.remove(&seq);
            }
            self.dropped += 1;
        }
    }

    /// Adds (`delta` 1) or removes (-1) a live connection from the heartbeat figures.
    fn count_live(&mut self, conn: &Conn, delta: i8) {
        fn apply<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K, delta: i8) {
            if delta > 0 {
                *map.entry(key).or_default() += 1;
            } else if let Some(count) = map.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    map.remove(&key);
                }
            }
        }
        if let Some(room) = &conn.room {
            apply(&mut self.rooms, room.clone(), delta);
        }
        apply(&mut self.ips, conn.ip, delta);
        if delta > 0 {
            self.live += 1;
        } else {
            self.live = self.live.saturating_sub(1);
        }
    }
}

/// The wire event for a connection.
fn event(kind: Kind, key: &str, conn: &Conn) -> SessionEvent {
    SessionEvent {
        kind: kind.into(),
        key: key.to_owned(),
        mid: conn.mid,
        room: conn.room.as_deref().unwrap_or_default().to_owned(),
        platform: conn.platform.to_string(),
        accepts: conn.accepts.to_vec(),
        connection_id: conn.id,
        at_unix_ms: conn.at_unix_ms,
        ip: conn.ip.to_string(),
    }
}

/// Whether the edge API takes this room: `type://id`, both parts non-empty, bounded.
fn reportable_room(room: &str) -> bool {
    room.len() <= MAX_ROOM_LEN
        && room
            .split_once("://")
            .is_some_and(|(kind, id)| !kind.is_empty() && !id.is_empty())
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rim_edge::Identity;

    fn channel(id: u64, key: &str, room: &str) -> Channel {
        let identity = Identity {
            mid: 7,
            key: key.into(),
            room: room.into(),
            platform: "web".into(),
            accepts: vec![1000],
            ..Identity::default()
        };
        Channel::new(id, Arc::from(key), &identity, "10.0.0.1".parse().unwrap())
    }

    fn kinds(events: &[SessionEvent]) -> Vec<(Kind, String, u64)> {
        events
            .iter()
            .map(|e| (e.kind(), e.key.clone(), e.connection_id))
            .collect()
    }

    #[test]
    fn a_connection_that_ends_before_it_is_sent_costs_nothing() {
        let mut buffer = Buffer::new(10);
        let a = channel(1, "a", "live://1");
        buffer.connected(&a, 100);
        buffer.disconnected(&a);
        assert!(buffer.take(10).is_empty());
        assert_eq!(buffer.load(usize::MAX), Load::default());
    }

    #[test]
    fn connect_disconnect_connect_of_a_key_sends_only_the_latest_connection() {
        let mut buffer = Buffer::new(10);
        let first = channel(1, "k", "");
        buffer.connected(&first, 100);
        assert_eq!(kinds(&buffer.take(10)), [(Kind::Connect, "k".into(), 1)]);
        buffer.disconnected(&first);
        let second = channel(2, "k", "");
        buffer.connected(&second, 90); // the clock went back: the event time must not
        let events = buffer.take(10);
        assert_eq!(kinds(&events), [(Kind::Connect, "k".into(), 2)]);
        assert_eq!(events[0].at_unix_ms, 100);
        assert_eq!(buffer.load(usize::MAX).connections, 1);
    }

    #[test]
    fn late_events_of_a_replaced_connection_are_ignored() {
        let mut buffer = Buffer::new(10);
        let old = channel(1, "k", "");
        let new = channel(2, "k", "");
        buffer.connected(&new, 100);
        assert_eq!(buffer.connected(&old, 100), Noted::Superseded);
        assert_eq!(buffer.disconnected(&old), Noted::Superseded);
        assert_eq!(buffer.room_changed(&old), Noted::Superseded);
        assert_eq!(kinds(&buffer.take(10)), [(Kind::Connect, "k".into(), 2)]);
    }

    #[test]
    fn a_replaced_connection_ending_before_its_successor_is_noted_still_ends_cleanly() {
        let mut buffer = Buffer::new(10);
        let old = channel(1, "k", "");
        buffer.connected(&old, 100);
        buffer.take(10);
        // The edge replaced `old` with `new`, but `old`'s end reaches the buffer first.
        buffer.disconnected(&old);
        buffer.connected(&channel(2, "k", ""), 100);
        assert_eq!(kinds(&buffer.take(10)), [(Kind::Connect, "k".into(), 2)]);
        assert_eq!(
            (buffer.ended(), buffer.load(usize::MAX).connections),
            (0, 1)
        );
    }

    #[test]
    fn room_changes_and_renewals_of_a_known_connection_are_renews_with_the_current_room() {
        let mut buffer = Buffer::new(10);
        let a = channel(1, "a", "live://1");
        buffer.connected(&a, 100);
        buffer.take(10);
        buffer.room_changed(&channel(1, "a", "live://2"));
        assert_eq!(buffer.renew_all(), 0, "already queued");
        let events = buffer.take(10);
        assert_eq!(kinds(&events), [(Kind::Renew, "a".into(), 1)]);
        assert_eq!(events[0].room, "live://2");
        assert_eq!(
            buffer.load(usize::MAX).rooms,
            [RoomCount {
                room: "live://2".into(),
                count: 1
            }]
        );
        assert_eq!(buffer.renew_all(), 1);
        assert_eq!(kinds(&buffer.take(10)), [(Kind::Renew, "a".into(), 1)]);
    }

    #[test]
    fn a_heartbeat_lists_the_largest_rooms_and_sums_the_rest() {
        let mut buffer = Buffer::new(10);
        let mut id = 0;
        for (room, members) in [
            ("live://big", 3),
            ("live://mid", 2),
            ("live://a", 1),
            ("live://b", 1),
        ] {
            for _ in 0..members {
                id += 1;
                buffer.connected(&channel(id, &format!("k{id}"), room), 100);
            }
        }
        let load = buffer.load(2);
        let listed: Vec<(&str, u64)> = load
            .rooms
            .iter()
            .map(|r| (r.room.as_str(), r.count))
            .collect();
        assert_eq!(listed, [("live://big", 3), ("live://mid", 2)]);
        assert_eq!((load.omitted_rooms, load.omitted_room_connections), (2, 2));
        assert_eq!(load.connections, 7);
        let all = buffer.load(usize::MAX);
        assert_eq!((all.rooms.len(), all.omitted_rooms), (4, 0));
    }

    #[test]
    fn a_room_that_is_not_type_id_is_reported_as_no_room() {
        let mut buffer = Buffer::new(10);
        buffer.connected(&channel(1, "a", "lobby"), 100);
        assert_eq!(buffer.take(10)[0].room, "");
        assert!(buffer.load(usize::MAX).rooms.is_empty());
        assert_eq!(
            buffer.connected(&channel(2, &"k".repeat(300), ""), 100),
            Noted::Unreportable
        );
    }

    #[test]
    fn waiting_disconnects_are_capped_oldest_dropped_and_live_connections_always_kept() {
        let mut buffer = Buffer::new(2);
        let channels: Vec<Channel> = (1..=5).map(|i| channel(i, &format!("k{i}"), "")).collect();
        for c in &channels {
            buffer.connected(c, 100);
        }
        buffer.take(100);
        for c in &channels[..4] {
            buffer.disconnected(c);
        }
        buffer.connected(&channel(6, "k6", ""), 100);
        assert_eq!((buffer.ended(), buffer.dropped()), (2, 2));
        assert_eq!(
            kinds(&buffer.take(100)),
            [
                (Kind::Disconnect, "k3".into(), 3),
                (Kind::Disconnect, "k4".into(), 4),
                (Kind::Connect, "k6".into(), 6),
            ]
        );
        assert_eq!(buffer.load(usize::MAX).connections, 2);
    }

    #[test]
    fn after_control_forgets_the_node_every_live_connection_is_connected_again() {
        let mut buffer = Buffer::new(10);
        let a = channel(1, "a", "");
        let b = channel(2, "b", "");
        buffer.connected(&a, 100);
        buffer.connected(&b, 100);
        buffer.take(100);
        buffer.disconnected(&b);
        assert_eq!(buffer.reannounce_all(), 1);
        assert_eq!(
            kinds(&buffer.take(100)),
            [
                (Kind::Disconnect, "b".into(), 2),
                (Kind::Connect, "a".into(), 1)
            ]
        );
    }

    #[test]
    fn a_connect_is_taken_once_everything_up_to_its_position_is() {
        let mut buffer = Buffer::new(10);
        let a = channel(1, "a", "");
        buffer.connected(&a, 100);
        let at_a = buffer.position("a").unwrap();
        buffer.connected(&channel(2, "b", ""), 100);
        let at_b = buffer.position("b").unwrap();
        assert!(at_b > at_a);
        buffer.take(1);
        assert_eq!(buffer.taken_up_to(), at_a);
        // A newer connection of "b" before it is sent keeps b's place.
        buffer.connected(&channel(3, "b", ""), 100);
        assert_eq!(buffer.position("b"), Some(at_b));
        // While "a"'s connect is in flight, a room change of "a" queues behind "b".
        buffer.room_changed(&a);
        let again = buffer.position("a").unwrap();
        assert!(again > at_b);
        assert_eq!(
            kinds(&buffer.take(1)),
            [(Kind::Connect, "b".into(), 3)],
            "the latest connection of b, at b's position"
        );
        assert_eq!(buffer.taken_up_to(), at_b);
        buffer.take(10);
        assert_eq!(buffer.taken_up_to(), again);
        assert_eq!(buffer.position("a"), None);
    }

    #[test]
    fn take_respects_the_batch_size_and_keeps_the_order_of_first_change() {
        let mut buffer = Buffer::new(10);
        for i in 1..=3 {
            buffer.connected(&channel(i, &format!("k{i}"), ""), 100);
        }
        buffer.room_changed(&channel(1, "k1", ""));
        assert_eq!(buffer.take(2).len(), 2);
        assert_eq!(kinds(&buffer.take(2)), [(Kind::Connect, "k3".into(), 3)]);
        assert_eq!(buffer.unsent(), 0);
    }
}
