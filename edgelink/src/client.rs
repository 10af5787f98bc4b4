//! The HTTP client of the control plane's edge API (`control/src/edge_api.rs`).
//!
//! Protobuf calls with a bearer token read from a [`TokenCell`] on every request: the node token
//! for the edge API and renewal, the cluster secret for enrollment only (see [`crate::credential`]).
//! Each answer is reduced to what the caller must do about it ([`CallError`]): register again (404
//! unknown node), renew the token (401), split (413), give up on this body (other 4xx: a bug or a
//! configuration error, never fixed by retrying), or retry later (503, 5xx, timeouts,
//! unreachable). Answers are read up to [`MAX_ANSWER_BYTES`]. An `https` control URL is verified
//! against the system's roots plus an optional CA file.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use reqwest::StatusCode;
use rim_proto::node_token::TokenCell;
use rim_proto::schema::{
    AuthRequest, AuthResponse, NodeCredential, NodeEnrollment, NodeHeartbeat, NodeKeys,
    NodeRegistration, SessionBatch, UpstreamBatch, UpstreamVerdicts,
};
use rim_store::SessionApplyReport;

/// Largest answer read from the control plane; longer ones are a failure of the call.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Largest answer to an upstream batch (the backend's replies to every message of it).
pub const MAX_UPSTREAM_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Content type of protobuf bodies.
const PROTOBUF: &str = "application/x-protobuf";

/// Why a call to the control plane did not succeed, by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 404 on heartbeat or sessions: the node is unknown or was declared dead; register again,
    /// report every live connection anew, then resend.
    #[error("the control plane does not know this node")]
    UnknownNode,
    /// 413: the body is too large; split it.
    #[error("request too large for the control plane: {0}")]
    TooLarge(String),
    /// 401: the credential was refused (expired, replaced keys, wrong secret): renew or enroll,
    /// then retry.
    #[error("the control plane refused the credential: {0}")]
    Unauthorized(String),
    /// Another 4xx (malformed body, wrong cluster secret, no webhook): retrying the same request
    /// cannot help.
    #[error("the control plane refused the request ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The control plane's explanation.
        message: String,
    },
    /// Unreachable, timed out, or a 5xx: nothing is known to be applied; retry later.
    #[error("the control plane is unavailable: {0}")]
    Unavailable(String),
}

/// A client of one control plane, shared by the reporter's tasks and the webhook verifier.
#[derive(Clone, Debug)]
pub struct ControlClient {
    http: reqwest::Client,
    base: String,
    bearer: TokenCell,
}

impl ControlClient {
    /// A client for the control plane at `base_url` presenting `bearer`, calls bounded by
    /// `timeout`, trusting the CAs of `ca_file` too. Fails on a URL that is not http(s) or an
    /// unreadable CA file.
    pub fn new(
        base_url: &str,
        bearer: impl Into<TokenCell>,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| anyhow::anyhow!("edge_control_url {base_url:?}: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "edge_control_url {base_url:?} is not an http(s) URL"
        );
        // reqwest is built without a bundled TLS crypto provider: make the workspace's (ring) the
        // process default. An error only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(path) = ca_file {
            builder = builder.tls_certs_merge(crate::credential::ca_certificates(path)?);
        }
        Ok(Self {
            http: builder.build()?,
            base: base_url.trim_end_matches('/').to_owned(),
            bearer: bearer.into(),
        })
    }

    /// `POST /edge/v1/enroll` (the bearer is the cluster secret).
    pub async fn enroll(&self, request: &NodeEnrollment) -> Result<NodeCredential, CallError> {
        let (status, answer) = self.call("/edge/v1/enroll", request, None).await?;
        decoded(status, answer)
    }

    /// `POST /edge/v1/renew` (the bearer is the token to renew).
    pub async fn renew(&self) -> Result<NodeCredential, CallError> {
        let (status, answer) = self.call("/edge/v1/renew", &(), None).await?;
        decoded(status, answer)
    }

    /// `GET /edge/v1/keys`: the public keys node tokens are verified with.
    pub async fn keys(&self) -> Result<NodeKeys, CallError> {
        let unavailable = |e: reqwest::Error| CallError::Unavailable(e.to_string());
        let response = self
            .http
            .get(format!("{}/edge/v1/keys", self.base))
            .send()
            .await
            .map_err(unavailable)?;
        let (status, answer) = read_answer("/edge/v1/keys", response, MAX_ANSWER_BYTES).await?;
        decoded(status, answer)
    }

    /// `POST /edge/v1/register`.
    pub async fn register(&self, node: &NodeRegistration) -> Result<(), CallError> {
        let (status, answer) = self.call("/edge/v1/register", node, None).await?;
        match status {
            s if s.is_success() => Ok(()),
            s => Err(failure(s, &answer)),
        }
    }

    /// `POST /edge/v1/heartbeat`.
    pub async fn heartbeat(&self, report: &NodeHeartbeat) -> Result<(), CallError> {
        let (status, answer) = self.call("/edge/v1/heartbeat", report, None).await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(CallError::UnknownNode),
            s => Err(failure(s, &answer)),
        }
    }

    /// `POST /edge/v1/sessions`; returns what the store did with the events.
    pub async fn sessions(&self, batch: &SessionBatch) -> Result<SessionApplyReport, CallError> {
        let (status, answer) = self.call("/edge/v1/sessions", batch, None).await?;
        match status {
            s if s.is_success() => serde_json::from_slice(&answer)
                .map_err(|e| CallError::Unavailable(format!("unreadable session report: {e}"))),
            StatusCode::NOT_FOUND => Err(CallError::UnknownNode),
            s => Err(failure(s, &answer)),
        }
    }

    /// `POST /edge/v1/auth`, bounded by `timeout`: the webhook's accepting or refusing answer.
    pub async fn auth(
        &self,
        request: &AuthRequest,
        timeout: Duration,
    ) -> Result<AuthResponse, CallError> {
        let (status, answer) = self.call("/edge/v1/auth", request, Some(timeout)).await?;
        if status.is_success() {
            return AuthResponse::decode(answer)
                .map_err(|e| CallError::Unavailable(format!("unreadable auth answer: {e}")));
        }
        if status == StatusCode::NOT_FOUND {
            // No webhook configured: the body is a refusal saying so.
            if let Ok(refusal) = AuthResponse::decode(answer.clone()) {
                return Err(CallError::Refused {
                    status: status.as_u16(),
                    message: refusal.reason,
                });
            }
        }
        Err(failure(status, &answer))
    }

    /// `POST /edge/v1/upstream`, bounded by `timeout`: one verdict per message, in order. The
    /// answer may be up to [`MAX_UPSTREAM_ANSWER_BYTES`] (it carries the backend's replies).
    pub async fn upstream(
        &self,
        batch: &UpstreamBatch,
        timeout: Duration,
    ) -> Result<UpstreamVerdicts, CallError> {
        let path = "/edge/v1/upstream";
        let (status, answer) = self
            .call_bounded(path, batch, Some(timeout), MAX_UPSTREAM_ANSWER_BYTES)
            .await?;
        decoded(status, answer)
    }

    /// Posts `message` to `path` and reads the answer, bounded by [`MAX_ANSWER_BYTES`].
    pub(crate) async fn call(
        &self,
        path: &str,
        message: &impl Message,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, Bytes), CallError> {
        self.call_bounded(path, message, timeout, MAX_ANSWER_BYTES)
            .await
    }

    /// Posts `message` to `path` and reads an answer of at most `limit` bytes.
    pub(crate) async fn call_bounded(
        &self,
        path: &str,
        message: &impl Message,
        timeout: Option<Duration>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let unavailable = |e: reqwest::Error| CallError::Unavailable(e.to_string());
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.bearer.get())
            .header(reqwest::header::CONTENT_TYPE, PROTOBUF)
            .body(message.encode_to_vec());
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(unavailable)?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.bearer.refused();
        }
        read_answer(path, response, limit).await
    }
}

