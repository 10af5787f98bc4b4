//! The life of one client connection, written once for every transport.
//!
//! 1. Handshake: within the handshake timeout, wait for op 7 (other packets are ignored, like goim),
//!    verify it, register the channel (replacing any connection with the same key), report the connect
//!    and wait (at most `edge_auth_report_timeout_ms`) for the control plane to acknowledge it, reply
//!    op 8. goim registers the session before answering too: a push sent as soon as the client has its
//!    reply must find the session. If control is down or slow the client is answered after the bound
//!    anyway (counted as `rim_edge_auth_report_total{outcome="timeout"}`, logged), so an outage of
//!    control never holds logins longer than that. A refused auth gets an op-8 reply whose body is a
//!    JSON error, then the close.
//! 2. Serve: a single task `select!`s over the socket and the outbox. A heartbeat moves the channel's
//!    deadline forward; the edge's sweeper closes, through the outbox, a connection whose deadline
//!    passed, and every connection at shutdown (see [`crate::heartbeat`]), so an idle connection
//!    costs one small task, no timer and no buffers. Whatever is queued is written in one go.
//! 3. Close: unregister (only if the key is still ours), report, tell the client why.
//!
//! Connects, refused auths and closes are logged at info level in one compact line each, rate-limited
//! ([`crate::ratelog`]) since they happen once per connection.
//!
//! # Refused room and watch-set changes
//!
//! goim answers every op 12 with op 13 echoing the body, moving the connection wherever it asks. rim
//! moves it only to a room its identity grants (see [`crate::auth::rooms`]) whose id fits
//! [`rim_proto::limits::MAX_ROOM_LEN`]; otherwise the op-13 reply carries, instead of the echo, a
//! JSON error such as `{"error":"room \"live://2\" is not granted to this connection (see the
//! `rooms` of its token)","reason":"room_forbidden","room":"live://2"}` (reason `room_forbidden` or
//! `room_too_long`), and the connection stays open in its old room. Likewise an op 14 that would grow
//! the watch set past [`rim_proto::limits::MAX_WATCH_OPS`] gets an op-15 reply
//! `{"error":"...","reason":"watch_set_too_large"}` and leaves the set unchanged. A client tells a
//! refusal from a confirmation by comparing the reply's body with what it sent. An auth whose identity
//! is past either bound is refused like any other bad auth.
//!
//! # rim-aware connections
//!
//! An auth body with a `rim` field ([`crate::auth::body::rim_field`]; a malformed one refuses the
//! auth, before any verifier is asked) makes the connection rim-aware: after the auth reply it is
//! resumed before anything else is written to it, a room change is followed by the new room's op-21
//! answer, and its op 22 is an ack (decoded, a malformed one closes the connection; never answered)
//! instead of an upstream message; see [`crate::durable`]. Every other connection is served exactly
//! as before. For every connection, the `written` receipts of the durable pushes a write carried are
//! recorded once the write is done.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rim_proto::durable::{self, Ack};
use rim_proto::schema::DeviceAck;
use rim_proto::{Packet, op};
use tokio::time::Instant;

use crate::auth::{AuthError, AuthRequest};
use crate::channel::{Channel, RoomRefusal};
use crate::close::CloseReason;
use crate::hooks::{ConnectAck, UpstreamMessage, UpstreamReply};
use crate::limits::Permit;
use crate::metrics;
use crate::outbox::{Frame, Frames};
use crate::ratelog::RateLimit;
use crate::state::Shared;
use crate::transport::Transport;

/// Longest time spent telling a client it is being closed.
const CLOSE_BUDGET: Duration = Duration::from_secs(1);

/// Log lines per second for each kind of per-connection event.
static CONNECT_LOG: RateLimit = RateLimit::new(10);
static CLOSE_LOG: RateLimit = RateLimit::new(10);
static AUTH_FAILURE_LOG: RateLimit = RateLimit::new(10);
static REPORT_TIMEOUT_LOG: RateLimit = RateLimit::new(1);
static REFUSED_CHANGE_LOG: RateLimit = RateLimit::new(10);

