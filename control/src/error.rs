//! One error type for every handler, and the two ways it is shown to callers.
//!
//! Handlers return [`ApiError`]; what the caller sees depends on the API family it called
//! ([`Flavor`]): the versioned `/v1` API and the edge API answer `{"error": kind, "message": ...}`
//! with a precise HTTP status, the goim-compatible routes answer goim's envelope
//! `{"code": -400|-500, "message": ...}` (HTTP 400 for bad parameters as goim does, and the real
//! status for what goim never had: 401, 403, 413, 429, 503). Store and bus failures are mapped here once,
//! so "store unavailable → 503" holds on every route.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rim_bus::BusError;
use rim_store::StoreError;
use serde_json::json;

/// Which API family an error is rendered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `/v1/*`, `/edge/v1/*`, health: JSON `{"error","message"}` with a precise status.
    Rest,
    /// `/goim/*`: goim's `{"code","message"}` envelope.
    Goim,
}

/// Why a request failed, in terms of what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter or body is malformed or out of range (400).
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or credentials nobody issued (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials without the needed scope (403).
    #[error("{0}")]
    Forbidden(String),
    /// The addressed thing does not exist (404); the edge API uses it for unknown nodes.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what exists: a name already taken, a region still served (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the configured limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The caller is over its rate limit (429, with `Retry-After`).
    #[error("{message}")]
    TooManyRequests {
        /// What limit was hit.
        message: String,
        /// How long until a retry can succeed.
        retry_after: std::time::Duration,
    },
    /// A dependency (business webhook) failed (502).
    #[error("{0}")]
    BadGateway(String),
    /// The store or the bus cannot take the request now; nothing was done (503).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status of the error in the REST flavor.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short machine-readable name of the error kind.
    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::BadGateway(_) => "bad_gateway",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// Renders the error for an API family.
    pub fn render(&self, flavor: Flavor) -> Response {
        let status = self.status();
        let message = self.to_string();
        let mut response = match flavor {
            Flavor::Rest => (
                status,
                Json(json!({"error": self.kind(), "message": message})),
            )
                .into_response(),
            Flavor::Goim => {
                let code = if status.is_client_error() { -400 } else { -500 };
                (status, Json(json!({"code": code, "message": message}))).into_response()
            }
        };
        if let ApiError::TooManyRequests { retry_after, .. } = self {
            // Whole seconds, rounded up: a retry after that many seconds finds a token.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnknownNode(node) => {
                ApiError::NotFound(format!("unknown node {node:?}: register it first"))
            }
            StoreError::Invalid(reason) => ApiError::BadRequest(reason),
            StoreError::Unavailable(reason) => {
                ApiError::Unavailable(format!("store unavailable, nothing was changed: {reason}"))
            }
        }
    }
}

impl From<BusError> for ApiError {
    fn from(error: BusError) -> Self {
        ApiError::Unavailable(format!("push not accepted, nothing was sent: {error}"))
    }
}

/// An [`ApiError`] bound to the goim flavor, so goim handlers can use `?` and still answer the
/// envelope.
#[derive(Debug)]
pub struct GoimError(pub ApiError);

impl<E: Into<ApiError>> From<E> for GoimError {
    fn from(error: E) -> Self {
        GoimError(error.into())
    }
}

impl IntoResponse for GoimError {
    fn into_response(self) -> Response {
        self.0.render(Flavor::Goim)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.render(Flavor::Rest)
    }
}
