//! Presence: which users are online now, asked for (`GET /v1/presence`) or told (batched
//! online/offline webhooks).
//!
//! A user is **online** while it has at least one live session (a connection reported by an edge
//! that is not dead), in any region: the session store is the one shared view of every region's
//! connections, so one read answers across regions.
//!
//! ## `GET /v1/presence?mids=1,2,3`
//! Read scope; 1..=`control_max_targets` user ids (repeated or comma-separated; not 0, goim's
//! anonymous user, which is every anonymous client at once), else 400. The answer lists, in the
//! order asked (duplicates once), the online users with their sessions (key, node, region,
//! platform, room, connected at; at most `control_max_sessions_per_user` per user, the newest) and
//! the offline ones:
//!
//! ```json
//! {"online": [{"mid": 1, "sessions": [{"key": "phone-1", "node": "east-1", "region": "east",
//!   "platform": "ios", "room": "live://1000", "connected_at_unix_ms": 1764590400000}]}],
//!  "offline": [2, 3]}
//! ```
//!
//! Sessions of nodes the node directory no longer lists as live are left out (a node that went
//! silent holds no one, even before the sweeper removed its sessions).
//!
//! ## Webhooks
//! With `control_presence_webhook_url`, control watches the session batches edges send
//! (`/edge/v1/sessions`, [`PresenceWatch`]): it reads which of the batch's users are online before
//! and after applying it, and each change is an event: **online** when a user gets its first live
//! session, **offline** when its last one ends. Events `{mid, state: "online"|"offline",
//! at_unix_ms, region}` (the time of the user's last event in the batch, the reporting edge's
//! region) go through a bounded queue (`control_presence_webhook_queue`; when full, events are
//! dropped and counted in `rim_control_presence_events_dropped_total`) to one sender task that
//! posts them as a JSON array every `control_presence_webhook_batch_ms` (at most
//! [`MAX_WEBHOOK_BATCH`] per post), each post bounded by `control_presence_webhook_timeout_ms` and
//! retried with exponential backoff ([`RETRIES`] times) before the batch is dropped and counted.
//!
//! Sessions can also end without a disconnect event: the sweeper declares a silent node dead or
//! removes an expired session, or an edge registers after a restart (its previous life's sessions
//! end). The store names the users of those sessions ([`rim_store::EndedUsers`]), and
//! [`report_ended`] sends **offline** for each of them left without a live session (at the time of
//! the sweep or registration, in the region of the node the session was on).
//!
//! What the webhook does not see: an edge that stops gracefully or a node an admin declares dead
//! end their sessions without naming their users; and two edges reporting the same user's first
//! connections at the same instant may both report it online (the events are hints to keep a
//! cache fresh; `/v1/presence` is the truth).

use crate::error::ApiError;
use crate::input::Params;
use crate::observe::timed_store;
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use rim_proto::schema::SessionEvent;
use rim_proto::schema::session_event::Kind;
use rim_retry::Backoff;
use rim_store::{EndedUsers, Scope, Session};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;

/// Most events posted in one webhook call.
pub const MAX_WEBHOOK_BATCH: usize = 1_000;

/// How many times a failed webhook post is retried before its batch is dropped.
pub const RETRIES: u32 = 5;

/// The first retry's pause ceiling; each later one doubles (with jitter, [`Backoff`]), up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The longest delay between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The presence route of the business API.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/presence", get(presence))
}

/// One session as the presence answer shows it.
#[derive(Debug, Serialize)]
struct SessionView {
    key: String,
    node: String,
    region: String,
    platform: String,
    room: String,
    connected_at_unix_ms: i64,
}

/// An online user and its sessions.
#[derive(Debug, Serialize)]
struct Online {
    mid: i64,
    sessions: Vec<SessionView>,
}

/// The answer of `GET /v1/presence`.
#[derive(Debug, Serialize)]
struct Presence {
    online: Vec<Online>,
    offline: Vec<i64>,
}