/// Runs a connection from its first byte to its close. `deadline` is when auth must be done by;
/// `permit` is the socket's admission, given back when the connection ends.
///
/// Not an `async fn`: an `async fn` keeps its arguments twice in its future (as passed and as
/// bound), and this future is the connection's task, alive as long as the connection. For the same
/// reason the handshake, which holds much while it lasts (timeouts, the verifier's call), is boxed:
/// its memory is given back once the connection is authenticated.
#[allow(clippy::manual_async_fn)] // deliberately not an `async fn` (see its docs)
pub fn run<T: Transport>(
    mut transport: T,
    shared: Arc<Shared>,
    ip: IpAddr,
    deadline: Instant,
    permit: Permit,
) -> impl Future<Output = ()> + Send {
    async move {
        let handshake = Box::pin(handshake(&mut transport, &shared, ip, deadline)).await;
        let reason = match handshake {
            Err(reason) => reason,
            Ok((channel, auth_reply)) => {
                let reason = serve(&mut transport, &shared, &channel, auth_reply).await;
                let owned = shared.buckets.unregister(&channel);
                metrics::connection(false);
                shared.events.disconnected(&channel, owned);
                if let Some(suppressed) = CLOSE_LOG.allow() {
                    tracing::info!(key = %channel.key(), id = channel.id(), %ip, reason = reason.label(), detail = %reason, suppressed, "client closed");
                }
                reason
            }
        };
        metrics::closed(reason.label());
        if !matches!(reason, CloseReason::ClientClosed | CloseReason::Io) {
            let _ = tokio::time::timeout(CLOSE_BUDGET, transport.close(&reason)).await;
        }
        drop(permit);
    }
}

/// Waits for the auth packet, verifies it and registers the connection (rim-aware when the body
/// has a `rim` field). Returns the channel and the encoded auth reply to send first.
async fn handshake<T: Transport>(
    transport: &mut T,
    shared: &Shared,
    ip: IpAddr,
    deadline: Instant,
) -> Result<(Arc<Channel>, Bytes), CloseReason> {
    let auth = tokio::select! {
        () = shared.shutdown.cancelled() => return Err(CloseReason::Shutdown),
        auth = tokio::time::timeout_at(deadline, wait_for_auth(transport)) => auth,
    };
    let auth = match auth {
        Err(_) => return Err(auth_failed(ip, "timeout", CloseReason::HandshakeTimeout)),
        Ok(auth) => auth?,
    };
    // Boxed: held across the verification, it must not grow every connection's handshake.
    let rim = match crate::auth::body::rim_field(&auth.body) {
        Ok(rim) => rim.map(Box::new),
        Err(error) => return Err(refuse(transport, &auth, ip, &error).await),
    };
    let request = AuthRequest {
        body: &auth.body,
        client_ip: ip,
    };
    let identity = match tokio::time::timeout_at(deadline, shared.verifier.verify(request)).await {
        Err(_) => return Err(auth_failed(ip, "timeout", CloseReason::HandshakeTimeout)),
        Ok(Err(error)) => return Err(refuse(transport, &auth, ip, &error).await),
        Ok(Ok(identity)) => identity,
    };
    if let Err(error) = identity.check_bounds() {
        return Err(refuse(transport, &auth, ip, &error).await);
    }
    metrics::auth("ok");
    let key: Arc<str> = match identity.key.is_empty() {
        true => Arc::from(uuid::Uuid::now_v7().simple().to_string()),
        false => Arc::from(identity.key.as_str()),
    };
    let channel = Channel::new(shared.next_connection_id(), key, &identity, ip);
    let channel = Arc::new(match rim {
        Some(rim) => channel.rim_aware(*rim),
        None => channel,
    });
    if let Some(replaced) = shared.buckets.register(&channel) {
        replaced.outbox.close(CloseReason::Replaced);
    }
    crate::heartbeat::closes_if_shut_down(&channel, &shared.shutdown);
    metrics::connection(true);
    if let Some(ack) = shared.events.connected(&channel) {
        await_report(shared, &channel, ack).await;
    }
    if let Some(suppressed) = CONNECT_LOG.allow() {
        tracing::info!(key = %channel.key(), id = channel.id(), mid = channel.mid(), %ip, platform = channel.platform(), room = channel.room().as_deref().unwrap_or(""), suppressed, "client connected");
    }
    Ok((channel, auth.reply(op::AUTH_REPLY, Bytes::new()).to_bytes()))
}

/// Refuses an auth for `error`: the op-8 reply saying why, counted and logged; returns the reason
/// to close with.
async fn refuse<T: Transport>(
    transport: &mut T,
    auth: &Packet,
    ip: IpAddr,
    error: &AuthError,
) -> CloseReason {
    refuse_auth(transport, auth, error).await;
    auth_failed(
        ip,
        error.label(),
        CloseReason::AuthFailed(error.to_string()),
    )
}

