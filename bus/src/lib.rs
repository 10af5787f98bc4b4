//! rim's bus: carries accepted pushes from the control plane to the job workers of each region.
//!
//! Production uses Kafka ([`kafka`]): one topic per region, records keyed by the push's target so one
//! target's pushes share a partition and stay in order, an idempotent producer with `acks=all`, and
//! consumers that commit offsets only after the edges took the pushes (at-least-once). The embedded
//! default of `rim dev` is [`memory`], an in-process log with the same contract.
//!
//! Contract of both implementations (checked by the same test suite):
//! - [`BusProducer::publish`] returns only once every record is durably accepted; on error, the caller
//!   must assume none were (and answer the business caller 503).
//! - A consumer sees one key's records in publish order (the Kafka bus sends the records of one
//!   push that share a partition as one log record and hands them out again one by one).
//! - Records not committed are delivered again to the next consumer of the group (after a restart).

pub mod error;
pub mod health;
pub mod kafka;
pub mod memory;
mod offsets;

pub use error::BusError;
pub use health::{BusHealth, HealthProbe};

use async_trait::async_trait;
use rim_proto::schema::PushMessage;
use std::sync::Arc;

/// One push on its way into a region's topic.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingPush {
    /// Region whose topic receives it.
    pub region: String,
    /// Ordering key: the push's target (`key:<key>`, `mid:<mid>`, `room:<room>` or `broadcast`).
    pub partition_key: String,
    /// The push itself.
    pub message: PushMessage,
}

/// A record of another stream than pushes, for [`BusProducer::publish_records`]: client messages
/// going upstream to a business backend (see rim-control's `upstream`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// The topic, named in full by the caller (created on first use like a region topic).
    pub topic: String,
    /// Ordering key: records with the same key share a partition and stay in order.
    pub key: String,
    /// The record's value, as the consumers expect it.
    pub payload: Vec<u8>,
}

/// Where a delivered record sits in its region's log, so it can be committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogPosition {
    /// Partition (always 0 for the in-process bus).
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

/// A push read from a region's topic.
#[derive(Clone, Debug, PartialEq)]
pub struct IncomingPush {
    /// The ordering key it was published with.
    pub partition_key: String,
    /// Where it sits, for [`BusConsumer::commit`].
    pub position: LogPosition,
    /// The push itself.
    pub message: PushMessage,
}

/// The control plane's side of the bus.
#[async_trait]
pub trait BusProducer: Send + Sync + 'static {
    /// Publishes pushes (possibly to several regions) and waits until all are durably accepted.
    async fn publish(&self, pushes: Vec<OutgoingPush>) -> Result<(), BusError>;

    /// Whether the broker can take pushes now (asked of it, bounded in time): for `/healthz`.
    async fn health(&self) -> BusHealth;

    /// The name of the topic carrying `region`'s pushes, for buses that have topics.
    fn region_topic(&self, region: &str) -> Option<String> {
        _ = region;
        None
    }

    /// Publishes records of another stream than pushes, in order, and waits until all are
    /// durably accepted (on error, assume none were). Only buses with topics carry them: the
    /// default refuses, so a configuration that needs them fails visibly.
    async fn publish_records(&self, records: Vec<OutgoingRecord>) -> Result<(), BusError> {
        _ = records;
        Err(BusError::Unavailable(
            "this bus has no topics for records other than pushes (it takes the Kafka bus)".into(),
        ))
    }

    /// Makes sure `region`'s topic exists (the admin API creates it with the region, so a region
    /// is ready for pushes once it is announced). Buses without topics have nothing to do.
    async fn create_region_topic(&self, region: &str) -> Result<(), BusError> {
        _ = region;
        Ok(())
    }
}

/// A job worker's side of the bus: one consumer of one region's group.
#[async_trait]
pub trait BusConsumer: Send + 'static {
    /// Waits for the next pushes of the region (at least one, at most `max`, except that the
    /// pushes of one log record, a Kafka group of one push's records, always come together), in
    /// log order per partition. Returns what is already there without waiting to fill `max`.
    ///
    /// Cancel-safe: dropping the future before it completes loses no record, so a worker may
    /// `select!` it against other work.
    async fn next_batch(&mut self, max: usize) -> Result<Vec<IncomingPush>, BusError>;
    /// Marks these pushes done (the edges took them): once committed, they will not be delivered
    /// again to this group. May return before the broker has the commit (the Kafka consumer sends
    /// commits in the background, in order, so a worker never waits for one): a process that dies
    /// right after may see some done pushes delivered again (at-least-once);
    /// [`BusConsumer::flush_commits`] waits for them.
    ///
    /// Batches may be marked done in any order: a partition's committed position never passes a
    /// record that was handed out and not yet marked done. If the commit itself fails, the records
    /// stay done for this consumer and their offsets are committed with the next commit of their
    /// partition (or delivered again to the next consumer: at-least-once); the failure is reported
    /// by this call or a later one.
    async fn commit(&mut self, done: &[IncomingPush]) -> Result<(), BusError>;

    /// Waits until everything marked done so far is committed (or its commit failed, reported
    /// here): before a graceful stop, so the next consumer starts where this one ended.
    async fn flush_commits(&mut self) -> Result<(), BusError> {
        Ok(())
    }

    /// A probe of this consumer's health (broker reachable, partitions assigned) that other tasks
    /// (the `/healthz` endpoint) can ask while the worker loop owns the consumer.
    fn health_probe(&self) -> Arc<dyn HealthProbe>;
}

/// A boxed consumer is a consumer, so a process can pick its bus at run time
/// (`Box<dyn BusConsumer>`) and hand it to code generic over [`BusConsumer`].
#[async_trait]
impl<C: BusConsumer + ?Sized> BusConsumer for Box<C> {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<IncomingPush>, BusError> {
        (**self).next_batch(max).await
    }

    async fn commit(&mut self, done: &[IncomingPush]) -> Result<(), BusError> {
        (**self).commit(done).await
    }

    async fn flush_commits(&mut self) -> Result<(), BusError> {
        (**self).flush_commits().await
    }

    fn health_probe(&self) -> Arc<dyn HealthProbe> {
        (**self).health_probe()
    }
}
