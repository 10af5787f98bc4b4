//! Durable delivery on the client side: positions kept across reconnects, duplicates dropped,
//! acks sent, resume answers reported.
//!
//! A connection opts in to rim's protocol extension (`docs/rim-protocol-extension.md`, codec
//! [`rim_proto::durable`]) with a `rim` field in its auth JSON carrying the last position it
//! *processed* in each stream. From then on the edge sends pushes as op 20 (message id, stream,
//! position, replay flag) and, after the auth reply and any replay, one op-21 answer per stream.
//! This module is the bookkeeping a [`Session`](crate::Session) started with
//! [`Session::start_durable`](crate::Session::start_durable) does with them:
//!
//! - **Two marks per stream.** `processed` is what the app has finished with: it is what the next
//!   auth asks to resume from, what op 22 acks (user stream only) and what the [`PositionStore`]
//!   keeps for the next run of the app. `delivered` is the highest push handed to the app; a push at
//!   or below it (same epoch) is a duplicate (replayed and live, or sent again after a retry) and
//!   is dropped, so the app never sees one push twice in the life of a session. After a reconnect
//!   the edge replays from `processed`; what it resends up to `delivered` is dropped.
//! - **Resume answers.** "Not resumed" (epoch changed, expired, ...) means the history is gone: the
//!   client adopts the answered head at once (the app is told, and reloads from its backend). The
//!   one exception is "unavailable" (the store did not answer): the history may be intact, so the
//!   client keeps its own position, and a later connection may resume from it.
//!   "Resumed" carries the head the replay reached; the client adopts it once the app has processed
//!   everything it was handed, which matters for a client that had no position yet and for the
//!   numbers of sibling devices' pushes it never sees.
//! - **Rooms.** A room position belongs to a room name. The auth sends it only when the auth puts
//!   the connection in that same room (its JSON `room_id`, or the token's `room_id`/`room` claim); a
//!   confirmed room change (op 13) starts the new room from the head its op-21 answer names.
//! - **Acks** are cumulative and coalesced: one op 22 for the user stream once [`Durable::ack_every`]
//!   pushes were processed, or [`Durable::ack_delay`] after the first unacked one. Room pushes are
//!   never acked (the room window is for short gaps, not for delivery guarantees).

use crate::error::ClientError;
use rim_proto::durable::{
    DurablePush, NotResumedReason, Position, ResumeAnswer, ResumeOutcome, StreamKind,
};
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long after the first unacked processed push an ack is sent, at the latest.
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_millis(50);
/// After this many processed user pushes an ack is sent without waiting for the delay.
pub const DEFAULT_ACK_EVERY: u32 = 64;

/// The last processed position of a room's stream, with the room it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomPosition {
    /// The room (`type://id`).
    pub room: String,
    /// Where the client stands in its stream.
    pub position: Position,
}

/// What a client has processed, per stream: what it resumes from after a reconnect or a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Positions {
    /// The user stream (pushes to the user and to this device's key).
    pub user: Option<Position>,
    /// The stream of the room the client was last in.
    pub room: Option<RoomPosition>,
}

/// Where a durable session keeps its [`Positions`] between runs of the app (a file, a database
/// row, the platform's key-value store). `save` is called after every change (each processed
/// push), from the task that made it, so it should be cheap; a store that writes to disk may
/// write behind. A store keeps one client's positions: give each user or device its own.
pub trait PositionStore: Send + Sync {
    /// The positions saved by an earlier run, read when the session starts.
    fn load(&self) -> Positions;
    /// Keeps `positions` (replacing what was there).
    fn save(&self, positions: &Positions);
}

/// The default [`PositionStore`]: positions live as long as the store (share one `Arc` between
/// sessions to carry them from one session to the next inside a process).
#[derive(Debug, Default)]
pub struct MemoryPositions(Mutex<Positions>);

impl MemoryPositions {
    /// A store starting at `positions`.
    pub fn new(positions: Positions) -> Self {
        Self(Mutex::new(positions))
    }

