//! Resuming a rim-aware connection: after its auth reply, and after a room change.
//!
//! Run on the connection's own task, which is its only writer, so nothing else is written to the
//! socket meanwhile: the replay and the answers go straight to the transport while live pushes
//! accumulate in the outbox, undrained (see [`crate::durable`]). Per stream (the user stream when
//! the connection has a user, then the room stream when it is in a room):
//!
//! 1. ask the control plane for a page after the client's position (the first call asks for both
//!    streams at once), write it as replayed op-20 packets, and ask again from the last replayed
//!    position while control says `more`, up to [`MAX_RESUME_REPLAY`] pushes;
//! 2. write the op-21 answer: "resumed n" at the head control last reported (at the last replayed
//!    push when the cap stopped the replay), or "not resumed" with control's reason and head. When
//!    control cannot be asked (no link, unreachable, 503, a malformed answer) the answer is "not
//!    resumed: unavailable" at the client's own position, or at the last push replayed when a later
//!    page failed (a client with no position at all is told the origin, `(0, 0)`).
//!
//! Then the floors are set to the answers' positions and the held frames are taken and filtered in
//! one step under the floors' lock, and handed back to be written: the live pushes follow, without
//! the ones the replay (or the answer) covered. The calls are abandoned when the connection is asked
//! to close (its heartbeat deadline passing is such a request, see [`crate::heartbeat`]) or the edge
//! shuts down.

use std::sync::Arc;

use bytes::Bytes;
use rim_proto::Packet;
use rim_proto::durable::{
    NotResumedReason, Position, RESUME_PAGE, ResumeAnswer, ResumeOutcome, RimAuth, StreamKind,
};
use rim_proto::schema::{
    EdgeReceipt, PositionValue, ReplayedPush, ResumeRequest, ResumeResponse, StreamResume,
};

use super::{Floors, MAX_RESUME_REPLAY, filter_held, replay_frame};
use crate::channel::Channel;
use crate::close::CloseReason;
use crate::outbox::{Frame, Frames};
use crate::ratelog::RateLimit;
use crate::session::{change_room as move_room, flush, send};
use crate::state::Shared;
use crate::transport::Transport;

/// Log lines per second about resumes that could not ask the control plane.
static UNAVAILABLE_LOG: RateLimit = RateLimit::new(5);

/// What a resume writes to, and is abandoned for.
struct Resume<'a, T> {
    transport: &'a mut T,
    shared: &'a Shared,
    channel: &'a Channel,
}

/// Writes the auth reply, resumes the connection's streams from the positions of its `rim` field,
/// and returns the live pushes held meanwhile, filtered, to be written next.
pub(crate) async fn after_auth<T: Transport>(
    transport: &mut T,
    shared: &Shared,
    channel: &Arc<Channel>,
    auth_reply: Bytes,
    rim: RimAuth,
) -> Result<Frames, CloseReason> {
    let mut resume = Resume {
        transport,
        shared,
        channel,
    };
    resume.write(&[Frame::Packet(auth_reply)]).await?;
    let user = (channel.mid() != 0).then_some(rim.user);
    let room = channel.room();
    if user.is_none() && room.is_none() {
        return Ok(Frames::Empty);
    }
    let first = resume
        .ask(request(channel, user, room.as_deref(), rim.room))
        .await?;
    let (mut user_part, mut room_part) = match first {
        Some(answer) => (answer.user, answer.room),
        None => (None, None),
    };
    let mut floors = Floors::default();
    if let Some(client) = user {
        let answer = resume
            .stream(StreamKind::User, user_part.take(), client, |after| {
                request(channel, Some(Some(after)), None, None)
            })
            .await?;
        floors.user = Some(answer);
    }
    if let Some(room) = &room {
        let answer = resume
            .stream(StreamKind::Room, room_part.take(), rim.room, |after| {
                request(channel, None, Some(room), Some(after))
            })
            .await?;
        floors.room = Some(answer);
    }
    Ok(release(channel, |set| *set = floors))
}

