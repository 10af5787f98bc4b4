//! The in-process bus of `rim dev`: one bounded log per region, read by named consumer groups.
//!
//! It keeps the Kafka contract so the job worker cannot tell the difference: every region is a
//! single-partition log (partition 0) with growing offsets, a group remembers its committed offset
//! across consumers (a consumer dropped and recreated gets every uncommitted record again), and a
//! new group starts at the oldest retained record (Kafka's `auto.offset.reset=earliest`).
//!
//! Bound and policy: a region retains at most `capacity` records. Records are released once every
//! group of the region has committed past them; a region nobody consumes keeps its records until
//! the bound. A publish that would exceed the bound of any of its regions is refused whole with
//! [`BusError::Full`] (counted as `rim_bus_full_total`); the API answers 503 and the caller retries,
//! as it would when Kafka is down. Nothing is ever dropped silently.
//!
//! A group is meant to have one consumer at a time (a one-partition Kafka topic gives its partition
//! to one member of the group); a second concurrent consumer of a group reads the same records.

use crate::offsets::PendingOffsets;
use crate::{
    BusConsumer, BusError, BusHealth, BusProducer, HealthProbe, IncomingPush, LogPosition,
    OutgoingPush,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use rim_proto::schema::PushMessage;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::watch;

/// The only partition of an in-process region log.
const PARTITION: i32 = 0;

/// The in-process bus; clones share the same logs.
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    regions: Mutex<HashMap<String, RegionLog>>,
}

struct Record {
    key: String,
    message: PushMessage,
}

/// One region's log.
struct RegionLog {
    /// Retained records; the first one has offset `first_offset`.
    records: VecDeque<Record>,
    first_offset: i64,
    /// Committed offset (next to read) of each group.
    groups: HashMap<String, i64>,
    /// The offset after the last record; consumers wait on it.
    end: watch::Sender<i64>,
}

impl RegionLog {
    fn new() -> Self {
        Self {
            records: VecDeque::new(),
            first_offset: 0,
            groups: HashMap::new(),
            end: watch::Sender::new(0),
        }
    }

    fn end_offset(&self) -> i64 {
        self.first_offset + self.records.len() as i64
    }

    /// Releases records every group has committed past.
    fn trim(&mut self) {
        let Some(&lowest) = self.groups.values().min() else {
            return;
        };
        while self.first_offset < lowest && self.records.pop_front().is_some() {
            self.first_offset += 1;
        }
    }
}

impl MemoryBus {
    /// A bus whose regions each retain at most `capacity` records (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                regions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A consumer of `region` in `group`, starting at the group's committed offset (or at the oldest
    /// retained record for a new group).
    pub fn consumer(&self, region: &str, group: &str) -> MemoryConsumer {
        let mut regions = self.shared.regions.lock();
        let log = regions
            .entry(region.to_owned())
            .or_insert_with(RegionLog::new);
        let first = log.first_offset;
        let cursor = *log.groups.entry(group.to_owned()).or_insert(first);
        MemoryConsumer {
            shared: self.shared.clone(),
            region: region.to_owned(),
            group: group.to_owned(),
            cursor,
            end: log.end.subscribe(),
            pending: PendingOffsets::default(),
        }
    }
}

#[async_trait]
impl BusProducer for MemoryBus {
    async fn publish(&self, pushes: Vec<OutgoingPush>) -> Result<(), BusError> {
        let mut regions = self.shared.regions.lock();
        let mut added: HashMap<&str, usize> = HashMap::new();
        for push in &pushes {
            *added.entry(push.region.as_str()).or_default() += 1;
        }
        // All or nothing: check every region's bound before appending anything.
        for (&region, &count) in &added {
            let retained = regions.get(region).map_or(0, |log| log.records.len());
            if retained + count > self.shared.capacity {
                metrics::counter!("rim_bus_full_total", "region" => region.to_owned()).increment(1);
                return Err(BusError::Full(format!(
                    "region {region} holds {retained} of {} records",
                    self.shared.capacity
                )));
            }
        }
        let touched: Vec<String> = added.into_keys().map(str::to_owned).collect();
        for push in pushes {
            let log = regions.entry(push.region).or_insert_with(RegionLog::new);
            log.records.push_back(Record {
                key: push.partition_key,
                message: push.message,
            });
        }
        for region in touched {
            if let Some(log) = regions.get(&region) {
                log.end.send_replace(log.end_offset());
            }
        }
        Ok(())
    }

    async fn health(&self) -> BusHealth {
        InProcess.check().await
    }
}

/// The in-process bus has no broker to lose: it works as long as the process does (a full region
/// is back-pressure on publishes, answered 503, not ill health).
struct InProcess;

#[async_trait]
impl HealthProbe for InProcess {
    async fn check(&self) -> BusHealth {
        BusHealth::Healthy
    }
}

/// A consumer of one region's log in one group.
pub struct MemoryConsumer {
    shared: Arc<Shared>,
    region: String,
    group: String,
    /// Offset of the next record to hand out.
    cursor: i64,
    end: watch::Receiver<i64>,
    pending: PendingOffsets,
}

impl MemoryConsumer {
    /// Takes up to `max` records at the cursor, or none if there are none yet. Marks the current end
    /// offset as seen first, so a publish after this call wakes the next wait.
    fn take(&mut self, max: usize) -> Vec<IncomingPush> {
        let regions = self.shared.regions.lock();
        self.end.borrow_and_update();
        let Some(log) = regions.get(&self.region) else {
            return Vec::new();
        };
        // A second consumer of the group may have committed, and the log trimmed, past our cursor.
        self.cursor = self.cursor.max(log.first_offset);
        let start = (self.cursor - log.first_offset) as usize;
        let batch: Vec<IncomingPush> = log
            .records
            .iter()
            .skip(start)
            .take(max.max(1))
            .zip(self.cursor..)
            .map(|(record, offset)| IncomingPush {
                partition_key: record.key.clone(),
                position: LogPosition {
                    partition: PARTITION,
                    offset,
                },
                message: record.message.clone(),
            })
            .collect();
        for push in &batch {
            self.pending.delivered(push.position, 1);
        }
        self.cursor += batch.len() as i64;
        batch
    }
}

#[async_trait]
impl BusConsumer for MemoryConsumer {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<IncomingPush>, BusError> {
        loop {
            let batch = self.take(max);
            if !batch.is_empty() {
                return Ok(batch);
            }
            // The sender lives in the bus's region map, which outlives every consumer.
            if self.end.changed().await.is_err() {
                return Err(BusError::Unavailable("in-process bus closed".into()));
            }
        }
    }

    async fn commit(&mut self, done: &[IncomingPush]) -> Result<(), BusError> {
        let commits = self.pending.done(done.iter().map(|push| push.position));
        let mut regions = self.shared.regions.lock();
        let Some(log) = regions.get_mut(&self.region) else {
            return Ok(());
        };
        for (_, offset) in commits {
            let committed = log.groups.entry(self.group.clone()).or_insert(offset);
            *committed = (*committed).max(offset);
        }
        log.trim();
        Ok(())
    }

    fn health_probe(&self) -> Arc<dyn HealthProbe> {
        Arc::new(InProcess)
    }
}
