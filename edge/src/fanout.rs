//! Executing pushes: from one `EdgePush` to frames queued on connections.
//!
//! A push is encoded once (`rim_proto::batch::encode_push`) and the same `Bytes` is queued on every
//! recipient. Key pushes look keys up in their buckets; room and broadcast pushes walk the buckets,
//! split across tasks when the edge is large enough for it to pay. Key, user and broadcast pushes are
//! filtered by each connection's watch set; room pushes are not (goim semantics).
//!
//! All pushes of one request are queued before any writer is woken ([`Wakes`]), so a connection
//! receives a request's frames in one write rather than one write per push.
//!
//! A connection too far behind (see [`crate::outbox`]) is handled by the configured
//! [`SlowConsumerPolicy`], counted and logged (rate-limited). A broadcast with a `speed` cap is
//! snapshotted and handed to one pacing task (a bounded backlog, in order), which queues at most
//! `speed` deliveries per second; its reported count is the number of recipients scheduled. A
//! delivery (message id, record) already executed within the dedup window is skipped (reported as 0
//! delivered, see [`crate::dedup`]). A `superseded` push is not a message: it closes the named
//! connection if it still holds its key here (1 delivered) and does nothing otherwise (0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rim_proto::schema::{EdgePush, edge_push::Target};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bucket::Buckets;
use crate::channel::Channel;
use crate::close::CloseReason;
use crate::config::{EdgeConfig, SlowConsumerPolicy};
use crate::dedup::{RecentDeliveries, Seen};
use crate::metrics;
use crate::outbox::{Bounds, Frame, Offer};
use crate::ratelog::RateLimit;
use crate::wakes::Wakes;

/// Below this many connections a room or broadcast push runs on the caller's task alone.
const PARALLEL_MIN_CONNECTIONS: usize = 4096;
/// Paced broadcasts waiting for the pacer; more are refused (counted as `broadcast_backlog` drops).
const PACED_BACKLOG: usize = 16;
/// The pacer releases a tenth of a second's worth of deliveries at a time.
const PACE_TICK: Duration = Duration::from_millis(100);

/// Slow-consumer lines per second in the log.
static SLOW_CONSUMER_LOG: RateLimit = RateLimit::new(5);

/// The fan-out's policies, taken from [`EdgeConfig`].
#[derive(Debug, Clone, Copy)]
pub struct FanoutSettings {
    /// How far behind a connection may fall.
    pub bounds: Bounds,
    /// What happens to a connection past its bounds.
    pub slow_consumer: SlowConsumerPolicy,
    /// How long deliveries are remembered for deduplication.
    pub dedup_window: Duration,
    /// Most deliveries remembered.
    pub dedup_capacity: usize,
}

impl FanoutSettings {
    /// Copies the fan-out's settings out of `config`.
    pub fn from_config(config: &EdgeConfig) -> Self {
        Self {
            bounds: config.queue_bounds(),
            slow_consumer: config.edge_slow_consumer,
            dedup_window: Duration::from_millis(config.edge_dedup_window_ms),
            dedup_capacity: config.edge_dedup_capacity,
        }
    }
}

/// Which connections a bucket walk reaches.
#[derive(Clone)]
enum Walk {
    Room(Arc<str>),
    Everyone { op: i32 },
}

struct Paced {
    frame: Bytes,
    recipients: Vec<Arc<Channel>>,
    per_second: usize,
}

