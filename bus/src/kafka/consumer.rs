//! A job worker's Kafka consumer: one region topic, one consumer group, manual commits.
//!
//! Offsets are never committed automatically (`enable.auto.commit=false`): the worker commits what
//! the edges took, and [`PendingOffsets`] turns that into a commit point per partition that never
//! passes an unfinished record. When a rebalance takes a partition away, its pending records are
//! forgotten (their new owner redelivers them), so a late commit cannot move another member's
//! offset backwards.
//!
//! Commits do not hold up the worker: [`BusConsumer::commit`] records the new commit points and
//! returns; a committer task sends them, one commit at a time (so they reach the broker in order,
//! each covering every point recorded before it was sent), and sends what was recorded meanwhile
//! as soon as the previous one is answered. A failed commit keeps its points for the next one and
//! is reported by the next call to `commit`.
//!
//! An undecodable record (not protobuf, no key, no id or target) cannot be retried into shape: it
//! is logged, counted as `rim_bus_corrupt_total`, treated as done and skipped, so one bad record
//! never wedges a partition.
//!
//! A record written as a group of one push's records (see `group`) is handed out as those records,
//! all in the same batch and at the record's position, which is committed once all are done.

use super::KafkaSettings;
use super::group::{self, GROUP_HEADER, GROUP_VERSION};
use super::topics::TopicCreator;
use crate::offsets::PendingOffsets;
use crate::{BusConsumer, BusError, BusHealth, HealthProbe, IncomingPush, LogPosition};
use async_trait::async_trait;
use futures_util::FutureExt;
use parking_lot::Mutex;
use prost::Message as _;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use rim_proto::schema::PushMessage;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Reads one region's pushes as a member of a consumer group.
pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer<OwnershipContext>>,
    pending: Arc<Mutex<PendingOffsets>>,
    topics: TopicCreator,
    topic: String,
    /// A read failed: refresh the topic's metadata and check the read positions before reading
    /// again (see [`KafkaConsumer::recover`]); no commits meanwhile, since the broker may have lost
    /// the log they point into.
    recovering: bool,
    /// Commit points waiting to be sent, and what was committed.
    commits: Arc<Mutex<CommitState>>,
    /// The committer task, while it runs. A commit that timed out is still in librdkafka's hands:
    /// it is sent when the broker is back, so [`KafkaConsumer::recover`] waits for the task before
    /// setting the restart points (else a commit could land after them, and a rejoin would read
    /// from the old log's offset in the new log).
    committer: Option<tokio::task::JoinHandle<()>>,
    group_id: String,
    commit_timeout: Duration,
}

/// What the consumer and its committer task share.
#[derive(Default)]
struct CommitState {
    /// Commit points recorded and not yet sent (or sent by a commit that failed), per partition.
    unsent: HashMap<i32, i64>,
    /// The last offset this consumer committed per partition, to tell a broker that forgot it.
    committed: HashMap<i32, i64>,
    /// The committer task is running: it sends `unsent` before it ends.
    sending: bool,
    /// The latest commit failure not yet reported by [`BusConsumer::commit`].
    failure: Option<String>,
    /// A commit that timed out and is still in librdkafka's hands: the next one waits for it, so
    /// an older commit never lands after a newer one.
    timed_out: Option<tokio::task::JoinHandle<KafkaResult<()>>>,
}

/// Drops the pending records of partitions a rebalance takes away.
struct OwnershipContext {
    pending: Arc<Mutex<PendingOffsets>>,
}

impl ClientContext for OwnershipContext {}

impl ConsumerContext for OwnershipContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut pending = self.pending.lock();
            for partition in partitions.elements() {
                pending.forget(partition.partition());
            }
        }
    }
}

impl KafkaConsumer {
    /// Joins `group_id` on `region`'s topic as a dynamic member (see [`KafkaConsumer::join`]).
    pub async fn new(
        settings: &KafkaSettings,
        region: &str,
        group_id: &str,
    ) -> Result<Self, BusError> {
        Self::join(settings, region, group_id, None).await
    }

