//! Creating region topics on first use.
//!
//! Regions appear at run time (an edge registers in a new region), and brokers in production
//! usually disable auto-creation, so producers and consumers create a region's topic themselves
//! with the configured partition count and replication factor. Each client remembers the topics it
//! saw created (or already existing), so only the first publish to a region pays the round trip;
//! after a failure the client forgets the topics involved and checks them again, so a topic lost
//! with a broker's storage is recreated instead of failing forever.
//!
//! A refused creation is not an error when the topic is there: a cluster may deny rim the right
//! to create topics (its operator created them), and some brokers have no CreateTopics at all
//! (librdkafka's mock cluster, which rim-bench runs the full path on). Then the broker's metadata
//! decides: a topic it lists with partitions is used as it is.
//!
//! Each known topic comes with its partition count (the configured one for a topic created here,
//! the broker's metadata for one that existed), which the producer needs to name a record's
//! partition itself (see `partition`). The count is cached like the topic and read again with it
//! after a failure, so a topic recreated with another count is seen then; a partition an operator
//! adds while rim runs is used from the next failed publish or restart on, and meanwhile every key
//! stays in its partition.

use super::KafkaSettings;
use crate::BusError;
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Creates missing region topics; remembers which exist, and their partition counts.
pub(crate) struct TopicCreator {
    /// Shared with the blocking metadata look-ups of [`TopicCreator::listed`].
    admin: Arc<AdminClient<DefaultClientContext>>,
    partitions: i32,
    replication_factor: i32,
    timeout: Duration,
    /// Topics seen created or existing, with their partition counts.
    known: Mutex<HashMap<String, i32>>,
}

impl TopicCreator {
    /// An admin client for the settings' cluster (connects lazily).
    pub(crate) fn new(settings: &KafkaSettings) -> Result<Self, BusError> {
        let admin = settings
            .client_config(&[])
            .create()
            .map_err(|err| BusError::Unavailable(format!("kafka admin client: {err}")))?;
        Ok(Self {
            admin: Arc::new(admin),
            partitions: settings.partitions.max(1),
            // Anything below 1 means "the broker's default" (KIP-464), sent as -1.
            replication_factor: if settings.replication_factor < 1 {
                -1
            } else {
                settings.replication_factor
            },
            timeout: settings.delivery_timeout,
            known: Mutex::new(HashMap::new()),
        })
    }

    /// Forgets that `topic` exists, so the next [`TopicCreator::ensure`] asks the broker again (a
    /// broker that lost its storage lost its topics).
    pub(crate) fn forget(&self, topic: &str) {
        self.known.lock().remove(topic);
    }

    /// The partition count of `topic`, if [`TopicCreator::ensure`] saw it (and it was not
    /// forgotten since).
    pub(crate) fn partitions(&self, topic: &str) -> Option<i32> {
        self.known.lock().get(topic).copied()
    }

    /// Makes sure these topics exist, creating the ones not seen before.
    pub(crate) async fn ensure(&self, topics: &[String]) -> Result<(), BusError> {
        let missing: Vec<&String> = {
            let known = self.known.lock();
            topics
                .iter()
                .filter(|topic| !known.contains_key(*topic))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|topic| {
                NewTopic::new(
                    topic,
                    self.partitions,
                    TopicReplication::Fixed(self.replication_factor),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout));
        let results = tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            self.admin.create_topics(&new_topics, &options),
        )
        .await
        .map_err(|_| {
            BusError::Unavailable(format!(
                "creating topics timed out after {:?}",
                self.timeout
            ))
        })?;
        let refused: Vec<(String, String)> = match results {
            Ok(results) => {
                let mut refused = Vec::new();
                let mut known = self.known.lock();
                for result in results {
                    match result {
                        Ok(topic) => {
                            known.insert(topic, self.partitions);
                        }
                        // Its partition count is the broker's: asked below, as for a refusal.
                        Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                            refused.push((topic, "it already exists".into()));
                        }
                        Err((topic, code)) => refused.push((topic, code.to_string())),
                    }
                }
                refused
            }
            // The whole request was refused (e.g. a broker without CreateTopics).
            Err(err) => missing
                .iter()
                .map(|topic| ((*topic).clone(), err.to_string()))
                .collect(),
        };
        for (topic, reason) in refused {
            let Some(partitions) = self.listed(&topic).await else {
                return Err(BusError::Unavailable(format!(
                    "creating topic {topic}: {reason}"
                )));
            };
            tracing::debug!(%topic, %reason, partitions, "creating the topic was refused; the broker has it");
            self.known.lock().insert(topic, partitions);
        }
        Ok(())
    }

    /// The partition count of `topic` if the broker's metadata lists it with partitions and
    /// without error (asked when creating it was refused, or it existed).
    async fn listed(&self, topic: &str) -> Option<i32> {
        let (admin, name, timeout) = (self.admin.clone(), topic.to_owned(), self.timeout);
        let metadata =
            tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(Some(&name), timeout))
                .await;
        let Ok(Ok(metadata)) = metadata else {
            return None;
        };
        let found = metadata.topics().iter().find(|found| {
            found.name() == topic && found.error().is_none() && !found.partitions().is_empty()
        })?;
        i32::try_from(found.partitions().len()).ok()
    }
}
