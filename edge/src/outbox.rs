//! A connection's bounded send queue, bounded by how far behind the client is.
//!
//! Pushes arrive from any task (the internal endpoint, room fan-out) and must never wait for a slow
//! socket, so offering is a short non-blocking lock. Offering never wakes the writer by itself: the
//! pusher wakes it (see `crate::wakes`) once all the frames it has for this connection are queued, so
//! a request of many pushes leaves in one write instead of racing the writer frame by frame. The
//! connection's own task drains everything queued at once and writes it in one go. An idle outbox
//! owns no allocation, which keeps idle connections small, and a push costs its recipient none either
//! in the steady state: the queue ([`Frames`]) holds its first frame inline (the fan-out merges a
//! request's consecutive pushes to the same connections into one frame) and only a backlog of several
//! frames spills into a vector, which leaves with the drain, so memory taken by a burst is given back
//! as soon as it is written.
//!
//! # The bound: bytes and time behind, not a frame count
//!
//! A client is a slow consumer when it is far behind, not when a burst arrived at once: one job
//! request can carry hundreds of pushes for a connection, which a client reading at the speed of its
//! link takes in a moment. So the outbox measures what the client has not yet taken, *including the
//! write in progress* (drained frames count until the writer reports them written):
//!
//! - **bytes behind** ([`Bounds::max_bytes`]): the frames' bytes plus a fixed per-frame cost for the
//!   queue's own bookkeeping, so that the bound is also an honest bound on the memory a connection
//!   pins. A frame offered to a connection with nothing behind is always taken, whatever its size.
//! - **time behind** ([`Bounds::max_age`]): the age of the oldest frame not yet written.
//!
//! A frame that would go past either bound is refused with the bound it hit ([`Behind`]); the
//! fan-out then applies the slow-consumer policy.
//!
//! # Receipts
//!
//! A durable push that asks for `written` receipts is offered with its [`PushReceipts`]
//! ([`Outbox::offer_receipted`]); they follow its frame through the drain, and [`Outbox::written`]
//! hands them to the writer once the write that carried it is done, so a receipt is never recorded
//! for a push still sitting in a queue. The lists live in a box allocated only while a connection has
//! such pushes in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::close::CloseReason;
use crate::durable::PushReceipts;

/// Bytes a queued frame costs beyond its payload: the queue slot and the shared buffer's handle.
pub const FRAME_COST: usize = std::mem::size_of::<Frame>();

/// One thing to send.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A push, encoded once as an op-9 batch of one and shared by every recipient
    /// (see `rim_proto::batch::encode_push`).
    Push(Bytes),
    /// A plain packet (replies to the client's own requests).
    Packet(Bytes),
}

impl Frame {
    /// What the frame counts for against [`Bounds::max_bytes`].
    fn cost(&self) -> usize {
        let (Self::Push(bytes) | Self::Packet(bytes)) = self;
        bytes.len() + FRAME_COST
    }
}

/// Frames in order: the first one inline, so queueing and draining a single frame allocates nothing;
/// more spill into a vector that leaves with them.
///
/// The vector starts with room for [`SPILL`] frames: a connection whose writer is behind usually
/// collects a few before it runs, and growing from two (2, 4, 8: an allocation, then reallocations
/// that copy) cost more than the pushes' own queueing.
#[derive(Debug, Default)]
pub enum Frames {
    /// Nothing.
    #[default]
    Empty,
    /// One frame, inline.
    One([Frame; 1]),
    /// Several frames.
    Many(Vec<Frame>),
}

/// Frames a spilled [`Frames`] has room for at first.
const SPILL: usize = 8;

impl Frames {
    /// Appends `frame`.
    pub fn push(&mut self, frame: Frame) {
        *self = match std::mem::take(self) {
            Self::Empty => Self::One([frame]),
            Self::One([first]) => {
                let mut frames = Vec::with_capacity(SPILL);
                frames.extend([first, frame]);
                Self::Many(frames)
            }
            Self::Many(mut frames) => {
                frames.push(frame);
                Self::Many(frames)
            }
        };
    }
}

impl From<Frame> for Frames {
    fn from(frame: Frame) -> Self {
        Self::One([frame])
    }
}

impl std::ops::Deref for Frames {
    type Target = [Frame];

    fn deref(&self) -> &[Frame] {
        match self {
            Self::Empty => &[],
            Self::One(one) => one,
            Self::Many(frames) => frames,
        }
    }
}

impl Extend<Frame> for Frames {
    fn extend<I: IntoIterator<Item = Frame>>(&mut self, frames: I) {
        frames.into_iter().for_each(|frame| self.push(frame));
    }
}

impl IntoIterator for Frames {
    type Item = Frame;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Frame>, std::vec::IntoIter<Frame>>;

    fn into_iter(self) -> Self::IntoIter {
        let (first, rest) = match self {
            Self::Empty => (None, Vec::new()),
            Self::One([frame]) => (Some(frame), Vec::new()),
            Self::Many(frames) => (None, frames),
        };
        first.into_iter().chain(rest)
    }
}