    /// What the store holds now.
    pub fn get(&self) -> Positions {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl PositionStore for MemoryPositions {
    fn load(&self) -> Positions {
        self.get()
    }

    fn save(&self, positions: &Positions) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = positions.clone();
    }
}

/// Options of a durable session (see [`Session::start_durable`](crate::Session::start_durable)).
#[derive(Clone)]
pub struct Durable {
    pub(crate) store: Arc<dyn PositionStore>,
    pub(crate) manual: bool,
    pub(crate) ack_delay: Duration,
    pub(crate) ack_every: u32,
}

impl Default for Durable {
    fn default() -> Self {
        Self {
            store: Arc::new(MemoryPositions::default()),
            manual: false,
            ack_delay: DEFAULT_ACK_DELAY,
            ack_every: DEFAULT_ACK_EVERY,
        }
    }
}

impl Durable {
    /// Automatic acks, positions kept in memory, acks coalesced over 50 ms or 64 pushes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps positions in `store` (loaded at start, saved after every change).
    pub fn store(mut self, store: Arc<dyn PositionStore>) -> Self {
        self.store = store;
        self
    }

    /// A push counts as processed only when the app says so with
    /// [`Session::ack`](crate::Session::ack) (cumulative: it covers every earlier push of its
    /// stream), not when the app asks for the next event. For apps that hand pushes to other tasks.
    pub fn manual_acks(mut self) -> Self {
        self.manual = true;
        self
    }

    /// The longest an ack waits for more pushes to cover (default 50 ms).
    pub fn ack_delay(mut self, delay: Duration) -> Self {
        self.ack_delay = delay;
        self
    }

    /// Processed user pushes after which an ack goes out at once (default 64; at least 1).
    pub fn ack_every(mut self, pushes: u32) -> Self {
        self.ack_every = pushes.max(1);
        self
    }
}

/// What the session task should do about acks after the app processed a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckDue {
    /// Nothing new to ack.
    No,
    /// Send within the ack delay.
    Soon,
    /// Enough pushes waited: send now.
    Now,
}

/// The marks of one stream.
#[derive(Debug, Default, Clone, Copy)]
struct Marks {
    processed: Option<Position>,
    delivered: Option<Position>,
    /// A "resumed" head to adopt once `processed` reaches `delivered`.
    head: Option<Position>,
}

impl Marks {
    fn starting_at(position: Option<Position>) -> Self {
        Self {
            processed: position,
            delivered: position,
            head: None,
        }
    }

    /// Whether `position` is at or below the highest push handed out (same epoch).
    fn seen(&self, position: Position) -> bool {
        self.delivered
            .is_some_and(|mark| mark.epoch == position.epoch && position.seq <= mark.seq)
    }

    /// Moves `processed` to `position` unless it is behind (a push of another epoch moves it: the
    /// stream's history was reset). Returns whether it moved.
    fn process(&mut self, position: Position) -> bool {
        let moved = self
            .processed
            .is_none_or(|mark| mark.epoch != position.epoch || mark.seq < position.seq);
        if moved {
            self.processed = Some(position);
        }
        self.adopt_head();
        moved
    }

    /// Adopts the pending head when nothing handed out is left unprocessed.
    fn adopt_head(&mut self) {
        if self.processed != self.delivered {
            return;
        }
        if let Some(head) = self.head.take()
            && self
                .processed
                .is_none_or(|mark| mark.epoch != head.epoch || mark.seq < head.seq)
        {
            self.processed = Some(head);
            self.delivered = Some(head);
        }
    }
}

/// A durable session's positions and ack state, shared by the session task (which sees what
/// arrives) and the owner's handle (which knows what the app processed).
pub(crate) struct Tracker {
    store: Arc<dyn PositionStore>,
    user: Marks,
    room: Marks,
    /// The room the connection is in, when the client knows its name.
    room_name: Option<String>,
    /// User pushes processed since the last ack.
    unacked: u32,
    /// The last position sent in an op 22.
    acked: Option<Position>,
    ack_every: u32,
}

/// A [`Tracker`] behind the lock both sides take.
pub(crate) type SharedTracker = Arc<Mutex<Tracker>>;