/// The user ids asked about: 1..=`max` (after dropping duplicates), none 0, in the order given.
fn asked_mids(params: &Params, max: usize) -> Result<Vec<i64>, ApiError> {
    let mut seen = HashSet::new();
    let mids: Vec<i64> = params
        .parsed_list::<i64>("mids")?
        .into_iter()
        .filter(|mid| seen.insert(*mid))
        .collect();
    if mids.is_empty() || mids.len() > max {
        return Err(ApiError::BadRequest(format!(
            "`mids` must name 1..={max} users, got {}",
            mids.len()
        )));
    }
    if mids.contains(&0) {
        return Err(ApiError::BadRequest(
            "user 0 is goim's anonymous user: it names every anonymous client, not one user".into(),
        ));
    }
    Ok(mids)
}

/// `GET /v1/presence?mids=`.
async fn presence(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Json<Presence>, ApiError> {
    state.require(&headers, Scope::Read).await?;
    let mids = asked_mids(&params, state.config.control_max_targets)?;
    let sessions = timed_store(
        "presence_sessions",
        state.store.newest_sessions_by_mids(
            &mids,
            state.config.control_max_sessions_per_user,
            crate::now_ms(),
        ),
    )
    .await?;
    let nodes: Vec<&str> = sessions.iter().map(|s| s.node_id.as_str()).collect();
    let snapshot = state.directory.snapshot_knowing(&nodes).await?;
    let mut by_mid: BTreeMap<i64, Vec<Session>> = BTreeMap::new();
    for session in sessions {
        by_mid.entry(session.mid).or_default().push(session);
    }
    let mut answer = Presence {
        online: Vec::new(),
        offline: Vec::new(),
    };
    for mid in mids {
        let mut live: Vec<SessionView> = by_mid
            .remove(&mid)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|session| {
                let region = snapshot.live_region(&session.node_id)?.to_owned();
                Some(SessionView {
                    region,
                    key: session.key,
                    node: session.node_id,
                    platform: session.platform,
                    room: session.room,
                    connected_at_unix_ms: session.connected_at,
                })
            })
            .collect();
        if live.is_empty() {
            answer.offline.push(mid);
        } else {
            live.sort_by(|a, b| a.key.cmp(&b.key));
            answer.online.push(Online {
                mid,
                sessions: live,
            });
        }
    }
    metrics::counter!("rim_control_presence_queries_total").increment(1);
    Ok(Json(answer))
}

/// Whether a user came or went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    /// Its first live session began.
    Online,
    /// Its last live session ended.
    Offline,
}

/// One webhook event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PresenceEvent {
    /// The user.
    pub mid: i64,
    /// What happened.
    pub state: PresenceState,
    /// When the edge saw the session event that caused it, milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// The region of the edge that reported it.
    pub region: String,
}

/// How the presence webhook is configured.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Where events are posted.
    pub url: String,
    /// How long events gather before a post.
    pub batch_interval: Duration,
    /// How long one post may take.
    pub timeout: Duration,
    /// Most events waiting to be posted; more are dropped.
    pub queue: usize,
}

/// The sending side of the presence webhook: a bounded queue to its sender task.
pub struct PresenceWebhook {
    queue: mpsc::Sender<PresenceEvent>,
}

impl PresenceWebhook {
    /// Starts the sender task (it ends once this is dropped and what is queued was posted).
    /// Fails on a malformed URL. Needs a Tokio runtime.
    pub fn start(settings: WebhookSettings) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&settings.url)
            .map_err(|e| anyhow::anyhow!("presence webhook URL {:?}: {e}", settings.url))?;
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()?;
        let (queue, events) = mpsc::channel(settings.queue.max(1));
        tokio::spawn(send_batches(events, client, url, settings.batch_interval));
        Ok(Self { queue })
    }

    /// Queues an event (`true`), or drops and counts it when the queue is full (`false`).
    pub fn offer(&self, event: PresenceEvent) -> bool {
        let queued = self.queue.try_send(event).is_ok();
        if !queued {
            metrics::counter!("rim_control_presence_events_dropped_total", "reason" => "queue_full")
                .increment(1);
        }
        queued
    }
}

