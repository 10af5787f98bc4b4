//! rim's durable-delivery extension of the goim protocol: positions, acks and resume.
//!
//! goim delivers a push once, to whoever is connected at that instant. A rim-aware client asks for
//! more when it authenticates: its auth JSON carries a `rim` field ([`RimAuth`]), and from then on
//! that one connection gets every push as an op-[`PUSH`] packet naming the push's message id and its
//! position in a stream, acks what it processed (op [`ACK`], cumulative) and, when it reconnects with
//! its last positions, receives what it missed followed by one op-[`RESUME`] answer per stream
//! ("resumed n" or "not resumed: reason", so the app knows to reload). A connection that never sends
//! the field (every goim client) sees exactly the bytes it sees today: the edge treats ops 20-29
//! from it as ordinary upstream messages, and sends it plain goim pushes.
//!
//! ## Streams and positions
//! - The **user stream**: every push to a user or to one of the user's keys gets the next number of
//!   that user's sequence, allocated when the push is stored in the user's inbox (rim-store's
//!   `inbox`). All the user's devices see the same numbers; a device skips the numbers of pushes
//!   meant for its sibling keys, so the numbers it sees increase but need not be consecutive.
//! - The **room stream**: every push to a room gets the next number of that room's sequence; it is
//!   kept for a short window (minutes) so a client that lost its connection briefly resumes.
//! - A [`Position`] is `(epoch, seq)`: the epoch names one life of the stream's history. When a
//!   history is reset, its epoch changes and a client's old position is detectably foreign rather than
//!   silently wrong. [`Position::ORIGIN`] (`0, 0`) means "nothing seen yet" in a stream's first life.
//! - Every number is at most [`MAX_POSITION`] (2^53 - 1), so JavaScript clients hold positions
//!   exactly in plain numbers; decoders refuse larger values.
//!
//! ## Op numbers
//! goim defines ops 0-17 and uses up to 18 in some versions; business pushes are >= 1000 (the
//! control plane refuses lower ones). 20-29 lies in neither range, so no goim client or business op
//! can mean anything by it: [`PUSH`] (20), [`RESUME`] (21) and [`ACK`] (22) are taken, 23-29 are
//! kept for later extensions.
//!
//! ## Bodies
//! All integers are big-endian and unsigned unless noted. Every body starts with a version byte
//! ([`VERSION`]); decoders refuse another version, unknown kinds, flags or reasons, non-zero reserved
//! bytes and a length other than the layout's, so later versions can give those bytes meaning
//! without old peers misreading them. Decoders never panic and never allocate from a length read off
//! the wire. The protocol page (`docs/rim-protocol-extension.md`) has a byte example of each packet,
//! checked against this codec by `tests/durable_conformance.rs`.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use crate::packet::{Packet, VERSION as PACKET_VERSION};

/// Server to client: a push with its message id and stream position ([`DurablePush`]).
pub const PUSH: i32 = 20;
/// Server to client: the outcome of resuming one stream ([`ResumeAnswer`]).
pub const RESUME: i32 = 21;
/// Client to server: everything through a position of the user stream is processed ([`Ack`]).
pub const ACK: i32 = 22;

/// The extension's version, first byte of every body and the `v` of [`RimAuth`].
pub const VERSION: u8 = 1;

/// Largest epoch or sequence number: 2^53 - 1, the largest integer JavaScript numbers hold exactly.
pub const MAX_POSITION: u64 = (1 << 53) - 1;

/// Fixed part of a [`DurablePush`] body, before the payload.
pub const PUSH_HEADER_LEN: usize = 40;
/// Length of a [`ResumeAnswer`] body.
pub const RESUME_LEN: usize = 24;
/// Length of an [`Ack`] body.
pub const ACK_LEN: usize = 20;

/// Most pushes an edge replays on one resume of one stream; a client that missed more is told
/// [`NotResumedReason::TooMany`] and reloads instead (replaying an unbounded history into one socket
/// would hold the connection, and the edge's memory, for as long as it takes).
pub const MAX_RESUME_REPLAY: usize = 10_000;
/// Most pushes read from the store in one page of a resume.
pub const RESUME_PAGE: usize = 1_000;
/// Most pushes stored in the inbox or room log by one append (one database round trip).
pub const MAX_APPEND_BATCH: usize = 10_000;
/// Most acks or receipts recorded by one store call.
pub const MAX_RECEIPT_BATCH: usize = 10_000;