    /// Joins `group_id` on `region`'s topic (creating the topic if missing). A new group starts at
    /// the oldest retained record, so pushes published before the first worker started are not lost.
    ///
    /// With an `instance_id` (Kafka's `group.instance.id`, static membership), a worker restarted
    /// under the same id takes its partitions back at once instead of waiting for the group to
    /// notice that its previous life died; two live workers must never share one id (the broker
    /// fences the older). The group timeouts are chosen for that (see [`GROUP_TIMEOUTS`]).
    pub async fn join(
        settings: &KafkaSettings,
        region: &str,
        group_id: &str,
        instance_id: Option<&str>,
    ) -> Result<Self, BusError> {
        let topic = settings.topic(region);
        let topics = TopicCreator::new(settings)?;
        topics.ensure(std::slice::from_ref(&topic)).await?;
        let pending = Arc::new(Mutex::new(PendingOffsets::default()));
        let context = OwnershipContext {
            pending: pending.clone(),
        };
        let consumer: StreamConsumer<OwnershipContext> = settings
            .consumer_config(group_id, instance_id)
            .create_with_context(context)
            .map_err(|err| BusError::Unavailable(format!("kafka consumer: {err}")))?;
        consumer
            .subscribe(&[&topic])
            .map_err(|err| BusError::Unavailable(format!("subscribing to {topic}: {err}")))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            pending,
            topics,
            topic,
            recovering: false,
            commits: Arc::default(),
            committer: None,
            group_id: group_id.to_owned(),
            commit_timeout: settings.delivery_timeout,
        })
    }
}

impl KafkaConsumer {
    /// Runs after a failed read, once the broker answers again: refreshes the topic's metadata and
    /// moves back the read positions the broker's log no longer has.
    ///
    /// The metadata is asked for on the consumer's own connection, so its cache holds the topic as
    /// the broker knows it now (a recreated topic has a new id) before it fetches again. librdkafka
    /// 2.12.1 crashes (NULL topic name in `rd_kafka_metadata_update_op`) when a fetch answer reports
    /// a leader change for a topic id it cannot resolve, which a tansu restarted without its storage
    /// produced when the consumer resumed fetching with its stale cache.
    ///
    /// A broker that lost its storage lost the group too, yet a static member may keep its
    /// assignment and its positions in the old log: tansu 0.6 accepted its heartbeats and answered
    /// its fetches beyond the new log's end with no records instead of `OFFSET_OUT_OF_RANGE`, so
    /// librdkafka never reset them, and the worker would read again (if at all) only once the new
    /// log passed the old position, skipping what came before. See [`lost_positions`].
    async fn recover(&mut self) -> Result<(), BusError> {
        if let Some(earlier) = self.committer.as_mut() {
            tokio::time::timeout(self.commit_timeout, earlier)
                .await
                .map_err(|_| {
                    BusError::Unavailable(
                        "a commit from before the failure is still under way".into(),
                    )
                })?
                // Its outcome no longer matters: the restart points set below decide.
                .ok();
            self.committer = None;
        }
        let timed_out = self.commits.lock().timed_out.take();
        if let Some(earlier) = timed_out {
            tokio::time::timeout(self.commit_timeout, earlier)
                .await
                .map_err(|_| {
                    BusError::Unavailable(
                        "a commit from before the failure is still under way".into(),
                    )
                })?
                .ok();
        }
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let committed = self.commits.lock().committed.clone();
        let pending = self.pending.clone();
        let moved = tokio::task::spawn_blocking(move || {
            consumer
                .fetch_metadata(Some(&topic), super::HEALTH_TIMEOUT)
                .map_err(|err| format!("metadata of {topic}: {err}"))?;
            let lost = lost_positions(consumer.as_ref(), &topic, &committed)
                .map_err(|err| format!("positions in {topic}: {err}"))?;
            if lost.is_empty() {
                return Ok(lost);
            }
            let mut restart_points = TopicPartitionList::new();
            for moved in &lost {
                // Records of the old log must not commit offsets into the new one.
                pending.lock().forget(moved.partition);
                let to = Offset::Offset(moved.to);
                consumer
                    .seek(&topic, moved.partition, to, super::HEALTH_TIMEOUT)
                    .map_err(|err| format!("seeking {topic} [{}]: {err}", moved.partition))?;
                restart_points
                    .add_partition_offset(&topic, moved.partition, to)
                    .map_err(|err| format!("commit list: {err}"))?;
            }
            // A commit of the old log's offsets that was under way when the broker went down is
            // sent to the new broker once it is back; committing the restart points overrides it,
            // so a rejoin of the group (which reads the committed offsets) cannot skip the new log.
            consumer
                .commit(&restart_points, CommitMode::Sync)
                .map_err(|err| format!("committing the restart points: {err}"))?;
            Ok::<_, String>(lost)
        })
        .await
        .map_err(|err| BusError::Unavailable(format!("recovery task: {err}")))?
        .map_err(BusError::Unavailable)?;
        for lost in moved {
            tracing::warn!(
                topic = %self.topic,
                partition = lost.partition,
                from = lost.from,
                to = lost.to,
                "the broker lost this partition's log or the group's offsets; reading it again from there"
            );
            let mut commits = self.commits.lock();
            commits.committed.remove(&lost.partition);
            commits.unsent.remove(&lost.partition);
        }
        self.recovering = false;
        Ok(())
    }
}

