//! The control plane's Kafka producer: durable, ordered per key, and bounded in time.
//!
//! Idempotence (`enable.idempotence=true`, which implies `acks=all` and in-order retries) means a
//! retried produce neither duplicates nor reorders records within a partition. Records are enqueued
//! in the caller's order, then the publish waits for every delivery report; librdkafka fails a
//! record that the cluster did not take within `message.timeout.ms` (= the configured delivery
//! timeout), so a dead broker turns into [`BusError::Unavailable`] after that long, never a hang.
//!
//! An idempotent producer can hit a *fatal* error, after which librdkafka refuses every record, or
//! get *stuck* when the broker restarts without its state (records time out under a producer id
//! the broker forgot, while the broker itself answers). The publish that sees either fails, and the
//! producer is replaced by a fresh one, so the next publish works again instead of the process
//! answering 503 until restarted. A topic lost with the broker's storage is recreated by the next
//! publish (the failed publish makes the producer check its topics again).
//!
//! Concurrent publishes share the work: each one is queued to the producer's task, which takes
//! every publish waiting at that moment (never waiting for more to come), checks their topics once,
//! enqueues all their records in arrival order and hands the delivery reports of the group to one
//! task that awaits them together and answers each publish with the outcome of its own records.
//! Meanwhile the producer task goes on with the next group, so a group in flight never holds up the
//! ones behind it; librdkafka packs what is enqueued into produce requests per partition. Under
//! load this costs one wake-up, one topic check and one report task per group instead of per push.
//!
//! Each push record names its partition, chosen in rim with the hash of librdkafka's configured
//! partitioner and the topic's cached partition count (see `partition`), and the records of one
//! push that share a partition go as one Kafka record (see `group`): a push to 100 keys costs at
//! most one record per partition instead of 100.

use super::group::{self, GROUP_HEADER, GROUP_VERSION, Record};
use super::partition::KeyHash;
use super::topics::TopicCreator;
use super::{KafkaSettings, millis};
use crate::{BusError, BusHealth, BusProducer, OutgoingPush, OutgoingRecord};
use async_trait::async_trait;
use futures_util::FutureExt;
use parking_lot::{Mutex, RwLock};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long to wait before retrying a record refused because librdkafka's local queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(1);

/// Most publishes the producer task takes into one group: bounds the work between two looks at
/// the queue.
const MAX_GROUP: usize = 4096;

/// Publishes waiting for the producer task beyond which callers wait to queue theirs.
const QUEUE_CAPACITY: usize = 64 * 1024;

/// Publishes pushes to region topics; share one per process (it batches across callers).
pub struct KafkaProducer {
    shared: Arc<Shared>,
    /// The producer task's queue, started by the first publish (it needs a runtime).
    queue: OnceLock<mpsc::Sender<Publish>>,
}

/// One caller's publish, waiting for the producer task.
struct Publish {
    pushes: Vec<OutgoingPush>,
    answer: oneshot::Sender<Result<(), BusError>>,
}

/// The producer's state, shared with the task that runs each publish (see
/// [`KafkaProducer::publish`]).
struct Shared {
    /// The current librdkafka producer; replaced after a fatal error.
    producer: RwLock<Arc<FutureProducer>>,
    topics: TopicCreator,
    settings: KafkaSettings,
    /// How the configured partitioner hashes keys (`None`: it does not, so rim names no
    /// partition and groups nothing).
    hash: Option<KeyHash>,
    /// When the producer was last replaced because it was stuck (bounds how often that happens).
    replaced_at: Mutex<Option<Instant>>,
}

/// Why a producer was replaced.
#[derive(Debug)]
enum Replacement {
    /// librdkafka reported a fatal error (with its code and reason).
    Fatal(String),
    /// Records time out although the broker answers.
    Stuck,
}

impl std::fmt::Display for Replacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replacement::Fatal(error) => write!(f, "fatal error {error}"),
            Replacement::Stuck => f.write_str("records time out although the broker answers"),
        }
    }
}

impl Replacement {
    /// The `reason` label of `rim_bus_producer_replaced_total`.
    fn label(&self) -> &'static str {
        match self {
            Replacement::Fatal(_) => "fatal",
            Replacement::Stuck => "stuck",
        }
    }
}

impl KafkaProducer {
    /// A producer for the settings' cluster. Connects lazily: an unreachable broker shows up as
    /// [`BusError::Unavailable`] from [`BusProducer::publish`], not here.
    pub fn new(settings: &KafkaSettings) -> Result<Self, BusError> {
        Ok(Self {
            shared: Arc::new(Shared {
                producer: RwLock::new(Arc::new(build(settings)?)),
                topics: TopicCreator::new(settings)?,
                settings: settings.clone(),
                hash: KeyHash::configured(&settings.client_options),
                replaced_at: Mutex::new(None),
            }),
            queue: OnceLock::new(),
        })
    }
}