impl Tracker {
    /// Starts from what `durable`'s store saved.
    pub(crate) fn new(durable: &Durable) -> Self {
        let saved = durable.store.load();
        Self {
            store: durable.store.clone(),
            user: Marks::starting_at(saved.user),
            room_name: saved.room.as_ref().map(|room| room.room.clone()),
            room: Marks::starting_at(saved.room.map(|room| room.position)),
            unacked: 0,
            acked: None,
            ack_every: durable.ack_every,
        }
    }

    /// Locks a shared tracker (a panic elsewhere leaves the marks usable).
    pub(crate) fn lock(shared: &SharedTracker) -> std::sync::MutexGuard<'_, Tracker> {
        shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is processed now, as the store keeps it.
    pub(crate) fn positions(&self) -> Positions {
        Positions {
            user: self.user.processed,
            room: self
                .room_name
                .clone()
                .zip(self.room.processed)
                .map(|(room, position)| RoomPosition { room, position }),
        }
    }

    fn save(&self) {
        self.store.save(&self.positions());
    }

    /// The auth body for the next connection: `body` with the `rim` field asking to resume from
    /// the processed positions. The room position goes along only if the auth enters its room.
    pub(crate) fn auth_body(&mut self, body: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut auth = auth_object(body)?;
        let auth_room = auth_room(&auth);
        if auth_room != self.room_name {
            self.enter_room(auth_room);
        }
        let mut rim = Map::new();
        rim.insert("v".into(), json!(rim_proto::durable::VERSION));
        if let Some(user) = self.user.processed {
            rim.insert("user".into(), position_json(user));
        }
        if self.room_name.is_some()
            && let Some(room) = self.room.processed
        {
            rim.insert("room".into(), position_json(room));
        }
        auth.insert("rim".into(), Value::Object(rim));
        Ok(Value::Object(auth).to_string().into_bytes())
    }

    /// Whether `push` is new (hand it to the app) rather than a duplicate (drop it).
    pub(crate) fn deliver(&mut self, push: &DurablePush) -> bool {
        let marks = self.marks(push.kind);
        if marks.seen(push.position) {
            return false;
        }
        marks.delivered = Some(push.position);
        true
    }

    /// Applies a resume answer; a "not resumed" head is adopted (and saved) at once.
    pub(crate) fn resumed(&mut self, answer: &ResumeAnswer) -> AckDue {
        let marks = self.marks(answer.kind);
        match answer.outcome {
            // The store did not answer: the history may be intact, so the client keeps its own
            // position (the edge answers with it anyway, or with the origin when it had none).
            ResumeOutcome::NotResumed(NotResumedReason::Unavailable) => {}
            ResumeOutcome::NotResumed(_) => {
                *marks = Marks::starting_at(Some(answer.position));
            }
            ResumeOutcome::Resumed(_) => {
                marks.head = Some(answer.position);
                marks.adopt_head();
            }
        }
        self.save();
        self.ack_due()
    }

    /// The server confirmed a move to `room`: its stream starts over (its op-21 answer gives the
    /// head).
    pub(crate) fn room_confirmed(&mut self, room: &str) {
        self.enter_room((!room.is_empty()).then(|| room.to_owned()));
        self.save();
    }

    fn enter_room(&mut self, room: Option<String>) {
        self.room_name = room;
        self.room = Marks::default();
    }

    /// The app processed `push` (and every earlier push of its stream).
    pub(crate) fn processed(&mut self, kind: StreamKind, position: Position) -> AckDue {
        if !self.marks(kind).process(position) {
            return AckDue::No;
        }
        self.save();
        if kind == StreamKind::User {
            self.unacked = self.unacked.saturating_add(1);
        }
        self.ack_due()
    }

    fn ack_due(&self) -> AckDue {
        match self.user.processed {
            Some(position) if self.acked != Some(position) => {
                if self.unacked >= self.ack_every {
                    AckDue::Now
                } else {
                    AckDue::Soon
                }
            }
            _ => AckDue::No,
        }
    }

    /// The user position to ack now, if it moved since the last ack (which it becomes).
    pub(crate) fn take_ack(&mut self) -> Option<Position> {
        let position = self.user.processed.filter(|p| self.acked != Some(*p))?;
        self.acked = Some(position);
        self.unacked = 0;
        Some(position)
    }