/// Sends the op-8 reply of a refused auth: a JSON error the client can read before the close.
async fn refuse_auth<T: Transport>(transport: &mut T, auth: &Packet, error: &AuthError) {
    let body = serde_json::json!({ "error": error.to_string(), "reason": error.label() });
    let reply = auth.reply(op::AUTH_REPLY, body.to_string().into_bytes());
    let refusal = [Frame::Packet(reply.to_bytes())];
    let _ = tokio::time::timeout(CLOSE_BUDGET, transport.send(&refusal)).await;
}

/// Counts and logs (rate-limited) an auth that failed with `outcome`; returns `reason` to close with.
fn auth_failed(ip: IpAddr, outcome: &'static str, reason: CloseReason) -> CloseReason {
    metrics::auth(outcome);
    if let Some(suppressed) = AUTH_FAILURE_LOG.allow() {
        tracing::info!(%ip, outcome, detail = %reason, suppressed, "auth failed");
    }
    reason
}

/// Waits, at most `edge_auth_report_timeout_ms`, until the control plane acknowledged the connect
/// (see the module docs); the client is answered in any case once this returns.
async fn await_report(shared: &Shared, channel: &Channel, ack: ConnectAck) {
    let bound = shared.settings.auth_report_timeout;
    if bound.is_zero() {
        return;
    }
    tokio::select! {
        () = shared.shutdown.cancelled() => metrics::auth_report("shutdown"),
        acked = tokio::time::timeout(bound, ack) => match acked {
            Ok(()) => metrics::auth_report("acked"),
            Err(_) => {
                metrics::auth_report("timeout");
                if let Some(suppressed) = REPORT_TIMEOUT_LOG.allow() {
                    tracing::warn!(
                        key = %channel.key(),
                        id = channel.id(),
                        timeout_ms = bound.as_millis() as u64,
                        suppressed,
                        "control plane did not acknowledge the connect in time; auth answered anyway \
                         (a push sent right now may find the client offline)"
                    );
                }
            }
        },
    }
}

/// Reads packets until op 7; anything else before auth is ignored (goim behaviour).
async fn wait_for_auth<T: Transport>(transport: &mut T) -> Result<Packet, CloseReason> {
    loop {
        match transport.recv().await {
            Ok(Some(packet)) if packet.op == op::AUTH => return Ok(packet),
            Ok(Some(_)) => {}
            Ok(None) => return Err(CloseReason::ClientClosed),
            Err(error) => return Err(error.close_reason()),
        }
    }
}

/// The authenticated phase (a rim-aware connection is resumed first); returns why it ended.
///
/// This future is most of an idle connection's memory, so it is laid out with care: no `async fn`
/// (which keeps its arguments twice), rare paths boxed, and what only the first write needs scoped
/// so that it takes no room in the loop.
#[allow(clippy::manual_async_fn)] // deliberately not an `async fn` (see its docs)
fn serve<T: Transport>(
    transport: &mut T,
    shared: &Shared,
    channel: &Arc<Channel>,
    auth_reply: Bytes,
) -> impl Future<Output = CloseReason> + Send {
    async move {
        // Silence is counted from the end of the handshake.
        channel
            .heartbeat_deadline()
            .set(shared.heartbeats.deadline_from_now());
        // The resumes are boxed: a plain connection's task must not grow by their state.
        let first = match channel.rim().map(|rim| rim.auth) {
            None => Frames::from(Frame::Packet(auth_reply)),
            Some(rim) => {
                let resumed =
                    crate::durable::resume::after_auth(transport, shared, channel, auth_reply, rim);
                match Box::pin(resumed).await {
                    Ok(first) => first,
                    Err(reason) => return reason,
                }
            }
        };
        if let Err(reason) = flush(transport, shared, channel, first).await {
            return reason;
        }
        loop {
            // Scoped: the packet takes no room in the future while the connection writes or waits.
            let pending = {
                let packet = tokio::select! {
                    biased;
                    () = channel.outbox.ready() => None,
                    packet = transport.recv() => match packet {
                        Ok(Some(packet)) => Some(packet),
                        Ok(None) => return CloseReason::ClientClosed,
                        Err(error) => return error.close_reason(),
                    },
                };
                match packet {
                    None => Frames::Empty,
                    Some(packet) => match respond(transport, shared, channel, packet).await {
                        Ok(pending) => pending,
                        Err(reason) => return reason,
                    },
                }
            };
            if let Err(reason) = flush(transport, shared, channel, pending).await {
                return reason;
            }
        }
    }
}

