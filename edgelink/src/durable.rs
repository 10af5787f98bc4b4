//! The edge's link to the durable half of the control plane: resume calls, and acks and `written`
//! receipts in batches.
//!
//! [`DurableReporter`] is the edge's [`DurableLink`] (see `rim_edge::durable`):
//!
//! - **Resume** (`POST /edge/v1/resume`, one page per stream per call) is a call made on the
//!   resuming connection's task, bounded by `edge_control_timeout_ms`; at most
//!   [`RESUME_CONCURRENCY`] run at once per edge, so a mass reconnect after an outage does not
//!   stampede the control plane or pin a page of every client's history in memory at once. Its
//!   answer may be up to [`MAX_RESUME_ANSWER_BYTES`] (a page of pushes). Any failure (unreachable,
//!   a 5xx such as control's 503 for a store error, an unreadable answer) makes the client's answer
//!   "not resumed: unavailable".
//! - **Acks** (`POST /edge/v1/acks`) and **receipts** (`POST /edge/v1/receipts`) are queued by the
//!   connection tasks (a short lock, never a wait) and sent by one background task every
//!   [`FLUSH_EVERY`], or as soon as [`BATCH`] are queued. Acks are cumulative, so only a device's
//!   latest one is kept until it is sent. Each queue holds at most `edge_link_buffer` entries: when
//!   control is down for long, what does not fit is dropped and counted
//!   (`rim_edge_link_durable_dropped_total{kind}`), never blocking a client. A batch that fails is
//!   retried with backoff (a refused token is renewed first, see [`crate::credential`]); one control
//!   refuses as malformed or too large is dropped and counted, since resending it cannot help.
//!
//! Every call presents the node token, like the other edge API calls.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use prost::Message;
use rim_edge::durable::{DurableLink, ResumeUnavailable};
use rim_proto::schema::{
    AckBatch, DeviceAck, EdgeReceipt, ReceiptBatch, ResumeRequest, ResumeResponse,
};
use rim_retry::Backoff;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{CallError, ControlClient, decoded, failure};
use crate::config::LinkConfig;
use crate::credential::NodeCredentials;
use crate::metrics;

/// Largest answer to a resume call: a page of up to `RESUME_PAGE` stored pushes.
pub const MAX_RESUME_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// Resume calls in flight at once per edge; more wait for a turn.
pub const RESUME_CONCURRENCY: usize = 32;
/// Acks or receipts per batch; a queue this long is sent at once.
pub const BATCH: usize = 1_000;
/// Longest time an ack or receipt waits to be sent while control answers.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

impl ControlClient {
    /// `POST /edge/v1/resume`: one page per stream asked for.
    pub async fn resume(&self, request: &ResumeRequest) -> Result<ResumeResponse, CallError> {
        let path = "/edge/v1/resume";
        let (status, answer) = self
            .call_bounded(path, request, None, MAX_RESUME_ANSWER_BYTES)
            .await?;
        decoded(status, answer)
    }

    /// `POST /edge/v1/acks`.
    pub async fn acks(&self, batch: &AckBatch) -> Result<(), CallError> {
        self.post_batch("/edge/v1/acks", batch).await
    }

    /// `POST /edge/v1/receipts`.
    pub async fn receipts(&self, batch: &ReceiptBatch) -> Result<(), CallError> {
        self.post_batch("/edge/v1/receipts", batch).await
    }

    /// Posts a batch answered by a bare success.
    async fn post_batch(&self, path: &str, batch: &impl Message) -> Result<(), CallError> {
        let (status, answer) = self.call(path, batch, None).await?;
        match status {
            s if s.is_success() => Ok(()),
            s => Err(failure(s, &answer)),
        }
    }
}

/// Acks waiting to be sent: the latest per device, in the order devices first acked.
#[derive(Debug, Default)]
struct AckQueue {
    latest: HashMap<(i64, String), (u64, u64)>,
    order: VecDeque<(i64, String)>,
}

impl AckQueue {
    fn len(&self) -> usize {
        self.order.len()
    }

    /// Keeps `ack` as its device's latest; false when a new device does not fit in `bound`.
    fn offer(&mut self, ack: DeviceAck, bound: usize) -> bool {
        let device = (ack.mid, ack.key);
        if let Some(position) = self.latest.get_mut(&device) {
            *position = (ack.epoch, ack.seq);
            return true;
        }
        if self.order.len() >= bound {
            return false;
        }
        self.latest.insert(device.clone(), (ack.epoch, ack.seq));
        self.order.push_back(device);
        true
    }

