//! Upstream: client messages, from the edges to the business backend, and its verdicts back.
//!
//! goim only logs what clients send (op 4 and business ops); rim hands it to the business backend
//! with the identity the edge verified, and the client gets the backend's verdict as the reply. An
//! edge batches the messages of its connections (rim-edgelink `upstream`) and posts them to
//! `POST /edge/v1/upstream` (`UpstreamBatch` → `UpstreamVerdicts`, one verdict per message, in
//! order; node-token auth as every edge call, the batch must name the token's node). The sender is
//! the edge's verified identity (mid, key, room, platform), never anything in the message's body,
//! and the region is the one in the edge's token.
//!
//! The backend is one of (configured on control, at most one):
//!
//! - **a batched HTTP webhook** (`control_upstream_webhook_url`): `POST`, `Content-Type:
//!   application/json`, headers `X-Rim-Node-Id` and `X-Rim-Region`, body a JSON array of
//!   `{"mid","key","room","platform","operation","body","at_unix_ms","node_id","region"}` (`body`
//!   is the client's bytes in base64, standard alphabet, padded). It answers 2xx with a JSON array
//!   of as many verdicts, in order: `{"accepted": bool, "reply_text": str?, "reply_base64": str?,
//!   "error": str?}`; an accepted message's reply body is `reply_text` (UTF-8) or `reply_base64`
//!   (bytes), empty when neither is given; a refused one's `error` is shown to the client.
//! - **a Kafka topic per region** (`control_upstream_kafka_topic_prefix`, e.g. `rim-upstream-`:
//!   region `sh` produces to `rim-upstream-sh`), one record per message, keyed by the user id in
//!   decimal (an anonymous connection's by `key:<key>`) so one user's messages stay in order; the
//!   value is the same JSON object as one element of the webhook's array. A message is accepted,
//!   with an empty reply, once the broker acknowledged its record.
//!
//! A refused message's reply body is JSON `{"error": str, "reason": str}`, the reason one of
//! [`REFUSED`] (the backend said no), [`UNAVAILABLE`] (no backend configured, the backend failed,
//! timed out or answered something unreadable: every message of that batch), [`ANONYMOUS`] (a
//! connection without user id, unless `control_upstream_allow_anonymous`) or [`INVALID`] (fields
//! out of bounds). Every verdict is counted in `rim_control_upstream_messages_total{outcome}`.
//!
//! Each call waits for the backend, so the route has its own bound on requests in flight
//! (`control_upstream_max_in_flight`, beyond it 503), apart from the edge lifecycle calls, and
//! each edge sends its batches of one user's messages one at a time (order is kept end to end).

use crate::config::ControlConfig;
use crate::edge_api::{decode, own, protobuf};
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rim_bus::{BusProducer, OutgoingRecord};
use rim_proto::limits::{MAX_KEY_LEN, MAX_PLATFORM_LEN, MAX_ROOM_LEN};
use rim_proto::schema::{UpstreamBatch, UpstreamRequest, UpstreamVerdict, UpstreamVerdicts};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Reason of a message the backend refused.
pub const REFUSED: &str = "upstream_refused";
/// Reason of a message no backend took (none configured, down, timed out, unreadable answer).
pub const UNAVAILABLE: &str = "upstream_unavailable";
/// Reason of a message from an anonymous connection (mid 0) when those are not forwarded.
pub const ANONYMOUS: &str = "anonymous";
/// Reason of a message whose fields are out of bounds.
pub const INVALID: &str = "invalid";

/// Largest webhook answer read; anything longer is a backend failure.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Longest error text passed from the backend to a client.
const MAX_ERROR_LEN: usize = 256;

/// The route of this module, to be bounded by `control_upstream_max_in_flight`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/edge/v1/upstream", post(upstream))
}

/// Where client messages go, built once from the configuration.
pub struct Upstream {
    backend: Option<Backend>,
    allow_anonymous: bool,
    max_batch: usize,
    max_reply: usize,
}

/// The configured business backend.
enum Backend {
    Webhook {
        url: reqwest::Url,
        client: reqwest::Client,
    },
    Kafka {
        topic_prefix: String,
    },
}

/// One message as the backend sees it (a webhook array element, a Kafka record's value).
#[derive(Debug, Serialize)]
struct Outgoing<'a> {
    mid: i64,
    key: &'a str,
    room: &'a str,
    platform: &'a str,
    operation: i32,
    body: String,
    at_unix_ms: i64,
    node_id: &'a str,
    region: &'a str,
}

/// One verdict of the webhook's answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    accepted: bool,
    #[serde(default)]
    reply_text: Option<String>,
    #[serde(default)]
    reply_base64: Option<String>,
    #[serde(default)]
    error: String,
}