impl Shared {
    /// After a failed publish on `used`: replaces it by a fresh producer if it is broken, that is in
    /// a fatal state, or *stuck*: the broker answers (metadata within the health timeout) yet the
    /// records were not taken. The second is what a broker restarted without its state does to an
    /// idempotent producer: librdkafka keeps retrying under a producer id the broker forgot, every
    /// record times out, and only a new producer (new id) gets through. A slow but healthy cluster
    /// can look the same; replacing the producer then costs a reconnect, which is why it happens at
    /// most once per delivery timeout.
    async fn replace_if_broken(&self, used: &Arc<FutureProducer>) {
        let reason = match used.client().fatal_error() {
            Some((code, reason)) => Replacement::Fatal(format!("{code}: {reason}")),
            None => {
                if self
                    .replaced_at
                    .lock()
                    .is_some_and(|at| at.elapsed() < self.settings.delivery_timeout)
                {
                    return;
                }
                let probe = used.clone();
                let reachable = super::probe_metadata(None, move || {
                    probe.client().fetch_metadata(None, super::HEALTH_TIMEOUT)
                })
                .await;
                if !reachable.is_healthy() {
                    return;
                }
                Replacement::Stuck
            }
        };
        let mut current = self.producer.write();
        if !Arc::ptr_eq(&current, used) {
            return;
        }
        match build(&self.settings) {
            Ok(fresh) => {
                tracing::warn!(%reason, "kafka producer is broken; replaced it");
                metrics::counter!("rim_bus_producer_replaced_total", "reason" => reason.label())
                    .increment(1);
                *current = Arc::new(fresh);
                *self.replaced_at.lock() = Some(Instant::now());
            }
            Err(err) => {
                tracing::error!(%reason, %err, "kafka producer is broken and cannot be rebuilt")
            }
        }
    }

    /// Enqueues the records of every publish of `group` on `producer`, in order (each publish's
    /// records of one push grouped by partition, see [`group::records`]): the delivery reports of
    /// each publish, or the error that stopped its enqueueing (the records of that publish
    /// enqueued before it are left to librdkafka; the publish fails all the same).
    async fn enqueue_group(
        &self,
        producer: &FutureProducer,
        group: &[Vec<OutgoingPush>],
        topics: &[String],
    ) -> Vec<Result<Vec<DeliveryFuture>, BusError>> {
        let deadline = Instant::now() + self.settings.delivery_timeout;
        let partitions: Vec<Option<i32>> = topics
            .iter()
            .map(|topic| self.topics.partitions(topic))
            .collect();
        let place = |region: &str, key: &str| {
            let topic = self.settings.topic(region);
            let partition = topics
                .iter()
                .position(|known| *known == topic)
                .and_then(|at| partitions[at])
                .zip(self.hash)
                .and_then(|(count, hash)| hash.partition(key.as_bytes(), count));
            (topic, partition)
        };
        let mut enqueued = Vec::with_capacity(group.len());
        for pushes in group {
            let records = group::records(pushes, place);
            let mut deliveries = Vec::with_capacity(records.len());
            let mut failed = None;
            for record in &records {
                match enqueue(producer, record, deadline).await {
                    Ok(delivery) => deliveries.push(delivery),
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
            metrics::counter!("rim_bus_kafka_records_total").increment(deliveries.len() as u64);
            enqueued.push(match failed {
                Some(err) => Err(err),
                None => Ok(deliveries),
            });
        }
        enqueued
    }
}

/// When the delivery reports of records enqueued now are overdue: librdkafka reports every
/// record within message.timeout.ms (`within`); the extra second only guards against a lost
/// report.
fn reports_due(within: Duration) -> Instant {
    Instant::now() + within + Duration::from_secs(1)
}

/// What a publish whose reports did not come by [`reports_due`] is answered.
fn overdue() -> BusError {
    BusError::Unavailable("no delivery report in time".into())
}

/// Waits for the delivery reports of one publish, one after the other (they come in
/// concurrently all the same): `Ok` once the cluster took every record.
async fn reports(deliveries: Vec<DeliveryFuture>) -> Result<(), BusError> {
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((err, _))) => {
                return Err(BusError::Unavailable(format!("delivery failed: {err}")));
            }
            Err(_) => return Err(BusError::Unavailable("producer shut down".into())),
        }
    }
    Ok(())
}

/// [`reports`] of one publish, within the delivery timeout `within`.
async fn delivered(deliveries: Vec<DeliveryFuture>, within: Duration) -> Result<(), BusError> {
    tokio::time::timeout_at(reports_due(within), reports(deliveries))
        .await
        .map_err(|_| overdue())?
}

