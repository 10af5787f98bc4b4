//! [`MemoryInbox`]: the inbox of `rim dev`, in this process's memory, by the rules of
//! [`crate::inbox`].
//!
//! One mutex over everything: every call is a short critical section over a few maps, which for one
//! process is simpler than sharding and fast enough. Nothing survives a restart, which `rim dev`
//! accepts (its sessions do not either).
//!
//! Numbering has a second, asynchronous lock, the *gate*: every call that moves a head (appends,
//! resets, cleanup) takes it. [`Inbox::append_published`] holds it across the publish step, the
//! twin of the PostgreSQL transaction holding the heads' row locks: it computes the positions the
//! batch will get ([`State::preview`]; nobody else can move a head meanwhile), publishes, and only
//! then applies the batch under the state mutex, so readers never see a batch that is not kept. A
//! failed publish advances the heads without keeping anything (the numbers are burned).

use crate::error::StoreError;
use crate::inbox::{
    AckEntry, AckReport, BatchPositions, CleanupReport, DurableBatch, Inbox, InboxSettings,
    PublishStep, PublishedAppendError, ReadOutcome, Receipt, ReceiptState, ReceiptTarget,
    RoomEntry, StoredPush, UserEntry, check_acks, check_durable_batch, check_limit, check_mid,
    check_position, check_receipts, check_room, check_room_entries, check_user_entries,
    latest_acks, next_epoch, room_verdict, user_verdict,
};
use crate::model::UnixMillis;
use async_trait::async_trait;
use parking_lot::Mutex;
use rim_proto::durable::{MessageId, Position};
use std::collections::{BTreeMap, HashMap, HashSet};

/// An [`Inbox`] kept in memory.
pub struct MemoryInbox {
    settings: InboxSettings,
    state: Mutex<State>,
    /// Held by every call that moves a head; across the publish step of a published append.
    gate: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for MemoryInbox {
    /// Settings only: the state holds payloads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryInbox")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One stream (a user's or a room's): its numbering and what is kept of it, by number.
#[derive(Default)]
pub(super) struct Log {
    epoch: u64,
    head: u64,
    trimmed: u64,
    last_at: UnixMillis,
    pub(super) pushes: BTreeMap<u64, StoredPush>,
}

impl Log {
    fn head(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.head,
        }
    }

    /// Numbers one push and keeps it unless retention already removed its number (a batch larger
    /// than the per-user count); returns its position.
    fn append(&mut self, entry: StoredPush) -> Position {
        self.head += 1;
        let position = Position {
            epoch: self.epoch,
            seq: self.head,
        };
        if self.head > self.trimmed {
            self.pushes
                .insert(self.head, StoredPush { position, ..entry });
        }
        position
    }

    /// Removes everything numbered at or below `through`; returns what went.
    fn trim_through(&mut self, through: u64) -> Vec<StoredPush> {
        self.trimmed = self.trimmed.max(through);
        let kept = self.pushes.split_off(&(through + 1));
        std::mem::replace(&mut self.pushes, kept)
            .into_values()
            .collect()
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) users: HashMap<i64, Log>,
    rooms: HashMap<String, Log>,
    /// (push, target, state) → first time reached.
    pub(super) receipts: BTreeMap<(MessageId, ReceiptTarget, ReceiptState), UnixMillis>,
    /// Every new receipt in recording order, once a receipt feed exists
    /// ([`super::MemoryReceiptFeed`]).
    pub(super) feed: Option<super::receipt_feed::FeedLog>,
    /// (user, key) → acked position.
    acks: HashMap<(i64, String), Position>,
}

impl State {
    pub(super) fn receipt(
        &mut self,
        message_id: MessageId,
        target: ReceiptTarget,
        state: ReceiptState,
        at: UnixMillis,
    ) -> bool {
        let key = (message_id, target, state);
        if self.receipts.contains_key(&key) {
            return false;
        }
        if let Some(feed) = &mut self.feed {
            feed.record(&key);
        }
        self.receipts.insert(key, at);
        true
    }