impl Upstream {
    /// The upstream of `config`, producing to `bus` in Kafka mode. Fails when both backends are
    /// configured, the webhook URL is unusable, or Kafka mode is asked of a bus without topics.
    pub fn new(config: &ControlConfig, bus: &dyn BusProducer) -> anyhow::Result<Self> {
        let webhook = config
            .control_upstream_webhook_url
            .as_deref()
            .filter(|url| !url.is_empty());
        let kafka = config
            .control_upstream_kafka_topic_prefix
            .as_deref()
            .filter(|prefix| !prefix.is_empty());
        let backend = match (webhook, kafka) {
            (Some(_), Some(_)) => anyhow::bail!(
                "configure one upstream backend: control_upstream_webhook_url or \
                 control_upstream_kafka_topic_prefix, not both"
            ),
            (Some(url), None) => Some(Backend::Webhook {
                url: reqwest::Url::parse(url)
                    .map_err(|e| anyhow::anyhow!("control_upstream_webhook_url {url:?}: {e}"))?,
                client: reqwest::Client::builder()
                    .timeout(Duration::from_millis(
                        config.control_upstream_webhook_timeout_ms.max(1),
                    ))
                    .build()?,
            }),
            (None, Some(prefix)) => {
                anyhow::ensure!(
                    bus.region_topic("upstream").is_some(),
                    "control_upstream_kafka_topic_prefix needs the Kafka bus (this bus has no topics)"
                );
                Some(Backend::Kafka {
                    topic_prefix: prefix.to_owned(),
                })
            }
            (None, None) => None,
        };
        Ok(Self {
            backend,
            allow_anonymous: config.control_upstream_allow_anonymous,
            max_batch: config.control_upstream_max_batch.max(1),
            max_reply: config.control_push_body_limit,
        })
    }

    /// Whether a backend is configured (edges of `rim dev` forward only then).
    pub fn configured(&self) -> bool {
        self.backend.is_some()
    }

    /// The verdicts on `messages` sent by node `node_id` of `region`, in order.
    async fn verdicts(
        &self,
        bus: &dyn BusProducer,
        node_id: &str,
        region: &str,
        messages: Vec<UpstreamRequest>,
    ) -> Vec<UpstreamVerdict> {
        let mut verdicts: Vec<Option<Judged>> = Vec::with_capacity(messages.len());
        let mut forwarded = Vec::with_capacity(messages.len());
        for message in messages {
            let early = if let Err(error) = check(&message) {
                Some(refusal(INVALID, error))
            } else if message.mid == 0 && !self.allow_anonymous {
                Some(refusal(
                    ANONYMOUS,
                    "messages of anonymous connections are not forwarded".into(),
                ))
            } else {
                None
            };
            if early.is_none() {
                forwarded.push(message);
            }
            verdicts.push(early);
        }
        let mut answered = self
            .forward(bus, node_id, region, &forwarded)
            .await
            .into_iter();
        verdicts
            .into_iter()
            .map(|early| {
                // `forward` answers one verdict per forwarded message, so this never runs short.
                let (verdict, outcome) = early
                    .or_else(|| answered.next())
                    .unwrap_or_else(|| unavailable("upstream answered too few verdicts".into()));
                metrics::counter!("rim_control_upstream_messages_total", "outcome" => outcome)
                    .increment(1);
                verdict
            })
            .collect()
    }

    /// Hands the checked messages to the backend: one verdict each, in order.
    async fn forward(
        &self,
        bus: &dyn BusProducer,
        node_id: &str,
        region: &str,
        messages: &[UpstreamRequest],
    ) -> Vec<Judged> {
        if messages.is_empty() {
            return Vec::new();
        }
        let all = |judged: Judged| vec![judged; messages.len()];
        let outgoing: Vec<Outgoing<'_>> = messages
            .iter()
            .map(|message| Outgoing {
                mid: message.mid,
                key: &message.key,
                room: &message.room,
                platform: &message.platform,
                operation: message.operation,
                body: STANDARD.encode(&message.body),
                at_unix_ms: message.at_unix_ms,
                node_id,
                region,
            })
            .collect();
        match &self.backend {
            None => all(unavailable(
                "no upstream backend is configured on the control plane".into(),
            )),
            Some(Backend::Webhook { url, client }) => {
                match self.call(client, url, node_id, region, &outgoing).await {
                    Ok(verdicts) => verdicts,
                    Err(error) => {
                        tracing::warn!(node = %node_id, %error, messages = messages.len(),
                            "upstream webhook failed; messages refused as unavailable");
                        all(unavailable("upstream unavailable".into()))
                    }
                }
            }
            Some(Backend::Kafka { topic_prefix }) => {
                let topic = format!("{topic_prefix}{region}");
                let records = outgoing
                    .iter()
                    .map(|message| OutgoingRecord {
                        topic: topic.clone(),
                        key: match message.mid {
                            0 => format!("key:{}", message.key),
                            mid => mid.to_string(),
                        },
                        // Serializing plain strings and numbers cannot fail.
                        payload: serde_json::to_vec(message).unwrap_or_default(),
                    })
                    .collect();
                match bus.publish_records(records).await {
                    Ok(()) => all(accepted(Vec::new())),
                    Err(error) => {
                        tracing::warn!(node = %node_id, %topic, %error, messages = messages.len(),
                            "upstream topic unavailable; messages refused as unavailable");
                        all(unavailable("upstream unavailable".into()))
                    }
                }
            }
        }
    }