/// Answers one client packet after auth: returns what to write (a rim-aware connection's room
/// change is followed by the new room's resume, boxed like the first one). Not an `async fn`, which
/// would keep the packet twice.
#[allow(clippy::manual_async_fn)] // deliberately not an `async fn` (see its docs)
fn respond<T: Transport>(
    transport: &mut T,
    shared: &Shared,
    channel: &Arc<Channel>,
    packet: Packet,
) -> impl Future<Output = Result<Frames, CloseReason>> + Send {
    async move {
        if packet.op == op::CHANGE_ROOM && channel.rim().is_some() {
            let moved = crate::durable::resume::change_room(transport, shared, channel, packet);
            return Box::pin(moved).await;
        }
        let reply = handle(shared, channel, packet).await?;
        Ok(reply.map_or(Frames::Empty, |reply| Frames::from(Frame::Packet(reply))))
    }
}

/// Writes `pending` and everything queued, draining until the outbox is empty. A write that cannot
/// finish is abandoned when the connection is asked to close (its heartbeat deadline passing is
/// such a request, see [`crate::heartbeat`]). When a close is requested for a reason that lets the
/// client have what was queued for it (a takeover: those pushes were counted as reaching it; a
/// shutdown), that is written first, within [`CLOSE_BUDGET`]. The
/// `written` receipts of what each write carried are recorded once it is done.
///
/// Like [`send`], a plain function returning its future: an `async fn` would keep its arguments
/// twice in every connection's future.
#[allow(clippy::manual_async_fn)] // deliberately not an `async fn` (see its docs)
pub(crate) fn flush<T: Transport>(
    transport: &mut T,
    shared: &Shared,
    channel: &Channel,
    mut pending: Frames,
) -> impl Future<Output = Result<(), CloseReason>> + Send {
    async move {
        loop {
            let (queued, closed) = channel.outbox.drain();
            if pending.is_empty() {
                pending = queued;
            } else {
                pending.extend(queued);
            }
            if let Some(reason) = closed {
                if reason.delivers_queued() {
                    // Boxed: a rare last write must not grow every connection's future.
                    Box::pin(send_within_budget(transport, &pending)).await;
                }
                return Err(reason);
            }
            if pending.is_empty() {
                return Ok(());
            }
            send(transport, shared, channel, &pending).await?;
            let receipts = channel.outbox.written();
            if let Some(link) = &shared.durable {
                receipts
                    .iter()
                    .for_each(|receipts| receipts.record(&**link));
            }
            pending = Frames::Empty;
        }
    }
}

/// Writes `frames` (not the outbox's: the caller reports those written), abandoning the write when
/// the connection is asked to close (also when its heartbeat deadline passes). (Not an `async fn`:
/// it would keep its arguments twice, see [`run`].)
#[allow(clippy::manual_async_fn)] // deliberately not an `async fn` (see its docs)
pub(crate) fn send<T: Transport>(
    transport: &mut T,
    shared: &Shared,
    channel: &Channel,
    frames: &[Frame],
) -> impl Future<Output = Result<(), CloseReason>> + Send {
    shared.write_batches.record(frames.len() as f64);
    async move {
        // Biased: a write that completes at once never registers for a close.
        tokio::select! {
            biased;
            written = transport.send(frames) => written.map_err(|_| CloseReason::Io),
            reason = channel.outbox.closed() => Err(reason),
        }
    }
}

/// Writes `frames` to a connection that is closing, giving up after [`CLOSE_BUDGET`].
async fn send_within_budget<T: Transport>(transport: &mut T, frames: &[Frame]) {
    if !frames.is_empty() {
        let _ = tokio::time::timeout(CLOSE_BUDGET, transport.send(frames)).await;
    }
}

