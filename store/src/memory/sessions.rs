//! The memory store's session table: sessions by key, with the indexes the lookups need.
//!
//! Pushes to a user look sessions up by mid, and a dead node's sessions go together, so both are
//! indexed next to the primary map; every change goes through `put`/`remove` so the indexes can
//! never disagree with it. Its size is bounded only by what edges report, as the database's is.

use crate::model::{Session, UnixMillis};
use crate::session_rules::{SessionPlan, connect_wins};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Sessions by key, indexed by user and by node.
#[derive(Default)]
pub(super) struct SessionTable {
    by_key: HashMap<String, Session>,
    by_mid: HashMap<i64, HashSet<String>>,
    by_node: HashMap<String, HashSet<String>>,
}

impl SessionTable {
    /// The stored session of `key`, live or expired.
    pub fn get(&self, key: &str) -> Option<&Session> {
        self.by_key.get(key)
    }

    /// Writes a plan computed against this table (the caller held the lock since).
    pub fn apply(&mut self, plan: SessionPlan) {
        for identity in plan.removals {
            if self.get(&identity.key).is_some_and(|s| identity.matches(s)) {
                self.remove(&identity.key);
            }
        }
        for renewal in plan.renewals {
            if let Some(session) = self.by_key.get_mut(&renewal.identity.key)
                && renewal.identity.matches(session)
            {
                session.room = renewal.room;
                session.expires_at = renewal.expires_at;
            }
        }
        for session in plan.upserts {
            if self
                .get(&session.key)
                .is_none_or(|s| connect_wins(s, &session.node_id, session.connected_at))
            {
                self.put(session);
            }
        }
    }

    /// Removes every session of `node_id`; returns their users (one entry per session).
    pub fn remove_node(&mut self, node_id: &str) -> Vec<i64> {
        let keys = self.by_node.remove(node_id).unwrap_or_default();
        let mut mids = Vec::with_capacity(keys.len());
        for key in &keys {
            if let Some(session) = self.by_key.remove(key) {
                unindex(&mut self.by_mid, session.mid, key);
                mids.push(session.mid);
            }
        }
        mids
    }

    /// Removes sessions whose `expires_at` is not after `now`; returns their users and nodes
    /// (one entry per session).
    pub fn remove_expired(&mut self, now: UnixMillis) -> Vec<(i64, String)> {
        let expired: Vec<(String, i64, String)> = self
            .by_key
            .values()
            .filter(|s| s.expires_at <= now)
            .map(|s| (s.key.clone(), s.mid, s.node_id.clone()))
            .collect();
        expired
            .into_iter()
            .map(|(key, mid, node_id)| {
                self.remove(&key);
                (mid, node_id)
            })
            .collect()
    }

    /// Live sessions of these keys, by key.
    pub fn live_by_keys<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a String>,
        now: UnixMillis,
    ) -> Vec<Session> {
        let keys: BTreeSet<&String> = keys.into_iter().collect();
        keys.into_iter()
            .filter_map(|key| self.by_key.get(key))
            .filter(|s| s.expires_at > now)
            .cloned()
            .collect()
    }

    /// Live sessions of these users, at most `per_user` each (the most recently connected, ties
    /// by key), by key.
    pub fn newest_by_mids(&self, mids: &[i64], per_user: usize, now: UnixMillis) -> Vec<Session> {
        let mids: BTreeSet<&i64> = mids.iter().collect();
        let mut keys: Vec<&String> = Vec::new();
        for mid in mids {
            let Some(of_user) = self.by_mid.get(mid) else {
                continue;
            };
            let mut live: Vec<&Session> = of_user
                .iter()
                .filter_map(|key| self.by_key.get(key))
                .filter(|s| s.expires_at > now)
                .collect();
            live.sort_unstable_by(|a, b| {
                b.connected_at
                    .cmp(&a.connected_at)
                    .then_with(|| a.key.cmp(&b.key))
            });
            keys.extend(live.into_iter().take(per_user).map(|s| &s.key));
        }
        self.live_by_keys(keys, now)
    }

    fn put(&mut self, session: Session) {
        self.remove(&session.key);
        self.by_mid
            .entry(session.mid)
            .or_default()
            .insert(session.key.clone());
        self.by_node
            .entry(session.node_id.clone())
            .or_default()
            .insert(session.key.clone());
        self.by_key.insert(session.key.clone(), session);
    }

    fn remove(&mut self, key: &str) {
        if let Some(session) = self.by_key.remove(key) {
            unindex(&mut self.by_mid, session.mid, key);
            unindex(&mut self.by_node, session.node_id, key);
        }
    }
}

/// Drops `key` from an index entry, and the entry once it is empty (so the index cannot grow with
/// users or nodes that have no sessions left).
fn unindex<K: std::hash::Hash + Eq>(index: &mut HashMap<K, HashSet<String>>, at: K, key: &str) {
    if let Some(keys) = index.get_mut(&at) {
        keys.remove(key);
        if keys.is_empty() {
            index.remove(&at);
        }
    }
}