    /// Posts one batch to the webhook; its verdicts, or why the answer is unusable.
    async fn call(
        &self,
        client: &reqwest::Client,
        url: &reqwest::Url,
        node_id: &str,
        region: &str,
        outgoing: &[Outgoing<'_>],
    ) -> Result<Vec<Judged>, String> {
        let mut response = client
            .post(url.clone())
            .header("x-rim-node-id", node_id)
            .header("x-rim-region", region)
            .header("content-type", "application/json")
            // Serializing plain strings and numbers cannot fail.
            .body(serde_json::to_vec(outgoing).unwrap_or_default())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer longer than {MAX_ANSWER_BYTES} bytes"));
            }
            answer.extend_from_slice(&chunk);
        }
        let answers: Vec<Answer> =
            serde_json::from_slice(&answer).map_err(|e| format!("unreadable answer: {e}"))?;
        if answers.len() != outgoing.len() {
            return Err(format!(
                "{} verdicts for {} messages",
                answers.len(),
                outgoing.len()
            ));
        }
        answers
            .into_iter()
            .map(|answer| self.verdict(answer))
            .collect()
    }

    /// One webhook verdict as the edge gets it.
    fn verdict(&self, answer: Answer) -> Result<Judged, String> {
        if !answer.accepted {
            let error = match answer.error.is_empty() {
                true => "refused by the business backend".to_owned(),
                false => answer.error.chars().take(MAX_ERROR_LEN).collect(),
            };
            return Ok(refusal(REFUSED, error));
        }
        let reply = match (answer.reply_text, answer.reply_base64) {
            (Some(_), Some(_)) => {
                return Err("a verdict gives both reply_text and reply_base64".into());
            }
            (Some(text), None) => text.into_bytes(),
            (None, Some(base64)) => STANDARD
                .decode(base64)
                .map_err(|e| format!("reply_base64 is not base64: {e}"))?,
            (None, None) => Vec::new(),
        };
        if reply.len() > self.max_reply {
            return Err(format!(
                "a reply of {} bytes is longer than {} (control_push_body_limit)",
                reply.len(),
                self.max_reply
            ));
        }
        Ok(accepted(reply))
    }
}

/// Bounds on what an edge may forward, the same as on what it may report.
fn check(message: &UpstreamRequest) -> Result<(), String> {
    if message.key.is_empty() || message.key.len() > MAX_KEY_LEN {
        return Err(format!("key must be 1..={MAX_KEY_LEN} bytes"));
    }
    if message.room.len() > MAX_ROOM_LEN || message.platform.len() > MAX_PLATFORM_LEN {
        return Err(format!(
            "room (at most {MAX_ROOM_LEN} bytes) or platform (at most {MAX_PLATFORM_LEN}) too long"
        ));
    }
    Ok(())
}

/// A verdict and its `outcome` label (`accepted`, or the refusal's reason).
type Judged = (UpstreamVerdict, &'static str);

/// An accepted verdict with the reply body for the client.
fn accepted(reply: Vec<u8>) -> Judged {
    let verdict = UpstreamVerdict {
        accepted: true,
        reply: reply.into(),
        error: String::new(),
    };
    (verdict, "accepted")
}

/// A refused verdict whose reply body is rim's JSON error with `reason`.
fn refusal(reason: &'static str, error: String) -> Judged {
    let body = serde_json::json!({ "error": error, "reason": reason });
    let verdict = UpstreamVerdict {
        accepted: false,
        reply: body.to_string().into_bytes().into(),
        error,
    };
    (verdict, reason)
}

/// A message no backend took.
fn unavailable(error: String) -> Judged {
    refusal(UNAVAILABLE, error)
}

/// `POST /edge/v1/upstream`.
async fn upstream(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (claims, batch): (_, UpstreamBatch) = decode(&state, &headers, body).await?;
    own(&claims, &batch.node_id)?;
    let upstream = &state.upstream;
    if batch.messages.len() > upstream.max_batch {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} upstream messages in one batch; at most {}",
            batch.messages.len(),
            upstream.max_batch
        )));
    }
    let verdicts = upstream
        .verdicts(
            state.bus.as_ref(),
            &claims.sub,
            &claims.region,
            batch.messages,
        )
        .await;
    Ok(protobuf(&UpstreamVerdicts { verdicts }))
}