/// A librdkafka producer with rim's settings.
fn build(settings: &KafkaSettings) -> Result<FutureProducer, BusError> {
    settings
        .producer_config()
        .create()
        .map_err(|err| BusError::Unavailable(format!("kafka producer: {err}")))
}

impl KafkaSettings {
    /// The librdkafka configuration of rim's producer: idempotent (so `acks=all`), the configured
    /// linger, large lz4 batches, and records failed after the delivery timeout. Public so tools
    /// can measure a broker with exactly rim's settings (`bus-latency` in rim-bench).
    pub fn producer_config(&self) -> ClientConfig {
        self.client_config(&[
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
            ("linger.ms", millis(self.linger)),
            ("batch.num.messages", "10000".into()),
            ("compression.type", "lz4".into()),
            ("message.timeout.ms", millis(self.delivery_timeout)),
            ("request.timeout.ms", millis(self.delivery_timeout)),
        ])
    }
}

/// Hands one record to librdkafka, waiting (until `deadline`) while its local queue is full.
async fn enqueue(
    producer: &FutureProducer,
    record: &Record,
    deadline: Instant,
) -> Result<DeliveryFuture, BusError> {
    let mut future = FutureRecord::to(&record.topic)
        .key(&record.key)
        .payload(&record.payload);
    if let Some(partition) = record.partition {
        future = future.partition(partition);
    }
    if record.grouped {
        future = future.headers(OwnedHeaders::new().insert(Header {
            key: GROUP_HEADER,
            value: Some(GROUP_VERSION),
        }));
    }
    loop {
        match producer.send_result(future) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                if Instant::now() < deadline =>
            {
                future = returned;
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((err, _)) => {
                return Err(BusError::Unavailable(format!(
                    "producing to {}: {err}",
                    record.topic
                )));
            }
        }
    }
}

#[async_trait]
impl BusProducer for KafkaProducer {
    /// Hands the publish to the producer task (see the module docs), which takes it to its end
    /// even when the caller stops waiting: a business client whose timeout is the delivery timeout
    /// (or shorter) gives up just when the records time out, and if that cancelled the publish, a
    /// producer stuck after a broker restart would never be replaced and every push would fail
    /// until a restart of the process.
    async fn publish(&self, pushes: Vec<OutgoingPush>) -> Result<(), BusError> {
        if pushes.is_empty() {
            return Ok(());
        }
        let queue = self.queue.get_or_init(|| {
            let (queue, waiting) = mpsc::channel(QUEUE_CAPACITY);
            tokio::spawn(produce(self.shared.clone(), waiting));
            queue
        });
        let (answer, answered) = oneshot::channel();
        queue
            .send(Publish { pushes, answer })
            .await
            .map_err(|_| BusError::Unavailable("the producer task has ended".into()))?;
        answered
            .await
            .map_err(|_| BusError::Unavailable("the producer task dropped a publish".into()))?
    }

    fn region_topic(&self, region: &str) -> Option<String> {
        Some(self.shared.settings.topic(region))
    }

    /// Enqueued at once on the current producer (not through the producer task: these records do
    /// not share push groups), then awaited together; a failure is handled as a push group's.
    async fn publish_records(&self, records: Vec<OutgoingRecord>) -> Result<(), BusError> {
        if records.is_empty() {
            return Ok(());
        }
        let topics: Vec<String> = records
            .iter()
            .map(|record| record.topic.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.shared.topics.ensure(&topics).await?;
        let producer = self.shared.producer.read().clone();
        let within = self.shared.settings.delivery_timeout;
        let deadline = Instant::now() + within;
        let mut deliveries = Vec::with_capacity(records.len());
        let mut outcome = Ok(());
        for record in records {
            // Not pushes: librdkafka's partitioner places them by key.
            let record = Record {
                topic: record.topic,
                key: record.key,
                partition: None,
                payload: record.payload,
                grouped: false,
            };
            match enqueue(&producer, &record, deadline).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(err) => {
                    outcome = Err(err);
                    break;
                }
            }
        }
        let outcome = outcome.and(delivered(deliveries, within).await);
        if outcome.is_err() {
            self.shared.replace_if_broken(&producer).await;
            for topic in &topics {
                self.shared.topics.forget(topic);
            }
        }
        outcome
    }

    async fn create_region_topic(&self, region: &str) -> Result<(), BusError> {
        let topic = self.shared.settings.topic(region);
        // Asked of the broker even if this producer saw the topic before (it may have been lost).
        self.shared.topics.forget(&topic);
        self.shared.topics.ensure(&[topic]).await
    }

    async fn health(&self) -> BusHealth {
        let producer = self.shared.producer.read().clone();
        super::probe_metadata(None, move || {
            producer
                .client()
                .fetch_metadata(None, super::HEALTH_TIMEOUT)
        })
        .await
    }
}

