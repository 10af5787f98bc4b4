//! One lane per edge: that edge's pushes, in batch order, until taken or settled by policy, with
//! several deliveries in flight at once.
//!
//! Order per target means a later push to a target never reaches the edge before an earlier one
//! did. Each edge has a single task that keeps up to [`PIPELINE_DEPTH`] deliveries in flight: the
//! next part (a batch's share, strictly in arrival order) starts as soon as it shares no target
//! with a delivery in flight, so the edge works on one request while the next ones travel, and a
//! part whose targets an earlier delivery still holds waits for it (as do the parts behind it).
//!
//! Parts that queued meanwhile leave together: a starting delivery takes every part waiting
//! behind it (in order) that shares no target with a delivery in flight nor with a part it leaves
//! waiting, and sends their pushes in the same requests. So with pushes to rooms 1, 2, 3, 1, 2,
//! 3, ... queued while room 2 and 3 are in flight, the delivery that starts when room 1's returns
//! takes every queued push to room 1, not just the first. So an edge that is slower than the worker reads gets fewer, larger
//! requests instead of a queue of small ones each paying a round trip: pushes to one room, which
//! must go one delivery at a time, would otherwise wait behind every earlier batch's request
//! (half a second at 1,000 room pushes/s on two busy cores). Nothing waits to be merged: a part
//! that can start, starts. Targets are a
//! push's connection keys, its room, or "everyone" for a broadcast: two pushes the bus orders (one
//! partition key) always share one, so the bus order of every target is kept.
//!
//! Pushes to the same room that leave in one request are put next to each other (see
//! [`adjacent_by_room`]): the edge sends consecutive pushes to the same recipients as one op-9
//! frame per connection, one write and one wake instead of one per push, but round-robin traffic
//! (rooms 1, 2, 3, 1, 2, 3, ...) never has two in a row. Moving a room push forward past pushes to
//! other rooms keeps the order of every target (the bus itself only orders a target's pushes);
//! no push moves past a key push.
//!
//! Isolation: one edge must never hold up the region. Every part has a **delivery deadline**
//! (`job_edge_deadline_ms`, counted from when the worker handed the part to the lane, so parts
//! queued behind a dead edge are already late when their turn comes). A part not taken by its
//! deadline is settled: its batch may commit, and its pushes are counted as
//! `rim_job_dropped_total{reason="edge_unreachable"}` with a warning. The lane also remembers that
//! its edge is **suspect** after a failure: the next part gets a single attempt (no retry loop),
//! and parts arriving while that probe is out are settled at once, until a request succeeds again.
//! So a dead edge holds at most one part at a time after its first deadline, whether it refuses
//! connections or swallows them; the worker's in-flight bound never fills behind it, and the
//! region's other edges keep their speed.
//!
//! Policies by failure (each counted in `rim_job_edge_errors_total{reason}`):
//! - refused connection or 503 from an edge the directory lists as **draining**: it is stopping, so
//!   the part is settled at once (`rim_job_dropped_total{reason="edge_stopping"}`);
//! - 401/403: the edge does not accept our cluster secret, a configuration error; logged as an
//!   error naming the secret, counted in `rim_job_edge_auth_failures_total`, retried until the
//!   deadline (secrets may be mid-rotation);
//! - the edge left the directory (dead or removed): dropped (`reason="edge_gone"`), its sessions
//!   are gone with it;
//! - 413: the request is halved and retried; a single push the edge still refuses, or a 400/422, is
//!   dropped (`reason="rejected"`);
//! - anything else (timeouts, other 5xx): retried with bounded backoff until the deadline.
//!
//! A batch's part is cut into requests of at most `max_request_bytes` (the edge limits its request
//! body).

use crate::directory::EdgeDirectory;
use crate::edge_client::{EdgeClient, EdgeFailure};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use prost::Message;
use rim_proto::schema::edge_push::Target as EdgeTargetKind;
use rim_proto::schema::{EdgePush, EdgePushRequest};
use rim_retry::Backoff;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

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
    /// When the part is settled if the edge has not taken it (hand-over time plus the deadline).
    pub(crate) deadline: Instant,
}

