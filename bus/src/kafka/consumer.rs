//! A job worker's Kafka consumer: one region topic, one consumer group, manual commits.
//!
//! Offsets are never committed automatically (`enable.auto.commit=false`): the worker commits what
//! the edges took, and [`PendingOffsets`] turns that into a commit point per partition that never
//! passes an unfinished record. When a rebalance takes a partition away, its pending records are
//! forgotten (their new owner redelivers them), so a late commit cannot move another member's
//! offset backwards.
//!
//! An undecodable record (not protobuf, no key, no id or target) cannot be retried into shape: it
//! is logged, counted as `rim_bus_corrupt_total`, treated as done and skipped, so one bad record
//! never wedges a partition.

use super::KafkaSettings;
use super::topics::TopicCreator;
use crate::offsets::PendingOffsets;
use crate::{BusConsumer, BusError, IncomingPush, LogPosition};
use async_trait::async_trait;
use futures_util::FutureExt;
use parking_lot::Mutex;
use prost::Message as _;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use rim_proto::schema::PushMessage;
use std::sync::Arc;
use std::time::Duration;

/// Reads one region's pushes as a member of a consumer group.
pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer<OwnershipContext>>,
    pending: Arc<Mutex<PendingOffsets>>,
    topic: String,
    commit_timeout: Duration,
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
    /// Joins `group_id` on `region`'s topic (creating the topic if missing). A new group starts at
    /// the oldest retained record, so pushes published before the first worker started are not lost.
    pub async fn new(
        settings: &KafkaSettings,
        region: &str,
        group_id: &str,
    ) -> Result<Self, BusError> {
        let topic = settings.topic(region);
        TopicCreator::new(settings)?
            .ensure(std::slice::from_ref(&topic))
            .await?;
        let pending = Arc::new(Mutex::new(PendingOffsets::default()));
        let context = OwnershipContext {
            pending: pending.clone(),
        };
        let consumer: StreamConsumer<OwnershipContext> = settings
            .client_config(&[
                ("group.id", group_id.to_owned()),
                ("enable.auto.commit", "false".into()),
                ("enable.auto.offset.store", "false".into()),
                ("auto.offset.reset", "earliest".into()),
                // A crashed worker's partitions move to the others after this long.
                ("session.timeout.ms", "10000".into()),
            ])
            .create_with_context(context)
            .map_err(|err| BusError::Unavailable(format!("kafka consumer: {err}")))?;
        consumer
            .subscribe(&[&topic])
            .map_err(|err| BusError::Unavailable(format!("subscribing to {topic}: {err}")))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            pending,
            topic,
            commit_timeout: settings.delivery_timeout,
        })
    }
}

/// Decodes a record into a push, or says why it is corrupt.
fn decode(message: &BorrowedMessage<'_>, position: LogPosition) -> Result<IncomingPush, BusError> {
    let corrupt = |reason: String| BusError::Corrupt {
        partition: position.partition,
        offset: position.offset,
        reason,
    };
    let key = message
        .key()
        .ok_or_else(|| corrupt("no record key".into()))?;
    let key =
        std::str::from_utf8(key).map_err(|err| corrupt(format!("key is not UTF-8: {err}")))?;
    let push = PushMessage::decode(message.payload().unwrap_or_default())
        .map_err(|err| corrupt(format!("not a PushMessage: {err}")))?;
    if push.message_id.is_empty() || push.target.is_none() {
        return Err(corrupt("push without message id or target".into()));
    }
    Ok(IncomingPush {
        partition_key: key.to_owned(),
        position,
        message: push,
    })
}

#[async_trait]
impl BusConsumer for KafkaConsumer {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<IncomingPush>, BusError> {
        let mut batch = Vec::new();
        while batch.len() < max.max(1) {
            // Wait for the first record only; then take what is already fetched, without waiting.
            let received = if batch.is_empty() {
                self.consumer.recv().await
            } else {
                match self.consumer.recv().now_or_never() {
                    Some(received) => received,
                    None => break,
                }
            };
            let message = match received {
                Ok(message) => message,
                Err(err) if batch.is_empty() => {
                    return Err(BusError::Unavailable(format!(
                        "consuming {}: {err}",
                        self.topic
                    )));
                }
                Err(err) => {
                    tracing::warn!(topic = %self.topic, %err, "consumer error after a partial batch");
                    break;
                }
            };
            let position = LogPosition {
                partition: message.partition(),
                offset: message.offset(),
            };
            self.pending.lock().delivered(position);
            match decode(&message, position) {
                Ok(push) => batch.push(push),
                Err(err) => {
                    tracing::warn!(topic = %self.topic, %err, "skipping undecodable record");
                    metrics::counter!("rim_bus_corrupt_total").increment(1);
                    self.pending.lock().done([position]);
                }
            }
        }
        Ok(batch)
    }

    async fn commit(&mut self, done: &[IncomingPush]) -> Result<(), BusError> {
        let commits = self
            .pending
            .lock()
            .done(done.iter().map(|push| push.position));
        if commits.is_empty() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in commits {
            offsets
                .add_partition_offset(&self.topic, partition, Offset::Offset(offset))
                .map_err(|err| BusError::Unavailable(format!("commit list: {err}")))?;
        }
        let consumer = self.consumer.clone();
        let commit =
            tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync));
        tokio::time::timeout(self.commit_timeout, commit)
            .await
            .map_err(|_| {
                BusError::Unavailable(format!("commit timed out after {:?}", self.commit_timeout))
            })?
            .map_err(|err| BusError::Unavailable(format!("commit task: {err}")))?
            .map_err(|err| BusError::Unavailable(format!("commit: {err}")))
    }
}
