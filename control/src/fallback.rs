//! The fallback webhook: a push the user did not get is handed to the business's mobile-push relay
//! (APNs/FCM), once per push and target.
//!
//! A user or key push (receipt target `mid:<user>` or `key:<key>`) falls back when
//! - its target had no session when it was pushed (an `offline` receipt): at once, within one scan
//!   interval; or
//! - it was `accepted` or `stored` and no device of the target acked it within
//!   `control_fallback_deadline_ms` of that receipt: reason `unacked`. (A plain goim connection
//!   never acks, so its pushes fall back too once the deadline passes; the fallback is meant for
//!   rim-aware clients.)
//!
//! Scanning reads the store's receipt feed ([`rim_store::receipt_feed`]) as two consumers, one per
//! reason, each with a cursor and a lease in the store: only the lease holder scans, in bounded
//! pages, by index (the feed is read in its index order, the acked check and the claim are primary
//! key probes, the push is found through the inbox's receipt-target index), and a restart or
//! another instance continues from the cursor. The `unacked` consumer stops at the first receipt
//! that is not due yet and continues from it next round, so each receipt is read about once.
//!
//! "Once" is the `fallback` receipt: before calling, the scanner claims each candidate
//! ([`ReceiptFeed::claim_fallbacks`]), which records `fallback` for the push and target unless it
//! was acked or claimed before; only the instance that recorded it calls. The call is retried with
//! backoff for `control_fallback_retry_ms`, then given up with a `fallback_failed` warning and
//! `rim_control_fallback_failed_total`. A call answered too late may arrive twice (the receiver
//! deduplicates by message id and target); an instance that dies between a claim and its call
//! loses that call (the claim is never made twice).
//!
//! Contract with the relay: `POST <url>`, `Content-Type: application/json`,
//! `{"message_id": "0192f1c4-...", "target": "mid:42", "reason": "unacked", "operation": 1000,
//! "body": "<base64>", "position": {"epoch": 0, "seq": 17}, "claimed_at_unix_ms": 1764590400000}`.
//! `operation`, `body` and `position` are `null` when the push is not in the inbox (a key push to
//! a key without a session is never stored; retention may have removed it). Any 2xx is success.

use crate::now_ms;
use crate::receipt_events::lease_ms;
use base64::Engine;
use rim_retry::Backoff;
use rim_store::StoreError;
use rim_store::inbox::ReceiptState;
use rim_store::receipt_feed::{
    ClaimedFallback, FallbackCandidate, FallbackReason, FeedEvent, ReceiptFeed,
};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The feed consumer of offline targets.
pub const OFFLINE_CONSUMER: &str = "fallback-offline";
/// The feed consumer of pushes not acked in time.
pub const UNACKED_CONSUMER: &str = "fallback-unacked";

/// Where and when fallbacks are called ([`crate::ControlConfig::fallback_webhook`]).
#[derive(Clone, Debug)]
pub struct FallbackSettings {
    /// The relay.
    pub url: String,
    /// How long a push may stay unacked.
    pub deadline: Duration,
    /// How often the feed is scanned.
    pub scan_interval: Duration,
    /// Longest one call may take.
    pub timeout: Duration,
    /// How long a failing call is retried.
    pub retry_for: Duration,
    /// Most receipts read per scan step.
    pub batch: usize,
    /// Most calls in flight.
    pub max_in_flight: usize,
}

/// The push's place in its user's stream, as the relay reads it.
#[derive(Serialize)]
struct PositionJson {
    epoch: u64,
    seq: u64,
}

/// One fallback call's body.
#[derive(Serialize)]
struct Call {
    message_id: String,
    target: String,
    reason: &'static str,
    operation: Option<i32>,
    body: Option<String>,
    position: Option<PositionJson>,
    claimed_at_unix_ms: i64,
}

impl Call {
    fn of(claimed: &ClaimedFallback, at: i64) -> Self {
        let push = claimed.push.as_ref();
        Call {
            message_id: claimed.candidate.message_id.to_string(),
            target: claimed.candidate.target.to_text(),
            reason: claimed.candidate.reason.as_str(),
            operation: push.map(|p| p.operation),
            body: push.map(|p| base64::engine::general_purpose::STANDARD.encode(&p.body)),
            position: push.map(|p| PositionJson {
                epoch: p.position.epoch,
                seq: p.position.seq,
            }),
            claimed_at_unix_ms: at,
        }
    }
}

/// Scans for due fallbacks while this instance holds the consumers' leases, and calls the relay.
pub struct Fallback {
    feed: Arc<dyn ReceiptFeed>,
    holder: String,
    settings: FallbackSettings,
    url: reqwest::Url,
    client: reqwest::Client,
    /// Free call slots: the scanner claims only what it can call.
    slots: Arc<Semaphore>,
    /// Calls in flight, waited for at shutdown.
    calls: TaskTracker,
    /// Cancelled at shutdown: calls make no further attempts.
    stopping: CancellationToken,
}