/// How far behind a connection may fall before the slow-consumer policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most bytes (payload plus [`FRAME_COST`] per frame) queued or being written.
    pub max_bytes: usize,
    /// Oldest a frame not yet written may be.
    pub max_age: Duration,
}

/// Which bound a refused frame hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// [`Bounds::max_bytes`].
    Bytes,
    /// [`Bounds::max_age`].
    Time,
}

impl Behind {
    /// Label for `rim_edge_drops_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Bytes => "behind_bytes",
            Self::Time => "behind_time",
        }
    }
}

/// Result of [`Outbox::offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued behind frames the writer has already been (or will be) woken for.
    Queued,
    /// Queued on an empty queue: nobody has woken the writer for it yet, so the caller must call
    /// [`Outbox::wake`] once it has queued everything it has for this connection.
    QueuedAsleep,
    /// Not queued: the connection is too far behind.
    Full(Behind),
    /// The connection is closing; nothing more is sent.
    Closed,
}

/// Frames not yet written: their cost and when the oldest was queued.
#[derive(Debug, Default, Clone, Copy)]
struct Unwritten {
    bytes: usize,
    since: Option<Instant>,
}

impl Unwritten {
    fn add(&mut self, other: Unwritten) {
        self.bytes += other.bytes;
        self.since = match (self.since, other.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

#[derive(Debug, Default)]
struct State {
    frames: Frames,
    /// What `frames` holds.
    queued: Unwritten,
    /// What the writer drained and has not yet reported written.
    writing: Unwritten,
    closed: Option<CloseReason>,
    /// Receipts of queued and drained frames, while there are any.
    receipts: Option<Box<ReceiptLists>>,
}

/// The receipts of an outbox's frames, split like their bytes.
#[derive(Debug, Default)]
struct ReceiptLists {
    queued: Vec<Arc<PushReceipts>>,
    writing: Vec<Arc<PushReceipts>>,
}

/// The bounded queue between pushers and one connection's writer.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<State>,
    /// Set by a wake-up, taken by [`Outbox::ready`].
    woken: AtomicBool,
    /// The writer's task, woken lock-free (one writer per outbox, so one waker is enough).
    writer: AtomicWaker,
}

impl Outbox {
    /// Queues `frame` unless the connection is too far behind for `bounds` or the outbox is closed.
    ///
    /// Does not wake the writer: [`Offer::QueuedAsleep`] tells the caller it owes a [`Outbox::wake`].
    pub fn offer(&self, frame: Frame, bounds: Bounds) -> Offer {
        self.offer_receipted(frame, None, bounds, Instant::now())
    }

    /// [`Outbox::offer`] of a push whose `receipts` are handed to the writer once it is written
    /// (see the module docs), queued at `now`: a fan-out reads the clock once per push for all its
    /// recipients (reading it per recipient cost more than the rest of the queueing), so a frame
    /// counts as queued from the start of its push's walk, at most the walk's duration early.
    pub fn offer_receipted(
        &self,
        frame: Frame,
        receipts: Option<&Arc<PushReceipts>>,
        bounds: Bounds,
        now: Instant,
    ) -> Offer {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return Offer::Closed;
        }
        let mut behind = state.writing;
        behind.add(state.queued);
        let cost = frame.cost();
        if behind.bytes > 0 && behind.bytes + cost > bounds.max_bytes {
            return Offer::Full(Behind::Bytes);
        }
        if behind
            .since
            .is_some_and(|since| now.saturating_duration_since(since) > bounds.max_age)
        {
            return Offer::Full(Behind::Time);
        }
        let was_empty = state.frames.is_empty();
        state.frames.push(frame);
        if let Some(receipts) = receipts {
            let lists = state.receipts.get_or_insert_with(Box::default);
            lists.queued.push(receipts.clone());
        }
        state.queued.add(Unwritten {
            bytes: cost,
            since: Some(now),
        });
        if was_empty {
            Offer::QueuedAsleep
        } else {
            Offer::Queued
        }
    }

    /// Wakes the writer to send what is queued (owed after an [`Offer::QueuedAsleep`]).
    pub fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.writer.wake();
    }