/// Reads an answer of at most `limit` bytes.
async fn read_answer(
    path: &str,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(StatusCode, Bytes), CallError> {
    let unavailable = |e: reqwest::Error| CallError::Unavailable(e.to_string());
    let status = response.status();
    let mut answer = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        if answer.len() + chunk.len() > limit {
            return Err(CallError::Unavailable(format!(
                "answer to {path} longer than {limit} bytes"
            )));
        }
        answer.extend_from_slice(&chunk);
    }
    Ok((status, Bytes::from(answer)))
}

/// A successful answer decoded as `M`, or the error of its status.
pub(crate) fn decoded<M: Message + Default>(
    status: StatusCode,
    answer: Bytes,
) -> Result<M, CallError> {
    if !status.is_success() {
        return Err(failure(status, &answer));
    }
    M::decode(answer).map_err(|e| CallError::Unavailable(format!("unreadable answer: {e}")))
}

/// The error of an unsuccessful status, with the control plane's message when it sent one.
pub(crate) fn failure(status: StatusCode, answer: &[u8]) -> CallError {
    let message = serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|json| json.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&answer[..answer.len().min(256)]).into_owned());
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => CallError::TooLarge(message),
        StatusCode::UNAUTHORIZED => CallError::Unauthorized(message),
        s if s.is_client_error() => CallError::Refused {
            status: s.as_u16(),
            message,
        },
        s => CallError::Unavailable(format!("{s}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_the_caller_must_do() {
        let json = br#"{"error":"bad_request","message":"room is not type://id"}"#;
        assert_eq!(
            failure(StatusCode::BAD_REQUEST, json),
            CallError::Refused {
                status: 400,
                message: "room is not type://id".into()
            }
        );
        assert!(matches!(
            failure(StatusCode::UNAUTHORIZED, b"expired"),
            CallError::Unauthorized(m) if m == "expired"
        ));
        assert!(matches!(
            failure(StatusCode::PAYLOAD_TOO_LARGE, b"too big"),
            CallError::TooLarge(m) if m == "too big"
        ));
        assert!(matches!(
            failure(StatusCode::SERVICE_UNAVAILABLE, b""),
            CallError::Unavailable(_)
        ));
        assert!(matches!(
            failure(StatusCode::BAD_GATEWAY, b"x"),
            CallError::Unavailable(_)
        ));
    }

    #[test]
    fn only_http_urls_and_readable_ca_files_make_a_client() {
        let timeout = Duration::from_secs(1);
        assert!(ControlClient::new("http://127.0.0.1:3111/", "s", timeout, None).is_ok());
        assert!(ControlClient::new("ftp://127.0.0.1", "s", timeout, None).is_err());
        assert!(ControlClient::new("not a url", "s", timeout, None).is_err());
        let missing = std::path::Path::new("/nonexistent/ca.pem");
        assert!(ControlClient::new("https://127.0.0.1", "s", timeout, Some(missing)).is_err());
    }
}