/// The producer task: takes every publish waiting, enqueues the group's records and leaves their
/// delivery reports to a task of the group's own, until the producer is dropped.
async fn produce(shared: Arc<Shared>, mut waiting: mpsc::Receiver<Publish>) {
    // Kept between groups, so its capacity is not grown again for each.
    let mut group = Vec::new();
    while waiting.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (pushes, answers): (Vec<_>, Vec<_>) = group
            .drain(..)
            .map(|publish| (publish.pushes, publish.answer))
            .unzip();
        metrics::histogram!("rim_bus_publishes_per_group").record(pushes.len() as f64);
        let topics: Vec<String> = pushes
            .iter()
            .flatten()
            .map(|push| push.region.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|region| shared.settings.topic(region))
            .collect();
        if let Err(err) = shared.topics.ensure(&topics).await {
            for answer in answers {
                let _ = answer.send(Err(err.clone()));
            }
            continue;
        }
        let producer = shared.producer.read().clone();
        let enqueued = shared.enqueue_group(&producer, &pushes, &topics).await;
        let records: Vec<usize> = pushes.iter().map(Vec::len).collect();
        tokio::spawn(settle(
            shared.clone(),
            producer,
            topics,
            enqueued,
            records,
            answers,
        ));
    }
}

/// Awaits the delivery reports of one group together and answers each publish; after a failure,
/// replaces the producer if it is broken and has the group's topics checked again (a broker that
/// lost its storage lost them).
async fn settle(
    shared: Arc<Shared>,
    producer: Arc<FutureProducer>,
    topics: Vec<String>,
    enqueued: Vec<Result<Vec<DeliveryFuture>, BusError>>,
    records: Vec<usize>,
    answers: Vec<oneshot::Sender<Result<(), BusError>>>,
) {
    // The publishes' reports awaited in turn, under one deadline for the group: one timer and
    // one waiting task instead of one of each per publish.
    let mut outcomes = Vec::with_capacity(enqueued.len());
    let mut pending = enqueued.into_iter();
    let in_turn = async {
        for deliveries in pending.by_ref() {
            let outcome = match deliveries {
                Ok(deliveries) => reports(deliveries).await,
                Err(err) => Err(err),
            };
            outcomes.push(outcome);
        }
    };
    if tokio::time::timeout_at(reports_due(shared.settings.delivery_timeout), in_turn)
        .await
        .is_err()
    {
        // The publish being awaited is overdue; each one after it is answered by the reports it
        // already has, as if it had been awaited on its own.
        outcomes.push(Err(overdue()));
        outcomes.extend(pending.map(|deliveries| {
            reports(deliveries?)
                .now_or_never()
                .unwrap_or_else(|| Err(overdue()))
        }));
    }
    if outcomes.iter().any(Result::is_err) {
        shared.replace_if_broken(&producer).await;
        for topic in &topics {
            shared.topics.forget(topic);
        }
    }
    let published: usize = outcomes
        .iter()
        .zip(&records)
        .filter(|(outcome, _)| outcome.is_ok())
        .map(|(_, records)| records)
        .sum();
    metrics::counter!("rim_bus_published_total").increment(published as u64);
    for (outcome, answer) in outcomes.into_iter().zip(answers) {
        // A caller that stopped waiting has no use for the answer.
        let _ = answer.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rim_proto::schema::PushMessage;
    use rim_proto::schema::push_message::Target;
    use rim_testkit::kafka::TestKafka;

    fn push(id: &str) -> OutgoingPush {
        OutgoingPush {
            region: "sh".into(),
            partition_key: "key:a".into(),
            message: PushMessage {
                message_id: id.into(),
                target: Some(Target::Broadcast(Default::default())),
                ..PushMessage::default()
            },
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fatal_producer_is_replaced_after_the_publish_that_saw_it() {
        let broker = TestKafka::start();
        let producer = KafkaProducer::new(&KafkaSettings::new(broker.bootstrap())).unwrap();
        producer.publish(vec![push("before")]).await.unwrap();

        let fatal = producer.shared.producer.read().clone();
        let reason = std::ffi::CString::new("injected by the test").unwrap();
        // SAFETY: the client pointer is alive (we hold an Arc to its producer) and the reason is a
        // valid NUL-terminated string that outlives the call.
        let code = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                fatal.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            )
        };
        assert_eq!(
            code,
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );

        let failed = producer.publish(vec![push("during")]).await;
        assert!(
            matches!(failed, Err(BusError::Unavailable(_))),
            "{failed:?}"
        );
        assert!(
            !Arc::ptr_eq(&fatal, &producer.shared.producer.read()),
            "the fatal producer was replaced"
        );
        producer.publish(vec![push("after")]).await.unwrap();
    }
}
