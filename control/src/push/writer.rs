//! The durable writer: stores and publishes durable pushes in shared batches (issue 9, issue 8).
//!
//! Each durable push becomes a [`Job`] (its inbox and room-log entries, its receipts, its bus
//! records); the writer task of the instance takes every job waiting once a batch may start and runs
//! the batch under [`Inbox::append_published`]: one transaction appends all entries (holding their
//! users' and rooms' heads), the bus publishes all records with their positions, the transaction
//! commits. Why in that order, how a failed publish burns its numbers, and how outages are refused
//! and probed is in the [`push`](super) module docs ("Order and failure", "Throughput",
//! "Outages"). Batches never share a head (see [`Head`]).

use crate::error::ApiError;
use crate::observe::timed_publish;
use crate::state::AppState;
use parking_lot::Mutex;
use rim_bus::{BusError, BusProducer, OutgoingPush};
use rim_proto::durable::{MAX_APPEND_BATCH, MAX_RECEIPT_BATCH, Position};
use rim_proto::schema::StreamPosition;
use rim_store::StoreError;
use rim_store::inbox::{BatchPositions, DurableBatch, Inbox, PublishError, PublishedAppendError};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Which entry of a push's durable batch a record's position comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// The push's n-th user entry (stream 1).
    User(usize),
    /// The push's n-th room entry (stream 2).
    Room(usize),
}

/// `StreamPosition.stream` of the user stream (user and key pushes).
const USER_STREAM: u32 = 1;
/// `StreamPosition.stream` of the room stream.
const ROOM_STREAM: u32 = 2;

/// A push's records, each with the entry of its durable batch whose position it carries.
pub(super) type SlottedRecords = Vec<(OutgoingPush, Option<Slot>)>;

/// One push's part of a durable batch.
pub(super) struct Job {
    pub(super) batch: DurableBatch,
    pub(super) records: SlottedRecords,
}

/// A job's records in a batch: where its user and room entries start in the batch, and the
/// records.
struct Pending {
    users: usize,
    rooms: usize,
    records: SlottedRecords,
}

/// Why a durable push failed, and whether it may still go out without a position.
pub(super) struct WriteFailure {
    /// What the caller is answered.
    pub(super) error: ApiError,
    /// Whether the store failed before anything was published (nothing is on the bus): a room
    /// push may then still be sent without a position (see the parent module's room fallback).
    pub(super) store_failed: bool,
}

/// A job waiting for the writer, with where its outcome goes.
struct Queued {
    job: Job,
    answer: oneshot::Sender<Result<(), WriteFailure>>,
}

/// Durable batches in flight at once per control instance (each holds one store connection for
/// its append and publish).
pub const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// The bound of each of the writer's two queues: the channel callers send their pushes into, and
/// the pushes the writer holds until a batch may take them (`rim_control_durable_waiting`). Beyond
/// twice this many waiting pushes, callers wait to queue theirs.
const WRITER_QUEUE: usize = 16 * 1024;

/// The durable writer of one control instance: batches concurrent durable pushes into shared
/// appends and publishes (see the module docs). Started by the first durable push (it needs a
/// runtime); stops when the instance's state is dropped.
#[derive(Default)]
pub struct DurableWriter {
    queue: OnceLock<mpsc::Sender<Queued>>,
}

impl DurableWriter {
    /// Stores and publishes one push's job through the writer; answers when its batch is done.
    pub(super) async fn write(&self, state: &AppState, job: Job) -> Result<(), WriteFailure> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(WRITER_QUEUE);
            let writer = Writer {
                inbox: state.inbox.clone(),
                bus: state.bus.clone(),
                publish_timeout: publish_timeout(state),
                health: Mutex::default(),
            };
            tokio::spawn(run_writer(Arc::new(writer), receiver));
            sender
        });
        let (answer, outcome) = oneshot::channel();
        let failure = |reason: &str| WriteFailure {
            error: ApiError::Unavailable(reason.into()),
            store_failed: false,
        };
        queue
            .send(Queued { job, answer })
            .await
            .map_err(|_| failure("the durable writer stopped"))?;
        // Only a batch task that failed (panicked) drops its answers.
        outcome.await.map_err(|_| {
            failure(
                "the push's durable batch failed unexpectedly; it may have been stored and \
                 published, so retrying may deliver it twice",
            )
        })?
    }
}

