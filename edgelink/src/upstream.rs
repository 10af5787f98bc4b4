//! The upstream forwarder: client messages to the control plane in batches, verdicts back as
//! replies.
//!
//! [`UpstreamForwarder`] is the edge's [`UpstreamSink`] when `edge_upstream` is on. A client's op 4
//! or business op is queued (a short lock, never a wait) and the connection goes on at once: the
//! reply comes later through the message's [`rim_edge::hooks::ReplyTo`], queued on the
//! connection's outbox like a push, so pushes keep flowing to a client whose message waits for a
//! slow backend. Background tasks post the queued messages to `POST /edge/v1/upstream`
//! (`UpstreamBatch` with the verified mid, key, room and platform, never the client's claims) and
//! hand each verdict's reply body to its connection.
//!
//! - **Lanes.** Messages go to one of [`LANES`] lanes by user id (by key for anonymous
//!   connections). A lane has one request in flight at a time and its verdicts come back in order,
//!   so one user's messages reach the backend in the order sent and one connection's replies leave
//!   in that order too; other lanes proceed meanwhile, so one slow batch does not hold up the edge.
//! - **Batching** as the session reporter does it: what is queued goes out at once, up to
//!   `edge_upstream_batch` messages, but a lane starts a request that is not full at most every
//!   `edge_upstream_flush_ms`, so a burst shares requests.
//! - **Bounds.** A connection may have `edge_upstream_max_pending` messages unanswered (queued or
//!   in flight); one more is answered at once with a refusal (reason [`TOO_MANY_PENDING`]) and the
//!   connection stays open (that refusal can overtake the replies still pending: clients match
//!   replies by seq). The lanes hold at most `edge_upstream_queue` messages in all; beyond it,
//!   refused as [`UNAVAILABLE`].
//! - **Failures.** A request that fails (control unreachable, 5xx, timeout after
//!   `edge_upstream_timeout_ms`, a verdict count that does not match) answers each of its messages
//!   with a refusal [`UNAVAILABLE`]: the client learns it, nothing is retried behind its back (a
//!   retry could deliver a message twice). Refusals are rim's JSON `{"error","reason"}`, as control
//!   builds them for the backend's own refusals.
//!
//! Counted in `rim_edgelink_upstream_messages_total{outcome}` (`forwarded`, `too_many_pending`,
//! `queue_full`, `unavailable`) and `rim_edgelink_upstream_replies_dropped_total` (the connection
//! had closed).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rim_edge::hooks::{ReplyTo, UpstreamMessage, UpstreamReply, UpstreamSink};
use rim_proto::schema::{UpstreamBatch, UpstreamRequest, UpstreamVerdict};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::client::ControlClient;
use crate::config::LinkConfig;
use crate::credential::NodeCredentials;

/// Lanes per edge: requests in flight at once.
pub const LANES: usize = 4;

/// Reason of a message refused because its connection has too many unanswered.
pub const TOO_MANY_PENDING: &str = "too_many_pending";

/// Reason of a message no backend took (control's name for it too).
pub const UNAVAILABLE: &str = "upstream_unavailable";

/// The edge's upstream sink that forwards to the control plane; see the module docs.
pub struct UpstreamForwarder {
    lanes: Vec<Arc<Lane>>,
    hasher: std::collections::hash_map::RandomState,
    max_pending: usize,
    lane_capacity: usize,
    _stop: DropGuard,
}

/// One lane: its queue, and per connection how many of its messages are unanswered.
#[derive(Default)]
struct Lane {
    state: Mutex<LaneState>,
    wake: Notify,
}

#[derive(Default)]
struct LaneState {
    queue: VecDeque<Waiting>,
    /// Connection id → messages queued or in flight.
    unanswered: HashMap<u64, usize>,
}

/// A message waiting for its verdict.
struct Waiting {
    request: UpstreamRequest,
    reply_to: ReplyTo,
    connection: u64,
}

/// What a lane's task needs to send.
struct Sender {
    client: ControlClient,
    node_id: String,
    batch: usize,
    flush: Duration,
    timeout: Duration,
}

impl UpstreamForwarder {
    /// Starts the lanes of node `node_id`, posting to the control plane of `config` with the token
    /// of `credentials`; they stop when the forwarder is dropped. Fails on an unusable control URL
    /// or CA file.
    pub fn start(
        config: &LinkConfig,
        node_id: &str,
        credentials: &NodeCredentials,
    ) -> anyhow::Result<Arc<Self>> {
        let timeout = Duration::from_millis(config.edge_upstream_timeout_ms.max(1));
        let client = ControlClient::new(
            &config.edge_control_url,
            credentials.token(),
            timeout,
            config.edge_control_ca_file.as_deref(),
        )?;
        let sender = Arc::new(Sender {
            client,
            node_id: node_id.to_owned(),
            batch: config.edge_upstream_batch.max(1),
            flush: Duration::from_millis(config.edge_upstream_flush_ms),
            timeout,
        });
        let stop = CancellationToken::new();
        let lanes: Vec<Arc<Lane>> = (0..LANES).map(|_| Arc::new(Lane::default())).collect();
        for lane in &lanes {
            tokio::spawn(run(lane.clone(), sender.clone(), stop.clone()));
        }
        tracing::info!(node = %node_id, control = %config.edge_control_url,
            "client upstream messages are forwarded to the control plane");
        Ok(Arc::new(Self {
            lanes,
            hasher: Default::default(),
            max_pending: config.edge_upstream_max_pending.max(1),
            lane_capacity: config.edge_upstream_queue.div_ceil(LANES).max(1),
            _stop: stop.drop_guard(),
        }))
    }