    /// `expired` receipts for pushes removed before any ack.
    fn expire(&mut self, mid: i64, removed: Vec<StoredPush>, now: UnixMillis) {
        for push in removed {
            let target = ReceiptTarget::of_entry(mid, push.key.as_deref());
            let acked = (push.message_id, target.clone(), ReceiptState::Acked);
            if !self.receipts.contains_key(&acked) {
                self.receipt(push.message_id, target, ReceiptState::Expired, now);
            }
        }
    }
}

impl State {
    /// Appends checked user entries (retention by count first, as of the batch's end, as the
    /// database does in one statement); returns their positions.
    fn append_users(
        &mut self,
        entries: &[UserEntry],
        now: UnixMillis,
        max_per_user: u64,
    ) -> Vec<Position> {
        let mut counts: HashMap<i64, u64> = HashMap::new();
        for entry in entries {
            *counts.entry(entry.mid).or_default() += 1;
        }
        for (mid, count) in counts {
            let log = self.users.entry(mid).or_default();
            let removed = log.trim_through((log.head + count).saturating_sub(max_per_user));
            self.expire(mid, removed, now);
        }
        let mut positions = Vec::with_capacity(entries.len());
        for entry in entries {
            let log = self.users.entry(entry.mid).or_default();
            let position = log.append(stored(
                entry.message_id,
                entry.key.clone(),
                entry.operation,
                entry.body.clone(),
                now,
            ));
            let state_reached = if position.seq > log.trimmed {
                ReceiptState::Stored
            } else {
                ReceiptState::Expired
            };
            let target = ReceiptTarget::of_entry(entry.mid, entry.key.as_deref());
            self.receipt(entry.message_id, target, state_reached, now);
            positions.push(position);
        }
        positions
    }

    /// Appends checked room entries; returns their positions.
    fn append_rooms(&mut self, entries: &[RoomEntry], now: UnixMillis) -> Vec<Position> {
        entries
            .iter()
            .map(|entry| {
                let log = self.rooms.entry(entry.room.clone()).or_insert_with(|| Log {
                    epoch: next_epoch(0, now),
                    ..Log::default()
                });
                log.last_at = now;
                log.append(stored(
                    entry.message_id,
                    None,
                    entry.operation,
                    entry.body.clone(),
                    now,
                ))
            })
            .collect()
    }

    /// Records checked receipts; answers how many were new.
    fn record(&mut self, receipts: &[Receipt]) -> u64 {
        receipts
            .iter()
            .filter(|r| self.receipt(r.message_id, r.target.clone(), r.state, r.at))
            .count() as u64
    }

    /// The positions `batch` would get if appended now (the caller holds the gate, so they are the
    /// ones it gets).
    fn preview(&self, batch: &DurableBatch, now: UnixMillis) -> BatchPositions {
        let mut users: HashMap<i64, Position> = HashMap::new();
        let mut rooms: HashMap<&str, Position> = HashMap::new();
        let next = |current: &mut Position| {
            current.seq += 1;
            *current
        };
        BatchPositions {
            users: batch
                .users
                .iter()
                .map(|entry| {
                    let current = users.entry(entry.mid).or_insert_with(|| {
                        self.users
                            .get(&entry.mid)
                            .map_or(Position::ORIGIN, Log::head)
                    });
                    next(current)
                })
                .collect(),
            rooms: batch
                .rooms
                .iter()
                .map(|entry| {
                    let current = rooms.entry(entry.room.as_str()).or_insert_with(|| {
                        self.rooms.get(&entry.room).map_or(
                            Position {
                                epoch: next_epoch(0, now),
                                seq: 0,
                            },
                            Log::head,
                        )
                    });
                    next(current)
                })
                .collect(),
        }
    }

    /// Removes what an applied batch stored (pushes by position, every receipt of its pushes),
    /// keeping the heads advanced.
    fn burn(&mut self, batch: &DurableBatch, positions: &BatchPositions) {
        for (entry, position) in batch.users.iter().zip(&positions.users) {
            if let Some(log) = self.users.get_mut(&entry.mid) {
                log.pushes.remove(&position.seq);
            }
        }
        for (entry, position) in batch.rooms.iter().zip(&positions.rooms) {
            if let Some(log) = self.rooms.get_mut(&entry.room) {
                log.pushes.remove(&position.seq);
            }
        }
        let ids: HashSet<MessageId> = batch
            .users
            .iter()
            .map(|e| e.message_id)
            .chain(batch.rooms.iter().map(|e| e.message_id))
            .chain(batch.receipts.iter().map(|r| r.message_id))
            .collect();
        self.receipts.retain(|(id, _, _), _| !ids.contains(id));
    }
}

impl MemoryInbox {
    /// The state, for the receipt feed of the same store ([`super::MemoryReceiptFeed`]).
    pub(super) fn lock_state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// An empty inbox; [`StoreError::Invalid`] for settings that keep nothing.
    pub fn new(settings: InboxSettings) -> Result<Self, StoreError> {
        settings.check()?;
        Ok(Self {
            settings,
            state: Mutex::new(State::default()),
            gate: tokio::sync::Mutex::new(()),
        })
    }
}

fn stored(
    message_id: MessageId,
    key: Option<String>,
    operation: i32,
    body: Vec<u8>,
    now: UnixMillis,
) -> StoredPush {
    StoredPush {
        position: Position::ORIGIN,
        message_id,
        key,
        operation,
        body,
        stored_at: now,
    }
}

#[async_trait]
impl Inbox for MemoryInbox {
    async fn append_user(
        &self,
        entries: &[UserEntry],
        now: UnixMillis,
    ) -> Result<Vec<Position>, StoreError> {
        check_user_entries(entries)?;
        let _gate = self.gate.lock().await;
        Ok(self
            .state
            .lock()
            .append_users(entries, now, self.settings.max_per_user))
    }