impl KafkaSettings {
    /// The librdkafka configuration of rim's consumer in `group_id` (static member `instance_id`
    /// when given): manual commits, a new group starting at the oldest record, rim's group
    /// timeouts ([`GROUP_TIMEOUTS`]) and low-latency fetches ([`LOW_LATENCY`]). Public so tools
    /// can measure a broker with exactly rim's settings (`bus-latency` in rim-bench).
    pub fn consumer_config(&self, group_id: &str, instance_id: Option<&str>) -> ClientConfig {
        let mut properties: Vec<(&str, String)> = vec![
            ("group.id", group_id.to_owned()),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("auto.offset.reset", "earliest".into()),
        ];
        properties.extend(
            GROUP_TIMEOUTS
                .iter()
                .chain(LOW_LATENCY)
                .map(|(key, value)| (*key, (*value).to_owned())),
        );
        if let Some(instance_id) = instance_id {
            properties.push(("group.instance.id", instance_id.to_owned()));
        }
        self.client_config(&properties)
    }
}

/// A partition whose read position [`lost_positions`] moves back.
struct LostPosition {
    partition: i32,
    from: i64,
    to: i64,
}

/// The assigned partitions of `topic` whose position is in a log the broker no longer has: the
/// broker forgot (or moved back) an offset this consumer committed, or the position is beyond the
/// log's end. Each moves to the group's committed offset when the log has it, else to the log's
/// beginning (as `auto.offset.reset=earliest` does for a new group). Blocking.
fn lost_positions(
    consumer: &StreamConsumer<OwnershipContext>,
    topic: &str,
    committed_here: &HashMap<i32, i64>,
) -> KafkaResult<Vec<LostPosition>> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    let positions = consumer.position()?;
    let committed = consumer.committed_offsets(assignment, super::HEALTH_TIMEOUT)?;
    let mut lost = Vec::new();
    for element in positions.elements_for_topic(topic) {
        let partition = element.partition();
        let Offset::Offset(position) = element.offset() else {
            continue;
        };
        let at_broker = committed
            .find_partition(topic, partition)
            .and_then(|found| match found.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
        let forgotten = committed_here
            .get(&partition)
            .is_some_and(|ours| at_broker.is_none_or(|theirs| theirs < *ours));
        let (low, high) = consumer.fetch_watermarks(topic, partition, super::HEALTH_TIMEOUT)?;
        if forgotten || position > high {
            let to = at_broker
                .filter(|offset| (low..=high).contains(offset))
                .unwrap_or(low);
            lost.push(LostPosition {
                partition,
                from: position,
                to,
            });
        }
    }
    Ok(lost)
}