/// Turns pushes into queued frames; shared by the internal endpoint and in-process callers.
pub struct Fanout {
    buckets: Arc<Buckets>,
    recent: Mutex<RecentDeliveries>,
    bounds: Bounds,
    policy: SlowConsumerPolicy,
    workers: usize,
    paced: mpsc::Sender<Paced>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("bounds", &self.bounds)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Fanout {
    /// Creates the fan-out and its pacing task (which stops on `shutdown`).
    pub fn new(
        buckets: Arc<Buckets>,
        settings: FanoutSettings,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (paced, backlog) = mpsc::channel(PACED_BACKLOG);
        let fanout = Arc::new(Self {
            buckets,
            recent: Mutex::new(RecentDeliveries::new(
                settings.dedup_window,
                settings.dedup_capacity,
            )),
            bounds: settings.bounds,
            policy: settings.slow_consumer,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            paced,
        });
        tokio::spawn(pace(Arc::downgrade(&fanout), backlog, shutdown));
        fanout
    }

    /// Executes one push; returns how many connections it reached.
    pub async fn push(self: &Arc<Self>, push: &EdgePush) -> u32 {
        self.push_into(push, &mut Wakes::default()).await
    }

    /// Executes a request's pushes in order, waking each connection's writer once after all of them
    /// are queued; returns how many connections each push reached.
    pub async fn push_all(self: &Arc<Self>, pushes: &[EdgePush]) -> Vec<u32> {
        let mut wakes = Wakes::default();
        let mut delivered = Vec::with_capacity(pushes.len());
        for push in pushes {
            delivered.push(self.push_into(push, &mut wakes).await);
        }
        delivered
    }

    /// Executes one push, leaving the writers it queued frames for in `wakes`.
    async fn push_into(self: &Arc<Self>, push: &EdgePush, wakes: &mut Wakes) -> u32 {
        let seen = self
            .recent
            .lock()
            .insert(&push.message_id, push.record, Instant::now());
        if seen == Seen::Duplicate {
            metrics::duplicate();
            return 0;
        }
        let frame = rim_proto::batch::encode_push(push.operation, &push.body);
        let (target, delivered) = match &push.target {
            Some(Target::Keys(keys)) => {
                let delivered = self.push_keys(&keys.keys, push.operation, &frame, wakes);
                ("keys", delivered)
            }
            Some(Target::Room(room)) => {
                let room: Arc<str> = Arc::from(room.as_str());
                ("room", self.walk(Walk::Room(room), frame, wakes).await)
            }
            Some(Target::Broadcast(broadcast)) => {
                let delivered = match usize::try_from(broadcast.speed) {
                    Ok(per_second) if per_second > 0 => {
                        self.paced_broadcast(push.operation, frame, per_second)
                    }
                    _ => {
                        self.walk(Walk::Everyone { op: push.operation }, frame, wakes)
                            .await
                    }
                };
                ("broadcast", delivered)
            }
            Some(Target::Superseded(superseded)) => (
                "superseded",
                self.supersede(&superseded.key, superseded.connection_id),
            ),
            None => ("none", 0),
        };
        metrics::pushed(target, u64::from(delivered));
        delivered
    }

    /// Closes the connection `connection_id` if it still holds `key` here; 1 if it did.
    fn supersede(&self, key: &str, connection_id: u64) -> u32 {
        match self.buckets.get(key) {
            Some(channel) if channel.id() == connection_id => {
                channel.outbox.close(CloseReason::Superseded);
                1
            }
            _ => 0,
        }
    }

    /// Queues `frame` on `channel` (noting in `wakes` if its writer must be woken), applying the
    /// slow-consumer policy if the connection is too far behind.
    fn deliver(&self, channel: &Arc<Channel>, frame: &Bytes, wakes: &mut Wakes) -> bool {
        match channel
            .outbox
            .offer(Frame::Push(frame.clone()), self.bounds)
        {
            Offer::Queued => true,
            Offer::QueuedAsleep => {
                wakes.add(channel);
                true
            }
            Offer::Full(behind) => {
                metrics::dropped(behind.label(), 1);
                let close = self.policy == SlowConsumerPolicy::Close;
                if let Some(suppressed) = SLOW_CONSUMER_LOG.allow() {
                    tracing::warn!(
                        key = %channel.key(),
                        id = channel.id(),
                        ip = %channel.ip(),
                        bound = behind.label(),
                        bytes_behind = channel.outbox.bytes_behind(),
                        action = if close { "close" } else { "drop" },
                        suppressed,
                        "slow consumer"
                    );
                }
                if close {
                    channel.outbox.close(CloseReason::SlowConsumer(behind));
                }
                false
            }
            Offer::Closed => {
                metrics::dropped("closing", 1);
                false
            }
        }
    }

    fn push_keys(&self, keys: &[String], op: i32, frame: &Bytes, wakes: &mut Wakes) -> u32 {
        let mut delivered = 0;
        for key in keys {
            if let Some(channel) = self.buckets.get(key)
                && channel.accepts_op(op)
                && self.deliver(&channel, frame, wakes)
            {
                delivered += 1;
            }
        }
        delivered
    }

    /// Delivers to every connection the walk selects in buckets `indices`.
    fn walk_buckets(
        &self,
        indices: std::ops::Range<usize>,
        walk: &Walk,
        frame: &Bytes,
        wakes: &mut Wakes,
    ) -> u32 {
        let mut delivered = 0;
        for index in indices {
            match walk {
                Walk::Room(room) => self.buckets.for_each_in_room(index, room, |channel| {
                    delivered += u32::from(self.deliver(channel, frame, wakes));
                }),
                Walk::Everyone { op } => self.buckets.for_each(index, |channel| {
                    if channel.accepts_op(*op) {
                        delivered += u32::from(self.deliver(channel, frame, wakes));
                    }
                }),
            }
        }
        delivered
    }

    /// Walks every bucket, on several tasks when the edge is large; the helpers' wake-ups join `wakes`.
    async fn walk(self: &Arc<Self>, walk: Walk, frame: Bytes, wakes: &mut Wakes) -> u32 {
        let buckets = self.buckets.bucket_count();
        let parts = if self.buckets.connection_count() >= PARALLEL_MIN_CONNECTIONS {
            self.workers.min(buckets)
        } else {
            1
        };
        let per_part = buckets.div_ceil(parts);
        let mut helpers = Vec::with_capacity(parts.saturating_sub(1));
        for part in 1..parts {
            let range = part * per_part..((part + 1) * per_part).min(buckets);
            let (this, walk, frame) = (self.clone(), walk.clone(), frame.clone());
            helpers.push(tokio::spawn(async move {
                let mut wakes = Wakes::default();
                let delivered = this.walk_buckets(range, &walk, &frame, &mut wakes);
                (delivered, wakes)
            }));
        }
        let mut delivered = self.walk_buckets(0..per_part.min(buckets), &walk, &frame, wakes);
        for helper in helpers {
            match helper.await {
                Ok((count, helper_wakes)) => {
                    delivered += count;
                    wakes.absorb(helper_wakes);
                }
                Err(error) => tracing::error!(%error, "fan-out task failed"),
            }
        }
        delivered
    }

    fn paced_broadcast(&self, op: i32, frame: Bytes, per_second: usize) -> u32 {
        let mut recipients = Vec::new();
        for index in 0..self.buckets.bucket_count() {
            self.buckets.for_each(index, |channel| {
                if channel.accepts_op(op) {
                    recipients.push(channel.clone());
                }
            });
        }
        let count = recipients.len();
        let paced = Paced {
            frame,
            recipients,
            per_second,
        };
        match self.paced.try_send(paced) {
            Ok(()) => u32::try_from(count).unwrap_or(u32::MAX),
            Err(_) => {
                tracing::warn!("paced broadcast backlog full; broadcast dropped");
                metrics::dropped("broadcast_backlog", count as u64);
                0
            }
        }
    }
}

/// The pacing task: runs paced broadcasts one after another, `per_second / 10` deliveries per tick.
async fn pace(
    fanout: std::sync::Weak<Fanout>,
    mut backlog: mpsc::Receiver<Paced>,
    shutdown: CancellationToken,
) {
    while let Some(Some(paced)) = shutdown.run_until_cancelled(backlog.recv()).await {
        // A fresh interval per broadcast: ticks missed while idle must not burst past the cap.
        let mut tick = tokio::time::interval(PACE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let per_tick = (paced.per_second / 10).max(1);
        for chunk in paced.recipients.chunks(per_tick) {
            if shutdown.run_until_cancelled(tick.tick()).await.is_none() {
                return;
            }
            let Some(fanout) = fanout.upgrade() else {
                return;
            };
            // This tick's writers are woken when `wakes` drops at the end of the turn.
            let mut wakes = Wakes::default();
            let delivered = chunk
                .iter()
                .filter(|channel| fanout.deliver(channel, &paced.frame, &mut wakes))
                .count();
            metrics::deliveries(delivered as u64);
        }
    }
}
