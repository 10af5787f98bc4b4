//! Heartbeat deadlines and the shutdown close: one sweeper per edge instead of a timer and a
//! shutdown registration in every connection.
//!
//! A connection that sends no heartbeat for `edge_heartbeat_interval_ms × edge_heartbeat_max` is
//! closed (`heartbeat_timeout`). A timer per connection (Tokio's `Sleep`, about 110 bytes, reset on
//! each heartbeat) and a registration with the shutdown token (about 70 bytes) would be a tenth of
//! an idle connection's memory, so a channel keeps only its deadline, an atomic count of
//! milliseconds on its edge's [`Clock`] that each heartbeat moves forward
//! ([`crate::channel::Channel::heartbeat_deadline`]), and one task per edge ([`sweep`]) visits every bucket each
//! [`Clock::period`] and asks the connections whose deadline has passed to close, through their
//! outbox, the way a takeover does: the connection's task wakes, abandons a write that cannot
//! finish, and closes. A silent connection is so closed between its deadline and one period later
//! (a sixteenth of the deadline, at most a second).
//!
//! When the edge shuts down, the same task asks every connection to close with the shutdown reason
//! (which lets it have what was queued for it first). A connection that registers after that visit
//! sees the cancelled token itself right after registering ([`closes_if_shut_down`]): either the
//! visit found it in its bucket, or the bucket's lock orders the cancellation before the check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::bucket::Buckets;
use crate::channel::Channel;
use crate::close::CloseReason;

/// Longest time between two visits of the sweeper.
const MAX_PERIOD: Duration = Duration::from_secs(1);

/// The edge's clock for heartbeat deadlines: milliseconds since the edge started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
    deadline: Duration,
}

impl Clock {
    /// A clock starting now, for connections allowed `deadline` of silence.
    pub fn new(deadline: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            deadline,
        }
    }

    /// The current time on this clock.
    pub fn now(&self) -> u64 {
        self.millis(Instant::now())
    }

    /// The deadline of a connection heard from now.
    pub fn deadline_from_now(&self) -> u64 {
        self.millis(Instant::now() + self.deadline)
    }

    /// Time between two visits of the sweeper: how late past its deadline a silent connection may
    /// be closed.
    pub fn period(&self) -> Duration {
        (self.deadline / 16).clamp(Duration::from_millis(1), MAX_PERIOD)
    }

    fn millis(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(since).unwrap_or(u64::MAX)
    }
}

/// A channel's heartbeat deadline on its edge's [`Clock`] (`u64::MAX` until the session sets it).
#[derive(Debug)]
pub struct Deadline(AtomicU64);

impl Default for Deadline {
    fn default() -> Self {
        Self(AtomicU64::new(u64::MAX))
    }
}

impl Deadline {
    /// Moves the deadline to `at`.
    pub fn set(&self, at: u64) {
        self.0.store(at, Ordering::Relaxed);
    }

    /// True once `now` is past the deadline.
    pub fn passed(&self, now: u64) -> bool {
        self.0.load(Ordering::Relaxed) < now
    }
}

/// Closes overdue connections every [`Clock::period`] until `shutdown`, then closes them all with
/// [`CloseReason::Shutdown`].
pub async fn sweep(buckets: Arc<Buckets>, clock: Clock, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(clock.period());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = clock.now();
        close_each(&buckets, |channel| {
            channel
                .heartbeat_deadline()
                .passed(now)
                .then_some(CloseReason::HeartbeatTimeout)
        })
        .await;
    }
    close_each(&buckets, |_| Some(CloseReason::Shutdown)).await;
}

/// Asks every channel for which `reason` names one to close for it, one bucket at a time.
async fn close_each(buckets: &Buckets, reason: impl Fn(&Channel) -> Option<CloseReason>) {
    for index in 0..buckets.bucket_count() {
        buckets.for_each(index, |channel| {
            if let Some(reason) = reason(channel) {
                channel.outbox.close(reason);
            }
        });
        // A large edge has many buckets: let the connections' own tasks run in between.
        tokio::task::yield_now().await;
    }
}

/// Called right after `channel` registered: closes it if the edge is shutting down (see the module
/// docs for why no connection is missed).
pub fn closes_if_shut_down(channel: &Channel, shutdown: &CancellationToken) {
    if shutdown.is_cancelled() {
        channel.outbox.close(CloseReason::Shutdown);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Clock, Deadline};

    #[tokio::test(start_paused = true)]
    async fn a_deadline_passes_after_the_silence_allowed() {
        let clock = Clock::new(Duration::from_millis(800));
        assert_eq!(clock.period(), Duration::from_millis(50));
        let deadline = Deadline::default();
        assert!(
            !deadline.passed(clock.now()),
            "no deadline before it is set"
        );
        deadline.set(clock.deadline_from_now());
        tokio::time::advance(Duration::from_millis(800)).await;
        assert!(!deadline.passed(clock.now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(deadline.passed(clock.now()));
        assert_eq!(
            Clock::new(Duration::from_secs(3600)).period(),
            Duration::from_secs(1)
        );
    }
}
