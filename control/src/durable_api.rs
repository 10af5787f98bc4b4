//! The durable half of the edge API: what a rim-aware connection missed (resume), what it
//! processed (acks) and what an edge wrote to its sockets (receipts).
//!
//! An edge that authenticates a rim-aware connection (see `docs/rim-protocol-extension.md`) asks
//! control for the pushes the client missed after the positions it sent, one page per stream per
//! call, and later reports the client's cumulative acks and the `written` receipts of the durable
//! pushes it wrote, in batches. Control is only the door to the store's inbox
//! ([`rim_store::inbox::Inbox`]): it checks the node token exactly like the lifecycle routes
//! ([`crate::edge_api`]: role edge, the body's node id must be the token's), validates every
//! field, and maps the store's answers to the protobuf messages of `rim_proto::schema`.
//!
//! | route | request | success |
//! |---|---|---|
//! | `/edge/v1/resume` | `ResumeRequest` | 200, `ResumeResponse` |
//! | `/edge/v1/acks` | `AckBatch` | 204 (`Inbox::record_acks`) |
//! | `/edge/v1/receipts` | `ReceiptBatch` | 204 (`written` receipts, `Inbox::record_receipts`) |
//!
//! ## Resume, per stream
//! - No position sent (the client has none): reason 0, no pushes, the current head.
//! - A position the store cannot serve: the op-21 reason code ([`NotResumedReason`]: 1 epoch
//!   changed, 2 expired, 3 ahead) with the head, no pushes.
//! - A position more than [`MAX_RESUME_REPLAY`] behind the head: reason 5 (too many) with the head,
//!   no pushes, whatever the client would have been sent first.
//! - Otherwise reason 0 and one page (at most `limit`, capped at [`RESUME_PAGE`]; 0 means a whole
//!   page) of the stored pushes after the position, in order; `more` is set when the page is full
//!   and its last position is below the head, so the edge asks again from there.
//!
//! The store failing is a 503 (the edge answers the client reason 4, "unavailable"); a malformed
//! field is a 400 naming it, a batch above [`MAX_RECEIPT_BATCH`] a 413 (split it), like the
//! session batches.

use crate::edge_api::{decode, own, protobuf};
use crate::error::ApiError;
use crate::observe::timed_store;
use crate::push::validate_room;
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use rim_proto::durable::{
    MAX_RECEIPT_BATCH, MAX_RESUME_REPLAY, MessageId, NotResumedReason, Position, RESUME_PAGE,
};
use rim_proto::schema::{
    AckBatch, PositionValue, ReceiptBatch, ReplayedPush, ResumeRequest, ResumeResponse,
    StreamResume,
};
use rim_store::inbox::{
    AckEntry, MAX_KEY_LEN, ReadOutcome, Receipt, ReceiptState, ReceiptTarget, StoredPush,
};

/// The durable routes of the edge API (under the edge lifecycle bound on requests in flight).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/edge/v1/resume", post(resume))
        .route("/edge/v1/acks", post(acks))
        .route("/edge/v1/receipts", post(receipts))
}

/// The op-21 reason code of a reason not to resume (0 is "readable").
fn reason_code(reason: NotResumedReason) -> u32 {
    match reason {
        NotResumedReason::EpochChanged => 1,
        NotResumedReason::Expired => 2,
        NotResumedReason::Ahead => 3,
        NotResumedReason::Unavailable => 4,
        NotResumedReason::TooMany => 5,
    }
}

/// The metric label of a stream part's outcome.
fn reason_label(code: u32) -> &'static str {
    match code {
        0 => "resumed",
        1 => "epoch_changed",
        2 => "expired",
        3 => "ahead",
        4 => "unavailable",
        _ => "too_many",
    }
}

/// A position of the wire, checked against the codec's range (400 naming the field otherwise).
fn position(field: &str, value: &PositionValue) -> Result<Position, ApiError> {
    Position::new(value.epoch, value.seq)
        .map_err(|error| ApiError::BadRequest(format!("{field}: {error}")))
}

/// A position as the wire carries it.
fn value(position: Position) -> PositionValue {
    PositionValue {
        epoch: position.epoch,
        seq: position.seq,
    }
}

