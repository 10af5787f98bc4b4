//! The session rules (crate docs) as one pure function that both stores run.
//!
//! A batch of a node's events is replayed in order against the sessions stored for its keys, and the
//! net effect is returned as a [`SessionPlan`]: at most one write per key. The memory store applies the
//! plan under its lock; the PostgreSQL store writes it with three set-based statements, each guarded
//! by the identity of the row the plan was computed from, so a concurrent batch of another node can
//! never make a stale event delete or overwrite a newer session. Keeping the replay in one place is
//! what makes the two stores agree on duplicate, out-of-order and stale events, and on which
//! connections a batch displaced.

use crate::model::{DisplacedSession, Session, SessionApplyReport, UnixMillis};
use rim_proto::schema::SessionEvent;
use rim_proto::schema::session_event::Kind;
use std::collections::HashMap;

/// The stored session a write was planned against; writes apply only while the row still matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionIdentity {
    /// Connection key.
    pub key: String,
    /// Node holding the session when it was read.
    pub node_id: String,
    /// Connection id of the session when it was read.
    pub connection_id: u64,
    /// Connect time of the session when it was read.
    pub connected_at: UnixMillis,
}

impl SessionIdentity {
    fn of(session: &Session) -> Self {
        Self {
            key: session.key.clone(),
            node_id: session.node_id.clone(),
            connection_id: session.connection_id,
            connected_at: session.connected_at,
        }
    }

    /// Whether `session` is still the row this identity was taken from.
    pub fn matches(&self, session: &Session) -> bool {
        self.key == session.key
            && self.node_id == session.node_id
            && self.connection_id == session.connection_id
            && self.connected_at == session.connected_at
    }
}

/// Whether a connect of `node_id` at `at` (the edge's time) may replace `stored`: always when it
/// comes from another node (arrival order at the store decides between nodes, whose clocks
/// differ), and unless `stored` is newer when it comes from the same node (one clock).
pub(crate) fn connect_wins(stored: &Session, node_id: &str, at: UnixMillis) -> bool {
    stored.node_id != node_id || stored.connected_at <= at
}

/// A stored session that was only renewed by the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Renewal {
    /// The stored session being renewed.
    pub identity: SessionIdentity,
    /// Room after the last renewal.
    pub room: String,
    /// New expiry.
    pub expires_at: UnixMillis,
}

/// The net effect of a batch: at most one write per key.
#[derive(Debug, Default)]
pub(crate) struct SessionPlan {
    /// Sessions created or replaced by a connect of the batch, in their final state. Written as
    /// "insert, or replace a stored session that is not newer", after the removals.
    pub upserts: Vec<Session>,
    /// Stored sessions the batch only renewed.
    pub renewals: Vec<Renewal>,
    /// Stored sessions the batch removed (by their own disconnect, or replaced and then disconnected),
    /// written before the upserts.
    pub removals: Vec<SessionIdentity>,
    /// What the events did, counted as if applied one by one, with the stored sessions a connect
    /// of the batch took a key from.
    pub report: SessionApplyReport,
}

/// Per-key replay state: what was stored before the batch and what is there now.
struct Slot {
    stored: Option<Session>,
    current: Option<Session>,
    /// A connect of this batch replaced `stored`.
    replaced: bool,
}

/// The session a connect event of `node_id` creates.
pub(crate) fn session_of(node_id: &str, event: &SessionEvent, expires_at: UnixMillis) -> Session {
    Session {
        key: event.key.clone(),
        mid: event.mid,
        node_id: node_id.to_owned(),
        room: event.room.clone(),
        platform: event.platform.clone(),
        accepts: event.accepts.clone(),
        connection_id: event.connection_id,
        ip: event.ip.clone(),
        connected_at: event.at_unix_ms,
        expires_at,
    }
}

/// Replays `events` of `node_id` in order against the sessions `stored` returns for their keys and
/// returns the net writes. `stored` is asked once per distinct key.
pub(crate) fn plan_session_events<'a>(
    node_id: &str,
    events: impl IntoIterator<Item = &'a SessionEvent>,
    now: UnixMillis,
    session_ttl_ms: i64,
    mut stored: impl FnMut(&str) -> Option<Session>,
) -> SessionPlan {
    let expires_at = now.saturating_add(session_ttl_ms);
    let mut slots: Vec<Slot> = Vec::new();
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    let mut report = SessionApplyReport::default();
    for event in events {
        if event.key.is_empty() {
            report.ignored += 1;
            continue;
        }
        let index = *slot_of.entry(event.key.as_str()).or_insert_with(|| {
            let session = stored(&event.key);
            slots.push(Slot {
                current: session.clone(),
                stored: session,
                replaced: false,
            });
            slots.len() - 1
        });
        let slot = &mut slots[index];
        let owns = |session: &Session| {
            session.node_id == node_id && session.connection_id == event.connection_id
        };
        match event.kind() {
            Kind::Connect => {
                if slot
                    .current
                    .as_ref()
                    .is_some_and(|s| !connect_wins(s, node_id, event.at_unix_ms))
                {
                    report.ignored += 1;
                } else {
                    // Reported whether stored or connected earlier in this batch, so a batch
                    // reports what its events applied one by one would.
                    if let Some(old) = slot.current.as_ref().filter(|s| !owns(s)) {
                        report.displaced.push(DisplacedSession {
                            key: old.key.clone(),
                            node_id: old.node_id.clone(),
                            connection_id: old.connection_id,
                        });
                    }
                    slot.current = Some(session_of(node_id, event, expires_at));
                    slot.replaced = true;
                    report.connected += 1;
                }
            }
            Kind::Disconnect => {
                if slot.current.as_ref().is_some_and(owns) {
                    slot.current = None;
                    report.disconnected += 1;
                } else {
                    report.ignored += 1;
                }
            }
            Kind::Renew => match slot.current.as_mut() {
                Some(session) if owns(session) => {
                    session.expires_at = expires_at;
                    session.room.clone_from(&event.room);
                    report.renewed += 1;
                }
                _ => report.ignored += 1,
            },
            Kind::Unspecified => report.ignored += 1,
        }
    }
    let mut plan = SessionPlan {
        report,
        ..SessionPlan::default()
    };
    for slot in slots {
        match (slot.stored, slot.current) {
            (stored, Some(current)) if slot.replaced => {
                // The batch removed the stored session before connecting an older one: the
                // "not newer" guard of the upsert would keep the stored row, so remove it first.
                if let Some(stored) =
                    stored.filter(|s| !connect_wins(s, &current.node_id, current.connected_at))
                {
                    plan.removals.push(SessionIdentity::of(&stored));
                }
                plan.upserts.push(current);
            }
            (Some(stored), Some(current)) => {
                if stored != current {
                    plan.renewals.push(Renewal {
                        identity: SessionIdentity::of(&stored),
                        room: current.room,
                        expires_at: current.expires_at,
                    });
                }
            }
            (Some(stored), None) => plan.removals.push(SessionIdentity::of(&stored)),
            (None, _) => {}
        }
    }
    plan
}