/// What the writer task and its batches share.
struct Writer {
    inbox: Arc<dyn Inbox>,
    bus: Arc<dyn BusProducer>,
    /// Longest a batch waits for the bus (`control_publish_timeout_ms`).
    publish_timeout: Duration,
    health: Mutex<Health>,
}

/// Which dependency of the writer failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// PostgreSQL (the inbox): nothing was stored or published, or the commit failed.
    Store,
    /// The bus: the publish failed or was not acknowledged in time.
    Bus,
}

impl Side {
    /// The metrics label and log field.
    fn label(self) -> &'static str {
        match self {
            Side::Store => "store",
            Side::Bus => "bus",
        }
    }
}

/// An outage as the writer sees it: since its first failed batch, until a batch succeeds.
struct Outage {
    side: Side,
    /// The last failed batch's error.
    reason: String,
    since: Instant,
    /// Pushes refused without a try meanwhile.
    refused: u64,
}

/// The writer's view of the store and the bus, from its batches' outcomes (see "Outages" in the
/// module docs).
#[derive(Default)]
struct Health {
    outage: Option<Outage>,
    /// Whether a batch is running as the outage's probe.
    probing: bool,
}

impl Health {
    /// During an outage with its probe running: the failure a new push is answered at once.
    fn refusal(&mut self) -> Option<WriteFailure> {
        let outage = self.outage.as_mut().filter(|_| self.probing)?;
        outage.refused += 1;
        metrics::counter!("rim_control_durable_refused_total", "side" => outage.side.label())
            .increment(1);
        let failing = format!(
            "failing for {:.1?} ({}); durable pushes are refused until a trial push gets through",
            outage.since.elapsed(),
            outage.reason
        );
        Some(match outage.side {
            Side::Store => WriteFailure {
                error: ApiError::Unavailable(format!(
                    "store unavailable, nothing was changed: the inbox is {failing}"
                )),
                store_failed: true,
            },
            Side::Bus => WriteFailure {
                error: ApiError::Unavailable(format!(
                    "push not accepted, nothing was sent: the bus is {failing}"
                )),
                store_failed: false,
            },
        })
    }

    /// A batch starts; whether it is the outage's probe.
    fn begin(&mut self) -> bool {
        self.probing |= self.outage.is_some();
        self.probing
    }

    /// A batch ended: `failed` names the dependency that failed it, if one did (a refused input
    /// says nothing about them).
    fn end(&mut self, probe: bool, outcome: Result<(), Option<(Side, String)>>) {
        if probe {
            self.probing = false;
        }
        match (outcome, &mut self.outage) {
            (Ok(()), outage) => {
                if let Some(outage) = outage.take() {
                    metrics::gauge!("rim_control_durable_outage", "side" => outage.side.label())
                        .set(0.0);
                    tracing::warn!(
                        side = outage.side.label(),
                        lasted = ?outage.since.elapsed(),
                        refused = outage.refused,
                        "durable pushes flow again"
                    );
                }
            }
            (Err(None), _) => {}
            (Err(Some((side, reason))), Some(outage)) => {
                if outage.side != side {
                    metrics::gauge!("rim_control_durable_outage", "side" => outage.side.label())
                        .set(0.0);
                    metrics::gauge!("rim_control_durable_outage", "side" => side.label()).set(1.0);
                }
                outage.side = side;
                outage.reason = reason;
            }
            (Err(Some((side, reason))), None) => {
                metrics::gauge!("rim_control_durable_outage", "side" => side.label()).set(1.0);
                tracing::error!(
                    side = side.label(),
                    %reason,
                    "durable pushes are failing: refusing them (503) while one trial batch at a \
                     time checks whether the {} is back",
                    side.label()
                );
                self.outage = Some(Outage {
                    side,
                    reason,
                    since: Instant::now(),
                    refused: 0,
                });
            }
        }
    }
}

/// How much a batch holds, against the inbox's bounds.
#[derive(Default)]
struct BatchSize {
    users: usize,
    rooms: usize,
    receipts: usize,
}

