//! Encoding durable pushes for rim-aware connections, and dropping those a connection already has.
//!
//! A [`DurableGroup`] is one run of pushes the fan-out sends together (one push, or consecutive
//! pushes to the same recipients) as rim-aware connections see it: every push with a valid stream
//! position becomes an op-20 packet, any other (a broadcast, a record of an older control plane)
//! stays the plain packet goim clients get, all inside one op-9 frame. The frame is encoded the first
//! time a rim-aware recipient needs it and then shared; only a connection whose floors cover part of
//! the run (a live push racing its replay) gets a frame of its own, without those pushes.
//!
//! [`filter_held`] does the same to frames already queued: those held in a connection's outbox while
//! it was resumed, checked once the floors are known.

use std::str::FromStr;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use rim_proto::batch::Batch;
use rim_proto::durable::{self, DurablePush, MessageId, PUSH_HEADER_LEN, Position, StreamKind};
use rim_proto::message::{Packets, decode};
use rim_proto::packet::{VERSION, put_header};
use rim_proto::schema::{EdgePush, ReplayedPush};
use rim_proto::{HEADER_LEN, op};

use super::Floors;
use crate::outbox::{Frame, Frames};

/// Where a push stands in its stream, as the op-20 header says it.
#[derive(Debug, Clone, Copy)]
struct Place {
    kind: StreamKind,
    message_id: MessageId,
    position: Position,
}

/// One push of a group.
#[derive(Debug)]
struct Item {
    operation: i32,
    body: Bytes,
    /// `None`: sent as a plain packet.
    place: Option<Place>,
}

impl Item {
    fn len(&self) -> usize {
        let header = if self.place.is_some() {
            PUSH_HEADER_LEN
        } else {
            0
        };
        HEADER_LEN + header + self.body.len()
    }

    fn covered(&self, floors: &Floors) -> bool {
        self.place
            .is_some_and(|place| floors.covers(place.kind, place.position))
    }
}

/// A run of pushes as rim-aware connections receive it; see the module docs.
#[derive(Debug)]
pub struct DurableGroup {
    items: Vec<Item>,
    frame: OnceLock<Bytes>,
}

impl DurableGroup {
    /// The group of `pushes`, or `None` when none of them has a usable position (then rim-aware
    /// connections get the plain frame like everyone).
    pub fn new(pushes: &[&EdgePush]) -> Option<Self> {
        let items: Vec<Item> = pushes
            .iter()
            .map(|push| Item {
                operation: push.operation,
                body: push.body.clone(),
                place: place(push),
            })
            .collect();
        items.iter().any(|item| item.place.is_some()).then(|| Self {
            items,
            frame: OnceLock::new(),
        })
    }

    /// The frame for a connection whose floors are `floors`: the shared one when it misses none of
    /// the group, `None` when it has all of them already, else one without the pushes it has.
    pub fn frame_for(&self, floors: &Floors) -> Option<Bytes> {
        let covered = self
            .items
            .iter()
            .filter(|item| item.covered(floors))
            .count();
        if covered == 0 {
            return Some(self.frame.get_or_init(|| encode(&self.items)).clone());
        }
        if covered == self.items.len() {
            return None;
        }
        let rest: Vec<&Item> = self
            .items
            .iter()
            .filter(|item| !item.covered(floors))
            .collect();
        Some(encode(rest))
    }
}

/// The place of `push` in its stream, if it has a usable one (a known stream kind, numbers in range
/// and a UUID message id); anything else is delivered plain.
fn place(push: &EdgePush) -> Option<Place> {
    let position = push.position.as_ref()?;
    let kind = match position.stream {
        1 => StreamKind::User,
        2 => StreamKind::Room,
        _ => return None,
    };
    Some(Place {
        kind,
        message_id: message_id(push)?,
        position: Position::new(position.epoch, position.seq).ok()?,
    })
}

/// The push's message id as the 16 bytes of op 20 and receipts, if it is a UUID.
pub fn message_id(push: &EdgePush) -> Option<MessageId> {
    MessageId::from_str(&push.message_id).ok()
}

/// One op-9 frame holding `items`, each an op-20 packet when it has a place, else plain.
fn encode<'a>(items: impl IntoIterator<Item = &'a Item> + Clone) -> Bytes {
    let inner: usize = items.clone().into_iter().map(Item::len).sum();
    let mut dst = BytesMut::with_capacity(HEADER_LEN + inner);
    put_header(&mut dst, HEADER_LEN + inner, VERSION, op::RAW, 0);
    for item in items {
        put_item(&mut dst, item, false);
    }
    dst.freeze()
}