    async fn read_user(
        &self,
        mid: i64,
        key: Option<&str>,
        after: Position,
        limit: usize,
    ) -> Result<ReadOutcome, StoreError> {
        check_mid(mid)?;
        let after = check_position(after)?;
        let limit = check_limit(limit)?;
        let state = self.state.lock();
        let (head, trimmed) = state
            .users
            .get(&mid)
            .map_or((Position::ORIGIN, 0), |log| (log.head(), log.trimmed));
        if let Some(refused) = user_verdict(after, head, trimmed) {
            return Ok(refused);
        }
        let pushes = state.users.get(&mid).map_or_else(Vec::new, |log| {
            log.pushes
                .range(after.seq + 1..)
                .map(|(_, push)| push)
                .filter(|push| push.key.is_none() || push.key.as_deref() == key)
                .take(limit)
                .cloned()
                .collect()
        });
        Ok(ReadOutcome::Page { pushes, head })
    }

    async fn user_head(&self, mid: i64) -> Result<Position, StoreError> {
        check_mid(mid)?;
        Ok(self
            .state
            .lock()
            .users
            .get(&mid)
            .map_or(Position::ORIGIN, Log::head))
    }

    async fn reset_user(&self, mid: i64, now: UnixMillis) -> Result<Position, StoreError> {
        check_mid(mid)?;
        let _gate = self.gate.lock().await;
        let mut state = self.state.lock();
        let old = state.users.remove(&mid).map_or(0, |log| log.epoch);
        state.acks.retain(|(acked_mid, _), _| *acked_mid != mid);
        let log = Log {
            epoch: next_epoch(old, now),
            ..Log::default()
        };
        let head = log.head();
        state.users.insert(mid, log);
        Ok(head)
    }

    async fn record_acks(
        &self,
        acks: &[AckEntry],
        now: UnixMillis,
    ) -> Result<AckReport, StoreError> {
        check_acks(acks)?;
        let mut state = self.state.lock();
        let mut report = AckReport::default();
        for ((mid, key), position) in latest_acks(acks) {
            let Some(head) = state.users.get(&mid).map(Log::head) else {
                report.stale += 1;
                continue;
            };
            if position.epoch != head.epoch || position.seq > head.seq {
                report.stale += 1;
                continue;
            }
            report.applied += 1;
            let device = (mid, key.to_owned());
            let from = state
                .acks
                .get(&device)
                .filter(|previous| previous.epoch == head.epoch)
                .map_or(0, |previous| previous.seq);
            if position.seq <= from {
                continue;
            }
            state.acks.insert(device, position);
            let covered: Vec<(MessageId, ReceiptTarget)> = state.users[&mid]
                .pushes
                .range(from + 1..=position.seq)
                .map(|(_, push)| push)
                .filter(|push| push.key.is_none() || push.key.as_deref() == Some(key))
                .map(|push| {
                    (
                        push.message_id,
                        ReceiptTarget::of_entry(mid, push.key.as_deref()),
                    )
                })
                .collect();
            for (message_id, target) in covered {
                if state.receipt(message_id, target, ReceiptState::Acked, now) {
                    report.acked_pushes += 1;
                }
            }
        }
        Ok(report)
    }

    async fn record_receipts(&self, receipts: &[Receipt]) -> Result<u64, StoreError> {
        check_receipts(receipts)?;
        Ok(self.state.lock().record(receipts))
    }

    async fn receipts(&self, message_id: MessageId) -> Result<Vec<Receipt>, StoreError> {
        let state = self.state.lock();
        Ok(state
            .receipts
            .iter()
            .filter(|((id, _, _), _)| *id == message_id)
            .map(|((id, target, receipt_state), at)| Receipt {
                message_id: *id,
                target: target.clone(),
                state: *receipt_state,
                at: *at,
            })
            .collect())
    }

