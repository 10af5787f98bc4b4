//! Deferred writer wake-ups: one wake per connection per request, after all its frames are queued.
//!
//! A request may carry many pushes for the same connections (rim-job sends them that way). Waking a
//! writer on its first frame lets it write that frame alone while the rest are still being queued, so
//! one request became many small writes. Pushers instead collect the connections whose queue they
//! found empty and wake them when the request's frames are all queued; the writer then sends them
//! together in one vectored write. Nothing waits for more pushes: the wakes happen as soon as the
//! request's own pushes are queued, and on drop, so a cancelled request still wakes every writer.

use std::sync::Arc;

use crate::channel::Channel;

/// Connections owed a writer wake-up; wakes them all when dropped.
#[derive(Default)]
pub struct Wakes {
    channels: Vec<Arc<Channel>>,
}

impl Wakes {
    /// Remembers that `channel`'s writer must be woken.
    pub fn add(&mut self, channel: &Arc<Channel>) {
        self.channels.push(channel.clone());
    }

    /// Takes over the wake-ups collected by `other` (a fan-out helper task).
    pub fn absorb(&mut self, mut other: Wakes) {
        self.channels.append(&mut other.channels);
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        for channel in self.channels.drain(..) {
            channel.outbox.wake();
        }
    }
}
