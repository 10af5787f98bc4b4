//! The control plane's Kafka producer: durable, ordered per key, and bounded in time.
//!
//! Idempotence (`enable.idempotence=true`, which implies `acks=all` and in-order retries) means a
//! retried produce neither duplicates nor reorders records within a partition. Records are enqueued
//! in the caller's order, then the publish waits for every delivery report; librdkafka fails a
//! record that the cluster did not take within `message.timeout.ms` (= the configured delivery
//! timeout), so a dead broker turns into [`BusError::Unavailable`] after that long, never a hang.

use super::topics::TopicCreator;
use super::{KafkaSettings, millis};
use crate::{BusError, BusProducer, OutgoingPush};
use async_trait::async_trait;
use futures_util::future::join_all;
use prost::Message;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

/// How long to wait before retrying a record refused because librdkafka's local queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(1);

/// Publishes pushes to region topics; share one per process (it batches across callers).
pub struct KafkaProducer {
    producer: FutureProducer,
    topics: TopicCreator,
    settings: KafkaSettings,
}

impl KafkaProducer {
    /// A producer for the settings' cluster. Connects lazily: an unreachable broker shows up as
    /// [`BusError::Unavailable`] from [`BusProducer::publish`], not here.
    pub fn new(settings: &KafkaSettings) -> Result<Self, BusError> {
        let producer = settings
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
            .map_err(|err| BusError::Unavailable(format!("kafka producer: {err}")))?;
        Ok(Self {
            producer,
            topics: TopicCreator::new(settings)?,
            settings: settings.clone(),
        })
    }

    /// Hands one record to librdkafka, waiting (until `deadline`) while its local queue is full.
    async fn enqueue(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<DeliveryFuture, BusError> {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        loop {
            match self.producer.send_result(record) {
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

        let deadline = Instant::now() + self.settings.delivery_timeout;
        let mut deliveries = Vec::with_capacity(pushes.len());
        for push in &pushes {
            let topic = self.settings.topic(&push.region);
            let payload = push.message.encode_to_vec();
            deliveries.push(
                self.enqueue(&topic, &push.partition_key, &payload, deadline)
                    .await?,
            );
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
        metrics::counter!("rim_bus_published_total").increment(pushes.len() as u64);
        Ok(())
    }
}
