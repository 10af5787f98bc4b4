//! [`MemoryReceiptFeed`]: the receipt feed of `rim dev`, over the memory inbox's receipts, by the
//! rules of [`crate::receipt_feed`].
//!
//! The memory inbox numbers each new receipt in a [`FeedLog`] inside its own state (under its one
//! mutex, so the numbering is the recording order and every number is final at once). The log is
//! kept only once a feed exists, and only from the lowest cursor of its consumers on: a store
//! without a receipt webhook or fallback keeps nothing extra. Consumers (cursor and lease) live
//! here, in this process, like everything of the memory store.

use super::inbox::{MemoryInbox, State};
use crate::error::StoreError;
use crate::inbox::{ReceiptState, ReceiptTarget};
use crate::model::UnixMillis;
use crate::receipt_feed::{
    ClaimedFallback, FallbackCandidate, FallbackPush, FeedCursor, FeedEvent, ReceiptFeed,
    check_consumer, check_read_limit, unique_candidates,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use rim_proto::durable::MessageId;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The receipts recorded since the feed began, by feed id (the memory inbox appends to it).
#[derive(Debug, Default)]
pub(crate) struct FeedLog {
    last: u64,
    entries: BTreeMap<u64, (MessageId, ReceiptTarget, ReceiptState)>,
}

impl FeedLog {
    /// Numbers a newly recorded receipt.
    pub(crate) fn record(&mut self, receipt: &(MessageId, ReceiptTarget, ReceiptState)) {
        self.last += 1;
        self.entries.insert(self.last, receipt.clone());
    }
}

/// One consumer: its cursor and lease.
struct Consumer {
    cursor: u64,
    holder: String,
    until: UnixMillis,
}

/// A [`ReceiptFeed`] over a [`MemoryInbox`].
pub struct MemoryReceiptFeed {
    inbox: Arc<MemoryInbox>,
    consumers: Mutex<HashMap<String, Consumer>>,
}

impl std::fmt::Debug for MemoryReceiptFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReceiptFeed").finish_non_exhaustive()
    }
}

impl MemoryReceiptFeed {
    /// The feed of `inbox`'s receipts from now on (receipts recorded before are not in it).
    pub fn new(inbox: Arc<MemoryInbox>) -> Self {
        inbox.lock_state().feed.get_or_insert_with(FeedLog::default);
        Self {
            inbox,
            consumers: Mutex::new(HashMap::new()),
        }
    }

    /// Drops the log below every consumer's cursor (nobody reads it again).
    fn prune(&self, state: &mut State, consumers: &HashMap<String, Consumer>) {
        let lowest = consumers.values().map(|c| c.cursor).min().unwrap_or(0);
        if let Some(log) = &mut state.feed {
            log.entries = log.entries.split_off(&(lowest + 1));
        }
    }
}

fn cursor(id: u64) -> FeedCursor {
    FeedCursor { txn: 0, id }
}

#[async_trait]
impl ReceiptFeed for MemoryReceiptFeed {
    async fn lease(
        &self,
        consumer: &str,
        holder: &str,
        lease_ms: i64,
        now: UnixMillis,
    ) -> Result<Option<FeedCursor>, StoreError> {
        check_consumer(consumer)?;
        let end = self
            .inbox
            .lock_state()
            .feed
            .as_ref()
            .map_or(0, |log| log.last);
        let mut consumers = self.consumers.lock();
        let entry = consumers
            .entry(consumer.to_owned())
            .or_insert_with(|| Consumer {
                cursor: end,
                holder: String::new(),
                until: UnixMillis::MIN,
            });
        if entry.holder != holder && entry.until > now {
            return Ok(None);
        }
        entry.holder = holder.to_owned();
        entry.until = now.saturating_add(lease_ms);
        Ok(Some(cursor(entry.cursor)))
    }

    async fn advance(
        &self,
        consumer: &str,
        holder: &str,
        to: FeedCursor,
    ) -> Result<bool, StoreError> {
        check_consumer(consumer)?;
        let mut consumers = self.consumers.lock();
        let Some(entry) = consumers.get_mut(consumer).filter(|c| c.holder == holder) else {
            return Ok(false);
        };
        entry.cursor = entry.cursor.max(to.id);
        let mut state = self.inbox.lock_state();
        self.prune(&mut state, &consumers);
        Ok(true)
    }

    async fn read(
        &self,
        after: FeedCursor,
        states: &[ReceiptState],
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        let limit = check_read_limit(limit)?;
        let state = self.inbox.lock_state();
        let Some(log) = &state.feed else {
            return Ok(Vec::new());
        };
        Ok(log
            .entries
            .range(after.id.saturating_add(1)..)
            .filter(|(_, (_, _, receipt_state))| states.contains(receipt_state))
            // A receipt removed since (retention, a burned batch) is no longer reported.
            .filter_map(|(id, key)| {
                state.receipts.get(key).map(|at| FeedEvent {
                    cursor: cursor(*id),
                    message_id: key.0,
                    target: key.1.clone(),
                    state: key.2,
                    at: *at,
                })
            })
            .take(limit)
            .collect())
    }

    async fn claim_fallbacks(
        &self,
        candidates: &[FallbackCandidate],
        now: UnixMillis,
    ) -> Result<Vec<ClaimedFallback>, StoreError> {
        let candidates = unique_candidates(candidates)?;
        let mut state = self.inbox.lock_state();
        let mut claimed = Vec::new();
        for candidate in candidates {
            let acked = (
                candidate.message_id,
                candidate.target.clone(),
                ReceiptState::Acked,
            );
            if state.receipts.contains_key(&acked)
                || !state.receipt(
                    candidate.message_id,
                    candidate.target.clone(),
                    ReceiptState::Fallback,
                    now,
                )
            {
                continue;
            }
            claimed.push(ClaimedFallback {
                push: stored_push(&state, candidate),
                candidate: candidate.clone(),
            });
        }
        Ok(claimed)
    }
}

/// The candidate's push in its user's inbox, if kept. A key target does not name its user, so
/// every inbox is searched: fine for `rim dev`'s sizes.
fn stored_push(state: &State, candidate: &FallbackCandidate) -> Option<FallbackPush> {
    let matches = |push: &&crate::inbox::StoredPush| push.message_id == candidate.message_id;
    let found = match &candidate.target {
        ReceiptTarget::Mid(mid) => state.users.get(mid).and_then(|log| {
            log.pushes
                .values()
                .filter(|push| push.key.is_none())
                .find(matches)
        }),
        ReceiptTarget::Key(key) => state.users.values().find_map(|log| {
            log.pushes
                .values()
                .filter(|push| push.key.as_deref() == Some(key.as_str()))
                .find(matches)
        }),
    }?;
    Some(FallbackPush {
        position: found.position,
        operation: found.operation,
        body: found.body.clone(),
    })
}
