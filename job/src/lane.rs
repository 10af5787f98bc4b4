//! One lane per edge: that edge's pushes, sent one request at a time, in batch order, until taken.
//!
//! Order per target means a later batch never reaches an edge before an earlier one did, so each
//! edge has a single task that sends its requests strictly in sequence and only moves on once the
//! current one is taken (or dropped). Edges are independent: a slow edge delays only its own lane,
//! until the worker's in-flight bound stops the whole region (the bus cannot commit past it anyway).
//!
//! A batch's part is cut into requests of at most `max_request_bytes` (the edge limits its request
//! body); a request the edge still finds too large (413) is halved and retried, and only a single
//! push it refuses is dropped (`rim_job_dropped_total{reason="rejected"}`).
//!
//! A failing request is retried with bounded exponential backoff for as long as the directory lists
//! the edge as live; once the edge is dead or removed, its part is dropped
//! (`rim_job_dropped_total{reason="edge_gone"}`), because its sessions are gone with it.

use crate::directory::EdgeDirectory;
use crate::edge_client::{EdgeClient, EdgeFailure};
use parking_lot::Mutex;
use prost::Message;
use rim_proto::schema::{EdgePush, EdgePushRequest};
use rim_retry::Backoff;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

/// Tracks the edges a batch still waits for; the worker commits the batch when none remain.
pub(crate) struct BatchTicket {
    remaining: AtomicUsize,
    finished: Arc<Notify>,
}

impl BatchTicket {
    /// A ticket waiting for `parts` edges; `finished` is notified when the last one is done.
    pub(crate) fn new(parts: usize, finished: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(parts),
            finished,
        })
    }

    /// Whether every edge took (or dropped) its part.
    pub(crate) fn is_done(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }

    fn part_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finished.notify_one();
        }
    }
}

/// One edge's part of a batch.
pub(crate) struct LanePart {
    /// The edge's pushes, in batch order.
    pub(crate) pushes: Vec<EdgePush>,
    pub(crate) ticket: Arc<BatchTicket>,
}

/// What every lane shares: the HTTP client, the directory, the region and the limits.
pub(crate) struct LaneContext {
    pub(crate) client: EdgeClient,
    pub(crate) directory: Arc<dyn EdgeDirectory>,
    pub(crate) region: String,
    pub(crate) backoff: Backoff,
    pub(crate) max_request_bytes: usize,
}

/// The worker's handle on one edge's lane.
pub(crate) struct Lane {
    parts: mpsc::Sender<LanePart>,
    push_url: Arc<Mutex<String>>,
    /// Parts queued or being sent.
    outstanding: Arc<AtomicUsize>,
}

impl Lane {
    /// Starts the lane task of `node_id` in `tasks`. `capacity` must be at least the worker's
    /// in-flight bound, so [`Lane::send`] never waits (each batch gives a lane at most one part).
    pub(crate) fn start(
        tasks: &mut JoinSet<()>,
        context: Arc<LaneContext>,
        node_id: String,
        push_url: String,
        capacity: usize,
    ) -> Self {
        let (parts, queue) = mpsc::channel(capacity.max(1));
        let push_url = Arc::new(Mutex::new(push_url));
        let outstanding = Arc::new(AtomicUsize::new(0));
        tasks.spawn(run(
            context,
            node_id,
            push_url.clone(),
            outstanding.clone(),
            queue,
        ));
        Self {
            parts,
            push_url,
            outstanding,
        }
    }

    /// Queues a part; gives it back if the lane task is gone.
    pub(crate) async fn send(&self, part: LanePart) -> Result<(), LanePart> {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        self.parts.send(part).await.map_err(|returned| {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            returned.0
        })
    }

    /// Whether the lane has nothing queued or in flight. Only an idle lane may be retired: a new
    /// lane for the same edge must never overtake an old one's parts.
    pub(crate) fn is_idle(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) == 0
    }

    /// Points the lane at the edge's current address (it re-registered elsewhere).
    pub(crate) fn set_push_url(&self, push_url: &str) {
        let mut current = self.push_url.lock();
        if *current != push_url {
            push_url.clone_into(&mut current);
        }
    }
}

/// What became of one request.
enum Outcome {
    /// The edge took it, or it was dropped by policy: move on.
    Finished,
    /// Over the edge's size limit: split it.
    TooLarge,
}