/// `PUSH` flag bit: the push is replayed by a resume rather than live.
const FLAG_REPLAY: u8 = 0x01;

/// Why a body of this extension is malformed; the edge closes a connection that sends one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurableError {
    /// The body is shorter than its fixed layout.
    #[error("{what} body of {len} bytes is shorter than its {need}-byte layout")]
    Truncated {
        /// Which body.
        what: &'static str,
        /// Bytes present.
        len: usize,
        /// Bytes the layout needs.
        need: usize,
    },
    /// A fixed-size body has bytes after its layout.
    #[error("{what} body of {len} bytes is longer than its {need}-byte layout")]
    TooLong {
        /// Which body.
        what: &'static str,
        /// Bytes present.
        len: usize,
        /// Bytes the layout has.
        need: usize,
    },
    /// The version byte (or the auth field's `v`) is not [`VERSION`].
    #[error("extension version {0} is not supported (this peer speaks {VERSION})")]
    Version(u64),
    /// The stream kind byte is neither user (1) nor room (2).
    #[error("unknown stream kind {0}")]
    Kind(u8),
    /// Flag bits this version does not define are set.
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    /// A reserved byte is not zero.
    #[error("reserved bytes must be zero")]
    Reserved,
    /// The resume status or reason byte is not defined, a reason comes with "resumed" or a count
    /// with "not resumed".
    #[error("resume status {status} with reason {reason} is not defined")]
    Outcome {
        /// Status byte.
        status: u8,
        /// Reason byte.
        reason: u8,
    },
    /// An epoch or sequence number is above [`MAX_POSITION`].
    #[error("position number {0} is above the largest allowed, 2^53 - 1")]
    PositionRange(u64),
    /// A message id is not a UUID in its canonical text form.
    #[error("message id {0:?} is not a UUID (8-4-4-4-12 hex digits)")]
    MessageId(String),
}

/// A push's message id: the UUID the control plane gives it, 16 bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub [u8; 16]);

impl FromStr for MessageId {
    type Err = DurableError;

    /// Parses the canonical text form (`0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c4d`, either case).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || DurableError::MessageId(text.chars().take(64).collect());
        let bytes = text.as_bytes();
        if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&at| bytes[at] != b'-') {
            return Err(bad());
        }
        let mut digits = bytes.iter().filter(|b| **b != b'-');
        let mut id = [0u8; 16];
        for byte in &mut id {
            let (Some(high), Some(low)) = (digits.next(), digits.next()) else {
                return Err(bad());
            };
            let nibble = |c: u8| (c as char).to_digit(16).ok_or_else(bad);
            *byte = (nibble(*high)? << 4 | nibble(*low)?) as u8;
        }
        // 32 digits and 4 hyphens at the right places: any other byte is a fifth hyphen.
        if digits.next().is_some() {
            return Err(bad());
        }
        Ok(Self(id))
    }
}

impl fmt::Display for MessageId {
    /// The canonical lowercase text form, as the control plane's APIs show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if matches!(index, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Which stream a position belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// The user stream: pushes to the user and to the user's keys (byte 1).
    User,
    /// The room stream of the connection's room (byte 2).
    Room,
}

impl StreamKind {
    fn byte(self) -> u8 {
        match self {
            StreamKind::User => 1,
            StreamKind::Room => 2,
        }
    }

    fn from_byte(byte: u8) -> Result<Self, DurableError> {
        match byte {
            1 => Ok(StreamKind::User),
            2 => Ok(StreamKind::Room),
            other => Err(DurableError::Kind(other)),
        }
    }
}

/// A place in a stream: the stream's epoch (its life) and a sequence number in it.
///
/// Ordered by epoch, then sequence; only positions of the same epoch are comparable in meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
#[serde(try_from = "RawPosition")]
pub struct Position {
    /// The stream's life; changes when its history is reset.
    pub epoch: u64,
    /// The number of the last push seen, 0 before the first.
    pub seq: u64,
}

/// The JSON form of a [`Position`] before its range is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPosition {
    epoch: u64,
    seq: u64,
}

impl TryFrom<RawPosition> for Position {
    type Error = DurableError;

    fn try_from(raw: RawPosition) -> Result<Self, Self::Error> {
        Position::new(raw.epoch, raw.seq)
    }
}