/// What every lane shares: the HTTP client, the directory, the region and the limits.
pub(crate) struct LaneContext {
    pub(crate) client: EdgeClient,
    pub(crate) directory: Arc<dyn EdgeDirectory>,
    pub(crate) region: String,
    pub(crate) backoff: Backoff,
    pub(crate) max_request_bytes: usize,
    /// How long a part may wait for its edge, from hand-over (see the module docs).
    pub(crate) deadline: Duration,
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

/// Most deliveries one lane has in flight to its edge at once (while the edge is healthy).
pub(crate) const PIPELINE_DEPTH: usize = 4;

/// What a lane knows about its edge between requests; shared by the parts in flight (each locks it
/// briefly, never across an await).
struct EdgeHealth {
    /// Backoff between retries of one request.
    backoff: Backoff,
    /// The last request failed: give the next ones one attempt each until one succeeds.
    suspect: bool,
}

/// The targets of a part, hashed: what two parts in flight at once must not share. A hash
/// collision only orders two parts that needed no order.
struct Targets(HashSet<u64>);

impl Targets {
    /// The targets of these pushes (see the module docs).
    fn of(pushes: &[EdgePush], hasher: &RandomState) -> Self {
        let mut targets = HashSet::new();
        for push in pushes {
            match &push.target {
                Some(EdgeTargetKind::Keys(keys)) => {
                    targets.extend(keys.keys.iter().map(|key| hasher.hash_one(("key", key))));
                }
                Some(EdgeTargetKind::Superseded(session)) => {
                    targets.insert(hasher.hash_one(("key", &session.key)));
                }
                Some(EdgeTargetKind::Room(_) | EdgeTargetKind::Broadcast(_)) | None => {
                    targets.extend(shared_target(push, hasher));
                }
            }
        }
        Self(targets)
    }

    /// Whether the two share a target (then the later waits for the earlier).
    fn overlap(&self, other: &Targets) -> bool {
        let (small, large) = if self.0.len() <= other.0.len() {
            (self, other)
        } else {
            (other, self)
        };
        small.0.iter().any(|target| large.0.contains(target))
    }
}

/// The target of a room push or a broadcast (what [`Targets`] holds for it), `None` for key pushes.
fn shared_target(push: &EdgePush, hasher: &RandomState) -> Option<u64> {
    match &push.target {
        Some(EdgeTargetKind::Room(room)) => Some(hasher.hash_one(("room", room))),
        Some(EdgeTargetKind::Broadcast(_)) | None => Some(hasher.hash_one("everyone")),
        Some(EdgeTargetKind::Keys(_) | EdgeTargetKind::Superseded(_)) => None,
    }
}

/// Reorders a delivery's pushes so that pushes to the same room (and unpaced broadcasts of the
/// same operation) are next to each other, which is what the edge merges into one frame (its
/// `fanout::merges_with`). A push joins the latest run of its room unless a later run touches one
/// of its targets (a broadcast run never moves past a paced broadcast, for instance) or a key push
/// came after that run: key pushes stay where they are and nothing passes them, so key and room
/// pushes reach the edge in the order they came. Each target's pushes keep their order. Pushes
/// with fewer than two room pushes or broadcasts among them come back as they were, without
/// hashing anything.
fn adjacent_by_room(pushes: Vec<EdgePush>, hasher: &RandomState) -> Vec<EdgePush> {
    let shared = pushes
        .iter()
        .filter(|push| {
            !matches!(
                &push.target,
                Some(EdgeTargetKind::Keys(_) | EdgeTargetKind::Superseded(_))
            )
        })
        .count();
    if shared < 2 {
        return pushes;
    }
    // The run each push goes to, runs numbered in the order they start.
    let mut run_of = Vec::with_capacity(pushes.len());
    // The latest run of each merge key, and the latest run touching each target.
    let mut latest_run: HashMap<u64, usize> = HashMap::new();
    let mut last_touch: HashMap<u64, usize> = HashMap::new();
    let mut runs = 0;
    // The first run a push may still join: the one after the latest key push.
    let mut floor = 0;
    for push in &pushes {
        let Some(target) = shared_target(push, hasher) else {
            run_of.push(runs);
            runs += 1;
            floor = runs;
            continue;
        };
        let merge_key = match &push.target {
            Some(EdgeTargetKind::Room(_)) => Some(target),
            Some(EdgeTargetKind::Broadcast(broadcast)) if broadcast.speed <= 0 => {
                Some(hasher.hash_one(("broadcast", push.operation)))
            }
            _ => None,
        };
        let joined = merge_key
            .and_then(|key| latest_run.get(&key).copied())
            .filter(|&run| run >= floor && last_touch.get(&target).is_none_or(|&at| at <= run));
        let run = joined.unwrap_or_else(|| {
            runs += 1;
            if let Some(key) = merge_key {
                latest_run.insert(key, runs - 1);
            }
            runs - 1
        });
        let touched = last_touch.entry(target).or_insert(run);
        *touched = (*touched).max(run);
        run_of.push(run);
    }
    if runs == pushes.len() {
        return pushes;
    }
    let mut ordered: Vec<(usize, EdgePush)> = run_of.into_iter().zip(pushes).collect();
    // Stable: a run's pushes keep their order.
    ordered.sort_by_key(|(run, _)| *run);
    ordered.into_iter().map(|(_, push)| push).collect()
}

/// Parts merged into one delivery: their pushes in arrival order (then with each room's next to
/// each other, see [`adjacent_by_room`]), sent in the same requests.
struct Delivery {
    pushes: Vec<EdgePush>,
    tickets: Vec<Arc<BatchTicket>>,
    /// The earliest deadline of the parts.
    deadline: Instant,
}

impl Delivery {
    fn new(part: LanePart) -> Self {
        Self {
            pushes: part.pushes,
            tickets: vec![part.ticket],
            deadline: part.deadline,
        }
    }

