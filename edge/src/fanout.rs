//! Executing pushes: from one `EdgePush` to frames queued on connections.
//!
//! A push is encoded once (`rim_proto::batch::encode_push`) and the same `Bytes` is queued on every
//! recipient. Key pushes look keys up in their buckets; room and broadcast pushes walk the buckets,
//! split across tasks when the edge is large enough for it to pay. Key, user and broadcast pushes are
//! filtered by each connection's watch set; room pushes are not (goim semantics).
//!
//! All pushes of one request are queued before any writer is woken ([`Wakes`]), so a connection
//! receives a request's frames in one write rather than one write per push. Consecutive pushes of a
//! request to the same recipients (a burst to a room) are merged before the walk: encoded once into
//! one op-9 frame and queued once per connection ([`Fanout::push_all`]).
//!
//! A connection too far behind (see [`crate::outbox`]) is handled by the configured
//! [`SlowConsumerPolicy`], counted and logged (rate-limited). A broadcast with a `speed` cap is
//! snapshotted and handed to one pacing task (a bounded backlog, in order), which queues at most
//! `speed` deliveries per second; its reported count is the number of recipients scheduled. A
//! delivery (message id, record) already executed within the dedup window is skipped (reported as 0
//! delivered, see [`crate::dedup`]). A `superseded` push is not a message: it closes the named
//! connection if it still holds its key here (1 delivered) and does nothing otherwise (0).
//!
//! # Durable pushes
//!
//! A push with a stream position goes to rim-aware connections as op 20 ([`DurableGroup`]: encoded
//! the first time such a recipient needs it, then shared) and to plain ones as the plain frame, so a
//! run of pushes is encoded at most twice; a rim-aware connection whose floors already cover part of
//! it (a live push racing its resume, see [`crate::durable`]) gets it without those pushes, and one
//! that has all of it is counted as reached without a frame. A plain connection costs exactly what
//! it did: one check of its `rim` pointer. A run with receipt targets carries one [`PushReceipts`]
//! to every outbox it is queued on, recorded once its first recipient's writer wrote it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rim_proto::batch::Batch;
use rim_proto::packet::VERSION;
use rim_proto::schema::{EdgePush, edge_push::Target};
use rim_proto::{HEADER_LEN, Packet};
use tokio::sync::mpsc;
// The outbox's clock (Tokio's, which tests can pause); `Instant` is the dedup window's.
use tokio::time::Instant as QueueInstant;
use tokio_util::sync::CancellationToken;

use crate::bucket::Buckets;
use crate::channel::Channel;
use crate::close::CloseReason;
use crate::config::{EdgeConfig, SlowConsumerPolicy};
use crate::dedup::{RecentDeliveries, Seen};
use crate::durable::{DurableGroup, PushReceipts};
use crate::metrics;
use crate::outbox::{Bounds, Frame, Offer};
use crate::ratelog::RateLimit;
use crate::transport::ws::MAX_BATCH;
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

/// What a run of pushes is sent as: the plain frame, the op-20 one of rim-aware connections (when
/// a push of the run has a position) and the `written` receipts it asks for. Cheap to clone.
#[derive(Clone)]
struct Delivery {
    plain: Bytes,
    durable: Option<Arc<DurableGroup>>,
    receipts: Option<Arc<PushReceipts>>,
}

impl Delivery {
    /// The delivery of `pushes` (one run) whose plain frame is `plain`.
    fn new(pushes: &[&EdgePush], plain: Bytes) -> Self {
        let targets = pushes
            .iter()
            .filter(|push| !push.receipt_target.is_empty())
            .filter_map(|push| {
                let id = crate::durable::message_id(push)?;
                Some((id.0, push.receipt_target.clone()))
            });
        Self {
            plain,
            durable: DurableGroup::new(pushes).map(Arc::new),
            receipts: PushReceipts::new(targets).map(Arc::new),
        }
    }
}