impl Position {
    /// Nothing seen yet, in a stream's first life.
    pub const ORIGIN: Position = Position { epoch: 0, seq: 0 };

    /// A position, if both numbers are at most [`MAX_POSITION`].
    pub fn new(epoch: u64, seq: u64) -> Result<Self, DurableError> {
        for number in [epoch, seq] {
            if number > MAX_POSITION {
                return Err(DurableError::PositionRange(number));
            }
        }
        Ok(Self { epoch, seq })
    }

    fn put(&self, dst: &mut BytesMut) {
        dst.put_u64(self.epoch);
        dst.put_u64(self.seq);
    }

    /// Reads a position from 16 bytes (the caller checked the length).
    fn read(bytes: &[u8; 16]) -> Result<Self, DurableError> {
        let (epoch, seq) = bytes.split_at(8);
        Position::new(be_u64(epoch), be_u64(seq))
    }
}

/// The `rim` field of the auth JSON: the connection opts in to this extension.
///
/// ```json
/// {"mid": 123, "key": "phone-1", "room_id": "live://1000", "accepts": [1000],
///  "rim": {"v": 1, "user": {"epoch": 0, "seq": 41}, "room": {"epoch": 1764590400000, "seq": 7}}}
/// ```
///
/// `user` and `room` are the last positions the client processed; a client without one (first
/// start) leaves it out and is told the current position instead of being sent history. Unknown
/// fields and another `v` are refused: an auth body that asks for something this edge does not
/// speak must not be half-understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRimAuth")]
pub struct RimAuth {
    /// Last processed position of the user stream, if the client has one.
    pub user: Option<Position>,
    /// Last processed position of the auth room's stream, if the client has one.
    pub room: Option<Position>,
}

/// The JSON form of [`RimAuth`] before its version is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRimAuth {
    v: u64,
    #[serde(default)]
    user: Option<Position>,
    #[serde(default)]
    room: Option<Position>,
}

impl TryFrom<RawRimAuth> for RimAuth {
    type Error = DurableError;

    fn try_from(raw: RawRimAuth) -> Result<Self, Self::Error> {
        if raw.v != u64::from(VERSION) {
            return Err(DurableError::Version(raw.v));
        }
        Ok(Self {
            user: raw.user,
            room: raw.room,
        })
    }
}

/// Op 20 body: one push as a rim-aware connection receives it.
///
/// Layout (40 bytes, then the payload):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | version (1) |
/// | 1 | 1 | stream kind: 1 user, 2 room |
/// | 2 | 1 | flags: bit 0 = replayed by a resume |
/// | 3 | 1 | reserved, 0 |
/// | 4 | 4 | operation (i32): the business op, the one goim pushes carry |
/// | 8 | 16 | message id (UUID) |
/// | 24 | 8 | epoch |
/// | 32 | 8 | sequence |
/// | 40 | n | payload, unchanged |
///
/// The watch set filters on `operation`, as it does for plain pushes. One user's devices (one room's
/// members) get identical bodies, so an edge encodes each once and shares the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurablePush {
    /// Which stream `position` is in.
    pub kind: StreamKind,
    /// Whether this is a replay of a stored push (during a resume) rather than a live one.
    pub replay: bool,
    /// The business operation.
    pub operation: i32,
    /// The push's id.
    pub message_id: MessageId,
    /// The push's place in its stream.
    pub position: Position,
    /// The payload.
    pub body: Bytes,
}

impl DurablePush {
    /// The body of the op-20 packet.
    pub fn encode(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(PUSH_HEADER_LEN + self.body.len());
        dst.put_u8(VERSION);
        dst.put_u8(self.kind.byte());
        dst.put_u8(if self.replay { FLAG_REPLAY } else { 0 });
        dst.put_u8(0);
        dst.put_i32(self.operation);
        dst.put_slice(&self.message_id.0);
        self.position.put(&mut dst);
        dst.put_slice(&self.body);
        dst.freeze()
    }

    /// The op-20 packet (ver 1, seq 0, like every push).
    pub fn to_packet(&self) -> Packet {
        Packet::new(PACKET_VERSION, PUSH, 0, self.encode())
    }