    /// Appends a later part (its pushes go after the ones already here).
    fn absorb(&mut self, part: LanePart) {
        self.pushes.extend(part.pushes);
        self.tickets.push(part.ticket);
        self.deadline = self.deadline.min(part.deadline);
    }
}

/// Whether the waiting part at the front may go now: it shares no target with a delivery in flight.
fn may_start(waiting: &VecDeque<(LanePart, Targets)>, held: &[(u64, Targets)]) -> bool {
    waiting
        .front()
        .is_some_and(|(_, targets)| !held.iter().any(|(_, busy)| busy.overlap(targets)))
}

/// The lane task: keeps up to [`PIPELINE_DEPTH`] deliveries in flight, starting parts in arrival
/// order once they share no target with a delivery in flight, each delivery with the parts waiting
/// behind it that may go too (see the module docs); a delivery is sent request by request, then
/// its parts are marked done.
///
/// While the edge is suspect, one part at a time is its probe: parts waiting or arriving meanwhile
/// are settled at once as unreachable instead of queueing behind it, so an edge that swallows
/// requests without answering holds at most one part (and one in-flight batch) at a time.
async fn run(
    context: Arc<LaneContext>,
    node_id: String,
    push_url: Arc<Mutex<String>>,
    outstanding: Arc<AtomicUsize>,
    mut queue: mpsc::Receiver<LanePart>,
) {
    let lane = LaneTask {
        context: &context,
        node_id: &node_id,
        push_url: &push_url,
        outstanding: &outstanding,
    };
    let health = Mutex::new(EdgeHealth {
        backoff: context.backoff.clone(),
        suspect: false,
    });
    let hasher = RandomState::new();
    let mut waiting: VecDeque<(LanePart, Targets)> = VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    // The targets of the parts in flight, by the id their future answers.
    let mut held: Vec<(u64, Targets)> = Vec::new();
    let mut next_id = 0_u64;
    let mut open = true;
    let (mut settled_parts, mut settled_pushes) = (0_u64, 0_u64);
    loop {
        let suspect = health.lock().suspect;
        if suspect && !held.is_empty() {
            // A probe is out: what waits behind it is settled now.
            for (part, _) in waiting.drain(..) {
                settled_parts += 1;
                settled_pushes += part.pushes.len() as u64;
                lane.settle_unreachable(part);
            }
        }
        let depth = if suspect { 1 } else { PIPELINE_DEPTH };
        while held.len() < depth && may_start(&waiting, &held) {
            let Some((part, targets)) = waiting.pop_front() else {
                break;
            };
            let (mut delivery, mut busy) = (Delivery::new(part), targets);
            // What stays waiting, and the targets it holds: a later part may not pass them.
            let mut staying = VecDeque::with_capacity(waiting.len());
            let mut behind = Targets(HashSet::new());
            for (part, targets) in waiting.drain(..) {
                let free = !behind.overlap(&targets)
                    && !held.iter().any(|(_, busy)| busy.overlap(&targets));
                if free {
                    delivery.absorb(part);
                    busy.0.extend(targets.0);
                } else {
                    behind.0.extend(targets.0.iter().copied());
                    staying.push_back((part, targets));
                }
            }
            waiting = staying;
            delivery.pushes = adjacent_by_room(delivery.pushes, &hasher);
            let id = next_id;
            next_id += 1;
            held.push((id, busy));
            let (health, lane) = (&health, &lane);
            in_flight.push(async move {
                lane.deliver(health, delivery).await;
                id
            });
        }
        if held.is_empty() && settled_parts > 0 {
            tracing::warn!(
                node_id,
                parts = settled_parts,
                pushes = settled_pushes,
                "edge is suspect: dropped the pushes that arrived while its probe request was out"
            );
            (settled_parts, settled_pushes) = (0, 0);
        }
        if !open && held.is_empty() && waiting.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            Some(id) = in_flight.next(), if !held.is_empty() => {
                held.retain(|(busy, _)| *busy != id);
            }
            next = queue.recv(), if open => match next {
                Some(part) => {
                    let targets = Targets::of(&part.pushes, &hasher);
                    waiting.push_back((part, targets));
                }
                None => open = false,
            },
        }
    }
}