    /// A new connection: nothing is acked on it yet, so the processed position is acked again
    /// (covering an ack the last connection may have lost). Returns what to do about it.
    pub(crate) fn reconnected(&mut self) -> AckDue {
        self.acked = None;
        self.ack_due()
    }

    fn marks(&mut self, kind: StreamKind) -> &mut Marks {
        match kind {
            StreamKind::User => &mut self.user,
            StreamKind::Room => &mut self.room,
        }
    }
}

/// `position` as the auth field writes it.
fn position_json(position: Position) -> Value {
    json!({"epoch": position.epoch, "seq": position.seq})
}

/// The auth body as a JSON object: goim's JSON as it is, a bare token as `{"token": ...}`.
fn auth_object(body: &[u8]) -> Result<Map<String, Value>, ClientError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ClientError::AuthBody(
            "a durable session needs an auth body that is a JSON object or a token".into(),
        )),
        Err(_) => {
            let token = std::str::from_utf8(body)
                .map_err(|_| ClientError::AuthBody("the auth body is not UTF-8 text".into()))?;
            let mut map = Map::new();
            map.insert("token".into(), Value::String(token.trim().to_owned()));
            Ok(map)
        }
    }
}

/// The room the auth puts the connection in, if the client can tell: the JSON's `room_id`, else the
/// `room_id` (or `room`) claim of its token, read without checking the signature (the edge does).
fn auth_room(auth: &Map<String, Value>) -> Option<String> {
    let named = |object: &Map<String, Value>, field: &str| {
        object
            .get(field)
            .and_then(Value::as_str)
            .filter(|room| !room.is_empty())
            .map(str::to_owned)
    };
    if let Some(room) = named(auth, "room_id") {
        return Some(room);
    }
    let token = auth.get("token")?.as_str()?;
    let payload = base64url_decode(token.split('.').nth(1)?)?;
    let claims = serde_json::from_slice::<Map<String, Value>>(&payload).ok()?;
    named(&claims, "room_id").or_else(|| named(&claims, "room"))
}

/// Decodes unpadded (or padded) base64url, as JWTs carry their claims.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0u32);
    for byte in text.trim_end_matches('=').bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        bits = bits << 6 | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