    /// Decodes an op-20 body; the payload is a slice of `body`, not a copy.
    pub fn decode(body: Bytes) -> Result<Self, DurableError> {
        let fixed = fixed::<PUSH_HEADER_LEN>("push", &body, false)?;
        let kind = StreamKind::from_byte(fixed[1])?;
        let flags = fixed[2];
        if flags & !FLAG_REPLAY != 0 {
            return Err(DurableError::Flags(flags));
        }
        if fixed[3] != 0 {
            return Err(DurableError::Reserved);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&fixed[8..24]);
        let mut position = [0u8; 16];
        position.copy_from_slice(&fixed[24..40]);
        Ok(Self {
            kind,
            replay: flags & FLAG_REPLAY != 0,
            operation: i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            message_id: MessageId(id),
            position: Position::read(&position)?,
            body: body.slice(PUSH_HEADER_LEN..),
        })
    }
}

/// Why a stream could not be resumed: the client must reload from its application backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotResumedReason {
    /// The stream's history was reset since the client's position (another epoch) (reason 1).
    EpochChanged,
    /// Pushes after the client's position are gone: beyond retention or the room window (reason 2).
    Expired,
    /// The client's position is ahead of the stream: it was never handed out (reason 3).
    Ahead,
    /// The store did not answer; the history may be intact, try again later (reason 4).
    Unavailable,
    /// More pushes were missed than one resume replays ([`MAX_RESUME_REPLAY`]) (reason 5).
    TooMany,
}

impl NotResumedReason {
    fn byte(self) -> u8 {
        match self {
            NotResumedReason::EpochChanged => 1,
            NotResumedReason::Expired => 2,
            NotResumedReason::Ahead => 3,
            NotResumedReason::Unavailable => 4,
            NotResumedReason::TooMany => 5,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => NotResumedReason::EpochChanged,
            2 => NotResumedReason::Expired,
            3 => NotResumedReason::Ahead,
            4 => NotResumedReason::Unavailable,
            5 => NotResumedReason::TooMany,
            _ => return None,
        })
    }
}

/// What a resume did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// The missed pushes (this many, possibly none) were sent before this answer (status 0).
    Resumed(u32),
    /// Nothing was replayed (status 1).
    NotResumed(NotResumedReason),
}

/// Op 21 body: the outcome of resuming one stream, sent once per stream of a rim-aware connection.
///
/// "Resumed" comes after the replayed pushes, so everything after it is live; "not resumed" comes
/// before any push of that stream. `position` is where the client stands now: after "resumed", the
/// stream's head when the replay ended; after "not resumed" (or for a client that sent no position),
/// the current head, from which the client continues once it has reloaded.
///
/// Layout (24 bytes): version (1), stream kind, status (0 resumed, 1 not resumed), reason (0 with
/// "resumed", else 1-5 as [`NotResumedReason`]), count of replayed pushes (u32, 0 unless resumed),
/// epoch (u64), sequence (u64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeAnswer {
    /// Which stream.
    pub kind: StreamKind,
    /// What happened.
    pub outcome: ResumeOutcome,
    /// Where the client continues from.
    pub position: Position,
}

impl ResumeAnswer {
    /// The body of the op-21 packet.
    pub fn encode(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(RESUME_LEN);
        dst.put_u8(VERSION);
        dst.put_u8(self.kind.byte());
        let (status, reason, count) = match self.outcome {
            ResumeOutcome::Resumed(count) => (0, 0, count),
            ResumeOutcome::NotResumed(reason) => (1, reason.byte(), 0),
        };
        dst.put_u8(status);
        dst.put_u8(reason);
        dst.put_u32(count);
        self.position.put(&mut dst);
        dst.freeze()
    }

    /// The op-21 packet (ver 1, seq 0).
    pub fn to_packet(&self) -> Packet {
        Packet::new(PACKET_VERSION, RESUME, 0, self.encode())
    }

    /// Decodes an op-21 body.
    pub fn decode(body: &[u8]) -> Result<Self, DurableError> {
        let fixed = fixed::<RESUME_LEN>("resume", body, true)?;
        let kind = StreamKind::from_byte(fixed[1])?;
        let (status, reason) = (fixed[2], fixed[3]);
        let count = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let outcome = match (status, NotResumedReason::from_byte(reason)) {
            (0, None) if reason == 0 => ResumeOutcome::Resumed(count),
            (1, Some(reason)) if count == 0 => ResumeOutcome::NotResumed(reason),
            _ => return Err(DurableError::Outcome { status, reason }),
        };
        let mut position = [0u8; 16];
        position.copy_from_slice(&fixed[8..24]);
        Ok(Self {
            kind,
            outcome,
            position: Position::read(&position)?,
        })
    }
}