impl BatchSize {
    /// Whether `job` fits beside what is taken.
    fn fits(&self, job: &Job) -> bool {
        self.users + job.batch.users.len() <= MAX_APPEND_BATCH
            && self.rooms + job.batch.rooms.len() <= MAX_APPEND_BATCH
            && self.receipts + job.batch.receipts.len() <= MAX_RECEIPT_BATCH
    }

    fn add(&mut self, job: &Job) {
        self.users += job.batch.users.len();
        self.rooms += job.batch.rooms.len();
        self.receipts += job.batch.receipts.len();
    }
}

/// A stream head a durable job's append locks until its batch commits: a user's inbox head (user
/// and key pushes) or a room's. Two batches that share one would run one after the other in
/// PostgreSQL, the second holding its connection while it waits; so the writer never runs them
/// together, and the second takes everything queued for that head meanwhile instead.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Head {
    User(i64),
    Room(String),
}

impl Job {
    /// The heads this job's append locks.
    fn heads(&self) -> impl Iterator<Item = Head> + '_ {
        let users = self.batch.users.iter().map(|entry| Head::User(entry.mid));
        let rooms = (self.batch.rooms.iter()).map(|entry| Head::Room(entry.room.clone()));
        users.chain(rooms)
    }
}

/// The writer task: whenever fewer than [`MAX_BATCHES_IN_FLIGHT`] batches run, starts one with
/// every waiting job that shares no head with a running batch (never waiting for more to come);
/// see [`Waiting::take_batch`]. During an outage whose probe is running, jobs are answered at once
/// instead. Once the queue's senders are gone, it runs what is waiting and stops.
async fn run_writer(writer: Arc<Writer>, mut queue: mpsc::Receiver<Queued>) {
    // Each finished batch hands back the heads it held (also when it panicked: see `HeadsBack`).
    let (finished_sender, mut finished) = mpsc::unbounded_channel::<Vec<Head>>();
    let mut running = 0;
    let mut busy: HashSet<Head> = HashSet::new();
    let mut waiting = Waiting::default();
    let waiting_gauge = metrics::gauge!("rim_control_durable_waiting");
    let mut open = true;
    loop {
        while running < MAX_BATCHES_IN_FLIGHT {
            let jobs = waiting.take_batch(&writer, &busy);
            if jobs.is_empty() {
                break;
            }
            let heads: Vec<Head> = jobs.iter().flat_map(|queued| queued.job.heads()).collect();
            busy.extend(heads.iter().cloned());
            running += 1;
            let probe = writer.health.lock().begin();
            if probe {
                // What waits is now refused: the next look goes over all of it.
                waiting.rescan();
            }
            let back = HeadsBack {
                writer: writer.clone(),
                probe,
                outcome: None,
                heads,
                finished: finished_sender.clone(),
            };
            tokio::spawn(async move {
                let mut back = back;
                back.outcome = Some(run_batch(&back.writer, jobs).await);
            });
        }
        waiting_gauge.set(waiting.len() as f64);
        if !open && waiting.is_empty() {
            return;
        }
        tokio::select! {
            Some(heads) = finished.recv() => {
                running -= 1;
                for head in &heads {
                    busy.remove(head);
                }
                // Jobs held back by those heads may go now.
                waiting.rescan();
            }
            next = queue.recv(), if open && waiting.len() < WRITER_QUEUE => match next {
                Some(queued) => waiting.extend(refuse(&writer, queued)),
                None => open = false,
            },
        }
        // What else arrived meanwhile waits too, so the next batch takes it.
        while waiting.len() < WRITER_QUEUE {
            let Ok(queued) = queue.try_recv() else {
                break;
            };
            waiting.extend(refuse(&writer, queued));
        }
    }
}

/// A running batch's hand-back: when the batch's task ends, normally or by a panic, its outcome
/// goes to the writer's health (a panic counts as saying nothing about the store or the bus) and
/// its heads back to the writer task. Without it a panicking batch would hold its heads, and its
/// users' and rooms' pushes would wait, for good.
struct HeadsBack {
    writer: Arc<Writer>,
    probe: bool,
    outcome: Option<Result<(), Option<(Side, String)>>>,
    heads: Vec<Head>,
    finished: mpsc::UnboundedSender<Vec<Head>>,
}

impl Drop for HeadsBack {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or(Err(None));
        self.writer.health.lock().end(self.probe, outcome);
        // The writer is gone only once it has nothing left to start.
        let _ = self.finished.send(std::mem::take(&mut self.heads));
    }
}

