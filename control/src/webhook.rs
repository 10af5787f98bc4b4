//! The business auth webhook: asks the business backend who a client is.
//!
//! Edges that cannot verify a client's auth body themselves (no signed token) forward it through
//! `POST /edge/v1/auth`; control forwards it here, so only control needs to reach the business
//! network. Contract with the business backend:
//!
//! - Request: `POST <auth_webhook_url>`, `Content-Type: application/json`, the client's op-7 auth body
//!   unchanged as the body (goim clients send `{"mid","key","room_id","platform","accepts","token"...}`),
//!   headers `X-Rim-Node-Id` and `X-Rim-Client-Ip`.
//! - Accept: any 2xx with JSON `{"mid": int, "key": str?, "room_id": str?, "platform": str?,
//!   "accepts": [int]?, "rooms": [str]?}`: the identity the edge must use (never the client's own
//!   claims). An empty key lets the edge generate one; `rooms` lists the rooms or room patterns
//!   (`live://*`) the client may change to besides `room_id` (none when absent).
//! - Refuse: 401 or 403, optionally with JSON `{"reason": str}` shown to the client.
//! - Anything else (other statuses, timeouts, unreachable, malformed answers) is a webhook failure:
//!   the edge API answers 502 and the edge refuses the client with "auth unavailable".
//!
//! The call is bounded by a timeout and the answer by [`MAX_ANSWER_BYTES`].

use crate::error::ApiError;
use crate::push::validate_room;
use rim_proto::limits::{MAX_KEY_LEN, MAX_PLATFORM_LEN, MAX_ROOM_LEN, MAX_WATCH_OPS};
use rim_proto::schema::AuthResponse;
use serde::Deserialize;
use std::time::Duration;

/// Largest webhook answer read; anything longer is a webhook failure.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Most rooms or room patterns one identity may be granted.
const MAX_ROOM_GRANTS: usize = 64;

/// A configured business auth webhook.
pub struct AuthWebhook {
    url: reqwest::Url,
    client: reqwest::Client,
}

/// The business backend's accepting answer.
#[derive(Debug, Deserialize)]
struct Identity {
    mid: i64,
    #[serde(default)]
    key: String,
    #[serde(default)]
    room_id: String,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    accepts: Vec<i32>,
    #[serde(default)]
    rooms: Vec<String>,
}

/// The business backend's refusing answer.
#[derive(Debug, Default, Deserialize)]
struct Refusal {
    #[serde(default)]
    reason: String,
}

impl AuthWebhook {
    /// A webhook client for `url`, giving up after `timeout`. Fails on a malformed URL.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("auth_webhook_url {url:?}: {e}"))?;
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { url, client })
    }

    /// Asks the business backend about one client's auth body.
    pub async fn verify(
        &self,
        node_id: &str,
        client_ip: &str,
        body: bytes::Bytes,
    ) -> Result<AuthResponse, ApiError> {
        let failed = |what: String| ApiError::BadGateway(format!("auth webhook failed: {what}"));
        let mut response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("x-rim-node-id", node_id)
            .header("x-rim-client-ip", client_ip)
            .body(body)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(failed(format!(
                    "answer longer than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            answer.extend_from_slice(&chunk);
        }
        if status.is_success() {
            let identity: Identity = serde_json::from_slice(&answer)
                .map_err(|e| failed(format!("unreadable identity: {e}")))?;
            check_identity(&identity).map_err(|e| failed(e.to_string()))?;
            Ok(AuthResponse {
                accepted: true,
                reason: String::new(),
                mid: identity.mid,
                key: identity.key,
                room: identity.room_id,
                platform: identity.platform,
                accepts: identity.accepts,
                rooms: identity.rooms,
            })
        } else if status == reqwest::StatusCode::UNAUTHORIZED
            || status == reqwest::StatusCode::FORBIDDEN
        {
            let refusal: Refusal = serde_json::from_slice(&answer).unwrap_or_default();
            let reason = if refusal.reason.is_empty() {
                format!("refused by the auth webhook ({status})")
            } else {
                refusal.reason.chars().take(MAX_KEY_LEN).collect()
            };
            Ok(AuthResponse {
                accepted: false,
                reason,
                ..AuthResponse::default()
            })
        } else {
            Err(failed(format!("unexpected status {status}")))
        }
    }
}

/// Bounds on what the business backend may answer, the same as on what an edge may report.
fn check_identity(identity: &Identity) -> Result<(), ApiError> {
    if identity.key.len() > MAX_KEY_LEN {
        return Err(ApiError::BadRequest(format!(
            "key longer than {MAX_KEY_LEN} bytes"
        )));
    }
    if !identity.room_id.is_empty() {
        validate_room(&identity.room_id)?;
    }
    if identity.platform.len() > MAX_PLATFORM_LEN {
        return Err(ApiError::BadRequest(format!(
            "platform longer than {MAX_PLATFORM_LEN} bytes"
        )));
    }
    if identity.rooms.len() > MAX_ROOM_GRANTS
        || identity.rooms.iter().any(|room| room.len() > MAX_ROOM_LEN)
    {
        return Err(ApiError::BadRequest(format!(
            "rooms: at most {MAX_ROOM_GRANTS} entries of at most {MAX_ROOM_LEN} bytes"
        )));
    }
    if identity.accepts.len() > MAX_WATCH_OPS {
        return Err(ApiError::BadRequest(format!(
            "more than {MAX_WATCH_OPS} accepted operations"
        )));
    }
    Ok(())
}