/// Appends `item` as a packet: op 20 (with the replay flag as given) when it has a place.
fn put_item(dst: &mut BytesMut, item: &Item, replay: bool) {
    let Some(place) = item.place else {
        put_header(dst, item.len(), VERSION, item.operation, 0);
        dst.put_slice(&item.body);
        return;
    };
    put_header(dst, item.len(), VERSION, durable::PUSH, 0);
    // The codec writes the 40-byte header; the payload follows it without another copy.
    let header = DurablePush {
        kind: place.kind,
        replay,
        operation: item.operation,
        message_id: place.message_id,
        position: place.position,
        body: Bytes::new(),
    }
    .encode();
    dst.put_slice(&header);
    dst.put_slice(&item.body);
}

/// A replayed push of stream `kind` as a frame (op 20 with the replay flag, inside op 9), and its
/// position; `None` when control sent something that is not a push (a bad id or position).
pub fn replay_frame(kind: StreamKind, push: &ReplayedPush) -> Option<(Frame, Position)> {
    let id: [u8; 16] = push.message_id.as_ref().try_into().ok()?;
    let position = push.position.as_ref()?;
    let position = Position::new(position.epoch, position.seq).ok()?;
    let item = Item {
        operation: push.operation,
        body: push.body.clone(),
        place: Some(Place {
            kind,
            message_id: MessageId(id),
            position,
        }),
    };
    let mut dst = BytesMut::with_capacity(HEADER_LEN + item.len());
    put_header(&mut dst, HEADER_LEN + item.len(), VERSION, op::RAW, 0);
    put_item(&mut dst, &item, true);
    Some((Frame::Push(dst.freeze()), position))
}

/// `frames` without the op-20 pushes `floors` cover; replies and plain pushes are kept as they are.
pub fn filter_held(frames: Frames, floors: &Floors) -> Frames {
    let mut kept = Frames::Empty;
    for frame in frames {
        match frame {
            Frame::Push(bytes) => {
                if let Some(bytes) = without_covered(bytes, floors) {
                    kept.push(Frame::Push(bytes));
                }
            }
            packet @ Frame::Packet(_) => kept.push(packet),
        }
    }
    kept
}

/// An op-9 push frame without its covered op-20 packets (itself when none is, `None` when all are).
/// A frame that does not parse is not one of ours to filter and is kept.
fn without_covered(frame: Bytes, floors: &Floors) -> Option<Bytes> {
    let Ok(batch) = decode(frame.clone(), usize::MAX) else {
        return Some(frame);
    };
    if batch.op != op::RAW {
        return Some(frame);
    }
    let mut packets = Vec::new();
    for packet in Packets::new(batch.body, usize::MAX) {
        let Ok(packet) = packet else {
            return Some(frame);
        };
        packets.push(packet);
    }
    let is_covered = |packet: &rim_proto::Packet| {
        packet.op == durable::PUSH
            && DurablePush::decode(packet.body.clone())
                .is_ok_and(|push| floors.covers(push.kind, push.position))
    };
    let covered = packets.iter().filter(|p| is_covered(p)).count();
    if covered == 0 {
        return Some(frame);
    }
    if covered == packets.len() {
        return None;
    }
    let mut rebuilt = Batch::with_capacity(frame.len());
    for packet in packets.iter().filter(|p| !is_covered(p)) {
        rebuilt.push_packet(packet);
    }
    Some(rebuilt.finish())
}

#[cfg(test)]
mod tests {
    use rim_proto::schema::StreamPosition;
    use rim_proto::schema::edge_push::Target;

    use super::*;

    const ID: &str = "0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c4d";

    fn push(stream: u32, seq: u64, body: &str) -> EdgePush {
        EdgePush {
            message_id: ID.into(),
            operation: 1000,
            body: Bytes::copy_from_slice(body.as_bytes()),
            record: 0,
            position: (stream != 0).then_some(StreamPosition {
                stream,
                epoch: 7,
                seq,
            }),
            receipt_target: String::new(),
            target: Some(Target::Room("live://1".into())),
        }
    }