/// The jobs waiting for a batch, in arrival order. Those before `scanned` were looked at since the
/// last change that could free them (a batch finished, an outage's probe started, or a batch was
/// full) and found held back: by a running batch's head or by a head of a job before them (in
/// `blocked`, the heads of all of them). So a new arrival is judged alone, and one look over a long
/// queue held back by one hot room costs nothing per arrival.
#[derive(Default)]
struct Waiting {
    jobs: VecDeque<Queued>,
    scanned: usize,
    blocked: HashSet<Head>,
}

impl Waiting {
    fn len(&self) -> usize {
        self.jobs.len()
    }

    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Queues what arrived (nothing, if it was refused).
    fn extend(&mut self, queued: Option<Queued>) {
        self.jobs.extend(queued);
    }

    /// The next look goes over every job again.
    fn rescan(&mut self) {
        self.scanned = 0;
        self.blocked.clear();
    }

    /// The next batch, taken out of the queue: in order, every job not looked at yet that shares
    /// no head with a running batch (`busy`) nor with a job left waiting before it (so each user's
    /// and room's pushes are numbered in the order they came), within the inbox's batch bounds (the
    /// first job always fits). Jobs are answered at once instead while the writer refuses them
    /// (see [`Health::refusal`]).
    fn take_batch(&mut self, writer: &Writer, busy: &HashSet<Head>) -> Vec<Queued> {
        let mut size = BatchSize::default();
        let mut taken = Vec::new();
        // Whether a job free to go was left only because the batch was full.
        let mut full = false;
        let unseen = self.jobs.split_off(self.scanned);
        for queued in unseen {
            let Some(queued) = refuse(writer, queued) else {
                continue;
            };
            let free = (queued.job.heads())
                .all(|head| !busy.contains(&head) && !self.blocked.contains(&head));
            if free && (taken.is_empty() || size.fits(&queued.job)) {
                size.add(&queued.job);
                taken.push(queued);
            } else {
                full |= free;
                self.blocked.extend(queued.job.heads());
                self.jobs.push_back(queued);
            }
        }
        self.scanned = self.jobs.len();
        if full {
            // The next batch may take what did not fit in this one: it looks at everything again.
            self.rescan();
        }
        taken
    }
}

/// Answers `queued` at once if the writer is refusing pushes (see [`Health::refusal`]); hands
/// it back otherwise.
fn refuse(writer: &Writer, queued: Queued) -> Option<Queued> {
    let Some(refusal) = writer.health.lock().refusal() else {
        return Some(queued);
    };
    // A caller that went away does not need its answer.
    let _ = queued.answer.send(Err(refusal));
    None
}

/// One batch: append every job's entries, publish every record with its position (waiting at most
/// the publish timeout), commit; answer each job with the outcome. Returns which dependency
/// failed it, if one did.
async fn run_batch(writer: &Writer, jobs: Vec<Queued>) -> Result<(), Option<(Side, String)>> {
    let started = Instant::now();
    // Sized once: a batch may hold thousands of pushes, whose entries would otherwise be copied
    // over and over as the vectors grow.
    let mut batch = DurableBatch {
        users: Vec::with_capacity(jobs.iter().map(|q| q.job.batch.users.len()).sum()),
        rooms: Vec::with_capacity(jobs.iter().map(|q| q.job.batch.rooms.len()).sum()),
        receipts: Vec::with_capacity(jobs.iter().map(|q| q.job.batch.receipts.len()).sum()),
    };
    let mut pending = Vec::with_capacity(jobs.len());
    let mut answers = Vec::with_capacity(jobs.len());
    for Queued { job, answer } in jobs {
        pending.push(Pending {
            users: batch.users.len(),
            rooms: batch.rooms.len(),
            records: job.records,
        });
        batch.users.extend(job.batch.users);
        batch.rooms.extend(job.batch.rooms);
        batch.receipts.extend(job.batch.receipts);
        answers.push(answer);
    }
    let expected = (batch.users.len(), batch.rooms.len());
    let ran = AtomicBool::new(false);
    let ran_ref = &ran;
    let (bus, within) = (writer.bus.as_ref(), writer.publish_timeout);
    let outcome = writer
        .inbox
        .append_published(
            &batch,
            crate::now_ms(),
            Box::new(move |positions: BatchPositions| {
                Box::pin(async move {
                    ran_ref.store(true, Ordering::Relaxed);
                    if (positions.users.len(), positions.rooms.len()) != expected {
                        return Err(PublishError::from(format!(
                            "the inbox numbered {} user and {} room entries of {} and {}",
                            positions.users.len(),
                            positions.rooms.len(),
                            expected.0,
                            expected.1
                        )));
                    }
                    let records = place(pending, &positions);
                    if records.is_empty() {
                        return Ok(());
                    }
                    publish_within(bus, records, within)
                        .await
                        .map_err(PublishError::from)
                })
            }),
        )
        .await;
    metrics::histogram!("rim_control_durable_batch_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("rim_control_durable_batch_pushes").record(answers.len() as f64);
    let failure = match outcome {
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(%error, pushes = answers.len(), "durable batch failed");
            Some(classify(error, ran.load(Ordering::Relaxed)))
        }
    };
    for answer in answers {
        // A caller that went away does not need its answer.
        let _ = answer.send(match &failure {
            None => Ok(()),
            Some((failure, _)) => Err(WriteFailure {
                error: duplicate(&failure.error),
                store_failed: failure.store_failed,
            }),
        });
    }
    match failure {
        None => Ok(()),
        Some((failure, side)) => Err(side.map(|side| (side, failure.error.to_string()))),
    }
}

