//! A connection that comes back by itself.
//!
//! A [`Session`] runs in its own task: it asks HTTPDNS where to connect (when given an HTTPDNS
//! URL; else it uses its fixed list), connects to the first reachable address, authenticates,
//! forwards everything it receives as [`SessionEvent`]s, and when the connection ends (the edge
//! stopped, the network failed, the key was taken over) it reconnects with jittered exponential
//! backoff, trying the addresses in turn and asking HTTPDNS again after a round of failures, until
//! the session is dropped. What the adaptive heartbeat learnt carries over to the next connection.
//! A refused auth is retried too (the token may be refreshed by `auth_body` on the next attempt),
//! but reported.
//!
//! The room a session re-joins after a reconnect is the last one the server confirmed: a refused
//! change ([`SessionEvent::RoomRefused`]) leaves it where it was, and a change still unanswered when
//! a connection ended is asked for again on the next one.
//!
//! A session started with [`Session::start_durable`] opts every connection in to rim's durable
//! delivery (see [`crate::durable`]): its auth asks to resume from the positions the app processed,
//! pushes arrive as [`SessionEvent::Durable`] (never twice), each stream's resume answer as
//! [`SessionEvent::Resume`], and processed user pushes are acked. A durable push counts as
//! processed when the owner asks for the next event ([`Session::next`]), or, with
//! [`Durable::manual_acks`], when it calls [`Session::ack`].

use crate::connection::{Connection, Push};
use crate::durable::{AckDue, Durable, SharedTracker, Tracker};
use crate::error::{ClientError, RoomRefused};
use crate::heartbeat::AdaptiveHeartbeat;
use bytes::Bytes;
use rim_proto::durable::{self, DurablePush, Position, ResumeAnswer, StreamKind};
use rim_proto::op;
use rim_retry::Backoff;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How a session connects and reconnects.
#[derive(Clone)]
pub struct SessionConfig {
    /// Edge addresses (`host:port`), tried in order from the one that last worked; the fallback
    /// when `httpdns` is set but does not answer.
    pub addresses: Vec<String>,
    /// HTTPDNS URL (e.g. `http://control:3111/v1/dns?lat=31.2&lon=121.5`), asked before the first
    /// connection and again after every round of failed attempts.
    pub httpdns: Option<String>,
    /// Makes the auth body for each attempt (a fresh token, or goim's auth JSON).
    pub auth_body: Arc<dyn Fn() -> Vec<u8> + Send + Sync>,
    /// Heartbeat periods ([`AdaptiveHeartbeat::default`] is the seed's 60-300 s).
    pub heartbeat: AdaptiveHeartbeat,
    /// First pause after a failure; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest pause between attempts.
    pub max_backoff: Duration,
}

/// What a session tells its owner.
#[derive(Debug)]
pub enum SessionEvent {
    /// Authenticated on the edge at `address`.
    Connected {
        /// The address that accepted.
        address: String,
    },
    /// A push or reply from the server (a confirmed room change is an op-13 push echoing the room).
    Push(Push),
    /// The server refused a room change; the session stays in (and re-joins) its old room.
    RoomRefused(RoomRefused),
    /// HTTPDNS answered these addresses.
    Resolved {
        /// `host:port`, best first.
        addresses: Vec<String>,
    },
    /// The connection (or an attempt) ended; the session will try again.
    Disconnected {
        /// Why.
        error: ClientError,
    },
    /// A push of a durable session (op 20): message id, stream, position, replay flag, operation
    /// and payload. Each push arrives once, in stream order; pushes at or below what was already
    /// handed out are dropped.
    Durable(DurablePush),
    /// How a stream of a durable session resumed on this connection (op 21). "Resumed n" follows
    /// the `n` replayed pushes; [`rim_proto::durable::ResumeOutcome::NotResumed`] means pushes
    /// were lost (expired, history reset, ...): the session continues from the answered head, and
    /// the app should reload that stream's state from its backend. (After "unavailable" the session
    /// keeps its own position: the history may be intact and a later connection may resume it.)
    Resume(ResumeAnswer),
}

/// What the owner asks of the current connection.
#[derive(Debug)]
enum Command {
    /// An upstream message (op 4 or a business op).
    Send { operation: i32, body: Bytes },
    /// Move to a room (kept for later connections too once the server confirms it).
    ChangeRoom(String),
    /// The app processed durable pushes: an ack is due (now or within the ack delay).
    Ack(AckDue),
}

