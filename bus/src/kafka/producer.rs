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

use super::topics::TopicCreator;
use super::{KafkaSettings, millis};
use crate::{BusError, BusHealth, BusProducer, OutgoingPush};
use async_trait::async_trait;
use futures_util::future::join_all;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long to wait before retrying a record refused because librdkafka's local queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(1);

/// Publishes pushes to region topics; share one per process (it batches across callers).
pub struct KafkaProducer {
    shared: Arc<Shared>,
}

/// The producer's state, shared with the task that runs each publish (see
/// [`KafkaProducer::publish`]).
struct Shared {
    /// The current librdkafka producer; replaced after a fatal error.
    producer: RwLock<Arc<FutureProducer>>,
    topics: TopicCreator,
    settings: KafkaSettings,
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
                replaced_at: Mutex::new(None),
            }),
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

    /// Enqueues every push on `producer` and waits for all delivery reports.
    async fn publish_on(
        &self,
        producer: &FutureProducer,
        pushes: &[OutgoingPush],
    ) -> Result<(), BusError> {
        let deadline = Instant::now() + self.settings.delivery_timeout;
        let mut deliveries = Vec::with_capacity(pushes.len());
        for push in pushes {
            let topic = self.settings.topic(&push.region);
            let payload = push.message.encode_to_vec();
            deliveries
                .push(enqueue(producer, &topic, &push.partition_key, &payload, deadline).await?);
        }
        // librdkafka reports every record within message.timeout.ms; the extra second only guards
        // against a lost report.
        let reports = tokio::time::timeout(
            self.settings.delivery_timeout + Duration::from_secs(1),
            join_all(deliveries),
        )
        .await
        .map_err(|_| BusError::Unavailable("no delivery report in time".into()))?;
        for report in reports {
            match report {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => {
                    return Err(BusError::Unavailable(format!("delivery failed: {err}")));
                }
                Err(_) => return Err(BusError::Unavailable("producer shut down".into())),
            }
        }
        Ok(())
    }
}

/// A librdkafka producer with rim's settings.
fn build(settings: &KafkaSettings) -> Result<FutureProducer, BusError> {
    settings
        .client_config(&[
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
            ("linger.ms", millis(settings.linger)),
            ("batch.num.messages", "10000".into()),
            ("compression.type", "lz4".into()),
            ("message.timeout.ms", millis(settings.delivery_timeout)),
            ("request.timeout.ms", millis(settings.delivery_timeout)),
        ])
        .create()
        .map_err(|err| BusError::Unavailable(format!("kafka producer: {err}")))
}

/// Hands one record to librdkafka, waiting (until `deadline`) while its local queue is full.
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    deadline: Instant,
) -> Result<DeliveryFuture, BusError> {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                if Instant::now() < deadline =>
            {
                record = returned;
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((err, _)) => {
                return Err(BusError::Unavailable(format!(
                    "producing to {topic}: {err}"
                )));
            }
        }
    }
}

#[async_trait]
impl BusProducer for KafkaProducer {
    /// Runs the publish in a task of its own, so it reaches its end even when the caller stops
    /// waiting: a business client whose timeout is the delivery timeout (or shorter) gives up just
    /// when the records time out, and if that cancelled the publish, a producer stuck after a
    /// broker restart would never be replaced and every push would fail until a restart of the
    /// process.
    async fn publish(&self, pushes: Vec<OutgoingPush>) -> Result<(), BusError> {
        let shared = self.shared.clone();
        tokio::spawn(async move { shared.publish(pushes).await })
            .await
            .map_err(|err| BusError::Unavailable(format!("publish task: {err}")))?
    }

    fn region_topic(&self, region: &str) -> Option<String> {
        Some(self.shared.settings.topic(region))
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

impl Shared {
    /// Publishes `pushes`, replacing the producer after a failure that shows it broken.
    async fn publish(&self, pushes: Vec<OutgoingPush>) -> Result<(), BusError> {
        if pushes.is_empty() {
            return Ok(());
        }
        let topics: Vec<String> = pushes
            .iter()
            .map(|push| push.region.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|region| self.settings.topic(region))
            .collect();
        self.topics.ensure(&topics).await?;
        let producer = self.producer.read().clone();
        if let Err(err) = self.publish_on(&producer, &pushes).await {
            self.replace_if_broken(&producer).await;
            // A broker that lost its storage lost these topics: check them again next time.
            for topic in &topics {
                self.topics.forget(topic);
            }
            return Err(err);
        }
        metrics::counter!("rim_bus_published_total").increment(pushes.len() as u64);
        Ok(())
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
