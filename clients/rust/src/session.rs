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

use crate::connection::{Connection, Push};
use crate::error::{ClientError, RoomRefused};
use crate::heartbeat::AdaptiveHeartbeat;
use bytes::Bytes;
use rim_proto::op;
use rim_retry::Backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
}

/// What the owner asks of the current connection.
#[derive(Debug)]
enum Command {
    /// An upstream message (op 4 or a business op).
    Send { operation: i32, body: Bytes },
    /// Move to a room (kept for later connections too once the server confirms it).
    ChangeRoom(String),
}

/// The owner's handle: events arrive on [`Session::next`]; dropping it ends the session.
pub struct Session {
    events: mpsc::Receiver<SessionEvent>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl Session {
    /// Starts the session's task. Events are buffered up to `buffer`; a full buffer slows reading
    /// from the server (the client's own backpressure), it never drops an event.
    pub fn start(config: SessionConfig, buffer: usize) -> Session {
        let (sender, events) = mpsc::channel(buffer.max(1));
        let (commands, queue) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(config, sender, queue));
        Session {
            events,
            commands,
            task,
        }
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

    /// The next event; `None` only after the session task ended.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    config: SessionConfig,
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
        let connected =
            Connection::connect(&address, &(config.auth_body)(), heartbeat.clone()).await;
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
/// forwards what arrives (tracking confirmed room changes in `room`), carries out commands.
/// Returns why the connection ended, or `None` when the owner is gone.
async fn serve(
    connection: &mut Connection,
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
    loop {
        let sent = tokio::select! {
            received = connection.recv() => {
                let event = match received {
                    Ok(push) => {
                        if push.op == op::CHANGE_ROOM_REPLY {
                            *room = Some(String::from_utf8_lossy(&push.body).into_owned());
                        }
                        SessionEvent::Push(push)
                    }
                    Err(ClientError::RoomRefused(refused)) => SessionEvent::RoomRefused(refused),
                    Err(error) => return Some(error),
                };
                events.send(event).await.ok()?;
                Ok(())
            }
            command = commands.recv() => match command? {
                Command::Send { operation, body } => connection.send_message(operation, body).await,
                Command::ChangeRoom(new_room) => connection.change_room(&new_room).await,
            },
        };
        if let Err(error) = sent {
            return Some(error);
        }
    }
}
