//! The worker loop: read a batch, route it to the edges' lanes, commit batches once their edges
//! took them.
//!
//! The loop never waits to fill a batch (the bus returns what is queued), and keeps reading while
//! earlier batches are still with slow edges, up to `job_max_inflight_batches`; then it waits. A
//! batch is committed when every lane finished its part; batches may finish out of order, and the
//! bus never commits past an unfinished one (see [`rim_bus::BusConsumer::commit`]), so a crash at
//! any point redelivers what the edges may not have (at-least-once; edges drop duplicates by id).
//!
//! When the bus or the directory fails, the loop pauses with bounded exponential backoff and
//! retries; a batch it could not route is kept and routed again, never dropped. On shutdown it
//! stops reading, gives in-flight batches one edge timeout to finish and commits what finished.
//!
//! Commits never hold up the loop: the bus records the commit points and sends them in the
//! background, in order (see [`rim_bus::BusConsumer::commit`]); a graceful stop waits for them.

use crate::directory::{DirectoryError, EdgeDirectory, EdgeTarget};
use crate::lane::{BatchTicket, Lane, LaneContext, LanePart};
use crate::route::{route, unknown_edges};
use rim_bus::{BusConsumer, IncomingPush};
use rim_retry::Backoff;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A batch handed to the lanes and not yet committed.
struct Inflight {
    ticket: Arc<BatchTicket>,
    pushes: Vec<IncomingPush>,
}

/// One region's worker state.
pub(crate) struct Worker<C> {
    pub(crate) consumer: C,
    pub(crate) region: String,
    pub(crate) batch_size: usize,
    pub(crate) max_inflight: usize,
    pub(crate) grace: Duration,
    pub(crate) directory: Arc<dyn EdgeDirectory>,
    pub(crate) lane_context: Arc<LaneContext>,
    /// Pauses after bus or directory failures.
    pub(crate) backoff: Backoff,
}

/// Logs when the in-flight bound stops the worker reading the bus, and for how long it did: the lane
/// deadlines bound such a stall, so a long one is worth an operator's look.
#[derive(Default)]
struct Stall {
    since: Option<Instant>,
}

impl Stall {
    fn note(&mut self, region: &str, full: bool, bound: usize) {
        match (full, self.since) {
            (true, None) => {
                tracing::warn!(
                    region,
                    bound,
                    "in-flight bound reached: not reading the bus until a batch completes"
                );
                metrics::counter!("rim_job_inflight_full_total", "region" => region.to_owned())
                    .increment(1);
                self.since = Some(Instant::now());
            }
            (false, Some(since)) => {
                tracing::info!(
                    region,
                    stalled_ms = since.elapsed().as_millis() as u64,
                    "reading the bus again"
                );
                self.since = None;
            }
            _ => {}
        }
    }
}

/// Records, in histogram `name`, how long ago control accepted each push (its
/// `accepted_at_unix_ms`; control and job share a clock within NTP's error). Read lag against
/// commit lag tells the bus's share of a push's time from the edges'.
fn record_lag(name: &'static str, region: &str, pushes: &[IncomingPush]) {
    if pushes.is_empty() {
        return;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64);
    let lag = metrics::histogram!(name, "region" => region.to_owned());
    for push in pushes {
        lag.record((now_ms - push.message.accepted_at_unix_ms).max(0) as f64 / 1000.0);
    }
}

/// What the loop keeps between iterations.
struct LoopState {
    lanes: HashMap<String, Lane>,
    tasks: JoinSet<()>,
    inflight: VecDeque<Inflight>,
    finished: Arc<Notify>,
}