    /// The lane of a sender: by user id, or by key for anonymous connections.
    fn lane(&self, mid: i64, key: &str) -> &Arc<Lane> {
        let hash = match mid {
            0 => self.hasher.hash_one(key),
            mid => self.hasher.hash_one(mid),
        };
        // The remainder is below LANES, so it fits a usize.
        &self.lanes[(hash % LANES as u64) as usize]
    }
}

#[async_trait]
impl UpstreamSink for UpstreamForwarder {
    async fn deliver(&self, message: UpstreamMessage) -> UpstreamReply {
        let channel = &message.channel;
        let lane = self.lane(channel.mid(), channel.key());
        let refused = {
            let mut state = lane.state.lock();
            let unanswered = state.unanswered.get(&channel.id()).copied().unwrap_or(0);
            if unanswered >= self.max_pending {
                Some((
                    TOO_MANY_PENDING,
                    format!(
                        "{unanswered} messages of this connection wait for their verdicts; \
                         wait for a reply before sending more"
                    ),
                ))
            } else if state.queue.len() >= self.lane_capacity {
                Some((
                    "queue_full",
                    "upstream queue of this edge is full".to_owned(),
                ))
            } else {
                *state.unanswered.entry(channel.id()).or_default() += 1;
                state.queue.push_back(Waiting {
                    request: UpstreamRequest {
                        mid: channel.mid(),
                        key: channel.key().to_string(),
                        room: channel.room().as_deref().unwrap_or("").to_owned(),
                        platform: channel.platform().to_owned(),
                        operation: message.packet.op,
                        body: message.packet.body.clone(),
                        at_unix_ms: now_ms(),
                    },
                    reply_to: message.reply_to(),
                    connection: channel.id(),
                });
                None
            }
        };
        let Some((outcome, error)) = refused else {
            counted("forwarded", 1);
            lane.wake.notify_one();
            return UpstreamReply::Later;
        };
        counted(outcome, 1);
        let reason = match outcome {
            TOO_MANY_PENDING => TOO_MANY_PENDING,
            _ => UNAVAILABLE,
        };
        UpstreamReply::Now(refusal(reason, &error))
    }
}

/// A lane's task: sends what is queued, one request at a time, until stopped.
async fn run(lane: Arc<Lane>, sender: Arc<Sender>, stop: CancellationToken) {
    // When the next request that is not full may start.
    let mut next_partial = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = lane.wake.notified() => {}
        }
        loop {
            let queued = lane.state.lock().queue.len();
            if queued == 0 {
                break;
            }
            if queued < sender.batch {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(next_partial) => {}
                }
            }
            next_partial = tokio::time::Instant::now() + sender.flush;
            let taken: Vec<Waiting> = {
                let mut state = lane.state.lock();
                let count = state.queue.len().min(sender.batch);
                state.queue.drain(..count).collect()
            };
            let verdicts = tokio::select! {
                () = stop.cancelled() => return,
                verdicts = sender.send(&taken) => verdicts,
            };
            answer(&lane, taken, verdicts);
        }
    }
}

impl Sender {
    /// Posts one batch; the reply body of each message, in order.
    async fn send(&self, taken: &[Waiting]) -> Vec<Bytes> {
        let batch = UpstreamBatch {
            node_id: self.node_id.clone(),
            messages: taken.iter().map(|w| w.request.clone()).collect(),
        };
        let failed = match self.client.upstream(&batch, self.timeout).await {
            Ok(answer) if answer.verdicts.len() == taken.len() => {
                return answer.verdicts.into_iter().map(reply_body).collect();
            }
            Ok(answer) => format!(
                "{} verdicts for {} messages",
                answer.verdicts.len(),
                taken.len()
            ),
            Err(error) => error.to_string(),
        };
        tracing::warn!(error = %failed, messages = taken.len(),
            "upstream batch not answered; its messages are refused as unavailable");
        counted("unavailable", taken.len() as u64);
        let body = refusal(UNAVAILABLE, "upstream unavailable");
        vec![body; taken.len()]
    }
}

/// The body a client is answered for `verdict`: the backend's reply, or control's refusal.
fn reply_body(verdict: UpstreamVerdict) -> Bytes {
    if !verdict.accepted && verdict.reply.is_empty() {
        return refusal("upstream_refused", &verdict.error);
    }
    verdict.reply
}

/// Forgets the messages as unanswered, then queues each reply on its connection (in that order,
/// so a client that sends again as soon as it has a reply finds room).
fn answer(lane: &Lane, taken: Vec<Waiting>, replies: Vec<Bytes>) {
    {
        let mut state = lane.state.lock();
        for waiting in &taken {
            if let Some(count) = state.unanswered.get_mut(&waiting.connection) {
                *count -= 1;
                if *count == 0 {
                    state.unanswered.remove(&waiting.connection);
                }
            }
        }
    }
    let mut dropped = 0u64;
    for (waiting, body) in taken.into_iter().zip(replies) {
        if !waiting.reply_to.send(body) {
            dropped += 1;
        }
    }
    if dropped > 0 {
        metrics::counter!("rim_edgelink_upstream_replies_dropped_total").increment(dropped);
    }
}

/// rim's JSON refusal body: `{"error": error, "reason": reason}`.
fn refusal(reason: &str, error: &str) -> Bytes {
    let body = serde_json::json!({ "error": error, "reason": reason });
    Bytes::from(body.to_string().into_bytes())
}

/// Counts `count` messages with `outcome`.
fn counted(outcome: &'static str, count: u64) {
    metrics::counter!("rim_edgelink_upstream_messages_total", "outcome" => outcome)
        .increment(count);
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