/// What a durable session's task keeps beside the plain session's state.
struct DurableTask {
    tracker: SharedTracker,
    ack_delay: Duration,
}

/// The owner's handle: events arrive on [`Session::next`]; dropping it ends the session.
pub struct Session {
    events: mpsc::Receiver<SessionEvent>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    /// A durable session's positions (shared with the task) and whether acks are manual.
    durable: Option<(SharedTracker, bool)>,
    /// The durable push handed out last, processed when the owner asks for the next event.
    unprocessed: Option<(StreamKind, Position)>,
}

impl Session {
    /// Starts the session's task. Events are buffered up to `buffer`; a full buffer slows reading
    /// from the server (the client's own backpressure), it never drops an event.
    pub fn start(config: SessionConfig, buffer: usize) -> Session {
        Self::spawn(config, None, buffer)
    }

    /// Starts a session whose connections opt in to rim's durable delivery: positions from
    /// `durable`'s store are resumed from, pushes arrive as [`SessionEvent::Durable`] and
    /// [`SessionEvent::Resume`], processed user pushes are acked. The auth body must be goim's
    /// JSON (an object) or a bare token; the `rim` field is added to it on every attempt.
    ///
    /// ```no_run
    /// use rim_client::{AdaptiveHeartbeat, Durable, MemoryPositions, ResumeOutcome, Session};
    /// use rim_client::{SessionConfig, SessionEvent};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # async fn run() {
    /// let config = SessionConfig {
    ///     addresses: vec!["127.0.0.1:3101".into()],
    ///     httpdns: None,
    ///     auth_body: Arc::new(|| br#"{"mid": 123, "key": "phone-1"}"#.to_vec()),
    ///     heartbeat: AdaptiveHeartbeat::default(),
    ///     initial_backoff: Duration::from_millis(500),
    ///     max_backoff: Duration::from_secs(30),
    /// };
    /// // Keep the store (a file, a database row ...) to resume across restarts of the program.
    /// let store = Arc::new(MemoryPositions::default());
    /// let mut session = Session::start_durable(config, Durable::new().store(store), 1024);
    /// while let Some(event) = session.next().await {
    ///     match event {
    ///         // Each push once, in order; processed (and acked) when `next` is called again.
    ///         SessionEvent::Durable(push) => println!("{} {:?}", push.message_id, push.body),
    ///         SessionEvent::Resume(answer) if matches!(answer.outcome, ResumeOutcome::NotResumed(_)) => {
    ///             // Pushes were lost: reload this stream's state from the backend.
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// # }
    /// ```
    pub fn start_durable(config: SessionConfig, durable: Durable, buffer: usize) -> Session {
        Self::spawn(config, Some(durable), buffer)
    }

    fn spawn(config: SessionConfig, durable: Option<Durable>, buffer: usize) -> Session {
        let (sender, events) = mpsc::channel(buffer.max(1));
        let (commands, queue) = mpsc::unbounded_channel();
        let shared = durable
            .as_ref()
            .map(|options| Arc::new(Mutex::new(Tracker::new(options))));
        let task_state = durable
            .as_ref()
            .zip(shared.clone())
            .map(|(options, tracker)| DurableTask {
                tracker,
                ack_delay: options.ack_delay,
            });
        let task = tokio::spawn(run(config, task_state, sender, queue));
        Session {
            events,
            commands,
            task,
            durable: durable
                .zip(shared)
                .map(|(options, tracker)| (tracker, options.manual)),
            unprocessed: None,
        }
    }

    /// Marks `push` (and every earlier push of its stream) processed: its position is what the
    /// next connection resumes from and is saved to the store; a user push is acked (coalesced).
    /// Needed only with [`Durable::manual_acks`]; harmless otherwise, and for plain sessions a
    /// no-op.
    pub fn ack(&self, push: &DurablePush) {
        self.processed(push.kind, push.position);
    }

    fn processed(&self, kind: StreamKind, position: Position) {
        let Some((tracker, _)) = &self.durable else {
            return;
        };
        let due = Tracker::lock(tracker).processed(kind, position);
        if due != AckDue::No {
            let _ = self.commands.send(Command::Ack(due));
        }
    }

    /// What a durable session has processed (what its store holds); `None` for a plain session.
    pub fn positions(&self) -> Option<crate::durable::Positions> {
        self.durable
            .as_ref()
            .map(|(tracker, _)| Tracker::lock(tracker).positions())
    }