/// The sender task: gathers events for one interval after the first arrives, posts them (with
/// retries), until the queue's senders are gone.
async fn send_batches(
    mut events: mpsc::Receiver<PresenceEvent>,
    client: reqwest::Client,
    url: reqwest::Url,
    interval: Duration,
) {
    while let Some(first) = events.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + interval;
        while batch.len() < MAX_WEBHOOK_BATCH {
            match tokio::time::timeout_at(until, events.recv()).await {
                Ok(Some(event)) => batch.push(event),
                Ok(None) | Err(_) => break,
            }
        }
        post_with_retries(&client, &url, &batch).await;
    }
}

/// Posts one batch, retrying failures with exponential backoff; drops (and counts) it after
/// [`RETRIES`] retries.
async fn post_with_retries(client: &reqwest::Client, url: &reqwest::Url, batch: &[PresenceEvent]) {
    let body = match serde_json::to_vec(batch) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "presence events could not be encoded");
            return;
        }
    };
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    for attempt in 0..=RETRIES {
        let sent = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let failure = match sent {
            Ok(response) if response.status().is_success() => {
                metrics::counter!("rim_control_presence_events_posted_total")
                    .increment(batch.len() as u64);
                return;
            }
            Ok(response) => format!("answered {}", response.status()),
            Err(error) => error.to_string(),
        };
        metrics::counter!("rim_control_presence_webhook_failures_total").increment(1);
        tracing::warn!(attempt, events = batch.len(), %failure, "presence webhook failed");
        if attempt < RETRIES {
            tokio::time::sleep(backoff.next_pause()).await;
        }
    }
    metrics::counter!("rim_control_presence_events_dropped_total", "reason" => "webhook_failed")
        .increment(batch.len() as u64);
}

/// Most users whose presence one store read checks after sessions ended without a disconnect.
const ENDED_CHECK_CHUNK: usize = 1_000;

/// Sends **offline** for each of `ended` (users whose sessions the store removed without a
/// disconnect event: an expiry sweep, an edge's restart) that has no live session left. Nothing
/// without the webhook; a failed read leaves those users unreported (counted in
/// `rim_control_presence_watch_failures_total`).
pub async fn report_ended(state: &AppState, ended: &EndedUsers) {
    let Some(webhook) = &state.presence else {
        return;
    };
    let at_unix_ms = crate::now_ms();
    let mids: Vec<i64> = ended.keys().copied().collect();
    for chunk in mids.chunks(ENDED_CHECK_CHUNK) {
        let online = match online_of(state, chunk).await {
            Ok(online) => online,
            Err(error) => {
                metrics::counter!("rim_control_presence_watch_failures_total").increment(1);
                tracing::warn!(%error, users = chunk.len(),
                    "presence after sessions ended unknown; those users go unreported");
                continue;
            }
        };
        for (mid, region) in chunk.iter().filter_map(|mid| Some((*mid, ended.get(mid)?))) {
            if !online.contains(&mid) {
                webhook.offer(PresenceEvent {
                    mid,
                    state: PresenceState::Offline,
                    at_unix_ms,
                    region: region.clone(),
                });
            }
        }
    }
}

/// Watches one session batch for users coming and going (only when the webhook is configured):
/// [`PresenceWatch::before`] reads who of the batch's users is online, [`PresenceWatch::after`]
/// reads it again once the batch is applied and queues the differences.
pub struct PresenceWatch {
    /// The batch's users, in order of first appearance, with the time of their last event.
    users: Vec<(i64, i64)>,
    /// Those online before the batch.
    online: BTreeSet<i64>,
}