    async fn append_room(
        &self,
        entries: &[RoomEntry],
        now: UnixMillis,
    ) -> Result<Vec<Position>, StoreError> {
        check_room_entries(entries)?;
        let _gate = self.gate.lock().await;
        Ok(self.state.lock().append_rooms(entries, now))
    }

    async fn read_room(
        &self,
        room: &str,
        after: Position,
        limit: usize,
        now: UnixMillis,
    ) -> Result<ReadOutcome, StoreError> {
        check_room(room)?;
        let after = check_position(after)?;
        let limit = check_limit(limit)?;
        let since = now - self.settings.room_window_ms;
        let state = self.state.lock();
        let Some(log) = state.rooms.get(room) else {
            return Ok(
                room_verdict(after, Position::ORIGIN, None).unwrap_or(ReadOutcome::Page {
                    pushes: Vec::new(),
                    head: Position::ORIGIN,
                }),
            );
        };
        let pushes: Vec<StoredPush> = log
            .pushes
            .range(after.seq + 1..)
            .map(|(_, push)| push)
            .filter(|push| push.stored_at >= since)
            .take(limit)
            .cloned()
            .collect();
        let first = pushes.first().map(|push| push.position.seq);
        if let Some(refused) = room_verdict(after, log.head(), first) {
            return Ok(refused);
        }
        Ok(ReadOutcome::Page {
            pushes,
            head: log.head(),
        })
    }

    async fn room_head(&self, room: &str) -> Result<Position, StoreError> {
        check_room(room)?;
        Ok(self
            .state
            .lock()
            .rooms
            .get(room)
            .map_or(Position::ORIGIN, Log::head))
    }

    async fn append_published(
        &self,
        batch: &DurableBatch,
        now: UnixMillis,
        publish: PublishStep<'_>,
    ) -> Result<BatchPositions, PublishedAppendError> {
        check_durable_batch(batch)?;
        let _gate = self.gate.lock().await;
        let preview = self.state.lock().preview(batch, now);
        let published = publish(preview.clone()).await;
        let mut state = self.state.lock();
        let positions = BatchPositions {
            users: state.append_users(&batch.users, now, self.settings.max_per_user),
            rooms: state.append_rooms(&batch.rooms, now),
        };
        match published {
            Ok(()) => {
                state.record(&batch.receipts);
                Ok(positions)
            }
            Err(error) => {
                state.burn(batch, &positions);
                Err(PublishedAppendError::Publish(error))
            }
        }
    }

    async fn cleanup(&self, now: UnixMillis, batch: u64) -> Result<CleanupReport, StoreError> {
        let _gate = self.gate.lock().await;
        let mut state = self.state.lock();
        let mut report = CleanupReport::default();
        let user_cutoff = now - self.settings.max_age_ms;
        let mids: Vec<i64> = state.users.keys().copied().collect();
        for mid in mids {
            let budget = batch - report.messages;
            let Some(log) = state.users.get_mut(&mid) else {
                continue;
            };
            // Oldest first: numbers follow storage order within one user.
            let through = log
                .pushes
                .values()
                .take_while(|push| push.stored_at < user_cutoff)
                .take(usize::try_from(budget).unwrap_or(usize::MAX))
                .last()
                .map(|push| push.position.seq);
            if let Some(through) = through {
                let removed = log.trim_through(through);
                report.messages += removed.len() as u64;
                state.expire(mid, removed, now);
            }
            if report.messages >= batch {
                break;
            }
        }
        let room_cutoff = now - self.settings.room_window_ms;
        let idle_cutoff = now - self.settings.room_idle_ms;
        let mut idle = Vec::new();
        for (room, log) in &mut state.rooms {
            while report.room_entries < batch {
                let Some(entry) = log
                    .pushes
                    .first_entry()
                    .filter(|e| e.get().stored_at < room_cutoff)
                else {
                    break;
                };
                entry.remove();
                report.room_entries += 1;
            }
            if log.pushes.is_empty() && log.last_at < idle_cutoff && (idle.len() as u64) < batch {
                idle.push(room.clone());
            }
        }
        for room in idle {
            state.rooms.remove(&room);
            report.room_heads += 1;
        }
        let receipt_cutoff = now - self.settings.receipt_max_age_ms;
        let old: Vec<_> = state
            .receipts
            .iter()
            .filter(|(_, at)| **at < receipt_cutoff)
            .take(usize::try_from(batch).unwrap_or(usize::MAX))
            .map(|(key, _)| key.clone())
            .collect();
        for key in old {
            state.receipts.remove(&key);
            report.receipts += 1;
        }
        Ok(report)
    }
}