/// Handles an op 12 of a rim-aware connection: writes what was queued for its old room first, moves
/// it (see [`crate::session::change_room`]), and returns the op-13 reply followed, when it entered
/// a room, by that room's "resumed 0" answer and the pushes held meanwhile.
pub(crate) async fn change_room<T: Transport>(
    transport: &mut T,
    shared: &Shared,
    channel: &Arc<Channel>,
    packet: Packet,
) -> Result<Frames, CloseReason> {
    flush(transport, shared, channel, Frames::Empty).await?;
    let (reply, moved) = move_room(shared, channel, &packet)?;
    let reply = Frame::Packet(reply.to_bytes());
    let Some(Some(room)) = moved else {
        return Ok(Frames::from(reply));
    };
    let mut resume = Resume {
        transport,
        shared,
        channel,
    };
    let part = resume
        .ask(request(channel, None, Some(&room), None))
        .await?
        .and_then(|answer| answer.room);
    let (outcome, position) = answer_of(part.as_ref(), None);
    super::resumed(StreamKind::Room, outcome);
    let mut pending = Frames::from(reply);
    pending.push(answer(StreamKind::Room, outcome, position));
    pending.extend(release(channel, |floors| floors.room = Some(position)));
    Ok(pending)
}

/// Sets the floors with `set` and takes the held frames in one step under the floors' lock (so no
/// push is queued unfiltered in between), then filters them.
fn release(channel: &Channel, set: impl FnOnce(&mut Floors)) -> Frames {
    let Some(rim) = channel.rim() else {
        return Frames::Empty;
    };
    let (held, floors) = {
        let mut floors = rim.floors.lock();
        set(&mut floors);
        // A close request stays in the outbox; the flush that follows sees it.
        let (held, _) = channel.outbox.drain();
        (held, *floors)
    };
    filter_held(held, &floors)
}

/// A resume request for `user` (`Some(position or none)` to read the user stream) and `room` (with
/// the client's position in it, if any), one page per stream.
fn request(
    channel: &Channel,
    user: Option<Option<Position>>,
    room: Option<&str>,
    room_position: Option<Position>,
) -> ResumeRequest {
    let value = |position: Position| PositionValue {
        epoch: position.epoch,
        seq: position.seq,
    };
    ResumeRequest {
        node_id: String::new(),
        mid: channel.mid(),
        key: channel.key().to_string(),
        want_user: user.is_some(),
        user: user.flatten().map(value),
        room: room.unwrap_or_default().to_owned(),
        room_position: room.and(room_position).map(value),
        limit: RESUME_PAGE as u32,
    }
}