/// Group membership timeouts, for static members (see [`KafkaConsumer::join`]) that restart.
///
/// - `session.timeout.ms` (30 s): a member silent this long is removed. With static membership a
///   restarted worker takes its partitions back *within* its session without a rebalance, so the
///   session must cover a restart (on tansu 0.6.0 a static member whose session had expired was
///   rejoined slowly or not at all: see `tests/restart.rs`). The cost: a worker that dies for good
///   holds its partitions this long before the group's other workers take them.
/// - `max.poll.interval.ms` (30 s, librdkafka needs it at least the session timeout) is also the
///   *rebalance timeout* a member announces when it joins: how long the coordinator waits for the
///   members to rejoin. librdkafka's default (300 s) let a restarted job wait minutes on its dead
///   predecessor. The worker polls continuously (the lane deadlines bound how long it stops
///   reading); a worker that still exceeds it leaves the group and rejoins on its next read.
/// - heartbeats every second, so a broker that lost the group is noticed quickly.
const GROUP_TIMEOUTS: &[(&str, &str)] = &[
    ("session.timeout.ms", "30000"),
    ("heartbeat.interval.ms", "1000"),
    ("max.poll.interval.ms", "30000"),
];

/// Fetch and reconnect defaults for a latency-sensitive consumer: a fetch returns as soon as a record
/// is there (the broker waits at most 10 ms for more), a lost broker is retried within a second or
/// two, and a topic recreated behind the consumer's back (a broker that lost its storage) is seen
/// within seconds. Operators override any of them with [`super::KafkaOptions`].
///
/// `fetch.queue.backoff.ms`: when a worker fell so far behind that librdkafka's local queue holds
/// `queued.min.messages` records, fetching pauses; librdkafka's default pause (1 s) would leave a
/// worker that just caught up idle for up to a second with records waiting at the broker.
///
/// `fetch.wait.max.ms` costs a Kafka broker nothing in latency (it answers as soon as records
/// arrive); tansu 0.6, the test broker, sleeps through the whole wait even when it holds records
/// (see rim-bench's `bus-latency`), so there it adds 10 to 20 ms per push.
const LOW_LATENCY: &[(&str, &str)] = &[
    ("fetch.wait.max.ms", "10"),
    ("fetch.queue.backoff.ms", "10"),
    ("fetch.error.backoff.ms", "100"),
    ("reconnect.backoff.ms", "100"),
    ("reconnect.backoff.max.ms", "2000"),
    ("topic.metadata.refresh.interval.ms", "5000"),
];

/// Most queued errors one read takes (see [`KafkaConsumer::next_batch`]): far more than an outage
/// queues, and a bound on the read's work should errors keep coming.
const ERRORS_PER_READ: usize = 1024;

/// The most pushes [`KafkaConsumer::next_batch`] makes room for up front, whatever it is asked for.
const MAX_BATCH_CAPACITY: usize = 4096;

/// Decodes a record into its pushes (one, or a group's) appended to `batch`, and says how many
/// (appending nothing if the record is corrupt, then it says why).
fn decode(
    message: &BorrowedMessage<'_>,
    position: LogPosition,
    batch: &mut Vec<IncomingPush>,
) -> Result<usize, BusError> {
    let corrupt = |reason: String| BusError::Corrupt {
        partition: position.partition,
        offset: position.offset,
        reason,
    };
    let payload = message.payload().unwrap_or_default();
    let grouped = message.headers().is_some_and(|headers| {
        headers
            .iter()
            .any(|header| header.key == GROUP_HEADER && header.value == Some(GROUP_VERSION))
    });
    if grouped {
        // One copy of the record; the members' bodies share it.
        let pushes =
            group::expand(bytes::Bytes::copy_from_slice(payload), position).map_err(corrupt)?;
        let count = pushes.len();
        batch.extend(pushes);
        return Ok(count);
    }
    let key = message
        .key()
        .ok_or_else(|| corrupt("no record key".into()))?;
    let key =
        std::str::from_utf8(key).map_err(|err| corrupt(format!("key is not UTF-8: {err}")))?;
    let push =
        PushMessage::decode(payload).map_err(|err| corrupt(format!("not a PushMessage: {err}")))?;
    if push.message_id.is_empty() || push.target.is_none() {
        return Err(corrupt("push without message id or target".into()));
    }
    batch.push(IncomingPush {
        partition_key: key.to_owned(),
        position,
        message: push,
    });
    Ok(1)
}