/// Every job's records with the positions of their entries.
fn place(pending: Vec<Pending>, positions: &BatchPositions) -> Vec<OutgoingPush> {
    let stream = |kind: u32, position: Option<&Position>| {
        position.map(|p| StreamPosition {
            stream: kind,
            epoch: p.epoch,
            seq: p.seq,
        })
    };
    pending
        .into_iter()
        .flat_map(
            |Pending {
                 users,
                 rooms,
                 records,
             }| {
                records.into_iter().map(move |(mut record, slot)| {
                    record.message.position = match slot {
                        Some(Slot::User(n)) => stream(USER_STREAM, positions.users.get(users + n)),
                        Some(Slot::Room(n)) => stream(ROOM_STREAM, positions.rooms.get(rooms + n)),
                        None => None,
                    };
                    record
                })
            },
        )
        .collect()
}

/// What the callers of a failed batch are answered, and which dependency failed it (none for a
/// refused input). `published`: whether the publish step ran.
fn classify(error: PublishedAppendError, published: bool) -> (WriteFailure, Option<Side>) {
    match error {
        PublishedAppendError::Store(error) => {
            let side = matches!(error, StoreError::Unavailable(_)).then_some(Side::Store);
            let failure = WriteFailure {
                store_failed: side.is_some() && !published,
                error: ApiError::from(error),
            };
            (failure, side)
        }
        PublishedAppendError::Publish(error) => {
            let (error, side) = match error.downcast::<BusError>() {
                Ok(bus) => (ApiError::from(*bus), Side::Bus),
                // The publish step's own check of the inbox's numbering.
                Err(other) => (
                    ApiError::Unavailable(format!("push not accepted: {other}")),
                    Side::Store,
                ),
            };
            let failure = WriteFailure {
                error,
                store_failed: false,
            };
            (failure, Some(side))
        }
    }
}

/// The same answer for another caller of the batch (only these two kinds come out of
/// [`classify`]).
fn duplicate(error: &ApiError) -> ApiError {
    match error {
        ApiError::BadRequest(message) => ApiError::BadRequest(message.clone()),
        other => ApiError::Unavailable(other.to_string()),
    }
}

/// The longest a push waits for the bus (`control_publish_timeout_ms`).
pub(super) fn publish_timeout(state: &AppState) -> Duration {
    Duration::from_millis(state.config.control_publish_timeout_ms)
}