/// Which of `mids` have a live session now (at most one session read per user).
async fn online_of(state: &AppState, mids: &[i64]) -> Result<BTreeSet<i64>, ApiError> {
    let sessions = timed_store(
        "presence_watch",
        state
            .store
            .newest_sessions_by_mids(mids, 1, crate::now_ms()),
    )
    .await?;
    Ok(sessions.into_iter().map(|session| session.mid).collect())
}

impl PresenceWatch {
    /// Reads who of the batch's users (of connects and disconnects; not user 0) is online; `None`
    /// when no webhook is configured, the batch names no user, or the read failed (then this
    /// batch's changes go unreported, counted in `rim_control_presence_watch_failures_total`).
    pub async fn before(state: &AppState, events: &[SessionEvent]) -> Option<PresenceWatch> {
        state.presence.as_ref()?;
        let mut users: Vec<(i64, i64)> = Vec::new();
        let mut index: BTreeMap<i64, usize> = BTreeMap::new();
        for event in events.iter().filter(|event| {
            event.mid != 0
                && matches!(
                    Kind::try_from(event.kind),
                    Ok(Kind::Connect | Kind::Disconnect)
                )
        }) {
            match index.get(&event.mid) {
                Some(&at) => users[at].1 = event.at_unix_ms,
                None => {
                    index.insert(event.mid, users.len());
                    users.push((event.mid, event.at_unix_ms));
                }
            }
        }
        if users.is_empty() {
            return None;
        }
        let mids: Vec<i64> = users.iter().map(|(mid, _)| *mid).collect();
        match online_of(state, &mids).await {
            Ok(online) => Some(PresenceWatch { users, online }),
            Err(error) => {
                metrics::counter!("rim_control_presence_watch_failures_total").increment(1);
                tracing::warn!(%error, "presence before a session batch unknown; its changes go unreported");
                None
            }
        }
    }

    /// Reads who is online after the batch and queues an event for each user whose state changed,
    /// in the region of `node` (the reporting edge; by the node directory, else the region its
    /// token was enrolled in, `enrolled`).
    pub async fn after(self, state: &AppState, node: &str, enrolled: &str) {
        let Some(webhook) = &state.presence else {
            return;
        };
        let region = match state.directory.snapshot_knowing(&[node]).await {
            Ok(snapshot) => snapshot.live_region(node).unwrap_or(enrolled).to_owned(),
            Err(_) => enrolled.to_owned(),
        };
        let mids: Vec<i64> = self.users.iter().map(|(mid, _)| *mid).collect();
        let now_online = match online_of(state, &mids).await {
            Ok(online) => online,
            Err(error) => {
                metrics::counter!("rim_control_presence_watch_failures_total").increment(1);
                tracing::warn!(%error, "presence after a session batch unknown; its changes go unreported");
                return;
            }
        };
        for (mid, at_unix_ms) in self.users {
            let state = match (self.online.contains(&mid), now_online.contains(&mid)) {
                (false, true) => PresenceState::Online,
                (true, false) => PresenceState::Offline,
                _ => continue,
            };
            webhook.offer(PresenceEvent {
                mid,
                state,
                at_unix_ms,
                region: region.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_users_are_bounded_deduplicated_and_not_anonymous() {
        let mids = asked_mids(&Params::parse("mids=3,1&mids=3,2"), 3).unwrap();
        assert_eq!(mids, vec![3, 1, 2]);
        for bad in ["", "mids=", "mids=1,2,3,4", "mids=0", "mids=x", "mids=1.5"] {
            assert!(asked_mids(&Params::parse(bad), 3).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_serialise_as_the_webhook_contract_says() {
        let event = PresenceEvent {
            mid: 7,
            state: PresenceState::Offline,
            at_unix_ms: 5,
            region: "east".into(),
        };
        assert_eq!(
            serde_json::to_value([event]).unwrap(),
            serde_json::json!([{"mid": 7, "state": "offline", "at_unix_ms": 5, "region": "east"}])
        );
    }
}