    fn take(&mut self, most: usize) -> Vec<DeviceAck> {
        let count = most.min(self.order.len());
        self.order
            .drain(..count)
            .filter_map(|device| {
                let (epoch, seq) = self.latest.remove(&device)?;
                Some(DeviceAck {
                    mid: device.0,
                    key: device.1,
                    epoch,
                    seq,
                })
            })
            .collect()
    }
}

/// What the connection tasks and the sender share.
#[derive(Default)]
struct Queues {
    acks: Mutex<AckQueue>,
    receipts: Mutex<VecDeque<EdgeReceipt>>,
    /// Batches taken and not yet accepted (or given up on).
    inflight: std::sync::atomic::AtomicUsize,
    /// Signalled when a queue reaches [`BATCH`], and on shutdown.
    full: Notify,
}

/// The edge's [`DurableLink`]; see the module docs. Share it behind an `Arc`.
pub struct DurableReporter {
    node_id: String,
    client: ControlClient,
    resumes: Semaphore,
    queues: Arc<Queues>,
    bound: usize,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl DurableReporter {
    /// Starts the reporter of the node of `credentials` (the edge's) for the control plane of
    /// `config`: the sender task begins once the credential is ready. Fails on an unusable control
    /// URL or CA file. Must be called inside a Tokio runtime.
    pub fn start(
        config: &LinkConfig,
        credentials: &Arc<NodeCredentials>,
    ) -> anyhow::Result<Arc<Self>> {
        let client = ControlClient::new(
            &config.edge_control_url,
            credentials.token(),
            config.control_timeout(),
            config.edge_control_ca_file.as_deref(),
        )?;
        let reporter = Arc::new(Self {
            node_id: credentials.node_id().to_owned(),
            client,
            resumes: Semaphore::new(RESUME_CONCURRENCY),
            queues: Arc::new(Queues::default()),
            bound: config.edge_link_buffer.max(BATCH),
            stop: CancellationToken::new(),
            task: Mutex::new(None),
        });
        let sender = Sender {
            node_id: reporter.node_id.clone(),
            client: reporter.client.clone(),
            queues: reporter.queues.clone(),
            stop: reporter.stop.clone(),
            backoff: config.backoff(),
        };
        let credentials = credentials.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                () = sender.stop.cancelled() => return,
                () = credentials.ready() => {}
            }
            sender.run().await;
        });
        *reporter.task.lock() = Some(task);
        Ok(reporter)
    }

    /// Acks and receipts queued or in flight.
    pub fn unsent(&self) -> usize {
        self.queues.acks.lock().len()
            + self.queues.receipts.lock().len()
            + self
                .queues
                .inflight
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends what is queued (waiting up to `timeout` for it to be accepted; call it after the edge's
    /// shutdown, so the last writes' receipts go out) and stops. True if everything was sent.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.queues.full.notify_one();
        let flushed = tokio::time::timeout(timeout, async {
            while self.unsent() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok();
        self.stop.cancel();
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        if !flushed {
            tracing::warn!(
                unsent = self.unsent(),
                "edge link stopped with unsent acks or receipts"
            );
        }
        flushed
    }
}

#[async_trait]
impl DurableLink for DurableReporter {
    async fn resume(
        &self,
        mut request: ResumeRequest,
    ) -> Result<ResumeResponse, ResumeUnavailable> {
        let _turn = self
            .resumes
            .acquire()
            .await
            .map_err(|_| ResumeUnavailable("the edge link is stopping".into()))?;
        request.node_id.clone_from(&self.node_id);
        let result = self.client.resume(&request).await;
        metrics::call("resume", result.as_ref().map(|_| ()));
        result.map_err(|error| ResumeUnavailable(error.to_string()))
    }

    fn ack(&self, ack: DeviceAck) {
        let (kept, len) = {
            let mut acks = self.queues.acks.lock();
            (acks.offer(ack, self.bound), acks.len())
        };
        if !kept {
            dropped("ack", "queue_full", 1);
        }
        if len >= BATCH {
            self.queues.full.notify_one();
        }
    }

    fn written(&self, receipts: &[EdgeReceipt]) {
        let (fitted, len) = {
            let mut queue = self.queues.receipts.lock();
            let room = self.bound.saturating_sub(queue.len());
            let fitted = receipts.len().min(room);
            queue.extend(receipts[..fitted].iter().cloned());
            (fitted, queue.len())
        };
        if fitted < receipts.len() {
            dropped("receipt", "queue_full", (receipts.len() - fitted) as u64);
        }
        if len >= BATCH {
            self.queues.full.notify_one();
        }
    }
}

/// Counts acks or receipts (`kind`) control accepted (`rim_edge_link_durable_sent_total{kind}`).
fn sent(kind: &'static str, count: u64) {
    ::metrics::counter!("rim_edge_link_durable_sent_total", "kind" => kind).increment(count);
}

/// Counts acks or receipts given up on (`rim_edge_link_durable_dropped_total{kind, reason}`:
/// `queue_full` while control was away, `refused` by control).
fn dropped(kind: &'static str, reason: &'static str, count: u64) {
    ::metrics::counter!("rim_edge_link_durable_dropped_total", "kind" => kind, "reason" => reason)
        .increment(count);
}

/// The background task: takes batches and sends them until stopped.
struct Sender {
    node_id: String,
    client: ControlClient,
    queues: Arc<Queues>,
    stop: CancellationToken,
    backoff: Backoff,
}

impl Sender {
    async fn run(self) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = self.queues.full.notified() => {}
                _ = tick.tick() => {}
            }
            loop {
                let acks = self.queues.acks.lock().take(BATCH);
                let receipts = {
                    let mut queue = self.queues.receipts.lock();
                    let count = BATCH.min(queue.len());
                    queue.drain(..count).collect::<Vec<_>>()
                };
                if acks.is_empty() && receipts.is_empty() {
                    break;
                }
                let taken = acks.len() + receipts.len();
                self.queues
                    .inflight
                    .store(taken, std::sync::atomic::Ordering::Relaxed);
                let sent = self.send_acks(acks).await && self.send_receipts(receipts).await;
                self.queues
                    .inflight
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                if !sent {
                    return;
                }
            }
        }
    }

    async fn send_acks(&self, acks: Vec<DeviceAck>) -> bool {
        if acks.is_empty() {
            return true;
        }
        let batch = AckBatch {
            node_id: self.node_id.clone(),
            acks,
        };
        let count = batch.acks.len() as u64;
        self.deliver("acks", "ack", count, || self.client.acks(&batch))
            .await
    }

    async fn send_receipts(&self, receipts: Vec<EdgeReceipt>) -> bool {
        if receipts.is_empty() {
            return true;
        }
        let batch = ReceiptBatch {
            node_id: self.node_id.clone(),
            receipts,
        };
        let count = batch.receipts.len() as u64;
        self.deliver("receipts", "receipt", count, || {
            self.client.receipts(&batch)
        })
        .await
    }

    /// Calls `post` until control accepts or refuses the batch of `count` entries; false if
    /// stopped first.
    async fn deliver<F, Fut>(
        &self,
        call: &'static str,
        kind: &'static str,
        count: u64,
        post: F,
    ) -> bool
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), CallError>>,
    {
        let mut backoff = self.backoff.clone();
        loop {
            let result = post().await;
            metrics::call(call, result.as_ref().copied());
            match result {
                Ok(()) => {
                    sent(kind, count);
                    return true;
                }
                Err(error @ (CallError::Refused { .. } | CallError::TooLarge(_))) => {
                    tracing::error!(%error, count, "control refused a batch of {kind}s; dropped");
                    dropped(kind, "refused", count);
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, count, "batch of {kind}s not delivered; retrying");
                    tokio::select! {
                        () = self.stop.cancelled() => return false,
                        () = tokio::time::sleep(backoff.next_pause()) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(mid: i64, key: &str, seq: u64) -> DeviceAck {
        DeviceAck {
            mid,
            key: key.into(),
            epoch: 0,
            seq,
        }
    }

    #[test]
    fn a_device_keeps_only_its_latest_ack_and_the_queue_is_bounded() {
        let mut queue = AckQueue::default();
        assert!(queue.offer(ack(1, "a", 5), 2));
        assert!(queue.offer(ack(2, "b", 1), 2));
        assert!(queue.offer(ack(1, "a", 9), 2), "a known device always fits");
        assert!(!queue.offer(ack(3, "c", 1), 2), "a third device does not");
        assert_eq!(queue.len(), 2);
        let taken = queue.take(1);
        assert_eq!(taken, [ack(1, "a", 9)]);
        assert_eq!(queue.take(10), [ack(2, "b", 1)]);
        assert_eq!(queue.len(), 0);
    }
}