impl<T: Transport> Resume<'_, T> {
    /// Writes `frames` to the client (abandoned like any write, see [`crate::session::send`]).
    async fn write(&mut self, frames: &[Frame]) -> Result<(), CloseReason> {
        send(self.transport, self.shared, self.channel, frames).await
    }

    /// Asks the control plane; `Ok(None)` when it cannot answer (counted, logged).
    async fn ask(&mut self, request: ResumeRequest) -> Result<Option<ResumeResponse>, CloseReason> {
        let Some(link) = &self.shared.durable else {
            return Ok(None);
        };
        let answer = tokio::select! {
            biased;
            reason = self.channel.outbox.closed() => return Err(reason),
            () = self.shared.shutdown.cancelled() => return Err(CloseReason::Shutdown),
            answer = link.resume(request) => answer,
        };
        match answer {
            Ok(answer) => Ok(Some(answer)),
            Err(error) => {
                if let Some(suppressed) = UNAVAILABLE_LOG.allow() {
                    tracing::warn!(key = %self.channel.key(), %error, suppressed, "resume: the control plane did not answer");
                }
                Ok(None)
            }
        }
    }

    /// Records `written` receipts for the replayed pushes that name a receipt target (user and key
    /// pushes), now that they are on the socket.
    fn record_written(&self, pushes: &[ReplayedPush]) {
        let Some(link) = &self.shared.durable else {
            return;
        };
        let now = super::now_ms();
        let receipts: Vec<EdgeReceipt> = pushes
            .iter()
            .filter(|push| !push.receipt_target.is_empty() && push.message_id.len() == 16)
            .map(|push| EdgeReceipt {
                message_id: push.message_id.clone(),
                target: push.receipt_target.clone(),
                at_unix_ms: now,
            })
            .collect();
        if !receipts.is_empty() {
            link.written(&receipts);
        }
    }

    /// Replays one stream from `part` (the first page, if control answered) and the pages after it
    /// (asked with `next`), then writes its op-21 answer; returns the answer's position.
    async fn stream(
        &mut self,
        kind: StreamKind,
        mut part: Option<StreamResume>,
        client: Option<Position>,
        next: impl Fn(Position) -> ResumeRequest,
    ) -> Result<Position, CloseReason> {
        let mut count: usize = 0;
        let mut last: Option<Position> = None;
        let (outcome, position) = loop {
            let readable = part.as_ref().filter(|page| page.reason == 0);
            let Some(page) = readable else {
                break answer_of(part.as_ref(), last.or(client));
            };
            let mut frames = Frames::Empty;
            for push in &page.pushes {
                match replay_frame(kind, push) {
                    Some((frame, position)) => {
                        frames.push(frame);
                        last = Some(position);
                    }
                    None => tracing::warn!(
                        "resume: control sent a push without a valid id or position; skipped"
                    ),
                }
            }
            count += frames.len();
            self.write(&frames).await?;
            self.record_written(&page.pushes);
            let capped = count >= MAX_RESUME_REPLAY;
            match last {
                Some(after) if page.more && !capped => {
                    part = self.ask(next(after)).await?.and_then(|answer| match kind {
                        StreamKind::User => answer.user,
                        StreamKind::Room => answer.room,
                    });
                }
                _ => {
                    let head = match (page.more, last) {
                        (true, Some(last)) => Some(last),
                        _ => position(page.head.as_ref()).or(last).or(client),
                    };
                    let position = head.unwrap_or(Position::ORIGIN);
                    let count = u32::try_from(count).unwrap_or(u32::MAX);
                    break (ResumeOutcome::Resumed(count), position);
                }
            }
        };
        super::resumed(kind, outcome);
        self.write(&[answer(kind, outcome, position)]).await?;
        Ok(position)
    }
}

/// The answer when nothing (more) is replayed from `part`: "resumed 0" at its head, "not resumed"
/// with its reason and head, or "not resumed: unavailable" at `fallback` when there is no part or
/// control itself says unavailable.
fn answer_of(part: Option<&StreamResume>, fallback: Option<Position>) -> (ResumeOutcome, Position) {
    let at_fallback = fallback.unwrap_or(Position::ORIGIN);
    let (outcome, position) = match part {
        None => (
            ResumeOutcome::NotResumed(NotResumedReason::Unavailable),
            at_fallback,
        ),
        Some(part) => {
            let head = position(part.head.as_ref());
            match reason(part.reason) {
                None => (ResumeOutcome::Resumed(0), head.unwrap_or(at_fallback)),
                Some(NotResumedReason::Unavailable) => (
                    ResumeOutcome::NotResumed(NotResumedReason::Unavailable),
                    at_fallback,
                ),
                Some(reason) => (
                    ResumeOutcome::NotResumed(reason),
                    head.unwrap_or(at_fallback),
                ),
            }
        }
    };
    (outcome, position)
}

/// The op-21 packet.
fn answer(kind: StreamKind, outcome: ResumeOutcome, position: Position) -> Frame {
    let answer = ResumeAnswer {
        kind,
        outcome,
        position,
    };
    Frame::Packet(answer.to_packet().to_bytes())
}

/// A position of the wire, if present and in range.
fn position(value: Option<&PositionValue>) -> Option<Position> {
    value.and_then(|value| Position::new(value.epoch, value.seq).ok())
}

/// The reason of a stream part's code (0: readable); a code this edge does not know counts as
/// unavailable (the client retries later rather than misreading it).
fn reason(code: u32) -> Option<NotResumedReason> {
    Some(match code {
        0 => return None,
        1 => NotResumedReason::EpochChanged,
        2 => NotResumedReason::Expired,
        3 => NotResumedReason::Ahead,
        5 => NotResumedReason::TooMany,
        _ => NotResumedReason::Unavailable,
    })
}
