//! A connection that comes back by itself.
//!
//! A [`Session`] runs in its own task: it connects to the first reachable address of its list,
//! authenticates, forwards everything it receives as [`SessionEvent`]s, and when the connection
//! ends (the edge stopped, the network failed, the key was taken over) it reconnects with jittered
//! exponential backoff, trying the addresses in turn, until the session is dropped. A refused auth
//! is retried too (the token may be refreshed by `auth_body` on the next attempt), but reported.

use crate::connection::{Connection, Push};
use crate::error::ClientError;
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

/// The owner's handle: events arrive on [`Session::next`]; dropping it ends the session.
pub struct Session {
    events: mpsc::Receiver<SessionEvent>,
    task: JoinHandle<()>,
}

impl Session {
    /// Starts the session's task. Events are buffered up to `buffer`; a full buffer slows reading
    /// from the server (the client's own backpressure), it never drops an event.
    pub fn start(config: SessionConfig, buffer: usize) -> Session {
        let (sender, events) = mpsc::channel(buffer.max(1));
        let task = tokio::spawn(run(config, sender));
        Session { events, task }
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

async fn run(config: SessionConfig, events: mpsc::Sender<SessionEvent>) {
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    let mut next_address = 0;
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
                    loop {
                        match connection.recv().await {
                            Ok(push) => {
                                if events.send(SessionEvent::Push(push)).await.is_err() {
                                    return;
                                }
                            }
                            Err(error) => break error,
                        }
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
