//! The receipt webhook: every push receipt, as batched JSON events, in order, at least once.
//!
//! Business callers can ask what became of a push (`GET /v1/pushes/{id}`); a backend that wants to
//! be told instead configures `control_receipt_webhook_url`. The events come from the store's
//! receipt feed ([`rim_store::receipt_feed`]), not from this process's memory, so they survive
//! restarts and cover receipts that any instance or edge recorded. One instance at a time posts
//! them: whichever holds the feed consumer's lease (the sweeper lease's rule, kept in the store),
//! renewed every round, so another takes over within a few intervals when it stops.
//!
//! Contract with the receiver:
//! - `POST <url>`, `Content-Type: application/json`, a JSON array of at most
//!   `control_receipt_webhook_batch` events in feed order:
//!   `{"id": 17, "message_id": "0192f1c4-...", "target": "mid:42", "state": "acked",
//!   "at_unix_ms": 1764590400000}`. `target` is `mid:<user>` or `key:<key>`; `state` one of
//!   `accepted`, `stored`, `written`, `acked`, `offline`, `expired`, `fallback`.
//! - Any 2xx acknowledges the whole batch; the feed's cursor moves past it only then. Anything
//!   else (another status, a timeout, no answer) sends the same events again after a backoff. So
//!   delivery is at least once: a batch answered too late, or posted by an instance that lost its
//!   lease meanwhile, arrives again; `id` is unique per event, deduplicate by it.
//! - A receiver configured for the first time gets the receipts recorded from then on.

use crate::now_ms;
use rim_retry::Backoff;
use rim_store::StoreError;
use rim_store::inbox::ReceiptState;
use rim_store::receipt_feed::{FeedEvent, ReceiptFeed};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The feed consumer whose cursor and lease the receipt webhook uses.
pub const CONSUMER: &str = "receipt-webhook";

/// Where and how receipt events are posted ([`crate::ControlConfig::receipt_webhook`]).
#[derive(Clone, Debug)]
pub struct ReceiptWebhookSettings {
    /// The receiver.
    pub url: String,
    /// Most events per post.
    pub batch: usize,
    /// How often the feed is looked at.
    pub interval: Duration,
    /// Longest a post may take.
    pub timeout: Duration,
}

/// One event as the receiver reads it.
#[derive(Serialize)]
struct Event {
    id: u64,
    message_id: String,
    target: String,
    state: &'static str,
    at_unix_ms: i64,
}

impl From<&FeedEvent> for Event {
    fn from(event: &FeedEvent) -> Self {
        Event {
            id: event.cursor.id,
            message_id: event.message_id.to_string(),
            target: event.target.to_text(),
            state: event.state.as_str(),
            at_unix_ms: event.at,
        }
    }
}

/// Starts the receipt webhook and the fallback scanner that `state`'s configuration asks for, on
/// the store's receipt feed, until `stop` changes. Fails on an unusable webhook setting.
pub fn spawn_consumers(
    state: &crate::AppState,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let receipts = state.config.receipt_webhook();
    let fallback = state.config.fallback_webhook();
    if receipts.is_none() && fallback.is_none() {
        return Ok(Vec::new());
    }
    let feed = state.store.receipt_feed(state.config.inbox_settings())?;
    let mut tasks = Vec::new();
    if let Some(settings) = receipts {
        let events = ReceiptEvents::new(feed.clone(), &state.instance_id, settings)?;
        tasks.push(tokio::spawn(events.run(stop.clone())));
    }
    if let Some(settings) = fallback {
        let fallback = crate::fallback::Fallback::new(feed, &state.instance_id, settings)?;
        tasks.push(tokio::spawn(fallback.run(stop.clone())));
    }
    Ok(tasks)
}

/// Why a round stopped early.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("receipt webhook: {0}")]
    Webhook(String),
}

/// The lease a feed consumer takes for rounds every `interval` whose calls take up to `timeout`:
/// long enough that a round in progress keeps it, short enough that another instance takes over
/// within a few intervals of this one stopping.
pub(crate) fn lease_ms(interval: Duration, timeout: Duration) -> i64 {
    i64::try_from((interval * 3 + timeout).as_millis()).unwrap_or(i64::MAX)
}

/// Posts receipt events while this instance holds the consumer's lease.
pub struct ReceiptEvents {
    feed: Arc<dyn ReceiptFeed>,
    holder: String,
    settings: ReceiptWebhookSettings,
    url: reqwest::Url,
    client: reqwest::Client,
}

impl ReceiptEvents {
    /// A poster for `settings.url` as lease holder `holder`. Fails on a malformed URL or a batch
    /// of 0.
    pub fn new(
        feed: Arc<dyn ReceiptFeed>,
        holder: &str,
        settings: ReceiptWebhookSettings,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&settings.url)
            .map_err(|e| anyhow::anyhow!("control_receipt_webhook_url {:?}: {e}", settings.url))?;
        if settings.batch == 0 {
            anyhow::bail!("control_receipt_webhook_batch must be at least 1");
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()?;
        Ok(Self {
            feed,
            holder: holder.to_owned(),
            settings,
            url,
            client,
        })
    }

    /// Runs rounds every interval (backing off while the receiver or the store fails) until
    /// `stop` changes.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let interval = self.settings.interval.max(Duration::from_millis(10));
        let mut backoff = Backoff::new(interval, Duration::from_secs(30).max(interval));
        let mut pause = interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            pause = match self.round().await {
                Ok(()) => {
                    backoff.reset();
                    interval
                }
                Err(error) => {
                    metrics::counter!("rim_control_receipt_webhook_failures_total").increment(1);
                    tracing::warn!(%error, "receipt events not delivered; retrying");
                    backoff.next_pause()
                }
            };
        }
    }

    /// Posts pages of the feed after the consumer's cursor until it is drained, the lease is
    /// another instance's, or something fails.
    async fn round(&self) -> Result<(), RoundError> {
        let lease_ms = lease_ms(self.settings.interval, self.settings.timeout);
        loop {
            let Some(cursor) = self
                .feed
                .lease(CONSUMER, &self.holder, lease_ms, now_ms())
                .await?
            else {
                return Ok(());
            };
            let events = self
                .feed
                .read(cursor, &ReceiptState::ALL, self.settings.batch)
                .await?;
            let Some(last) = events.last() else {
                return Ok(());
            };
            self.post(&events).await?;
            metrics::counter!("rim_control_receipt_events_sent_total")
                .increment(events.len() as u64);
            if !self
                .feed
                .advance(CONSUMER, &self.holder, last.cursor)
                .await?
            {
                return Ok(());
            }
            if events.len() < self.settings.batch {
                return Ok(());
            }
        }
    }

    /// One post of a batch; `Ok` only for a 2xx.
    async fn post(&self, events: &[FeedEvent]) -> Result<(), RoundError> {
        let body: Vec<Event> = events.iter().map(Event::from).collect();
        let body = serde_json::to_vec(&body).map_err(|e| RoundError::Webhook(e.to_string()))?;
        let response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| RoundError::Webhook(e.to_string()))?;
        if !response.status().is_success() {
            return Err(RoundError::Webhook(format!(
                "answered {}",
                response.status()
            )));
        }
        Ok(())
    }
}