#[async_trait]
impl BusConsumer for KafkaConsumer {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<IncomingPush>, BusError> {
        // A broker that lost its storage lost the topic too: recreate it (a no-op once it exists).
        self.topics
            .ensure(std::slice::from_ref(&self.topic))
            .await?;
        if self.recovering {
            self.recover().await?;
        }
        // Sized once for a full batch (a group's records may add more).
        let mut batch = Vec::with_capacity(max.clamp(1, MAX_BATCH_CAPACITY));
        // librdkafka queues an error for every failed connection attempt of each of its broker
        // connections, and the records fetched later wait behind them. A worker does not read
        // while it pauses after a failed read, so after an outage many stale errors are queued:
        // returning them one per read would cost a pause each (minutes after a 10 s outage). So
        // every error already queued is taken here, and the read fails once, with the latest, only
        // if no record is ready behind them.
        let mut failure = None;
        let mut errors = 0;
        while batch.len() < max.max(1) && errors < ERRORS_PER_READ {
            // Wait for the first item only; then take what is already queued, without waiting.
            let received = if batch.is_empty() && failure.is_none() {
                self.consumer.recv().await
            } else {
                match self.consumer.recv().now_or_never() {
                    Some(received) => received,
                    None => break,
                }
            };
            let message = match received {
                Ok(message) => message,
                Err(err) => {
                    errors += 1;
                    if !batch.is_empty() {
                        tracing::warn!(topic = %self.topic, %err, "consumer error after a partial batch");
                    }
                    failure = Some(err);
                    continue;
                }
            };
            let position = LogPosition {
                partition: message.partition(),
                offset: message.offset(),
            };
            match decode(&message, position, &mut batch) {
                Ok(pushes) => self.pending.lock().delivered(position, pushes),
                Err(err) => {
                    tracing::warn!(topic = %self.topic, %err, "skipping undecodable record");
                    metrics::counter!("rim_bus_corrupt_total").increment(1);
                    let mut pending = self.pending.lock();
                    pending.delivered(position, 1);
                    pending.done([position]);
                }
            }
        }
        if failure.is_some() {
            // Whatever broke, check on the next read that the topic is still there.
            self.topics.forget(&self.topic);
            self.recovering = true;
        }
        match failure {
            Some(err) if batch.is_empty() => Err(BusError::Unavailable(format!(
                "consuming {}: {err}",
                self.topic
            ))),
            _ => Ok(batch),
        }
    }

    async fn commit(&mut self, done: &[IncomingPush]) -> Result<(), BusError> {
        let points = self
            .pending
            .lock()
            .done(done.iter().map(|push| push.position));
        let mut commits = self.commits.lock();
        // Points only move forward: a later point of a partition replaces an unsent earlier one.
        commits.unsent.extend(points);
        let failure = commits.failure.take();
        // While recovering, the points wait, and the first commit after the recovery sends them,
        // unless it found their log lost.
        if !self.recovering && !commits.sending && !commits.unsent.is_empty() {
            commits.sending = true;
            self.committer = Some(tokio::spawn(send_commits(
                self.consumer.clone(),
                self.commits.clone(),
                self.topic.clone(),
                self.commit_timeout,
            )));
        }
        match failure {
            Some(failure) => Err(BusError::Unavailable(failure)),
            None => Ok(()),
        }
    }

    async fn flush_commits(&mut self) -> Result<(), BusError> {
        if let Some(committer) = self.committer.take() {
            // The task ends once nothing is left to send, or at a failure (noted below).
            committer
                .await
                .map_err(|err| BusError::Unavailable(format!("committer task: {err}")))?;
        }
        let mut commits = self.commits.lock();
        if let Some(failure) = commits.failure.take() {
            return Err(BusError::Unavailable(failure));
        }
        if !commits.unsent.is_empty() {
            return Err(BusError::Unavailable(
                "commits wait for the consumer to recover from a failed read".into(),
            ));
        }
        Ok(())
    }

