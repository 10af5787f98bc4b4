//! Key takeovers: telling an edge to close a connection whose key another connection took.
//!
//! The store decides who holds a key (arrival order, see `rim_store`'s session rules) and reports
//! the sessions a session batch displaced. For each, control publishes a `PushMessage` with a
//! `superseded {key, node_id, connection_id}` target to the region of the old connection's node,
//! keyed `key:<key>` (ordered with that key's pushes); the region's job routes it to that node, and
//! the edge closes exactly that connection. One batch's notices share a message id and are numbered
//! like a push's records.
//!
//! Publishing runs in the background, so a slow broker never holds up the edge API (whose
//! heartbeats keep nodes alive); at most [`MAX_IN_FLIGHT`] batches' notices are pending, beyond
//! which notices are dropped. Every notice is counted in `rim_control_superseded_total{outcome}`:
//! `published`, `node_gone` (the old node is dead or unknown: nothing to close), `dropped` (too many
//! pending) or `failed` (the bus refused; logged). A notice that is not published leaves the old
//! connection open but harmless: pushes to the key go to its new holder, and the old connection's
//! renewals and disconnect are ignored by the store.

use crate::observe::timed_publish;
use crate::push::record;
use crate::state::AppState;
use rim_bus::OutgoingPush;
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{PushMessage, SupersededSession};
use rim_store::DisplacedSession;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Most session batches whose notices may be pending at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// The bound on pending notices of one control instance.
#[derive(Debug)]
pub struct Takeovers {
    pending: Arc<Semaphore>,
}

impl Default for Takeovers {
    fn default() -> Self {
        Self {
            pending: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

fn count(outcome: &'static str, notices: usize) {
    metrics::counter!("rim_control_superseded_total", "outcome" => outcome)
        .increment(notices as u64);
}

impl Takeovers {
    /// Publishes, in the background, a superseded notice for each displaced session.
    pub fn notify(&self, state: &AppState, displaced: Vec<DisplacedSession>) {
        if displaced.is_empty() {
            return;
        }
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            tracing::warn!(
                notices = displaced.len(),
                "too many takeover notices pending; the displaced connections stay open"
            );
            count("dropped", displaced.len());
            return;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            publish(&state, displaced).await;
        });
    }
}

/// Resolves the old nodes' regions and publishes the notices.
async fn publish(state: &AppState, displaced: Vec<DisplacedSession>) {
    let nodes = match state
        .directory
        .snapshot_knowing(
            &displaced
                .iter()
                .map(|d| d.node_id.as_str())
                .collect::<Vec<_>>(),
        )
        .await
    {
        Ok(nodes) => nodes,
        Err(error) => {
            tracing::warn!(%error, notices = displaced.len(), "takeover notices not sent: no node directory");
            count("failed", displaced.len());
            return;
        }
    };
    let template = PushMessage {
        message_id: uuid::Uuid::now_v7().to_string(),
        accepted_at_unix_ms: crate::now_ms(),
        ..PushMessage::default()
    };
    let mut records: Vec<OutgoingPush> = Vec::with_capacity(displaced.len());
    for old in displaced {
        let Some(region) = nodes.live_region(&old.node_id) else {
            count("node_gone", 1);
            continue;
        };
        let mut notice = record(
            &template,
            region,
            format!("key:{}", old.key),
            Target::Superseded(SupersededSession {
                key: old.key,
                node_id: old.node_id,
                connection_id: old.connection_id,
            }),
        );
        notice.message.record = u32::try_from(records.len()).unwrap_or(u32::MAX);
        records.push(notice);
    }
    if records.is_empty() {
        return;
    }
    let notices = records.len();
    match timed_publish(state.bus.publish(records)).await {
        Ok(()) => count("published", notices),
        Err(error) => {
            tracing::warn!(%error, notices, "takeover notices not published; the displaced connections stay open");
            count("failed", notices);
        }
    }
}
