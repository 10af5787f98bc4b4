//! The edge's metrics, named in one place.
//!
//! Everything goes through the `metrics` facade; the process installs the Prometheus recorder and the
//! internal endpoint renders it at `/metrics`. Labels are small fixed sets (never keys, rooms or
//! client-chosen values), so cardinality stays bounded.

use metrics::{
    Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Registers help texts for every edge metric (idempotent).
pub fn describe() {
    describe_counter!("rim_edge_accepted_total", "Sockets accepted, by transport");
    describe_counter!(
        "rim_edge_rejected_total",
        "Sockets refused at accept or during the TLS/WebSocket handshake, by reason"
    );
    describe_gauge!(
        "rim_edge_sockets",
        "Open client sockets, authenticated or not"
    );
    describe_gauge!("rim_edge_connections", "Authenticated connections");
    describe_counter!("rim_edge_auth_total", "Auth attempts by outcome");
    describe_counter!("rim_edge_closes_total", "Closed connections by reason");
    describe_counter!("rim_edge_pushes_total", "Pushes executed, by target kind");
    describe_counter!(
        "rim_edge_push_duplicates_total",
        "Pushes skipped because their delivery (message id, record) was executed within the window"
    );
    describe_counter!(
        "rim_edge_dedup_evictions_total",
        "Deliveries forgotten before the end of the dedup window because its memory was full"
    );
    describe_counter!(
        "rim_edge_push_refused_total",
        "Push requests answered 503, by reason (stopping: the edge is shutting down)"
    );
    describe_counter!(
        "rim_edge_auth_report_total",
        "Auth replies by how the wait for the control plane's acknowledgement of the connect ended"
    );
    describe_counter!("rim_edge_deliveries_total", "Pushes queued to a connection");
    describe_counter!(
        "rim_edge_drops_total",
        "Pushes not queued to a connection, by reason (behind_bytes, behind_time, closing, broadcast_backlog)"
    );
    describe_histogram!(
        "rim_edge_write_batch_frames",
        "Frames a connection's writer sent in one write (its queue depth when it woke)"
    );
    describe_counter!(
        "rim_edge_upstream_messages_total",
        "Client upstream messages"
    );
    describe_counter!(
        "rim_edge_internal_unauthorized_total",
        "Internal API calls without the cluster secret"
    );
}

/// A socket was accepted on `transport` (tcp, tls, ws, wss).
pub fn accepted(transport: &'static str) {
    counter!("rim_edge_accepted_total", "transport" => transport).increment(1);
    gauge!("rim_edge_sockets").increment(1.0);
}

/// An accepted socket closed.
pub fn socket_closed() {
    gauge!("rim_edge_sockets").decrement(1.0);
}

/// A socket was refused before auth.
pub fn rejected(reason: &'static str) {
    counter!("rim_edge_rejected_total", "reason" => reason).increment(1);
}

/// An auth attempt ended with `outcome` (ok, malformed, rejected, unavailable, timeout).
pub fn auth(outcome: &'static str) {
    counter!("rim_edge_auth_total", "outcome" => outcome).increment(1);
}

/// A connection authenticated (`up`) or an authenticated one ended.
pub fn connection(up: bool) {
    let gauge = gauge!("rim_edge_connections");
    if up {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

/// A connection closed for `reason`.
pub fn closed(reason: &'static str) {
    counter!("rim_edge_closes_total", "reason" => reason).increment(1);
}

/// A push to `target` (keys, room, broadcast) reached `delivered` connections.
pub fn pushed(target: &'static str, delivered: u64) {
    counter!("rim_edge_pushes_total", "target" => target).increment(1);
    deliveries(delivered);
}

/// `count` frames of a push were queued to connections.
pub fn deliveries(count: u64) {
    counter!("rim_edge_deliveries_total").increment(count);
}

/// A push was skipped as a duplicate.
pub fn duplicate() {
    counter!("rim_edge_push_duplicates_total").increment(1);
}

/// A delivery was forgotten before the end of the dedup window (memory bound).
pub fn dedup_evicted() {
    counter!("rim_edge_dedup_evictions_total").increment(1);
}

/// A push request was refused with 503 for `reason` (stopping).
pub fn push_refused(reason: &'static str) {
    counter!("rim_edge_push_refused_total", "reason" => reason).increment(1);
}

/// An auth reply's wait for the connect's acknowledgement ended with `outcome` (acked, timeout,
/// shutdown).
pub fn auth_report(outcome: &'static str) {
    counter!("rim_edge_auth_report_total", "outcome" => outcome).increment(1);
}

/// A push was not queued to one connection for `reason` (behind_bytes, behind_time, closing,
/// broadcast_backlog).
pub fn dropped(reason: &'static str, count: u64) {
    counter!("rim_edge_drops_total", "reason" => reason).increment(count);
}

/// Where writers record how many frames they sent in one write.
///
/// Writes are the hottest path, so the edge looks this handle up once (at start, after the process
/// installed its recorder) instead of in the registry on every write.
pub fn write_batches() -> Histogram {
    histogram!("rim_edge_write_batch_frames")
}

/// A client sent an upstream message with `op`.
pub fn upstream(op: i32) {
    let kind = if op == rim_proto::op::SEND_MSG {
        "send_msg"
    } else {
        "business"
    };
    counter!("rim_edge_upstream_messages_total", "op" => kind).increment(1);
}

/// An internal API call had no valid cluster secret.
pub fn unauthorized() {
    counter!("rim_edge_internal_unauthorized_total").increment(1);
}