impl<C: BusConsumer> Worker<C> {
    /// Runs until `shutdown` completes.
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut state = LoopState {
            lanes: HashMap::new(),
            tasks: JoinSet::new(),
            inflight: VecDeque::new(),
            finished: Arc::new(Notify::new()),
        };
        let mut shutdown = std::pin::pin!(shutdown);
        // A batch read from the bus but not yet routed (the directory was unavailable).
        let mut held: Option<Vec<IncomingPush>> = None;
        let mut paused_until: Option<Instant> = None;
        let mut stall = Stall::default();
        tracing::info!(region = %self.region, "job worker started");
        loop {
            self.commit_finished(&mut state).await;
            let full = state.inflight.len() >= self.max_inflight;
            stall.note(&self.region, full, self.max_inflight);
            let can_read = held.is_none() && paused_until.is_none() && !full;
            let finished = state.finished.clone();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = finished.notified() => {}
                () = tokio::time::sleep_until(paused_until.unwrap_or_else(Instant::now)), if paused_until.is_some() => {
                    paused_until = None;
                }
                read = self.consumer.next_batch(self.batch_size), if can_read => match read {
                    Ok(batch) => {
                        metrics::counter!("rim_job_consumed_total", "region" => self.region.clone())
                            .increment(batch.len() as u64);
                        record_lag("rim_job_consume_lag_seconds", &self.region, &batch);
                        held = Some(batch);
                    }
                    Err(err) => {
                        metrics::counter!("rim_job_bus_errors_total", "region" => self.region.clone()).increment(1);
                        let pause = self.backoff.next_pause();
                        tracing::warn!(region = %self.region, %err, ?pause, "reading the bus failed");
                        paused_until = Some(Instant::now() + pause);
                    }
                },
            }
            if paused_until.is_none()
                && let Some(batch) = held.take()
            {
                match self.dispatch(&mut state, batch).await {
                    Ok(()) => self.backoff.reset(),
                    Err((batch, err)) => {
                        let pause = self.backoff.next_pause();
                        tracing::warn!(region = %self.region, %err, ?pause, "cannot route a batch; will retry");
                        held = Some(batch);
                        paused_until = Some(Instant::now() + pause);
                    }
                }
            }
        }
        self.drain(&mut state).await;
        state.tasks.abort_all();
        tracing::info!(region = %self.region, uncommitted_batches = state.inflight.len(), "job worker stopped");
    }

    /// Routes a batch and hands each edge its part; gives the batch back if the directory failed.
    async fn dispatch(
        &mut self,
        state: &mut LoopState,
        mut batch: Vec<IncomingPush>,
    ) -> Result<(), (Vec<IncomingPush>, DirectoryError)> {
        let edges = match self.edges_for(&batch).await {
            Ok(edges) => edges,
            Err(err) => return Err((batch, err)),
        };
        let routing = route(&mut batch, &edges);
        for (reason, count) in [
            ("edge_gone", routing.to_gone_edges),
            ("no_target", routing.without_target),
        ] {
            if count > 0 {
                metrics::counter!("rim_job_dropped_total", "region" => self.region.clone(), "reason" => reason)
                    .increment(count);
            }
        }
        // Idle lanes of edges that left end; busy ones stay until their parts are done, so a lane
        // started later for the same edge cannot overtake them.
        state.lanes.retain(|node_id, lane| {
            !lane.is_idle() || edges.iter().any(|edge| &edge.node_id == node_id)
        });
        while let Some(ended) = state.tasks.try_join_next() {
            if let Err(err) = ended {
                tracing::error!(%err, "an edge lane task failed");
            }
        }
        let ticket = BatchTicket::new(routing.requests.len(), state.finished.clone());
        let deadline = Instant::now() + self.lane_context.deadline;
        for (edge, request) in routing.requests {
            self.hand_to_lane(
                state,
                &edge,
                LanePart {
                    pushes: request.pushes,
                    ticket: ticket.clone(),
                    deadline,
                },
            )
            .await;
        }
        state.inflight.push_back(Inflight {
            ticket,
            pushes: batch,
        });
        metrics::gauge!("rim_job_inflight_batches", "region" => self.region.clone())
            .set(state.inflight.len() as f64);
        Ok(())
    }

    /// The region's live edges; re-read if a key push names an edge the cached list lacks.
    async fn edges_for(&self, batch: &[IncomingPush]) -> Result<Arc<[EdgeTarget]>, DirectoryError> {
        let edges = self.directory.live_edges(&self.region).await?;
        let unknown = unknown_edges(batch, &edges);
        if !unknown.is_empty() {
            return self.directory.refreshed_edges(&self.region, &unknown).await;
        }
        Ok(edges)
    }

    /// Queues a part on the edge's lane, starting the lane if needed (or again, if its task died).
    async fn hand_to_lane(&self, state: &mut LoopState, edge: &EdgeTarget, mut part: LanePart) {
        loop {
            let lane = state.lanes.entry(edge.node_id.clone()).or_insert_with(|| {
                Lane::start(
                    &mut state.tasks,
                    self.lane_context.clone(),
                    edge.node_id.clone(),
                    edge.push_url.clone(),
                    self.max_inflight,
                )
            });
            lane.set_push_url(&edge.push_url);
            match lane.send(part).await {
                Ok(()) => return,
                Err(returned) => {
                    tracing::error!(node_id = %edge.node_id, "edge lane ended unexpectedly; restarting it");
                    state.lanes.remove(&edge.node_id);
                    part = returned;
                }
            }
        }
    }

    /// Commits every batch whose edges all finished, in one bus commit.
    async fn commit_finished(&mut self, state: &mut LoopState) {
        if !state.inflight.iter().any(|batch| batch.ticket.is_done()) {
            return;
        }
        let mut done = Vec::new();
        state.inflight.retain_mut(|batch| {
            let finished = batch.ticket.is_done();
            if finished {
                done.append(&mut batch.pushes);
            }
            !finished
        });
        metrics::gauge!("rim_job_inflight_batches", "region" => self.region.clone())
            .set(state.inflight.len() as f64);
        if let Err(err) = self.consumer.commit(&done).await {
            // The pushes stay done; the next commit of their partitions covers them.
            metrics::counter!("rim_job_commit_errors_total", "region" => self.region.clone())
                .increment(1);
            tracing::warn!(region = %self.region, %err, "commit failed");
            return;
        }
        record_lag("rim_job_commit_lag_seconds", &self.region, &done);
    }

    /// After shutdown: waits up to the grace period for in-flight batches, committing as they
    /// finish, then for the commits to reach the bus.
    async fn drain(&mut self, state: &mut LoopState) {
        let deadline = Instant::now() + self.grace;
        loop {
            self.commit_finished(state).await;
            if state.inflight.is_empty() {
                break;
            }
            let finished = state.finished.clone();
            if tokio::time::timeout_at(deadline, finished.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        match tokio::time::timeout_at(deadline, self.consumer.flush_commits()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(region = %self.region, %err, "last commits failed; the next worker redelivers them")
            }
            Err(_) => {
                tracing::warn!(region = %self.region, "last commits still under way at the end of the grace period")
            }
        }
    }
}