    /// Asks the writer to close the connection for `reason`; the first reason wins. Never blocks.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.state.lock();
        if state.closed.is_none() {
            state.closed = Some(reason);
            drop(state);
            self.wake();
        }
    }

    /// Takes every queued frame, in order, and the close request, if any. The frames count as
    /// behind until [`Outbox::written`].
    ///
    /// The queue's buffer leaves with the frames, so the outbox is back to owning nothing.
    pub fn drain(&self) -> (Frames, Option<CloseReason>) {
        let mut state = self.state.lock();
        let frames = std::mem::take(&mut state.frames);
        let queued = std::mem::take(&mut state.queued);
        state.writing.add(queued);
        if let Some(lists) = state.receipts.as_deref_mut() {
            let queued = std::mem::take(&mut lists.queued);
            lists.writing.extend(queued);
        }
        let closed = state.closed.clone();
        drop(state);
        (frames, closed)
    }

    /// The writer wrote everything it drained: the client is no longer behind by it. Returns the
    /// receipts of what was written (empty, without allocating, in the usual case).
    pub fn written(&self) -> Vec<Arc<PushReceipts>> {
        let mut state = self.state.lock();
        state.writing = Unwritten::default();
        let Some(lists) = state.receipts.as_deref_mut() else {
            return Vec::new();
        };
        let written = std::mem::take(&mut lists.writing);
        if lists.queued.is_empty() {
            state.receipts = None;
        }
        written
    }

    /// Bytes queued or being written (see [`Bounds::max_bytes`]).
    pub fn bytes_behind(&self) -> usize {
        let state = self.state.lock();
        state.queued.bytes + state.writing.bytes
    }

    /// The close request, if one was made.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.state.lock().closed.clone()
    }

    /// Resolves once something was queued or a close was requested since the last drain.
    ///
    /// A wake-up may be spurious: callers drain until empty after every write.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| {
            if self.woken.swap(false, Ordering::Acquire) {
                return std::task::Poll::Ready(());
            }
            self.writer.register(cx.waker());
            // A wake between the first look and the registration would otherwise be lost.
            match self.woken.swap(false, Ordering::Acquire) {
                true => std::task::Poll::Ready(()),
                false => std::task::Poll::Pending,
            }
        })
        .await;
    }

    /// Resolves with the close reason once a close is requested.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.close_reason() {
                return reason;
            }
            self.ready().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::{Behind, Bounds, FRAME_COST, Frame, Frames, Offer, Outbox, SPILL};

    fn push(len: usize) -> Frame {
        Frame::Push(Bytes::from(vec![0; len]))
    }

    #[test]
    fn bytes_being_written_count_until_written() {
        let bounds = Bounds {
            max_bytes: 2 * (100 + FRAME_COST),
            max_age: Duration::from_secs(60),
        };
        let outbox = Outbox::default();
        assert_eq!(outbox.offer(push(100), bounds), Offer::QueuedAsleep);
        assert_eq!(outbox.offer(push(100), bounds), Offer::Queued);
        assert_eq!(outbox.offer(push(1), bounds), Offer::Full(Behind::Bytes));
        let (frames, _) = outbox.drain();
        assert_eq!(frames.len(), 2);
        assert_eq!(
            outbox.offer(push(1), bounds),
            Offer::Full(Behind::Bytes),
            "the drained frames are not written yet"
        );
        outbox.written();
        assert_eq!(outbox.bytes_behind(), 0);
        assert_eq!(outbox.offer(push(100), bounds), Offer::QueuedAsleep);
    }

    #[test]
    fn a_frame_larger_than_the_bound_is_taken_when_nothing_is_behind() {
        let bounds = Bounds {
            max_bytes: 10,
            max_age: Duration::from_secs(60),
        };
        let outbox = Outbox::default();
        assert_eq!(outbox.offer(push(1000), bounds), Offer::QueuedAsleep);
        assert_eq!(outbox.offer(push(1), bounds), Offer::Full(Behind::Bytes));
    }

    #[test]
    fn a_backlog_spills_once_with_room_for_several_frames() {
        let mut frames = Frames::Empty;
        frames.push(push(1));
        assert!(
            matches!(frames, Frames::One(_)),
            "the first frame is inline"
        );
        frames.push(push(2));
        let Frames::Many(spilled) = &frames else {
            panic!("a second frame spills")
        };
        let (buffer, capacity) = (spilled.as_ptr(), spilled.capacity());
        assert!(capacity >= SPILL, "room for {SPILL} frames, not {capacity}");
        (3..=SPILL).for_each(|len| frames.push(push(len)));
        let Frames::Many(spilled) = &frames else {
            unreachable!()
        };
        assert_eq!(
            spilled.as_ptr(),
            buffer,
            "no reallocation up to {SPILL} frames"
        );
        let lens: Vec<usize> = frames
            .iter()
            .map(|frame| frame.cost() - FRAME_COST)
            .collect();
        assert_eq!(lens, (1..=SPILL).collect::<Vec<_>>(), "in order");
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_unwritten_frame_refuses_more() {
        let bounds = Bounds {
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(10),
        };
        let outbox = Outbox::default();
        assert_eq!(outbox.offer(push(1), bounds), Offer::QueuedAsleep);
        let _ = outbox.drain();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            outbox.offer(push(1), bounds),
            Offer::QueuedAsleep,
            "not older than the bound yet"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(outbox.offer(push(1), bounds), Offer::Full(Behind::Time));
        outbox.written();
        let _ = outbox.drain();
        outbox.written();
        assert_eq!(outbox.offer(push(1), bounds), Offer::QueuedAsleep);
    }
}