/// Op 22 body: the client processed every push of its user stream through `position` (cumulative).
///
/// Acks are not answered (the edge records them in batches). An ack of another epoch than the
/// stream's current one is ignored, as is one that goes backwards. Room pushes are not acked: the
/// room window is for short gaps, not for delivery guarantees.
///
/// Layout (20 bytes): version (1), three reserved bytes (0), epoch (u64), sequence (u64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The last processed position of the user stream.
    pub position: Position,
}

impl Ack {
    /// The body of the op-22 packet.
    pub fn encode(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(ACK_LEN);
        dst.put_u8(VERSION);
        dst.put_bytes(0, 3);
        self.position.put(&mut dst);
        dst.freeze()
    }

    /// The op-22 packet with the client's `seq` (ver 1, like goim clients send).
    pub fn to_packet(&self, seq: i32) -> Packet {
        Packet::new(PACKET_VERSION, ACK, seq, self.encode())
    }

    /// Decodes an op-22 body.
    pub fn decode(body: &[u8]) -> Result<Self, DurableError> {
        let fixed = fixed::<ACK_LEN>("ack", body, true)?;
        if fixed[1..4] != [0, 0, 0] {
            return Err(DurableError::Reserved);
        }
        let mut position = [0u8; 16];
        position.copy_from_slice(&fixed[4..20]);
        Ok(Self {
            position: Position::read(&position)?,
        })
    }
}

/// The first `N` bytes of a body whose version byte is checked; with `exact`, nothing may follow.
fn fixed<const N: usize>(
    what: &'static str,
    body: &[u8],
    exact: bool,
) -> Result<[u8; N], DurableError> {
    let Some(head) = body.first_chunk::<N>() else {
        return Err(DurableError::Truncated {
            what,
            len: body.len(),
            need: N,
        });
    };
    if head[0] != VERSION {
        return Err(DurableError::Version(u64::from(head[0])));
    }
    if exact && body.len() != N {
        return Err(DurableError::TooLong {
            what,
            len: body.len(),
            need: N,
        });
    }
    Ok(*head)
}

/// A big-endian u64 from exactly 8 bytes.
fn be_u64(bytes: &[u8]) -> u64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(bytes);
    u64::from_be_bytes(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> MessageId {
        "0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c4d".parse().unwrap()
    }

    #[test]
    fn message_ids_round_trip_and_refuse_other_text() {
        assert_eq!(id().to_string(), "0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c4d");
        let upper: MessageId = "0192F1C4-9D3E-7B2A-8C11-3F5E9A7B6C4D".parse().unwrap();
        assert_eq!(upper, id());
        for bad in [
            "",
            "0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c4",
            "0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c4dd",
            "0192f1c49d3e-7b2a-8c11-3f5e9a7b6c4d-",
            "0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c4g",
            "0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c-4",
            "0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6cé",
            "+192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c4d",
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bodies_round_trip() {
        let push = DurablePush {
            kind: StreamKind::Room,
            replay: true,
            operation: -5,
            message_id: id(),
            position: Position::new(MAX_POSITION, 1).unwrap(),
            body: Bytes::from_static(b"payload"),
        };
        assert_eq!(DurablePush::decode(push.encode()).unwrap(), push);
        for outcome in [
            ResumeOutcome::Resumed(u32::MAX),
            ResumeOutcome::NotResumed(NotResumedReason::TooMany),
        ] {
            let answer = ResumeAnswer {
                kind: StreamKind::User,
                outcome,
                position: Position::new(3, 4).unwrap(),
            };
            assert_eq!(ResumeAnswer::decode(&answer.encode()).unwrap(), answer);
        }
        let ack = Ack {
            position: Position::new(9, MAX_POSITION).unwrap(),
        };
        assert_eq!(Ack::decode(&ack.encode()).unwrap(), ack);
    }

    #[test]
    fn positions_beyond_javascript_integers_are_refused() {
        assert_eq!(
            Position::new(MAX_POSITION + 1, 0),
            Err(DurableError::PositionRange(MAX_POSITION + 1))
        );
        let mut ack = Ack {
            position: Position::ORIGIN,
        }
        .encode()
        .to_vec();
        ack[12..20].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            Ack::decode(&ack),
            Err(DurableError::PositionRange(u64::MAX))
        );
    }
}