/// The auth body that opts a [`Connection`](crate::Connection) in to durable delivery from
/// `positions` (for programs that drive connections themselves; a durable
/// [`Session`](crate::Session) does this on every attempt). `body` is goim's auth JSON or a bare
/// token; the room position is included only if `body` names its room.
pub fn opt_in(body: &[u8], positions: &Positions) -> Result<Vec<u8>, ClientError> {
    let mut tracker =
        Tracker::new(&Durable::new().store(Arc::new(MemoryPositions::new(positions.clone()))));
    tracker.auth_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rim_proto::durable::{MessageId, NotResumedReason};

    fn at(epoch: u64, seq: u64) -> Position {
        Position::new(epoch, seq).unwrap()
    }

    fn push(kind: StreamKind, position: Position) -> DurablePush {
        DurablePush {
            kind,
            replay: false,
            operation: 1000,
            message_id: MessageId([7; 16]),
            position,
            body: Bytes::new(),
        }
    }

    fn rim_field(body: &[u8]) -> Value {
        serde_json::from_slice::<Value>(body).unwrap()["rim"].clone()
    }

    #[test]
    fn the_auth_field_carries_processed_positions_and_the_room_only_for_its_room() {
        let saved = Positions {
            user: Some(at(0, 41)),
            room: Some(RoomPosition {
                room: "live://1000".into(),
                position: at(1_764_590_400_000, 7),
            }),
        };
        let same = opt_in(br#"{"mid":123,"room_id":"live://1000"}"#, &saved).unwrap();
        assert_eq!(
            rim_field(&same),
            json!({"v": 1, "user": {"epoch": 0, "seq": 41},
                   "room": {"epoch": 1_764_590_400_000_u64, "seq": 7}})
        );
        let other = opt_in(br#"{"mid":123,"room_id":"live://2"}"#, &saved).unwrap();
        assert_eq!(
            rim_field(&other),
            json!({"v": 1, "user": {"epoch": 0, "seq": 41}})
        );
        let fresh = opt_in(br#"{"mid":123}"#, &Positions::default()).unwrap();
        assert_eq!(rim_field(&fresh), json!({"v": 1}));
    }

    #[test]
    fn a_bare_token_is_wrapped_and_its_room_claim_read() {
        // {"room_id":"live://1000"} as a JWT payload (base64url, unpadded).
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJyb29tX2lkIjoibGl2ZTovLzEwMDAifQ.c2ln";
        let saved = Positions {
            user: None,
            room: Some(RoomPosition {
                room: "live://1000".into(),
                position: at(3, 4),
            }),
        };
        let body = opt_in(token.as_bytes(), &saved).unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["token"], token);
        assert_eq!(json["rim"], json!({"v": 1, "room": {"epoch": 3, "seq": 4}}));
        assert!(matches!(
            opt_in(b"[1, 2]", &saved),
            Err(ClientError::AuthBody(_))
        ));
    }

    #[test]
    fn duplicates_are_dropped_and_heads_adopted_once_everything_handed_out_is_processed() {
        let store = Arc::new(MemoryPositions::default());
        let mut tracker = Tracker::new(&Durable::new().store(store.clone()));
        let p5 = push(StreamKind::User, at(0, 5));
        assert!(tracker.deliver(&p5));
        assert!(!tracker.deliver(&p5), "a second delivery is a duplicate");
        assert!(!tracker.deliver(&push(StreamKind::User, at(0, 4))));
        assert!(
            tracker.deliver(&push(StreamKind::User, at(1, 1))),
            "new epoch"
        );
        // "resumed" at (1, 9) while (1, 1) is handed out but not processed: adopted later.
        let answer = ResumeAnswer {
            kind: StreamKind::User,
            outcome: ResumeOutcome::Resumed(1),
            position: at(1, 9),
        };
        tracker.resumed(&answer);
        assert_eq!(store.get().user, None);
        assert_eq!(tracker.processed(StreamKind::User, at(1, 1)), AckDue::Soon);
        assert_eq!(store.get().user, Some(at(1, 9)));
        assert_eq!(tracker.take_ack(), Some(at(1, 9)));
        assert_eq!(tracker.take_ack(), None, "nothing new to ack");
        // "not resumed" is adopted at once, whatever was handed out.
        tracker.resumed(&ResumeAnswer {
            kind: StreamKind::User,
            outcome: ResumeOutcome::NotResumed(NotResumedReason::Expired),
            position: at(2, 100),
        });
        assert_eq!(store.get().user, Some(at(2, 100)));
        assert!(!tracker.deliver(&push(StreamKind::User, at(2, 100))));
        // ... except "unavailable": the client keeps its position (here the edge said the origin).
        tracker.resumed(&ResumeAnswer {
            kind: StreamKind::User,
            outcome: ResumeOutcome::NotResumed(NotResumedReason::Unavailable),
            position: Position::ORIGIN,
        });
        assert_eq!(store.get().user, Some(at(2, 100)));
    }

    #[test]
    fn acks_come_at_once_after_enough_pushes_and_never_for_rooms() {
        let mut tracker = Tracker::new(&Durable::new().ack_every(2));
        assert_eq!(tracker.processed(StreamKind::Room, at(0, 1)), AckDue::No);
        assert_eq!(tracker.processed(StreamKind::User, at(0, 1)), AckDue::Soon);
        assert_eq!(tracker.processed(StreamKind::User, at(0, 2)), AckDue::Now);
        assert_eq!(tracker.processed(StreamKind::User, at(0, 2)), AckDue::No);
        assert_eq!(tracker.take_ack(), Some(at(0, 2)));
        assert_eq!(
            tracker.reconnected(),
            AckDue::Soon,
            "acked again on a new connection"
        );
    }

    #[test]
    fn base64url_decodes_jwt_parts() {
        assert_eq!(base64url_decode("aGk").unwrap(), b"hi");
        assert_eq!(base64url_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64url_decode("_-8").unwrap(), [0xff, 0xef]);
        assert!(base64url_decode("a+b").is_none());
    }
}