impl Fallback {
    /// A scanner calling `settings.url` as lease holder `holder`. Fails on a malformed URL or a
    /// batch or in-flight bound of 0.
    pub fn new(
        feed: Arc<dyn ReceiptFeed>,
        holder: &str,
        settings: FallbackSettings,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&settings.url)
            .map_err(|e| anyhow::anyhow!("control_fallback_webhook_url {:?}: {e}", settings.url))?;
        if settings.batch == 0 || settings.max_in_flight == 0 {
            anyhow::bail!(
                "control_fallback_batch and control_fallback_max_in_flight must be at least 1"
            );
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()?;
        Ok(Self {
            feed,
            holder: holder.to_owned(),
            slots: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            url,
            client,
            calls: TaskTracker::new(),
            stopping: CancellationToken::new(),
        })
    }

    /// Scans every interval until `stop` changes, then lets calls in flight finish their current
    /// attempt.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let interval = self.settings.scan_interval.max(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => break,
            }
            let offline = self.scan(
                OFFLINE_CONSUMER,
                FallbackReason::Offline,
                &[ReceiptState::Offline],
                |_| true,
            );
            if let Err(error) = offline.await {
                tracing::warn!(%error, "fallback scan (offline) failed; retrying next interval");
            }
            let due_before = now_ms().saturating_sub(
                i64::try_from(self.settings.deadline.as_millis()).unwrap_or(i64::MAX),
            );
            let unacked = self.scan(
                UNACKED_CONSUMER,
                FallbackReason::Unacked,
                &[ReceiptState::Accepted, ReceiptState::Stored],
                |event: &FeedEvent| event.at <= due_before,
            );
            if let Err(error) = unacked.await {
                tracing::warn!(%error, "fallback scan (unacked) failed; retrying next interval");
            }
        }
        self.stopping.cancel();
        self.calls.close();
        self.calls.wait().await;
    }

    /// Claims and calls for `reason`, page by page, the receipts of `states` after `consumer`'s
    /// cursor that are `due` (stopping at the first that is not), while this instance holds the
    /// lease.
    async fn scan(
        &self,
        consumer: &str,
        reason: FallbackReason,
        states: &[ReceiptState],
        due: impl Fn(&FeedEvent) -> bool,
    ) -> Result<(), StoreError> {
        let lease_ms = lease_ms(self.settings.scan_interval, self.settings.timeout);
        loop {
            let Some(cursor) = self
                .feed
                .lease(consumer, &self.holder, lease_ms, now_ms())
                .await?
            else {
                return Ok(());
            };
            let events = self.feed.read(cursor, states, self.settings.batch).await?;
            let ready = events.iter().take_while(|event| due(event)).count();
            let Some(last) = events[..ready].last() else {
                return Ok(());
            };
            let candidates: Vec<FallbackCandidate> = events[..ready]
                .iter()
                .map(|event| FallbackCandidate {
                    message_id: event.message_id,
                    target: event.target.clone(),
                    reason,
                })
                .collect();
            let claimed_at = now_ms();
            let claimed = self.feed.claim_fallbacks(&candidates, claimed_at).await?;
            for claim in claimed {
                self.dispatch(Call::of(&claim, claimed_at), claim.candidate.reason)
                    .await;
            }
            if !self
                .feed
                .advance(consumer, &self.holder, last.cursor)
                .await?
            {
                return Ok(());
            }
            if ready < events.len() || events.len() < self.settings.batch {
                return Ok(());
            }
        }
    }

    /// Starts one claimed call once a slot is free.
    async fn dispatch(&self, call: Call, reason: FallbackReason) {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return; // The semaphore is never closed.
        };
        let body = match serde_json::to_vec(&call) {
            Ok(body) => body,
            Err(error) => {
                failed(&call, reason, &error.to_string());
                return;
            }
        };
        let client = self.client.clone();
        let url = self.url.clone();
        let retry_for = self.settings.retry_for;
        let stopping = self.stopping.clone();
        self.calls.spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            loop {
                let outcome = client
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let error = match outcome {
                    Ok(response) if response.status().is_success() => {
                        metrics::counter!("rim_control_fallback_sent_total", "reason" => reason.as_str())
                            .increment(1);
                        return;
                    }
                    Ok(response) => format!("answered {}", response.status()),
                    Err(error) => error.to_string(),
                };
                let pause = backoff.next_pause();
                if stopping.is_cancelled() || started.elapsed() + pause > retry_for {
                    failed(&call, reason, &error);
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopping.cancelled() => {
                        failed(&call, reason, &format!("{error}; shutting down"));
                        return;
                    }
                }
            }
        });
    }
}

/// A call given up.
fn failed(call: &Call, reason: FallbackReason, error: &str) {
    metrics::counter!("rim_control_fallback_failed_total", "reason" => reason.as_str())
        .increment(1);
    tracing::warn!(
        message_id = %call.message_id,
        target = %call.target,
        reason = reason.as_str(),
        %error,
        "fallback_failed: the fallback webhook was not reached; this push gets no fallback"
    );
}