/// A lane task's fixed parts.
struct LaneTask<'a> {
    context: &'a LaneContext,
    node_id: &'a str,
    push_url: &'a Mutex<String>,
    outstanding: &'a AtomicUsize,
}

impl LaneTask<'_> {
    /// Sends a delivery request by request (halving what is too large), then marks its parts
    /// done.
    async fn deliver(&self, health: &Mutex<EdgeHealth>, delivery: Delivery) {
        let mut requests = split_by_size(delivery.pushes, self.context.max_request_bytes);
        let attempt = LaneRequest {
            context: self.context,
            node_id: self.node_id,
            push_url: self.push_url,
            deadline: delivery.deadline,
        };
        while let Some(pushes) = requests.pop_front() {
            let request = EdgePushRequest { pushes };
            match attempt.deliver(health, &request).await {
                Outcome::Finished => {}
                Outcome::TooLarge => {
                    let mut first = request.pushes;
                    let second = first.split_off(first.len() / 2);
                    requests.push_front(second);
                    requests.push_front(first);
                }
            }
        }
        for ticket in &delivery.tickets {
            self.done(ticket);
        }
    }

    /// Settles a part without sending it: its edge is suspect and already being probed.
    fn settle_unreachable(&self, part: LanePart) {
        metrics::counter!("rim_job_dropped_total", "region" => self.context.region.clone(), "reason" => "edge_unreachable")
            .increment(part.pushes.len() as u64);
        self.done(&part.ticket);
    }

    fn done(&self, ticket: &BatchTicket) {
        ticket.part_done();
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
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

/// One request of a part on its way to the lane's edge.
struct LaneRequest<'a> {
    context: &'a LaneContext,
    node_id: &'a str,
    push_url: &'a Mutex<String>,
    deadline: Instant,
}