struct Paced {
    delivery: Delivery,
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
        self.push_all(std::slice::from_ref(push)).await[0]
    }

    /// Executes a request's pushes in order, waking each connection's writer once after all of them
    /// are queued; returns how many connections each push reached.
    ///
    /// Consecutive pushes to the same recipients (see [`merges_with`]) are executed as one: their
    /// packets are encoded once into one op-9 frame (up to [`MAX_BATCH`] bytes) that every recipient
    /// shares, so a burst costs each connection one queue entry, one wake and one write, not one per
    /// push. Nothing waits for pushes to merge: only those already in the request do.
    pub async fn push_all(self: &Arc<Self>, pushes: &[EdgePush]) -> Vec<u32> {
        let mut wakes = Wakes::default();
        let mut delivered = vec![0; pushes.len()];
        // Indices of the pushes (not yet executed, none a duplicate) that will leave together.
        let mut group: Vec<usize> = Vec::new();
        let mut group_len = 0;
        for (index, push) in pushes.iter().enumerate() {
            let packet_len = HEADER_LEN + push.body.len();
            let joins = group.first().is_some_and(|&first| {
                merges_with(&pushes[first], push) && group_len + packet_len <= MAX_BATCH
            });
            if !joins && !group.is_empty() {
                let members: Vec<&EdgePush> = group.iter().map(|&i| &pushes[i]).collect();
                let reached = self.execute(&members, &mut wakes).await;
                group.drain(..).for_each(|i| delivered[i] = reached);
                group_len = HEADER_LEN;
            }
            // Marked as seen only now, just before it is executed: a request cancelled earlier
            // leaves the rest of its pushes to a retry.
            let seen = self
                .recent
                .lock()
                .insert(&push.message_id, push.record, Instant::now());
            if seen == Seen::Duplicate {
                metrics::duplicate();
                continue;
            }
            if group.is_empty() {
                group_len = HEADER_LEN;
            }
            group.push(index);
            group_len += packet_len;
        }
        if !group.is_empty() {
            let members: Vec<&EdgePush> = group.iter().map(|&i| &pushes[i]).collect();
            let reached = self.execute(&members, &mut wakes).await;
            group.into_iter().for_each(|i| delivered[i] = reached);
        }
        delivered
    }

    /// Executes pushes that go to the same recipients (one, or several that [`merges_with`] joined)
    /// as one frame, leaving the writers it queued it for in `wakes`; returns how many connections it
    /// reached.
    async fn execute(self: &Arc<Self>, pushes: &[&EdgePush], wakes: &mut Wakes) -> u32 {
        let push = pushes[0];
        let frame = match pushes {
            [push] => rim_proto::batch::encode_push(push.operation, &push.body),
            _ => {
                let inner = pushes.iter().map(|p| HEADER_LEN + p.body.len()).sum();
                let mut batch = Batch::with_capacity(inner);
                for push in pushes {
                    let packet = Packet::new(VERSION, push.operation, 0, push.body.clone());
                    batch.push_packet(&packet);
                }
                batch.finish()
            }
        };
        let delivery = Delivery::new(pushes, frame);
        let (target, delivered) = match &push.target {
            Some(Target::Keys(keys)) => {
                let delivered = self.push_keys(&keys.keys, push.operation, &delivery, wakes);
                ("keys", delivered)
            }
            Some(Target::Room(room)) => {
                let room: Arc<str> = Arc::from(room.as_str());
                ("room", self.walk(Walk::Room(room), delivery, wakes).await)
            }
            Some(Target::Broadcast(broadcast)) => {
                let delivered = match usize::try_from(broadcast.speed) {
                    Ok(per_second) if per_second > 0 => {
                        self.paced_broadcast(push.operation, delivery, per_second)
                    }
                    _ => {
                        self.walk(Walk::Everyone { op: push.operation }, delivery, wakes)
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
        for _ in pushes {
            metrics::pushed(target, u64::from(delivered));
        }
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

    /// Queues `delivery` on `channel` at `now` (noting in `wakes` if its writer must be woken),
    /// applying the slow-consumer policy if the connection is too far behind. A rim-aware connection gets the
    /// op-20 frame without what its floors cover (nothing at all, and counted as reached, when they
    /// cover all of it); the floors stay locked while the frame is offered (see
    /// [`crate::durable::RimState`]).
    fn deliver(
        &self,
        channel: &Arc<Channel>,
        delivery: &Delivery,
        now: QueueInstant,
        wakes: &mut Wakes,
    ) -> bool {
        let receipts = delivery.receipts.as_ref();
        let offer = match (channel.rim(), &delivery.durable) {
            (Some(rim), Some(group)) => {
                let floors = rim.floors.lock();
                let Some(frame) = group.frame_for(&floors) else {
                    return true;
                };
                channel
                    .outbox
                    .offer_receipted(Frame::Push(frame), receipts, self.bounds, now)
            }
            _ => channel.outbox.offer_receipted(
                Frame::Push(delivery.plain.clone()),
                receipts,
                self.bounds,
                now,
            ),
        };
        match offer {
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

    fn push_keys(&self, keys: &[String], op: i32, delivery: &Delivery, wakes: &mut Wakes) -> u32 {
        let mut delivered = 0;
        let now = QueueInstant::now();
        for key in keys {
            if let Some(channel) = self.buckets.get(key)
                && channel.accepts_op(op)
                && self.deliver(&channel, delivery, now, wakes)
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
        delivery: &Delivery,
        wakes: &mut Wakes,
    ) -> u32 {
        let mut delivered = 0;
        let now = QueueInstant::now();
        for index in indices {
            match walk {
                Walk::Room(room) => self.buckets.for_each_in_room(index, room, |channel| {
                    delivered += u32::from(self.deliver(channel, delivery, now, wakes));
                }),
                Walk::Everyone { op } => self.buckets.for_each(index, |channel| {
                    if channel.accepts_op(*op) {
                        delivered += u32::from(self.deliver(channel, delivery, now, wakes));
                    }
                }),
            }
        }
        delivered
    }

    /// Walks every bucket, on several tasks when the edge is large; the helpers' wake-ups join `wakes`.
    async fn walk(self: &Arc<Self>, walk: Walk, delivery: Delivery, wakes: &mut Wakes) -> u32 {
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
            let (this, walk, delivery) = (self.clone(), walk.clone(), delivery.clone());
            helpers.push(tokio::spawn(async move {
                let mut wakes = Wakes::default();
                let delivered = this.walk_buckets(range, &walk, &delivery, &mut wakes);
                (delivered, wakes)
            }));
        }
        let mut delivered = self.walk_buckets(0..per_part.min(buckets), &walk, &delivery, wakes);
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

    fn paced_broadcast(&self, op: i32, delivery: Delivery, per_second: usize) -> u32 {
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
            delivery,
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

/// True if `next` goes to exactly the connections `first` goes to, so both can leave as one frame: the
/// same room (rooms ignore watch sets), the same keys with the same op, or an unpaced broadcast of the
/// same op. Superseded closes and paced broadcasts always run alone.
fn merges_with(first: &EdgePush, next: &EdgePush) -> bool {
    let same_op = first.operation == next.operation;
    match (&first.target, &next.target) {
        (Some(Target::Room(a)), Some(Target::Room(b))) => a == b,
        (Some(Target::Keys(a)), Some(Target::Keys(b))) => same_op && a.keys == b.keys,
        (Some(Target::Broadcast(a)), Some(Target::Broadcast(b))) => {
            same_op && a.speed <= 0 && b.speed <= 0
        }
        _ => false,
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
            let now = QueueInstant::now();
            let delivered = chunk
                .iter()
                .filter(|channel| fanout.deliver(channel, &paced.delivery, now, &mut wakes))
                .count();
            metrics::deliveries(delivered as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rim_proto::message::{Packets, decode};
    use rim_proto::op;
    use rim_proto::schema::{EdgeKeys, EdgePush, edge_push::Target};
    use tokio_util::sync::CancellationToken;

    use super::{Fanout, FanoutSettings};
    use crate::auth::Identity;
    use crate::bucket::Buckets;
    use crate::channel::Channel;
    use crate::config::EdgeConfig;
    use crate::outbox::Frame;

    fn push(id: &str, op_code: i32, body: &str, target: Target) -> EdgePush {
        EdgePush {
            message_id: id.into(),
            operation: op_code,
            body: body.as_bytes().to_vec().into(),
            record: 0,
            position: None,
            receipt_target: String::new(),
            target: Some(target),
        }
    }

    fn room(name: &str) -> Target {
        Target::Room(name.into())
    }

    fn keys(keys: &[&str]) -> Target {
        Target::Keys(EdgeKeys {
            keys: keys.iter().map(|k| k.to_string()).collect(),
        })
    }

    /// Frames queued on `channel`, each as the (op, body) packets it carries.
    fn queued(channel: &Channel) -> Vec<(bytes::Bytes, Vec<(i32, String)>)> {
        let (frames, _) = channel.outbox.drain();
        frames
            .into_iter()
            .map(|frame| {
                let Frame::Push(bytes) = frame else {
                    panic!("a push frame")
                };
                let batch = decode(bytes.clone(), usize::MAX).unwrap();
                assert_eq!((batch.op, batch.seq), (op::RAW, 0));
                let packets = Packets::new(batch.body, usize::MAX)
                    .map(|p| p.unwrap())
                    .map(|p| (p.op, String::from_utf8(p.body.to_vec()).unwrap()))
                    .collect();
                (bytes, packets)
            })
            .collect()
    }

    async fn fanout_with(members: &[(&str, &str, &[i32])]) -> (Arc<Fanout>, Vec<Arc<Channel>>) {
        let buckets = Arc::new(Buckets::new(4));
        let config = EdgeConfig::local().unwrap();
        let fanout = Fanout::new(
            buckets.clone(),
            FanoutSettings::from_config(&config),
            CancellationToken::new(),
        );
        let channels = members
            .iter()
            .enumerate()
            .map(|(id, (key, room, accepts))| {
                let identity = Identity {
                    room: room.to_string(),
                    accepts: accepts.to_vec(),
                    ..Identity::default()
                };
                let channel = Arc::new(Channel::new(
                    id as u64,
                    Arc::from(*key),
                    &identity,
                    [127, 0, 0, 1].into(),
                ));
                buckets.register(&channel);
                channel
            })
            .collect();
        (fanout, channels)
    }

    #[tokio::test]
    async fn consecutive_room_pushes_are_one_frame_shared_by_every_member() {
        let (fanout, channels) = fanout_with(&[
            ("a", "live://1", &[]),
            ("b", "live://1", &[]),
            ("c", "", &[]),
        ])
        .await;
        let pushes = [
            push("m1", 1000, "one", room("live://1")),
            push("m2", 1001, "two", room("live://1")),
            push("m1", 1000, "one again", room("live://1")),
            push("m3", 1000, "three", room("live://1")),
        ];
        assert_eq!(
            fanout.push_all(&pushes).await,
            [2, 2, 0, 2],
            "m1 again is a duplicate"
        );
        let (a, b) = (queued(&channels[0]), queued(&channels[1]));
        assert_eq!(a.len(), 1, "one frame per connection");
        let expected = vec![
            (1000, "one".to_string()),
            (1001, "two".to_string()),
            (1000, "three".to_string()),
        ];
        assert_eq!(a[0].1, expected, "both packets, in order");
        assert_eq!(b[0].1, expected);
        assert_eq!(a[0].0.as_ptr(), b[0].0.as_ptr(), "built once, shared");
        assert!(queued(&channels[2]).is_empty(), "not in the room");
    }

    #[tokio::test]
    async fn merging_keeps_watch_sets_and_order() {
        let (fanout, channels) =
            fanout_with(&[("a", "live://1", &[1000]), ("b", "", &[2000])]).await;
        let pushes = [
            push("k1", 1000, "k1", keys(&["a", "b"])),
            push("k2", 1000, "k2", keys(&["a", "b"])),
            push("k3", 2000, "k3", keys(&["a", "b"])),
            push("r1", 3000, "r1", room("live://1")),
            push("k4", 1000, "k4", keys(&["a"])),
        ];
        assert_eq!(fanout.push_all(&pushes).await, [1, 1, 1, 1, 1]);
        let a: Vec<_> = queued(&channels[0]).into_iter().map(|(_, p)| p).collect();
        let packet = |op_code: i32, body: &str| (op_code, body.to_string());
        assert_eq!(
            a,
            [
                vec![packet(1000, "k1"), packet(1000, "k2")],
                vec![packet(3000, "r1")],
                vec![packet(1000, "k4")],
            ],
            "a watches 1000 only; rooms ignore watch sets"
        );
        let b: Vec<_> = queued(&channels[1]).into_iter().map(|(_, p)| p).collect();
        assert_eq!(b, [vec![packet(2000, "k3")]]);
    }
}
