//! One HTTP call: posting an [`EdgePushRequest`] to an edge's internal push endpoint.
//!
//! `POST <push_url>/internal/push`, body protobuf, `Authorization: Bearer <token>` (the worker's
//! node token, read from its [`TokenCell`] per request so renewals apply at once; the cluster
//! secret only for edges that still accept it), answer an [`EdgePushResponse`]. `https` push URLs
//! are verified against the system's roots plus `job_edge_ca_file`. The outcome is classified for the lane's retry loop: a 2xx means the
//! edge took the pushes; 413 means the request is over the edge's body limit (the lane splits it);
//! 400 and 422 mean the edge will never take it (retrying would wedge the region), so that part is
//! dropped and counted; 401/403 mean the edge does not accept this job's credential (an expired
//! token, keys the edge has yet to fetch, a configuration error: reported loudly, retried); a refused connection and 503 are told apart from other
//! failures, because from a draining edge they mean "stopping" and are final; anything else
//! (timeout, other 5xx) is worth retrying while the lane's deadline allows.

use prost::Message;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use rim_proto::node_token::TokenCell;
use rim_proto::schema::{EdgePushRequest, EdgePushResponse};
use std::path::Path;
use std::time::Duration;

/// Path of the edge's push endpoint, appended to its `push_url`.
pub const PUSH_PATH: &str = "/internal/push";

/// Content type of protobuf bodies on internal calls.
const PROTOBUF: &str = "application/x-protobuf";

/// Largest answer read from an edge: one varint per push fits many times over.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why an edge did not take a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EdgeFailure {
    /// Worth retrying: the edge is slow, or failing for now.
    #[error("{0}")]
    Retry(String),
    /// Nobody accepts connections at the edge's address (stopped, or not started yet).
    #[error("connection refused: {0}")]
    Refused(String),
    /// The edge answered 503: overloaded, or shutting down and refusing new pushes.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The edge refused the credential (401/403).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The request is larger than the edge accepts; smaller requests may pass.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The edge refuses this request for good (it cannot read it).
    #[error("rejected: {0}")]
    Rejected(String),
}

impl EdgeFailure {
    /// The `reason` label of `rim_job_edge_errors_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            EdgeFailure::Retry(_) => "failed",
            EdgeFailure::Refused(_) => "refused",
            EdgeFailure::Unavailable(_) => "unavailable",
            EdgeFailure::Unauthorized(_) => "unauthorized",
            EdgeFailure::TooLarge(_) => "too_large",
            EdgeFailure::Rejected(_) => "rejected",
        }
    }
}

/// Posts push requests to edges with the worker's credential.
pub(crate) struct EdgeClient {
    http: reqwest::Client,
    bearer: TokenCell,
}

impl EdgeClient {
    /// A client presenting `bearer` whose requests time out after `timeout`, trusting the CAs of
    /// `ca_file` too.
    pub(crate) fn new(
        bearer: TokenCell,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        // reqwest is built without a bundled crypto provider; the workspace uses ring. Another
        // component may have installed it already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|err| format!("reading job_edge_ca_file {}: {err}", path.display()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|err| format!("parsing job_edge_ca_file {}: {err}", path.display()))?;
            builder = builder.tls_certs_merge(roots);
        }
        let http = builder
            .build()
            .map_err(|err| format!("http client: {err}"))?;
        Ok(Self { http, bearer })
    }

    /// The `Authorization` header for the current token.
    fn authorization(&self) -> Result<HeaderValue, EdgeFailure> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", self.bearer.get())).map_err(|_| {
                EdgeFailure::Unauthorized("the token is not a valid header value".into())
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Posts one request; `Ok` once the edge took it, with what it answered.
    pub(crate) async fn push(
        &self,
        push_url: &str,
        request: &EdgePushRequest,
    ) -> Result<EdgePushResponse, EdgeFailure> {
        let url = format!("{}{PUSH_PATH}", push_url.trim_end_matches('/'));
        let mut response = self
            .http
            .post(&url)
            .header(AUTHORIZATION, self.authorization()?)
            .header(CONTENT_TYPE, PROTOBUF)
            .body(request.encode_to_vec())
            .send()
            .await
            .map_err(|err| {
                if err.is_connect() {
                    EdgeFailure::Refused(format!("{url}: {err}"))
                } else {
                    EdgeFailure::Retry(format!("{url}: {err}"))
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            let reason = format!("{url} answered {status}");
            return Err(match status {
                StatusCode::PAYLOAD_TOO_LARGE => EdgeFailure::TooLarge(reason),
                StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                    EdgeFailure::Rejected(reason)
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    // Whoever renews the token renews it now.
                    self.bearer.refused();
                    EdgeFailure::Unauthorized(reason)
                }
                StatusCode::SERVICE_UNAVAILABLE => EdgeFailure::Unavailable(reason),
                _ => EdgeFailure::Retry(reason),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| EdgeFailure::Retry(format!("{url}: reading answer: {err}")))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(EdgeFailure::Retry(format!(
                    "{url}: answer over {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        EdgePushResponse::decode(body.as_slice())
            .map_err(|err| EdgeFailure::Retry(format!("{url}: undecodable answer: {err}")))
    }
}