impl LaneRequest<'_> {
    /// Sends the request until the edge takes it, or settles it by policy (see the module docs).
    /// Returns [`Outcome::TooLarge`] for a request of several pushes the edge finds too big.
    async fn deliver(&self, health: &Mutex<EdgeHealth>, request: &EdgePushRequest) -> Outcome {
        let (node_id, region) = (self.node_id, &self.context.region);
        let pushes = request.pushes.len() as u64;
        // An edge that failed before gets one attempt, not a retry loop, until it succeeds again.
        let single_attempt = health.lock().suspect;
        loop {
            if Instant::now() >= self.deadline {
                return self.unreachable(pushes, "its delivery deadline passed");
            }
            let url = self.push_url.lock().clone();
            let attempt =
                tokio::time::timeout_at(self.deadline, self.context.client.push(&url, request));
            let failure = match attempt.await {
                Ok(Ok(response)) => {
                    let mut health = health.lock();
                    health.backoff.reset();
                    if health.suspect {
                        tracing::info!(node_id, "edge takes pushes again");
                        health.suspect = false;
                    }
                    self.taken(pushes, &response.delivered);
                    return Outcome::Finished;
                }
                Ok(Err(failure)) => failure,
                Err(_) => EdgeFailure::Retry(format!("{url}: no answer before the deadline")),
            };
            metrics::counter!("rim_job_edge_errors_total", "region" => region.clone(), "reason" => failure.reason())
                .increment(1);
            match &failure {
                EdgeFailure::TooLarge(_) if pushes > 1 => return Outcome::TooLarge,
                EdgeFailure::TooLarge(reason) | EdgeFailure::Rejected(reason) => {
                    tracing::error!(node_id, %reason, pushes, "edge refused a push request for good; dropping it");
                    self.dropped(pushes, "rejected");
                    return Outcome::Finished;
                }
                EdgeFailure::Unauthorized(reason) => {
                    tracing::error!(
                        node_id,
                        %reason,
                        "edge refuses this job's credential (a token of another region or role, keys the edge has yet to fetch, or an edge that wants the cluster secret); retrying"
                    );
                    metrics::counter!("rim_job_edge_auth_failures_total", "region" => region.clone())
                        .increment(1);
                }
                EdgeFailure::Retry(_) | EdgeFailure::Refused(_) | EdgeFailure::Unavailable(_) => {}
            }
            match edge_state(self.context, node_id).await {
                EdgeState::Gone => {
                    tracing::info!(node_id, pushes, %failure, "edge is gone; dropping its pushes");
                    self.dropped(pushes, "edge_gone");
                    return Outcome::Finished;
                }
                EdgeState::Draining
                    if matches!(
                        failure,
                        EdgeFailure::Refused(_) | EdgeFailure::Unavailable(_)
                    ) =>
                {
                    tracing::info!(node_id, pushes, %failure, "edge is stopping; dropping its pushes");
                    self.dropped(pushes, "edge_stopping");
                    return Outcome::Finished;
                }
                EdgeState::Draining | EdgeState::Live => {}
            }
            if single_attempt {
                return self.unreachable(pushes, "a single attempt (the edge is suspect) failed");
            }
            let pause = {
                let mut health = health.lock();
                health.suspect = true;
                health.backoff.next_pause()
            };
            tracing::warn!(node_id, %failure, ?pause, "edge did not take pushes; retrying until the deadline");
            tokio::time::sleep_until(self.deadline.min(Instant::now() + pause)).await;
        }
    }

    /// Counts what the edge took.
    fn taken(&self, pushes: u64, delivered: &[u32]) {
        let region = &self.context.region;
        metrics::counter!("rim_job_delivered_total", "region" => region.clone()).increment(pushes);
        let reached: u64 = delivered.iter().map(|&count| u64::from(count)).sum();
        metrics::counter!("rim_job_connections_reached_total", "region" => region.clone())
            .increment(reached);
        if delivered.len() as u64 != pushes {
            tracing::warn!(
                node_id = self.node_id,
                answered = delivered.len(),
                pushes,
                "edge answer count mismatch"
            );
        }
    }

    /// Settles a part its edge did not take in time.
    fn unreachable(&self, pushes: u64, why: &str) -> Outcome {
        tracing::warn!(
            node_id = self.node_id,
            pushes,
            deadline_ms = self.context.deadline.as_millis() as u64,
            "edge did not take pushes before {why}; dropping them so the region moves on"
        );
        self.dropped(pushes, "edge_unreachable");
        Outcome::Finished
    }

    /// Counts pushes dropped by policy.
    fn dropped(&self, pushes: u64, reason: &'static str) {
        metrics::counter!("rim_job_dropped_total", "region" => self.context.region.clone(), "reason" => reason)
            .increment(pushes);
    }
}

/// What the directory says about a lane's edge.
enum EdgeState {
    Live,
    Draining,
    Gone,
}