    /// The (op, body) of each packet inside an op-9 frame.
    fn packets(frame: &Bytes) -> Vec<(i32, Bytes)> {
        let batch = decode(frame.clone(), usize::MAX).unwrap();
        assert_eq!(batch.op, op::RAW);
        Packets::new(batch.body, usize::MAX)
            .map(|p| p.unwrap())
            .map(|p| (p.op, p.body))
            .collect()
    }

    #[test]
    fn positioned_pushes_become_op_20_and_others_stay_plain() {
        let pushes = [push(2, 5, "five"), push(0, 0, "plain")];
        let refs: Vec<&EdgePush> = pushes.iter().collect();
        let group = DurableGroup::new(&refs).unwrap();
        let frame = group.frame_for(&Floors::default()).unwrap();
        let inner = packets(&frame);
        assert_eq!(inner.len(), 2);
        assert_eq!(inner[0].0, durable::PUSH);
        let decoded = DurablePush::decode(inner[0].1.clone()).unwrap();
        assert_eq!(decoded.kind, StreamKind::Room);
        assert!(!decoded.replay);
        assert_eq!(decoded.operation, 1000);
        assert_eq!(decoded.message_id.to_string(), ID);
        assert_eq!(decoded.position, Position { epoch: 7, seq: 5 });
        assert_eq!(&decoded.body[..], b"five");
        assert_eq!(inner[1], (1000, Bytes::from_static(b"plain")));
        let again = group.frame_for(&Floors::default()).unwrap();
        assert_eq!(frame.as_ptr(), again.as_ptr(), "encoded once, shared");
        assert!(
            DurableGroup::new(&[&push(0, 0, "x")]).is_none(),
            "nothing durable: the plain frame serves"
        );
    }

    #[test]
    fn covered_pushes_are_left_out_of_groups_and_held_frames() {
        let pushes = [push(2, 5, "five"), push(2, 6, "six"), push(0, 0, "plain")];
        let refs: Vec<&EdgePush> = pushes.iter().collect();
        let group = DurableGroup::new(&refs).unwrap();
        let floors = Floors {
            user: None,
            room: Some(Position { epoch: 7, seq: 5 }),
        };
        let partial = group.frame_for(&floors).unwrap();
        let ops: Vec<i32> = packets(&partial).iter().map(|p| p.0).collect();
        assert_eq!(ops, [durable::PUSH, 1000]);
        let all = Floors {
            user: None,
            room: Some(Position { epoch: 7, seq: 6 }),
        };
        let shared = group.frame_for(&Floors::default()).unwrap();
        let held = Frames::Many(vec![
            Frame::Push(shared.clone()),
            Frame::Packet(Bytes::from_static(b"reply")),
            Frame::Push(group.frame_for(&all).unwrap()),
        ]);
        let kept = filter_held(held, &floors);
        assert_eq!(kept.len(), 3);
        let Frame::Push(first) = &kept[0] else {
            panic!("a push")
        };
        assert_eq!(
            packets(first).len(),
            2,
            "seq 5 dropped, 6 and the plain one kept"
        );
        let only_plain = filter_held(Frames::from(Frame::Push(shared)), &all);
        let Frame::Push(plain) = &only_plain[0] else {
            panic!("a push")
        };
        assert_eq!(packets(plain), [(1000, Bytes::from_static(b"plain"))]);
    }

    #[test]
    fn replayed_pushes_carry_the_replay_flag() {
        let replayed = ReplayedPush {
            message_id: MessageId::from_str(ID).unwrap().0.to_vec().into(),
            operation: 1001,
            body: Bytes::from_static(b"old"),
            position: Some(rim_proto::schema::PositionValue { epoch: 0, seq: 3 }),
            receipt_target: "mid:1".into(),
        };
        let (Frame::Push(frame), position) = replay_frame(StreamKind::User, &replayed).unwrap()
        else {
            panic!("a push")
        };
        assert_eq!(position, Position { epoch: 0, seq: 3 });
        let inner = packets(&frame);
        let decoded = DurablePush::decode(inner[0].1.clone()).unwrap();
        assert!(decoded.replay);
        assert_eq!(decoded.kind, StreamKind::User);
        let bad = ReplayedPush {
            message_id: Bytes::from_static(b"short"),
            ..replayed
        };
        assert!(replay_frame(StreamKind::User, &bad).is_none());
    }
}
