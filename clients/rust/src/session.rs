//! A connection that comes back by itself.
//!
//! A [`Session`] runs in its own task: it connects to the first reachable address of its list,
//! authenticates, forwards everything it receives as [`SessionEvent`]s, and when the connection
//! ends (the edge stopped, the network failed, the key was taken over) it reconnects with jittered
//! exponential backoff, trying the addresses in turn, until the session is dropped. A refused auth
//! is retried too (the token may be refreshed by `auth_body` on the next attempt), but reported.

use crate::connection::{Connection, Push};
use crate::error::ClientError;
use bytes::Bytes;
use rim_retry::Backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How a session connects and reconnects.
#[derive(Clone)]
pub struct SessionConfig {
    /// Edge addresses (`host:port`), tried in order from the one that last worked.
    pub addresses: Vec<String>,
    /// Makes the auth body for each attempt (a fresh token, or goim's auth JSON).
    pub auth_body: Arc<dyn Fn() -> Vec<u8> + Send + Sync>,
    /// Heartbeat interval.
    pub heartbeat: Duration,
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
    /// A push or reply from the server.
    Push(Push),
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
    /// Move to a room (kept for later connections too).
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

    /// Moves to `room` now and on every later connection (its confirmation, op 13, arrives as a
    /// [`SessionEvent::Push`]).
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
    let mut next_address = 0;
    // The room asked for last: joined again after every reconnect.
    let mut room: Option<String> = None;
    loop {
        let count = config.addresses.len().max(1);
        let address = config
            .addresses
            .get(next_address % count)
            .cloned()
            .unwrap_or_default();
        let error =
            match Connection::connect(&address, &(config.auth_body)(), config.heartbeat).await {
                Ok((mut connection, _)) => {
                    backoff.reset();
                    if events
                        .send(SessionEvent::Connected {
                            address: address.clone(),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    match serve(&mut connection, &events, &mut commands, &mut room).await {
                        Some(error) => error,
                        None => return,
                    }
                }
                Err(error) => {
                    // This address failed to connect: try the next one first.
                    next_address += 1;
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

/// Runs one authenticated connection: forwards what arrives, carries out commands. Returns why the
/// connection ended, or `None` when the owner is gone.
async fn serve(
    connection: &mut Connection,
    events: &mpsc::Sender<SessionEvent>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    room: &mut Option<String>,
) -> Option<ClientError> {
    if let Some(room) = room.as_deref()
        && let Err(error) = connection.change_room(room).await
    {
        return Some(error);
    }
    loop {
        let sent = tokio::select! {
            received = connection.recv() => match received {
                Ok(push) => {
                    events.send(SessionEvent::Push(push)).await.ok()?;
                    Ok(())
                }
                Err(error) => Err(error),
            },
            command = commands.recv() => match command? {
                Command::Send { operation, body } => connection.send_message(operation, body).await,
                Command::ChangeRoom(new_room) => {
                    let changed = connection.change_room(&new_room).await;
                    *room = Some(new_room);
                    changed
                }
            },
        };
        if let Err(error) = sent {
            return Some(error);
        }
    }
}
