//! The production bus: Kafka (librdkafka through rdkafka), one topic per region.
//!
//! - Topic of region `R` is `<prefix>R` (default prefix [`DEFAULT_TOPIC_PREFIX`]); topics are
//!   created on first use with [`KafkaSettings::partitions`] partitions ([`topics`]).
//! - Record key = [`crate::OutgoingPush::partition_key`], so one target's pushes share a partition
//!   and stay in order; value = the protobuf [`rim_proto::schema::PushMessage`], or, for the
//!   records of one push that share a partition, one record holding them all (`group`). rim names
//!   each push record's partition itself, with the hash of librdkafka's partitioner (`partition`).
//! - [`KafkaProducer`]: idempotent, `acks=all`, short linger; `publish` waits for every delivery
//!   report, bounded by [`KafkaSettings::delivery_timeout`] (a dead broker is an error within that
//!   time, never a hang).
//! - [`KafkaConsumer`]: one consumer group per region, no auto-commit; commits exactly what the
//!   job finished, never beyond an unfinished record; undecodable records are skipped and counted.

mod consumer;
mod group;
mod options;
mod partition;
mod producer;
mod topics;

pub use consumer::KafkaConsumer;
pub use options::KafkaOptions;
pub use producer::KafkaProducer;

use crate::BusHealth;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Topic name prefix shared by producers and consumers unless configured otherwise.
pub const DEFAULT_TOPIC_PREFIX: &str = "rim-push-";

/// How to reach the Kafka cluster and lay out the region topics; shared by producer and consumer
/// so both sides agree on topic names.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Region topic name prefix: region `R` lives in topic `<topic_prefix>R`.
    pub topic_prefix: String,
    /// Partitions of a region topic when rim creates it (more partitions, more parallel job workers).
    pub partitions: i32,
    /// Replication factor of a region topic when rim creates it; -1 (the default) takes the
    /// cluster's `default.replication.factor`, so a 3-broker production cluster gets 3 copies.
    pub replication_factor: i32,
    /// Longest a publish may wait for the broker to take its records before failing with
    /// [`crate::BusError::Unavailable`]; also bounds topic creation and commits.
    pub delivery_timeout: Duration,
    /// How long the producer waits to fill a batch; small, since a push is latency-sensitive.
    pub linger: Duration,
    /// Further librdkafka properties (e.g. `security.protocol`, `sasl.mechanism`), applied last to
    /// every client (producer, consumer, admin), so they override rim's defaults.
    pub client_options: KafkaOptions,
}

impl KafkaSettings {
    /// Settings with rim's defaults for this broker list.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
            partitions: 12,
            replication_factor: -1,
            delivery_timeout: Duration::from_secs(5),
            linger: Duration::from_millis(1),
            client_options: KafkaOptions::default(),
        }
    }

    /// The topic carrying `region`'s pushes.
    pub fn topic(&self, region: &str) -> String {
        format!("{}{region}", self.topic_prefix)
    }

    /// Client configuration: brokers, connection timeout and Nagle off, then the client's own `properties`,
    /// then [`KafkaSettings::client_options`] (so an operator can override anything).
    fn client_config(&self, properties: &[(&str, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set(
                "socket.connection.setup.timeout.ms",
                millis(self.delivery_timeout),
            )
            .set("log.connection.close", "false")
            // Without it, a small produce or fetch request written while an earlier one is still
            // unacknowledged waits in the kernel for that acknowledgement (Nagle), which the broker
            // delays by up to 40 ms (delayed ACK): a push would wait that long for nothing.
            .set("socket.nagle.disable", "true");
        for (key, value) in properties {
            config.set(*key, value);
        }
        for (key, value) in self.client_options.pairs() {
            config.set(key, value);
        }
        config
    }

    /// Checks that librdkafka accepts every property (names and values) without connecting, so a
    /// typo in an operator's option is a startup error instead of a client that never comes up.
    pub fn check(&self) -> Result<(), String> {
        self.client_config(&[])
            .create_native_config()
            .map(drop)
            .map_err(|err| format!("kafka client settings: {err}"))
    }
}

/// How long a health check waits for the broker's metadata answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs a (blocking) metadata request and judges the answer: the broker must answer in time and,
/// when a `topic` is named, list it without error.
async fn probe_metadata<F>(topic: Option<String>, fetch: F) -> BusHealth
where
    F: FnOnce() -> KafkaResult<Metadata> + Send + 'static,
{
    let metadata = match tokio::task::spawn_blocking(fetch).await {
        Ok(Ok(metadata)) => metadata,
        Ok(Err(err)) => return BusHealth::Unhealthy(format!("kafka broker unreachable: {err}")),
        Err(err) => return BusHealth::Unhealthy(format!("health check task: {err}")),
    };
    let Some(topic) = topic else {
        return BusHealth::Healthy;
    };
    match metadata.topics().iter().find(|found| found.name() == topic) {
        Some(found) if found.error().is_none() && !found.partitions().is_empty() => {
            BusHealth::Healthy
        }
        Some(found) => BusHealth::Unhealthy(format!(
            "topic {topic}: {:?}",
            found.error().map(RDKafkaErrorCode::from)
        )),
        None => BusHealth::Unhealthy(format!("topic {topic} is missing")),
    }
}

/// A duration as librdkafka's millisecond property text (at least 1).
fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}