    /// Sends an upstream message on the current connection (or the next one, if the session is
    /// reconnecting). The server's reply arrives as a [`SessionEvent::Push`].
    pub fn send(&self, operation: i32, body: Bytes) {
        // An error means the session task ended; there is nothing left to send on.
        let _ = self.commands.send(Command::Send { operation, body });
    }

    /// Moves to `room` now and, once the server confirmed (op 13, arriving as a
    /// [`SessionEvent::Push`]), on every later connection. A refusal arrives as
    /// [`SessionEvent::RoomRefused`] and keeps the session in its old room.
    pub fn change_room(&self, room: &str) {
        let _ = self.commands.send(Command::ChangeRoom(room.to_owned()));
    }

    /// The next event; `None` only after the session task ended. In a durable session with
    /// automatic acks, calling it again means the app has processed the durable push it returned
    /// last.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        if let Some((kind, position)) = self.unprocessed.take() {
            self.processed(kind, position);
        }
        let event = self.events.recv().await;
        if let (Some(SessionEvent::Durable(push)), Some((_, false))) = (&event, &self.durable) {
            self.unprocessed = Some((push.kind, push.position));
        }
        event
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    config: SessionConfig,
    durable: Option<DurableTask>,
    events: mpsc::Sender<SessionEvent>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    // reqwest is built without a bundled TLS provider in this workspace; HTTPDNS over HTTPS needs
    // one. Installs ring unless the program installed a provider already (then this is a no-op).
    let httpdns = config.httpdns.as_ref().map(|url| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        (url, reqwest::Client::new())
    });
    let mut addresses = config.addresses.clone();
    let mut heartbeat = config.heartbeat.clone();
    let mut next_address = 0;
    // Attempts that failed in a row; a whole round of them sends the session back to HTTPDNS.
    let mut failures = 0;
    // The room the server confirmed last: joined again after every reconnect.
    let mut room: Option<String> = None;
    // Room changes a connection ended before answering: asked for again on the next one.
    let mut unanswered: Vec<String> = Vec::new();
    loop {
        if let Some((url, http)) = &httpdns
            && (failures == 0 && next_address == 0 || failures >= addresses.len().max(1))
        {
            let event = match crate::httpdns::resolve(http, url).await {
                Ok(resolved) => {
                    addresses.clone_from(&resolved);
                    next_address = 0;
                    SessionEvent::Resolved {
                        addresses: resolved,
                    }
                }
                Err(error) => SessionEvent::Disconnected { error },
            };
            failures = 0;
            if events.send(event).await.is_err() {
                return;
            }
        }
        let count = addresses.len().max(1);
        let address = addresses
            .get(next_address % count)
            .cloned()
            .unwrap_or_default();
        let connected = match &durable {
            None => Connection::connect(&address, &(config.auth_body)(), heartbeat.clone()).await,
            Some(durable) => {
                let body = Tracker::lock(&durable.tracker).auth_body(&(config.auth_body)());
                match body {
                    Ok(body) => Connection::connect(&address, &body, heartbeat.clone()).await,
                    Err(error) => Err(error),
                }
            }
        };
        let error = match connected {
            Ok((mut connection, _)) => {
                backoff.reset();
                failures = 0;
                if events
                    .send(SessionEvent::Connected {
                        address: address.clone(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                let ended = serve(
                    &mut connection,
                    durable.as_ref(),
                    &events,
                    &mut commands,
                    &mut room,
                    &unanswered,
                )
                .await;
                heartbeat = connection.heartbeat().clone();
                unanswered = connection
                    .unanswered_rooms()
                    .filter(|asked| room.as_deref() != Some(*asked))
                    .map(str::to_owned)
                    .collect();
                match ended {
                    Some(error) => error,
                    None => return,
                }
            }
            Err(error) => {
                // This address failed to connect: try the next one first.
                next_address += 1;
                failures += 1;
                error
            }
        };
        tracing::debug!(%address, %error, "connection ended; reconnecting");
        if events
            .send(SessionEvent::Disconnected { error })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(backoff.next_pause()).await;
    }
}

/// Runs one authenticated connection: re-joins `room` and asks again for the `unanswered` rooms,
/// forwards what arrives (tracking confirmed room changes in `room`; for a durable session,
/// decoding, de-duplicating and acking), carries out commands. Returns why the connection ended, or
/// `None` when the owner is gone.
async fn serve(
    connection: &mut Connection,
    durable: Option<&DurableTask>,
    events: &mpsc::Sender<SessionEvent>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    room: &mut Option<String>,
    unanswered: &[String],
) -> Option<ClientError> {
    for asked in room.iter().chain(unanswered) {
        if let Err(error) = connection.change_room(asked).await {
            return Some(error);
        }
    }
    // When the pending ack goes out; `None` while nothing waits.
    let mut ack_at: Option<Instant> = None;
    if let Some(durable) = durable {
        let due = Tracker::lock(&durable.tracker).reconnected();
        if let Err(error) = schedule_ack(connection, durable, due, &mut ack_at).await {
            return Some(error);
        }
    }
    loop {
        let sent = tokio::select! {
            received = connection.recv() => {
                let event = match received {
                    Ok(push) => match durable {
                        Some(durable) => match durable_event(connection, durable, push, &mut ack_at).await {
                            Ok(Some(event)) => event,
                            Ok(None) => continue,
                            Err(error) => return Some(error),
                        },
                        None => SessionEvent::Push(push),
                    },
                    Err(ClientError::RoomRefused(refused)) => SessionEvent::RoomRefused(refused),
                    Err(error) => return Some(error),
                };
                if let SessionEvent::Push(push) = &event
                    && push.op == op::CHANGE_ROOM_REPLY
                {
                    let confirmed = String::from_utf8_lossy(&push.body).into_owned();
                    if let Some(durable) = durable {
                        Tracker::lock(&durable.tracker).room_confirmed(&confirmed);
                    }
                    *room = Some(confirmed);
                }
                events.send(event).await.ok()?;
                Ok(())
            }
            () = sleep_until(ack_at), if ack_at.is_some() => {
                ack_at = None;
                match durable {
                    Some(durable) => send_ack(connection, durable).await,
                    None => Ok(()),
                }
            }
            command = commands.recv() => match command? {
                Command::Send { operation, body } => connection.send_message(operation, body).await,
                Command::ChangeRoom(new_room) => connection.change_room(&new_room).await,
                Command::Ack(due) => match durable {
                    Some(durable) => schedule_ack(connection, durable, due, &mut ack_at).await,
                    None => Ok(()),
                },
            },
        };
        if let Err(error) = sent {
            return Some(error);
        }
    }
}

/// What a durable session makes of a packet: op 20 a [`SessionEvent::Durable`] (`None` for a
/// duplicate), op 21 a [`SessionEvent::Resume`], anything else a plain push.
async fn durable_event(
    connection: &mut Connection,
    durable: &DurableTask,
    push: Push,
    ack_at: &mut Option<Instant>,
) -> Result<Option<SessionEvent>, ClientError> {
    match push.op {
        durable::PUSH => {
            let push = DurablePush::decode(push.body)?;
            let fresh = Tracker::lock(&durable.tracker).deliver(&push);
            Ok(fresh.then_some(SessionEvent::Durable(push)))
        }
        durable::RESUME => {
            let answer = ResumeAnswer::decode(&push.body)?;
            let due = Tracker::lock(&durable.tracker).resumed(&answer);
            schedule_ack(connection, durable, due, ack_at).await?;
            Ok(Some(SessionEvent::Resume(answer)))
        }
        _ => Ok(Some(SessionEvent::Push(push))),
    }
}

/// Sends the ack now, or makes sure one goes out within the ack delay.
async fn schedule_ack(
    connection: &mut Connection,
    durable: &DurableTask,
    due: AckDue,
    ack_at: &mut Option<Instant>,
) -> Result<(), ClientError> {
    match due {
        AckDue::No => Ok(()),
        AckDue::Soon => {
            ack_at.get_or_insert_with(|| Instant::now() + durable.ack_delay);
            Ok(())
        }
        AckDue::Now => {
            *ack_at = None;
            send_ack(connection, durable).await
        }
    }
}

/// Acks the processed user position, if it moved since the last ack.
async fn send_ack(connection: &mut Connection, durable: &DurableTask) -> Result<(), ClientError> {
    let position = Tracker::lock(&durable.tracker).take_ack();
    match position {
        Some(position) => connection.ack(position).await,
        None => Ok(()),
    }
}

/// Sleeps until `at` (forever when `None`; the caller guards the branch).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