/// The lane task: sends each part, request by request, then marks it done.
async fn run(
    context: Arc<LaneContext>,
    node_id: String,
    push_url: Arc<Mutex<String>>,
    outstanding: Arc<AtomicUsize>,
    mut queue: mpsc::Receiver<LanePart>,
) {
    let mut backoff = context.backoff.clone();
    while let Some(part) = queue.recv().await {
        let mut requests = split_by_size(part.pushes, context.max_request_bytes);
        while let Some(pushes) = requests.pop_front() {
            let request = EdgePushRequest { pushes };
            match deliver(&context, &node_id, &push_url, &mut backoff, &request).await {
                Outcome::Finished => {}
                Outcome::TooLarge => {
                    let mut first = request.pushes;
                    let second = first.split_off(first.len() / 2);
                    requests.push_front(second);
                    requests.push_front(first);
                }
            }
        }
        part.ticket.part_done();
        outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Cuts pushes into requests of at most `max_bytes` encoded (a single larger push goes alone; the
/// edge decides whether it takes it).
fn split_by_size(pushes: Vec<EdgePush>, max_bytes: usize) -> VecDeque<Vec<EdgePush>> {
    let mut requests = VecDeque::new();
    let mut current: Vec<EdgePush> = Vec::new();
    let mut size = 0;
    for push in pushes {
        // Field tag and length prefix of the push inside the request: at most 11 bytes.
        let encoded = push.encoded_len() + 11;
        if !current.is_empty() && size + encoded > max_bytes {
            requests.push_back(std::mem::take(&mut current));
            size = 0;
        }
        size += encoded;
        current.push(push);
    }
    if !current.is_empty() {
        requests.push_back(current);
    }
    requests
}

/// Sends one request until the edge takes it, or drops it by policy (refused for good, or the edge
/// is gone). Returns [`Outcome::TooLarge`] for a request of several pushes the edge finds too big.
async fn deliver(
    context: &LaneContext,
    node_id: &str,
    push_url: &Mutex<String>,
    backoff: &mut Backoff,
    request: &EdgePushRequest,
) -> Outcome {
    let region = &context.region;
    let pushes = request.pushes.len() as u64;
    loop {
        let url = push_url.lock().clone();
        let failure = match context.client.push(&url, request).await {
            Ok(response) => {
                backoff.reset();
                metrics::counter!("rim_job_delivered_total", "region" => region.clone())
                    .increment(pushes);
                let reached: u64 = response
                    .delivered
                    .iter()
                    .map(|&count| u64::from(count))
                    .sum();
                metrics::counter!("rim_job_connections_reached_total", "region" => region.clone())
                    .increment(reached);
                if response.delivered.len() as u64 != pushes {
                    tracing::warn!(
                        node_id,
                        answered = response.delivered.len(),
                        pushes,
                        "edge answer count mismatch"
                    );
                }
                return Outcome::Finished;
            }
            Err(failure) => failure,
        };
        metrics::counter!("rim_job_edge_errors_total", "region" => region.clone()).increment(1);
        match &failure {
            EdgeFailure::TooLarge(_) if pushes > 1 => return Outcome::TooLarge,
            EdgeFailure::TooLarge(reason) | EdgeFailure::Rejected(reason) => {
                tracing::error!(node_id, %reason, pushes, "edge refused a push request for good; dropping it");
                metrics::counter!("rim_job_dropped_total", "region" => region.clone(), "reason" => "rejected")
                    .increment(pushes);
                return Outcome::Finished;
            }
            EdgeFailure::Retry(_) => {}
        }
        if !still_live(context, node_id).await {
            tracing::info!(node_id, pushes, %failure, "edge is gone; dropping its pushes");
            metrics::counter!("rim_job_dropped_total", "region" => region.clone(), "reason" => "edge_gone")
                .increment(pushes);
            return Outcome::Finished;
        }
        let pause = backoff.next_pause();
        tracing::warn!(node_id, %failure, ?pause, "edge did not take pushes; retrying");
        tokio::time::sleep(pause).await;
    }
}

/// Whether the directory still lists the edge as live. If the directory cannot answer, the edge is
/// assumed live: dropping pushes needs certainty.
async fn still_live(context: &LaneContext, node_id: &str) -> bool {
    match context.directory.live_edges(&context.region).await {
        Ok(edges) => edges.iter().any(|edge| edge.node_id == node_id),
        Err(err) => {
            tracing::warn!(%err, "cannot check whether an edge is still live");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(body_len: usize) -> EdgePush {
        EdgePush {
            message_id: "m".into(),
            operation: 1000,
            body: vec![7; body_len].into(),
            record: 0,
            target: None,
        }
    }

    #[test]
    fn requests_are_cut_at_the_size_limit_and_keep_order() {
        let pushes: Vec<EdgePush> = [100, 100, 100, 5000, 10].into_iter().map(push).collect();
        let requests = split_by_size(pushes, 300);
        let sizes: Vec<Vec<usize>> = requests
            .iter()
            .map(|request| request.iter().map(|push| push.body.len()).collect())
            .collect();
        assert_eq!(sizes, vec![vec![100, 100], vec![100], vec![5000], vec![10]]);
    }
}