/// The edge's state in the directory. If the directory cannot answer, the edge is assumed live:
/// dropping pushes as gone needs certainty (the deadline still bounds the wait).
async fn edge_state(context: &LaneContext, node_id: &str) -> EdgeState {
    match context.directory.live_edges(&context.region).await {
        Ok(edges) => match edges.iter().find(|edge| edge.node_id == node_id) {
            Some(edge) if edge.draining => EdgeState::Draining,
            Some(_) => EdgeState::Live,
            None => EdgeState::Gone,
        },
        Err(err) => {
            tracing::warn!(%err, "cannot check whether an edge is still live");
            EdgeState::Live
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
            position: None,
            receipt_target: String::new(),
            target: None,
        }
    }

    fn targeted(target: EdgeTargetKind) -> EdgePush {
        EdgePush {
            target: Some(target),
            ..push(1)
        }
    }

    fn keys(keys: &[&str]) -> EdgeTargetKind {
        EdgeTargetKind::Keys(rim_proto::schema::EdgeKeys {
            keys: keys.iter().map(|key| (*key).to_owned()).collect(),
        })
    }

    #[test]
    fn parts_sharing_a_key_room_or_broadcast_are_ordered_others_may_overlap_in_time() {
        let hasher = RandomState::new();
        let targets = |pushes: &[EdgePush]| Targets::of(pushes, &hasher);
        let ab = targets(&[targeted(keys(&["a", "b"]))]);
        let b = targets(&[targeted(keys(&["c"])), targeted(keys(&["b"]))]);
        let c = targets(&[targeted(keys(&["c"]))]);
        let room = targets(&[targeted(EdgeTargetKind::Room("live://1".into()))]);
        let other_room = targets(&[targeted(EdgeTargetKind::Room("live://2".into()))]);
        let everyone = targets(&[targeted(EdgeTargetKind::Broadcast(Default::default()))]);
        let superseded_a = targets(&[targeted(EdgeTargetKind::Superseded(
            rim_proto::schema::EdgeSuperseded {
                key: "a".into(),
                connection_id: 1,
            },
        ))]);
        assert!(ab.overlap(&b) && b.overlap(&ab));
        assert!(!ab.overlap(&c));
        assert!(
            ab.overlap(&superseded_a),
            "closing a key waits for its pushes"
        );
        assert!(!room.overlap(&other_room) && room.overlap(&room));
        assert!(everyone.overlap(&everyone));
        assert!(!room.overlap(&ab));
    }

    fn labelled(id: &str, target: EdgeTargetKind) -> EdgePush {
        EdgePush {
            message_id: id.into(),
            ..targeted(target)
        }
    }

    fn room(id: &str, room: &str) -> EdgePush {
        labelled(id, EdgeTargetKind::Room(room.into()))
    }

    fn broadcast(id: &str, speed: i32) -> EdgePush {
        labelled(
            id,
            EdgeTargetKind::Broadcast(rim_proto::schema::BroadcastTarget { speed }),
        )
    }

    fn ids(pushes: &[EdgePush]) -> Vec<&str> {
        pushes.iter().map(|push| push.message_id.as_str()).collect()
    }

    #[test]
    fn pushes_to_one_room_are_put_next_to_each_other_in_each_targets_order() {
        let hasher = RandomState::new();
        let pushes = vec![
            room("a1", "live://a"),
            room("b1", "live://b"),
            room("a2", "live://a"),
            room("c1", "live://c"),
            room("b2", "live://b"),
            labelled("k1", keys(&["x"])),
            room("a3", "live://a"),
            room("b3", "live://b"),
            room("a4", "live://a"),
        ];
        // Nothing passes the key push.
        assert_eq!(
            ids(&adjacent_by_room(pushes, &hasher)),
            ["a1", "a2", "b1", "b2", "c1", "k1", "a3", "a4", "b3"]
        );
    }

    #[test]
    fn broadcasts_merge_by_operation_but_never_pass_a_paced_one() {
        let hasher = RandomState::new();
        let mut other_op = broadcast("o1", 0);
        other_op.operation = 1001;
        let pushes = vec![
            broadcast("e1", 0),
            room("a1", "live://a"),
            other_op,
            broadcast("e2", 0),
            broadcast("p1", 100),
            room("a2", "live://a"),
            broadcast("e3", 0),
        ];
        // e2 may not pass o1 (both go to everyone); e3 may not pass the paced p1.
        assert_eq!(
            ids(&adjacent_by_room(pushes, &hasher)),
            ["e1", "a1", "a2", "o1", "e2", "p1", "e3"]
        );
    }

    #[test]
    fn key_pushes_and_single_room_pushes_keep_their_order() {
        let hasher = RandomState::new();
        let pushes = vec![
            labelled("k1", keys(&["x"])),
            room("a1", "live://a"),
            labelled("k2", keys(&["y"])),
            room("b1", "live://b"),
            labelled("k3", keys(&["x"])),
        ];
        assert_eq!(
            ids(&adjacent_by_room(pushes, &hasher)),
            ["k1", "a1", "k2", "b1", "k3"]
        );
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