/// Answers one client packet after auth; returns the reply to send, if any. (Not an `async fn`:
/// it would keep the packet twice.)
#[allow(clippy::manual_async_fn)] // deliberately not an `async fn` (see its docs)
fn handle(
    shared: &Shared,
    channel: &Arc<Channel>,
    packet: Packet,
) -> impl Future<Output = Result<Option<Bytes>, CloseReason>> + Send {
    async move {
        let reply = match packet.op {
            op::HEARTBEAT => {
                channel
                    .heartbeat_deadline()
                    .set(shared.heartbeats.deadline_from_now());
                let online = channel
                    .room()
                    .map_or(0, |room| shared.buckets.room_online(&room));
                let online = i32::try_from(online).unwrap_or(i32::MAX);
                packet.reply(op::HEARTBEAT_REPLY, online.to_be_bytes().to_vec())
            }
            op::AUTH => {
                tracing::debug!(key = %channel.key(), "auth packet after auth ignored");
                return Ok(None);
            }
            op::CHANGE_ROOM => change_room(shared, channel, &packet)?.0,
            durable::ACK if channel.rim().is_some() => {
                ack(shared, channel, &packet)?;
                return Ok(None);
            }
            op::SUB => match channel.watch(&op::parse_op_list(&packet.body)) {
                Ok(()) => packet.reply(op::SUB_REPLY, packet.body.clone()),
                Err(refusal) => {
                    let reason = "watch_set_too_large";
                    refused_change(channel, reason);
                    let body =
                        serde_json::json!({ "error": refusal.to_string(), "reason": reason });
                    packet.reply(op::SUB_REPLY, body.to_string().into_bytes())
                }
            },
            op::UNSUB => {
                channel.unwatch(&op::parse_op_list(&packet.body));
                packet.reply(op::UNSUB_REPLY, packet.body.clone())
            }
            other => match upstream(shared, channel, &packet).await {
                UpstreamReply::Now(body) => packet.reply(other, body),
                UpstreamReply::Later => return Ok(None),
            },
        };
        Ok(Some(reply.to_bytes()))
    }
}

/// Hands an upstream message (op 4 or a business op) to the sink; its answer may come later
/// through the outbox (see [`crate::hooks::ReplyTo`]), so the connection never waits for a backend.
async fn upstream(shared: &Shared, channel: &Arc<Channel>, packet: &Packet) -> UpstreamReply {
    let message = UpstreamMessage {
        channel: channel.clone(),
        packet: packet.clone(),
    };
    shared.upstream.deliver(message).await
}

/// What an op 12 did: the room the connection moved to (`None`: it left its room), or nothing.
pub(crate) type Moved = Option<Option<Arc<str>>>;

/// Answers an op 12: moves the connection if the room is granted. Returns the op-13 reply and, when
/// the change was made, the room the connection is in now. A rim-aware connection's room floor is
/// cleared before the move, so the new room's pushes wait for its op-21 answer.
pub(crate) fn change_room(
    shared: &Shared,
    channel: &Arc<Channel>,
    packet: &Packet,
) -> Result<(Packet, Moved), CloseReason> {
    let room = std::str::from_utf8(&packet.body)
        .map_err(|_| CloseReason::Protocol("room id is not UTF-8".into()))?;
    match channel.may_enter(room) {
        Ok(()) => {
            let room: Option<Arc<str>> = Some(room).filter(|r| !r.is_empty()).map(Arc::from);
            if let Some(rim) = channel.rim() {
                rim.floors.lock().room = None;
            }
            let previous = shared.buckets.change_room(channel, room.clone());
            shared.events.room_changed(channel, previous.as_deref());
            let reply = packet.reply(op::CHANGE_ROOM_REPLY, packet.body.clone());
            Ok((reply, Some(room)))
        }
        Err(refusal) => {
            let mut body = serde_json::json!({
                "error": refusal.to_string(),
                "reason": refusal.label(),
            });
            if let RoomRefusal::Forbidden(room) = &refusal {
                body["room"] = room.as_str().into();
            }
            refused_change(channel, refusal.label());
            let reply = packet.reply(op::CHANGE_ROOM_REPLY, body.to_string().into_bytes());
            Ok((reply, None))
        }
    }
}

/// Takes an op-22 ack of a rim-aware connection: decoded (a malformed one closes the connection),
/// handed to the durable link for its next batch when the connection has a user stream, never
/// answered.
fn ack(shared: &Shared, channel: &Channel, packet: &Packet) -> Result<(), CloseReason> {
    let ack = Ack::decode(&packet.body)
        .map_err(|error| CloseReason::Protocol(format!("malformed ack (op 22): {error}")))?;
    crate::durable::acked(channel.mid() != 0);
    if channel.mid() != 0
        && let Some(link) = &shared.durable
    {
        link.ack(DeviceAck {
            mid: channel.mid(),
            key: channel.key().to_string(),
            epoch: ack.position.epoch,
            seq: ack.position.seq,
        });
    }
    Ok(())
}

/// Logs (rate-limited) a room or watch-set change refused for `reason`.
fn refused_change(channel: &Channel, reason: &'static str) {
    if let Some(suppressed) = REFUSED_CHANGE_LOG.allow() {
        tracing::info!(key = %channel.key(), id = channel.id(), reason, suppressed, "client change refused");
    }
}
