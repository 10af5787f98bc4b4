//! The link's metrics, named `rim_edge_link_*`, in one place so names and labels stay consistent.
//!
//! - `rim_edge_link_events_total{outcome}`: edge session events noted (`queued`, `superseded`,
//!   `unreportable`).
//! - `rim_edge_link_sent_total`: session events the control plane accepted.
//! - `rim_edge_link_dropped_total{reason}`: session events given up on (`buffer_full`: a waiting
//!   disconnect over `edge_link_buffer`; `refused`: control refused the batch as malformed).
//! - `rim_edge_link_calls_total{call, outcome}`: calls to the control plane (`ok`, `unknown_node`,
//!   `too_large`, `refused`, `unavailable`).
//! - `rim_edge_link_unsent_keys`, `rim_edge_link_waiting_disconnects`: the buffer's size.
//! - `rim_edge_link_registrations_total`: successful (re-)registrations.

use crate::buffer::Noted;
use crate::client::CallError;

/// Counts one edge event by what the buffer did with it.
pub(crate) fn noted(outcome: Noted) {
    let label = match outcome {
        Noted::Queued => "queued",
        Noted::Superseded => "superseded",
        Noted::Unreportable => "unreportable",
    };
    metrics::counter!("rim_edge_link_events_total", "outcome" => label).increment(1);
}

/// Counts one call to the control plane by its outcome.
pub(crate) fn call(call: &'static str, result: Result<(), &CallError>) {
    let outcome = match result {
        Ok(()) => "ok",
        Err(CallError::UnknownNode) => "unknown_node",
        Err(CallError::TooLarge(_)) => "too_large",
        Err(CallError::Unauthorized(_)) => "unauthorized",
        Err(CallError::Refused { .. }) => "refused",
        Err(CallError::Unavailable(_)) => "unavailable",
    };
    metrics::counter!("rim_edge_link_calls_total", "call" => call, "outcome" => outcome)
        .increment(1);
}

/// Counts events the control plane accepted.
pub(crate) fn sent(events: usize) {
    metrics::counter!("rim_edge_link_sent_total").increment(events as u64);
}

/// Counts events given up on.
pub(crate) fn dropped(reason: &'static str, events: u64) {
    metrics::counter!("rim_edge_link_dropped_total", "reason" => reason).increment(events);
}

/// Records the buffer's size.
pub(crate) fn buffer(unsent: usize, waiting_disconnects: usize) {
    metrics::gauge!("rim_edge_link_unsent_keys").set(unsent as f64);
    metrics::gauge!("rim_edge_link_waiting_disconnects").set(waiting_disconnects as f64);
}

/// Counts a successful (re-)registration.
pub(crate) fn registered() {
    metrics::counter!("rim_edge_link_registrations_total").increment(1);
}