/// Publishes `records`, waiting at most `within` for the bus to acknowledge them; past it the
/// push fails as for a bus error (`rim_control_bus_publish_timeouts_total`). A bus may finish the
/// publish in the background (the Kafka producer does), so the records may still arrive, as after
/// any failed publish.
pub(super) async fn publish_within(
    bus: &dyn BusProducer,
    records: Vec<OutgoingPush>,
    within: Duration,
) -> Result<(), BusError> {
    match tokio::time::timeout(within, timed_publish(bus.publish(records))).await {
        Ok(outcome) => outcome,
        Err(_) => {
            metrics::counter!("rim_control_bus_publish_timeouts_total").increment(1);
            Err(BusError::Unavailable(format!(
                "the bus did not acknowledge the records within {within:?}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rim_bus::memory::MemoryBus;
    use rim_proto::durable::MessageId;
    use rim_store::inbox::{InboxSettings, RoomEntry, UserEntry};
    use rim_store::memory::MemoryInbox;

    fn writer() -> Writer {
        Writer {
            inbox: Arc::new(MemoryInbox::new(InboxSettings::default()).unwrap()),
            bus: Arc::new(MemoryBus::new(16)),
            publish_timeout: Duration::from_secs(1),
            health: Mutex::default(),
        }
    }

    /// A job for users `mids` and rooms `rooms`, its body naming it.
    fn job(name: &str, mids: &[i64], rooms: &[&str]) -> Queued {
        let user = |&mid: &i64| UserEntry {
            mid,
            key: None,
            message_id: MessageId([0; 16]),
            operation: 1000,
            body: name.as_bytes().to_vec(),
        };
        let room = |&room: &&str| RoomEntry {
            room: room.to_owned(),
            message_id: MessageId([0; 16]),
            operation: 1000,
            body: name.as_bytes().to_vec(),
        };
        let batch = DurableBatch {
            users: mids.iter().map(user).collect(),
            rooms: rooms.iter().map(room).collect(),
            receipts: Vec::new(),
        };
        // Nobody listens for the answer here.
        let (answer, _) = oneshot::channel();
        Queued {
            job: Job {
                batch,
                records: Vec::new(),
            },
            answer,
        }
    }

    fn names(jobs: &[Queued]) -> Vec<String> {
        let name = |queued: &Queued| {
            let body = (queued.job.batch.users.first().map(|u| &u.body))
                .or_else(|| queued.job.batch.rooms.first().map(|r| &r.body));
            String::from_utf8_lossy(body.map_or(&[][..], |b| b)).into_owned()
        };
        jobs.iter().map(name).collect()
    }

    #[test]
    fn a_batch_takes_in_order_what_no_running_batch_or_earlier_waiting_job_holds() {
        let writer = writer();
        let mut waiting = Waiting::default();
        for queued in [
            job("u1", &[1], &[]),
            job("ra", &[], &["a"]),
            job("u1-rb", &[1], &["b"]),
            job("u2", &[2], &[]),
        ] {
            waiting.extend(Some(queued));
        }
        let busy = HashSet::from([Head::User(1)]);
        // User 1 runs: its jobs wait, and so does room b behind one of them.
        let taken = waiting.take_batch(&writer, &busy);
        assert_eq!(names(&taken), ["ra", "u2"]);
        assert_eq!(waiting.len(), 2);
        // Arrivals are judged against what waits before them: room b's waits, user 3's goes.
        waiting.extend(Some(job("rb", &[], &["b"])));
        waiting.extend(Some(job("u3", &[3], &[])));
        let taken = waiting.take_batch(&writer, &busy);
        assert_eq!(names(&taken), ["u3"]);
        assert!(waiting.take_batch(&writer, &busy).is_empty());
        // Once user 1's batch is done, everything left goes together, in order.
        waiting.rescan();
        let taken = waiting.take_batch(&writer, &HashSet::new());
        assert_eq!(names(&taken), ["u1", "u1-rb", "rb"]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn what_did_not_fit_in_a_batch_goes_in_the_next_without_a_rescan() {
        let writer = writer();
        let mut waiting = Waiting::default();
        let half: Vec<i64> = (1..=(MAX_APPEND_BATCH as i64 / 2 + 1)).collect();
        let other: Vec<i64> = half.iter().map(|mid| mid + 100_000).collect();
        waiting.extend(Some(job("first", &half, &[])));
        waiting.extend(Some(job("second", &other, &[])));
        let busy = HashSet::new();
        assert_eq!(names(&waiting.take_batch(&writer, &busy)), ["first"]);
        assert_eq!(names(&waiting.take_batch(&writer, &busy)), ["second"]);
    }
}
