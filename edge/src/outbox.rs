//! A connection's bounded send queue.
//!
//! Pushes arrive from any task (the internal endpoint, room fan-out) and must never wait for a slow
//! socket, so offering is a short non-blocking lock. Offering never wakes the writer by itself: the
//! pusher wakes it (see `crate::wakes`) once all the frames it has for this connection are queued, so
//! a request of many pushes leaves in one write instead of racing the writer frame by frame. The
//! connection's own task drains everything queued at once and writes it in one go. An idle outbox owns no allocation (an empty `VecDeque` does not
//! allocate and draining swaps the buffer out), which keeps idle connections small.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::close::CloseReason;

/// One thing to send.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A push, encoded once as an op-9 batch of one and shared by every recipient
    /// (see `rim_proto::batch::encode_push`).
    Push(Bytes),
    /// A plain packet (replies to the client's own requests).
    Packet(Bytes),
}

/// Result of [`Outbox::offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued behind frames the writer has already been (or will be) woken for.
    Queued,
    /// Queued on an empty queue: nobody has woken the writer for it yet, so the caller must call
    /// [`Outbox::wake`] once it has queued everything it has for this connection.
    QueuedAsleep,
    /// The queue already holds `capacity` frames.
    Full,
    /// The connection is closing; nothing more is sent.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    closed: Option<CloseReason>,
}

/// The bounded queue between pushers and one connection's writer.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
}

impl Outbox {
    /// Queues `frame` unless `capacity` frames are already waiting or the outbox is closed.
    ///
    /// Does not wake the writer: [`Offer::QueuedAsleep`] tells the caller it owes a [`Outbox::wake`].
    pub fn offer(&self, frame: Frame, capacity: usize) -> Offer {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return Offer::Closed;
        }
        if state.frames.len() >= capacity {
            return Offer::Full;
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(frame);
        if was_empty {
            Offer::QueuedAsleep
        } else {
            Offer::Queued
        }
    }

    /// Wakes the writer to send what is queued (owed after an [`Offer::QueuedAsleep`]).
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// Asks the writer to close the connection for `reason`; the first reason wins. Never blocks.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.state.lock();
        if state.closed.is_none() {
            state.closed = Some(reason);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Takes every queued frame, in order, and the close request, if any.
    ///
    /// The queue's buffer leaves with the frames, so the outbox is back to owning nothing.
    pub fn drain(&self) -> (Vec<Frame>, Option<CloseReason>) {
        let mut state = self.state.lock();
        let frames = std::mem::take(&mut state.frames);
        let closed = state.closed.clone();
        drop(state);
        (Vec::from(frames), closed)
    }

    /// The close request, if one was made.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.state.lock().closed.clone()
    }

    /// Resolves once something was queued or a close was requested since the last drain.
    ///
    /// A wake-up may be spurious: callers drain until empty after every write.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Resolves with the close reason once a close is requested.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.close_reason() {
                return reason;
            }
            self.ready.notified().await;
        }
    }
}
