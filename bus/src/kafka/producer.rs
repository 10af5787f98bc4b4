//! The control plane's Kafka producer: durable, ordered per key, and bounded in time.
//!
//! Idempotence (`enable.idempotence=true`, which implies `acks=all` and in-order retries) means a
//! retried produce neither duplicates nor reorders records within a partition. Records are enqueued
//! in the caller's order, then the publish waits for every delivery report; librdkafka fails a
//! record that the cluster did not take within `message.timeout.ms` (= the configured delivery
//! timeout), so a dead broker turns into [`BusError::Unavailable`] after that long, never a hang.
//!
//! An idempotent producer can hit a *fatal* error (the broker lost its sequence state, say), after
//! which librdkafka refuses every record. The publish that sees it fails, and the producer is
//! replaced by a fresh one, so the next publish works again instead of the process answering 503
//! until restarted.

use super::topics::TopicCreator;
use super::{KafkaSettings, millis};
use crate::{BusError, BusHealth, BusProducer, OutgoingPush};
use async_trait::async_trait;
use futures_util::future::join_all;
use parking_lot::RwLock;
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
    /// The current librdkafka producer; replaced after a fatal error.
    producer: RwLock<Arc<FutureProducer>>,
    topics: TopicCreator,
    settings: KafkaSettings,
}

impl KafkaProducer {
    /// A producer for the settings' cluster. Connects lazily: an unreachable broker shows up as
    /// [`BusError::Unavailable`] from [`BusProducer::publish`], not here.
    pub fn new(settings: &KafkaSettings) -> Result<Self, BusError> {
        Ok(Self {
            producer: RwLock::new(Arc::new(build(settings)?)),
            topics: TopicCreator::new(settings)?,
            settings: settings.clone(),
        })
    }

    /// Replaces `used` by a fresh producer if it is in a fatal state (and nobody replaced it yet).
    fn replace_if_fatal(&self, used: &Arc<FutureProducer>) {
        let Some((code, reason)) = used.client().fatal_error() else {
            return;
        };
        let mut current = self.producer.write();
        if !Arc::ptr_eq(&current, used) {
            return;
        }
        match build(&self.settings) {
            Ok(fresh) => {
                tracing::warn!(%code, %reason, "kafka producer hit a fatal error; replaced it");
                metrics::counter!("rim_bus_producer_replaced_total").increment(1);
                *current = Arc::new(fresh);
            }
            Err(err) => {
                tracing::error!(%code, %reason, %err, "kafka producer is fatal and cannot be rebuilt")
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
            self.replace_if_fatal(&producer);
            // A broker that lost its storage lost these topics: check them again next time.
            for topic in &topics {
                self.topics.forget(topic);
            }
            return Err(err);
        }
        metrics::counter!("rim_bus_published_total").increment(pushes.len() as u64);
        Ok(())
    }

    async fn health(&self) -> BusHealth {
        let producer = self.producer.read().clone();
        super::probe_metadata(None, move || {
            producer
                .client()
                .fetch_metadata(None, super::HEALTH_TIMEOUT)
        })
        .await
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

        let fatal = producer.producer.read().clone();
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
            !Arc::ptr_eq(&fatal, &producer.producer.read()),
            "the fatal producer was replaced"
        );
        producer.publish(vec![push("after")]).await.unwrap();
    }
}