/// A connection key: 1..=[`MAX_KEY_LEN`] bytes.
fn check_key(field: &str, key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::BadRequest(format!(
            "{field} must be 1..={MAX_KEY_LEN} bytes, got {} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// A batch of 0..=[`MAX_RECEIPT_BATCH`] items (413 above: split the batch).
fn check_batch(what: &str, len: usize) -> Result<(), ApiError> {
    if len > MAX_RECEIPT_BATCH {
        return Err(ApiError::PayloadTooLarge(format!(
            "{len} {what} in one batch; at most {MAX_RECEIPT_BATCH}"
        )));
    }
    Ok(())
}

/// What a resume request asks for, checked.
struct Asked<'a> {
    /// The user stream: the user, the connection's key (if any) and its position (if any).
    user: Option<(i64, Option<&'a str>, Option<Position>)>,
    /// The room stream: the room and the position (if any).
    room: Option<(&'a str, Option<Position>)>,
    /// Pushes per stream in this answer.
    limit: usize,
}

/// Checks every field of a resume request (400 naming the first bad one).
fn check_resume(request: &ResumeRequest) -> Result<Asked<'_>, ApiError> {
    let user = if request.want_user {
        if request.mid == 0 {
            return Err(ApiError::BadRequest(
                "want_user with mid 0: the anonymous user has no stream".into(),
            ));
        }
        let key = if request.key.is_empty() {
            None
        } else {
            check_key("key", &request.key)?;
            Some(request.key.as_str())
        };
        let after = request
            .user
            .as_ref()
            .map(|p| position("user", p))
            .transpose()?;
        Some((request.mid, key, after))
    } else {
        if request.user.is_some() {
            return Err(ApiError::BadRequest(
                "a user position without want_user".into(),
            ));
        }
        None
    };
    let room = if request.room.is_empty() {
        if request.room_position.is_some() {
            return Err(ApiError::BadRequest(
                "a room position without a room".into(),
            ));
        }
        None
    } else {
        validate_room(&request.room)?;
        let after = request
            .room_position
            .as_ref()
            .map(|p| position("room_position", p))
            .transpose()?;
        Some((request.room.as_str(), after))
    };
    if user.is_none() && room.is_none() {
        return Err(ApiError::BadRequest(
            "nothing to resume: neither want_user nor a room".into(),
        ));
    }
    let limit = match request.limit {
        0 => RESUME_PAGE,
        limit => usize::try_from(limit).map_or(RESUME_PAGE, |limit| limit.min(RESUME_PAGE)),
    };
    Ok(Asked { user, room, limit })
}

/// One stream's part of the answer from what the store read after `after`; `mid` is the user of a
/// user stream (`None` for a room stream).
fn stream_part(
    after: Position,
    outcome: ReadOutcome,
    limit: usize,
    mid: Option<i64>,
) -> StreamResume {
    match outcome {
        ReadOutcome::NotResumable { reason, head } => StreamResume {
            reason: reason_code(reason),
            head: Some(value(head)),
            ..StreamResume::default()
        },
        // Same epoch and within the head: the store answers a page only then.
        ReadOutcome::Page { head, .. }
            if head.seq.saturating_sub(after.seq) > MAX_RESUME_REPLAY as u64 =>
        {
            StreamResume {
                reason: reason_code(NotResumedReason::TooMany),
                head: Some(value(head)),
                ..StreamResume::default()
            }
        }
        ReadOutcome::Page { pushes, head } => {
            let more =
                pushes.len() >= limit && pushes.last().is_some_and(|p| p.position.seq < head.seq);
            StreamResume {
                reason: 0,
                head: Some(value(head)),
                pushes: pushes.into_iter().map(|push| replayed(push, mid)).collect(),
                more,
            }
        }
    }
}

/// A stored push as a resume replays it; `mid` names the user of a user stream (`None` for a
/// room), so the edge can record `written` receipts for the target the push was for.
fn replayed(push: StoredPush, mid: Option<i64>) -> ReplayedPush {
    let receipt_target = mid
        .map(|mid| ReceiptTarget::of_entry(mid, push.key.as_deref()).to_text())
        .unwrap_or_default();
    ReplayedPush {
        message_id: bytes::Bytes::copy_from_slice(&push.message_id.0),
        operation: push.operation,
        body: push.body.into(),
        position: Some(value(push.position)),
        receipt_target,
    }
}

/// The part of a stream the client sent no position for: where it stands now, nothing replayed.
fn head_only(head: Position) -> StreamResume {
    StreamResume {
        reason: 0,
        head: Some(value(head)),
        ..StreamResume::default()
    }
}

/// Counts a stream part's outcome and replayed pushes.
fn count(stream: &'static str, part: &StreamResume) {
    metrics::counter!("rim_control_resume_streams_total", "stream" => stream, "outcome" => reason_label(part.reason))
        .increment(1);
    metrics::counter!("rim_control_resume_pushes_total", "stream" => stream)
        .increment(part.pushes.len() as u64);
}

/// `POST /edge/v1/resume`.
async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (claims, request): (_, ResumeRequest) = decode(&state, &headers, body).await?;
    own(&claims, &request.node_id)?;
    let asked = check_resume(&request)?;
    let mut answer = ResumeResponse::default();
    if let Some((mid, key, after)) = asked.user {
        let part = match after {
            None => head_only(timed_store("user_head", state.inbox.user_head(mid)).await?),
            Some(after) => {
                let outcome = timed_store(
                    "read_user",
                    state.inbox.read_user(mid, key, after, asked.limit),
                )
                .await?;
                stream_part(after, outcome, asked.limit, Some(mid))
            }
        };
        count("user", &part);
        answer.user = Some(part);
    }
    if let Some((room, after)) = asked.room {
        let part = match after {
            None => head_only(timed_store("room_head", state.inbox.room_head(room)).await?),
            Some(after) => {
                let outcome = timed_store(
                    "read_room",
                    state
                        .inbox
                        .read_room(room, after, asked.limit, crate::now_ms()),
                )
                .await?;
                stream_part(after, outcome, asked.limit, None)
            }
        };
        count("room", &part);
        answer.room = Some(part);
    }
    Ok(protobuf(&answer))
}

/// `POST /edge/v1/acks`.
async fn acks(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let (claims, batch): (_, AckBatch) = decode(&state, &headers, body).await?;
    own(&claims, &batch.node_id)?;
    check_batch("acks", batch.acks.len())?;
    let acks = batch
        .acks
        .iter()
        .map(|ack| {
            if ack.mid == 0 {
                return Err(ApiError::BadRequest(
                    "an ack of mid 0: the anonymous user has no stream".into(),
                ));
            }
            check_key("ack key", &ack.key)?;
            let position = Position::new(ack.epoch, ack.seq).map_err(|error| {
                ApiError::BadRequest(format!("ack of mid {}: {error}", ack.mid))
            })?;
            Ok(AckEntry {
                mid: ack.mid,
                key: ack.key.clone(),
                position,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    if acks.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let report = timed_store(
        "record_acks",
        state.inbox.record_acks(&acks, crate::now_ms()),
    )
    .await?;
    metrics::counter!("rim_control_acks_total", "applied" => "true").increment(report.applied);
    metrics::counter!("rim_control_acks_total", "applied" => "false").increment(report.stale);
    metrics::counter!("rim_control_receipts_total", "state" => "acked")
        .increment(report.acked_pushes);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /edge/v1/receipts`.
async fn receipts(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let (claims, batch): (_, ReceiptBatch) = decode(&state, &headers, body).await?;
    own(&claims, &batch.node_id)?;
    check_batch("receipts", batch.receipts.len())?;
    let receipts = batch
        .receipts
        .iter()
        .map(|receipt| {
            let id: [u8; 16] = receipt.message_id[..].try_into().map_err(|_| {
                ApiError::BadRequest(format!(
                    "a receipt's message_id must be 16 bytes, got {}",
                    receipt.message_id.len()
                ))
            })?;
            let target = written_target(&receipt.target)?;
            if receipt.at_unix_ms <= 0 {
                return Err(ApiError::BadRequest(format!(
                    "a receipt's at_unix_ms must be positive, got {}",
                    receipt.at_unix_ms
                )));
            }
            Ok(Receipt {
                message_id: MessageId(id),
                target,
                state: ReceiptState::Written,
                at: receipt.at_unix_ms,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    if receipts.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let new = timed_store("record_receipts", state.inbox.record_receipts(&receipts)).await?;
    metrics::counter!("rim_control_receipts_total", "state" => "written").increment(new);
    Ok(StatusCode::NO_CONTENT)
}

/// A receipt target of the push's record (`mid:<mid>`, not 0, or `key:<key>`), 400 otherwise.
fn written_target(text: &str) -> Result<ReceiptTarget, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "receipt target {:?} is neither mid:<user> (not 0) nor key:<key> (1..={MAX_KEY_LEN} bytes)",
            text.chars().take(64).collect::<String>()
        ))
    };
    match ReceiptTarget::from_text(text).ok_or_else(bad)? {
        ReceiptTarget::Mid(0) => Err(bad()),
        ReceiptTarget::Key(key) if key.is_empty() || key.len() > MAX_KEY_LEN => Err(bad()),
        target => Ok(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64) -> Position {
        Position { epoch: 0, seq }
    }

    fn stored(seq: u64) -> StoredPush {
        StoredPush {
            position: at(seq),
            message_id: MessageId([seq as u8; 16]),
            key: None,
            operation: 1000,
            body: vec![seq as u8],
            stored_at: 1,
        }
    }

    #[test]
    fn a_full_page_below_the_head_asks_for_more_and_the_last_page_does_not() {
        let full = stream_part(
            at(0),
            ReadOutcome::Page {
                pushes: (1..=2).map(stored).collect(),
                head: at(3),
            },
            2,
            None,
        );
        assert_eq!((full.reason, full.pushes.len(), full.more), (0, 2, true));
        let last = stream_part(
            at(2),
            ReadOutcome::Page {
                pushes: vec![stored(3)],
                head: at(3),
            },
            2,
            None,
        );
        assert_eq!((last.reason, last.pushes.len(), last.more), (0, 1, false));
        // A full page that reaches the head: nothing more to ask for.
        let exact = stream_part(
            at(1),
            ReadOutcome::Page {
                pushes: (2..=3).map(stored).collect(),
                head: at(3),
            },
            2,
            None,
        );
        assert!(!exact.more);
    }

    #[test]
    fn replayed_pushes_name_their_receipt_target_on_user_streams_only() {
        let mut key_push = stored(2);
        key_push.key = Some("phone".into());
        let page = || ReadOutcome::Page {
            pushes: vec![stored(1), key_push.clone()],
            head: at(2),
        };
        let user = stream_part(at(0), page(), RESUME_PAGE, Some(7));
        let targets: Vec<&str> = user
            .pushes
            .iter()
            .map(|p| p.receipt_target.as_str())
            .collect();
        assert_eq!(targets, ["mid:7", "key:phone"]);
        let room = stream_part(at(0), page(), RESUME_PAGE, None);
        assert!(room.pushes.iter().all(|p| p.receipt_target.is_empty()));
    }

    #[test]
    fn more_than_one_replay_behind_is_too_many_up_front() {
        let head = at(MAX_RESUME_REPLAY as u64 + 1);
        let part = stream_part(
            at(0),
            ReadOutcome::Page {
                pushes: vec![stored(1)],
                head,
            },
            RESUME_PAGE,
            None,
        );
        assert_eq!(part.reason, 5);
        assert!(part.pushes.is_empty());
        assert_eq!(part.head, Some(value(head)));
        // Exactly the bound is still replayed.
        let part = stream_part(
            at(1),
            ReadOutcome::Page {
                pushes: vec![stored(2)],
                head,
            },
            RESUME_PAGE,
            None,
        );
        assert_eq!(part.reason, 0);
    }

    #[test]
    fn receipt_targets_are_checked() {
        assert_eq!(written_target("mid:7").unwrap(), ReceiptTarget::Mid(7));
        assert_eq!(
            written_target("key:k").unwrap(),
            ReceiptTarget::Key("k".into())
        );
        for bad in [
            "mid:0",
            "mid:x",
            "key:",
            "room:a",
            "",
            &format!("key:{}", "k".repeat(257)),
        ] {
            assert!(written_target(bad).is_err(), "{bad}");
        }
    }
}