    fn health_probe(&self) -> Arc<dyn HealthProbe> {
        Arc::new(ConsumerProbe {
            consumer: self.consumer.clone(),
            topic: self.topic.clone(),
            group_id: self.group_id.clone(),
        })
    }
}

/// The committer task: sends the recorded commit points, one commit at a time, until none are left
/// (then clears `sending` under the same lock, so a point recorded later starts a new task). A
/// failed commit puts its points back (unless later ones came meanwhile), notes the failure for
/// the next [`BusConsumer::commit`] to report, and ends the task: the next call sends again.
async fn send_commits(
    consumer: Arc<StreamConsumer<OwnershipContext>>,
    commits: Arc<Mutex<CommitState>>,
    topic: String,
    timeout: Duration,
) {
    loop {
        let (points, earlier) = {
            let mut state = commits.lock();
            if state.unsent.is_empty() {
                state.sending = false;
                return;
            }
            let points: Vec<(i32, i64)> = state.unsent.drain().collect();
            (points, state.timed_out.take())
        };
        let outcome = commit_points(&consumer, &topic, &points, earlier, timeout).await;
        let mut state = commits.lock();
        match outcome {
            Ok(()) => state.committed.extend(points.iter().copied()),
            Err((failure, still_running)) => {
                for (partition, offset) in points {
                    state.unsent.entry(partition).or_insert(offset);
                }
                state.timed_out = still_running;
                state.failure = Some(failure);
                state.sending = false;
                return;
            }
        }
    }
}

/// One synchronous commit of `points` on a blocking thread, after the `earlier` one that timed out
/// (if any) ended, bounded by `timeout`. A commit that times out is given back, still running.
async fn commit_points(
    consumer: &Arc<StreamConsumer<OwnershipContext>>,
    topic: &str,
    points: &[(i32, i64)],
    earlier: Option<tokio::task::JoinHandle<KafkaResult<()>>>,
    timeout: Duration,
) -> Result<(), (String, Option<tokio::task::JoinHandle<KafkaResult<()>>>)> {
    if let Some(mut earlier) = earlier {
        // Its outcome is superseded by this commit; only its end matters.
        if tokio::time::timeout(timeout, &mut earlier).await.is_err() {
            return Err(("an earlier commit is still under way".into(), Some(earlier)));
        }
    }
    let mut offsets = TopicPartitionList::new();
    for &(partition, offset) in points {
        offsets
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|err| (format!("commit list: {err}"), None))?;
    }
    let consumer = consumer.clone();
    let mut commit =
        tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync));
    match tokio::time::timeout(timeout, &mut commit).await {
        Err(_) => Err((format!("commit timed out after {timeout:?}"), Some(commit))),
        Ok(Err(err)) => Err((format!("commit task: {err}"), None)),
        Ok(Ok(Err(err))) => Err((format!("commit: {err}"), None)),
        Ok(Ok(Ok(()))) => Ok(()),
    }
}

/// Health of a consumer: its broker answers for its topic, and the group gave it partitions.
struct ConsumerProbe {
    consumer: Arc<StreamConsumer<OwnershipContext>>,
    topic: String,
    group_id: String,
}

#[async_trait]
impl HealthProbe for ConsumerProbe {
    async fn check(&self) -> BusHealth {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let metadata = super::probe_metadata(Some(self.topic.clone()), move || {
            consumer.fetch_metadata(Some(&topic), super::HEALTH_TIMEOUT)
        });
        if let BusHealth::Unhealthy(reason) = metadata.await {
            return BusHealth::Unhealthy(reason);
        }
        match self.consumer.assignment() {
            Ok(assigned) if assigned.count() > 0 => BusHealth::Healthy,
            Ok(_) => BusHealth::Unhealthy(format!(
                "no partitions of {} assigned in group {} (yet)",
                self.topic, self.group_id
            )),
            Err(err) => BusHealth::Unhealthy(format!("assignment unknown: {err}")),
        }
    }
}
