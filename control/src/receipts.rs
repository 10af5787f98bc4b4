//! `GET /v1/pushes/{id}`: what became of a push, per target (issue 9, item 4).
//!
//! The inbox records each `(push, target, state)` once with the time it was first reached
//! ([`rim_store::inbox::Inbox::receipts`]): `accepted` and `offline` by the push pipeline, `stored`
//! by the append, `written` by the edges after the socket write, `acked` by the client's acks,
//! `expired` by retention, `fallback` when the fallback webhook was claimed. This route only reads
//! them back, grouped by target:
//!
//! ```json
//! {"message_id": "0192f1c4-9d3e-7b2a-8c11-3f5e9a7b6c4d",
//!  "targets": [{"target": "mid:7", "states": {"accepted": 1764590400000, "stored": 1764590400001}}]}
//! ```
//!
//! Targets are in the receipts' order (users by id, then keys); times are Unix milliseconds. A
//! malformed id is a 400; an id nobody knows (never pushed, a broadcast, or past the receipts'
//! retention) is a 404. Read scope.

use crate::error::ApiError;
use crate::observe::timed_store;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use rim_proto::durable::MessageId;
use rim_store::Scope;
use rim_store::inbox::{Receipt, ReceiptTarget};
use serde::Serialize;
use std::collections::BTreeMap;

/// The answer of `GET /v1/pushes/{id}`.
#[derive(Debug, Serialize, PartialEq)]
pub struct PushReceipts {
    /// The push's id, as the push API answered it.
    pub message_id: String,
    /// One entry per target with at least one receipt.
    pub targets: Vec<TargetReceipts>,
}

/// The states one target of a push reached.
#[derive(Debug, Serialize, PartialEq)]
pub struct TargetReceipts {
    /// `mid:<mid>` or `key:<key>`.
    pub target: String,
    /// State name → when it was first reached (Unix milliseconds).
    pub states: BTreeMap<&'static str, i64>,
}

/// Groups a push's receipts (ordered by target, as the inbox answers them) by target.
pub fn group(message_id: MessageId, receipts: &[Receipt]) -> PushReceipts {
    let mut targets: Vec<(ReceiptTarget, TargetReceipts)> = Vec::new();
    for receipt in receipts {
        if targets
            .last()
            .is_none_or(|(target, _)| *target != receipt.target)
        {
            targets.push((
                receipt.target.clone(),
                TargetReceipts {
                    target: receipt.target.to_text(),
                    states: BTreeMap::new(),
                },
            ));
        }
        if let Some((_, entry)) = targets.last_mut() {
            entry.states.insert(receipt.state.as_str(), receipt.at);
        }
    }
    PushReceipts {
        message_id: message_id.to_string(),
        targets: targets.into_iter().map(|(_, entry)| entry).collect(),
    }
}

/// `GET /v1/pushes/{id}`: the push's receipts per target.
pub async fn push_receipts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<PushReceipts>, ApiError> {
    state.require(&headers, Scope::Read).await?;
    let message_id: MessageId = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a push id (a UUID)")))?;
    let receipts = timed_store("receipts", state.inbox.receipts(message_id)).await?;
    if receipts.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no receipts of push {message_id}: never pushed, a broadcast, or past retention"
        )));
    }
    Ok(Json(group(message_id, &receipts)))
}
