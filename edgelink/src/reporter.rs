//! The session reporter: the edge's events in, registration, session batches and heartbeats out.
//!
//! [`SessionReporter`] is the edge's [`EdgeEvents`] observer. Its methods only take a short lock on
//! the coalescing [`Buffer`] and wake the background task, so a connection never waits for the
//! control plane. The task (started with [`SessionReporter::start`] once the edge is bound):
//!
//! 0. waits for the node's credential ([`NodeCredentials`]: enrolled with the cluster secret), whose
//!    token every call presents; a call refused with 401 makes it renew (see
//!    [`crate::credential`]) and is retried;
//! 1. registers the node with this process's boot id (random, new at every start: control ends the
//!    sessions of the node's previous life when it changes), retrying with bounded backoff until
//!    control answers;
//! 2. sends what is queued as soon as it is queued, but starts a batch that is not full at most
//!    every `edge_session_flush_ms`: an isolated change (a login waiting for its acknowledgement)
//!    goes out at once, and a burst shares batches instead of becoming a request per event. One
//!    batch is in flight at a time so each key's events keep their order; a failed batch is retried with backoff, a batch control finds too large is
//!    halved, a batch control refuses as malformed is dropped and counted;
//! 3. on 404 (control does not know the node: it restarted on an empty store, or declared the node
//!    dead and removed its sessions) registers again, queues every live connection's connect again,
//!    and resends;
//! 4. queues a renewal of every live session every `edge_session_renew_ms`, so none expires;
//! 5. sends a node heartbeat every `edge_node_heartbeat_ms` (connections, IPs, the
//!    `edge_heartbeat_max_rooms` largest rooms with the rest summed — as reported to control, i.e.
//!    authenticated connections — and the draining flag). Liveness never depends on the room
//!    statistics: a heartbeat control refuses as too large or malformed is sent again without
//!    rooms. The last one,
//!    sent by [`SessionReporter::shutdown`] once the edge's connections are closed and their
//!    disconnects sent, says `stopped`, so control marks the node dead at once instead of waiting
//!    for its heartbeat timeout.
//!
//! A connect hands the edge a [`ConnectAck`] that resolves once control has accepted the batch
//! carrying it (see [`crate::buffer`] for how positions tell): the edge holds the client's auth reply
//! until then (bounded by the edge's `edge_auth_report_timeout_ms`), so a push sent as soon as the
//! client has its reply finds the session. Connects keep sharing batches: waiting adds no call.
//!
//! While control is unreachable the edge keeps working and the buffer absorbs the changes (see
//! [`crate::buffer`] for its bound); everything is delivered once control is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rim_edge::channel::Channel;
use rim_edge::hooks::ConnectAck;
use rim_edge::{EdgeAddrs, EdgeEvents};
use rim_proto::schema::{NodeHeartbeat, NodeRegistration, SessionBatch, SessionEvent};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, Noted};
use crate::client::{CallError, ControlClient};
use crate::config::LinkConfig;
use crate::credential::NodeCredentials;
use crate::metrics;
use rim_retry::Backoff;

/// How often [`SessionReporter::shutdown`] checks whether everything was sent.
const FLUSH_POLL: Duration = Duration::from_millis(10);

/// State shared by the edge's connection tasks and the background task.
struct Shared {
    buffer: Mutex<Buffer>,
    wake: Notify,
    draining: AtomicBool,
    /// Set for the last heartbeat: the edge's connections are closed.
    stopped: AtomicBool,
    /// Events taken from the buffer and not yet accepted by control.
    inflight: AtomicUsize,
    /// The highest buffer position whose changes control has accepted (see [`crate::buffer`]).
    accepted: watch::Sender<u64>,
}

impl Shared {
    /// Records what the buffer did and wakes the sender if something is to be sent.
    fn note(&self, outcome: Noted) {
        metrics::noted(outcome);
        if outcome == Noted::Queued {
            self.wake.notify_one();
        }
    }
}

/// Reports this edge's sessions and load to the control plane; see the module docs.
pub struct SessionReporter {
    shared: Arc<Shared>,
    config: LinkConfig,
    node_id: String,
    boot_id: String,
    running: Mutex<Option<Running>>,
}

/// The started background task.
struct Running {
    link: Arc<Link>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl SessionReporter {
    /// A reporter that buffers events until [`SessionReporter::start`]; hand it to the edge as
    /// `EdgeHooks::events`.
    pub fn new(config: LinkConfig) -> Arc<Self> {
        let node_id = config.node_id();
        Arc::new(Self {
            shared: Arc::new(Shared {
                buffer: Mutex::new(Buffer::new(config.edge_link_buffer)),
                wake: Notify::new(),
                draining: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                inflight: AtomicUsize::new(0),
                accepted: watch::Sender::new(0),
            }),
            config,
            node_id,
            boot_id: format!("{:032x}", rand::random::<u128>()),
            running: Mutex::new(None),
        })
    }

    /// The node id this edge reports as.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This life's boot id (random, made when the reporter is created, i.e. once per process).
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// Starts registering and reporting for the edge bound at `addrs` (ports and push URL come from
    /// there), presenting the token of `credentials` (which must be this node's and running).
    /// Fails if the control URL is unusable, the credential is another node's, or the reporter
    /// already runs.
    pub fn start(
        &self,
        credentials: &Arc<NodeCredentials>,
        addrs: &EdgeAddrs,
    ) -> anyhow::Result<()> {
        let mut running = self.running.lock();
        anyhow::ensure!(running.is_none(), "the session reporter is already running");
        anyhow::ensure!(
            credentials.node_id() == self.node_id,
            "the credential is node {:?}'s, this edge is {:?}",
            credentials.node_id(),
            self.node_id
        );
        let client = ControlClient::new(
            &self.config.edge_control_url,
            credentials.token(),
            self.config.control_timeout(),
            self.config.edge_control_ca_file.as_deref(),
        )?;
        let stop = CancellationToken::new();
        let link = Arc::new(Link {
            shared: self.shared.clone(),
            client,
            credentials: credentials.clone(),
            max_rooms: self
                .config
                .edge_heartbeat_max_rooms
                .min(rim_proto::MAX_HEARTBEAT_ROOMS),
            registration: self
                .config
                .registration(&self.node_id, &self.boot_id, addrs),
            generation: tokio::sync::Mutex::new(0),
            stop: stop.clone(),
            backoff: self.config.backoff(),
            batch: self.config.edge_session_batch.max(1),
            flush: Duration::from_millis(self.config.edge_session_flush_ms),
            heartbeat_every: Duration::from_millis(self.config.edge_node_heartbeat_ms.max(100)),
            renew_every: Duration::from_millis(self.config.edge_session_renew_ms.max(100)),
        });
        tracing::info!(
            node = %self.node_id,
            boot_id = %self.boot_id,
            control = %self.config.edge_control_url,
            push_url = %link.registration.push_url,
            region = %link.registration.region,
            "edge link starting"
        );
        let task = tokio::spawn(link.clone().run());
        *running = Some(Running { link, stop, task });
        Ok(())
    }

    /// Tells control this edge is draining (wants no new clients): sets the flag of every later
    /// heartbeat and sends one now if the node is registered, bounded by `edge_control_timeout_ms`.
    pub async fn drain(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        self.heartbeat_now().await;
    }

    /// Sends a heartbeat now, unless the node is not registered (control unreachable so far: the
    /// heartbeat loop carries the state once it is).
    async fn heartbeat_now(&self) {
        let link = self.running.lock().as_ref().map(|r| r.link.clone());
        if let Some(link) = link {
            link.heartbeat_if_registered(self.config.control_timeout())
                .await;
        }
    }

    /// Marks the edge draining, waits up to `timeout` for every queued event to be accepted (call
    /// it after the edge's shutdown, so the disconnects of the closed clients go out), sends a last
    /// heartbeat saying `stopped` (best effort, bounded by `edge_control_timeout_ms`) and stops.
    /// Returns true if every session event was sent.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.shared.draining.store(true, Ordering::Relaxed);
        let flushed = tokio::time::timeout(timeout, async {
            while self.unsent() > 0 {
                tokio::time::sleep(FLUSH_POLL).await;
            }
        })
        .await
        .is_ok();
        if !flushed {
            tracing::warn!(
                unsent = self.unsent(),
                "edge link stopped with unsent session events"
            );
        }
        // The periodic heartbeats stop first, so that none can reach control after the last one.
        let running = self.running.lock().take();
        if let Some(running) = running {
            running.stop.cancel();
            let _ = running.task.await;
            self.shared.stopped.store(true, Ordering::Relaxed);
            running
                .link
                .heartbeat_if_registered(self.config.control_timeout())
                .await;
        }
        tracing::info!(node = %self.node_id, flushed, "edge link stopped");
        flushed
    }

    /// Session changes not yet accepted by control: keys with an unsent change plus events in
    /// flight.
    pub fn unsent(&self) -> usize {
        self.shared.buffer.lock().unsent() + self.shared.inflight.load(Ordering::Relaxed)
    }
}

impl EdgeEvents for SessionReporter {
    fn connected(&self, channel: &Channel) -> Option<ConnectAck> {
        let (outcome, position) = {
            let mut buffer = self.shared.buffer.lock();
            let outcome = buffer.connected(channel, now_ms());
            (outcome, buffer.position(channel.key()))
        };
        self.shared.note(outcome);
        let position = position.filter(|_| outcome == Noted::Queued)?;
        let mut accepted = self.shared.accepted.subscribe();
        Some(Box::pin(async move {
            // An error means the reporter is gone: nothing more will be accepted, stop waiting.
            let _ = accepted.wait_for(|&up_to| up_to >= position).await;
        }))
    }

    fn disconnected(&self, channel: &Channel, still_owned: bool) {
        // The buffer tells a replaced connection by its id (see `Buffer::disconnected`).
        let _ = still_owned;
        let (outcome, dropped) = {
            let mut buffer = self.shared.buffer.lock();
            let before = buffer.dropped();
            let outcome = buffer.disconnected(channel);
            (outcome, buffer.dropped() - before)
        };
        if dropped > 0 {
            metrics::dropped("buffer_full", dropped);
        }
        self.shared.note(outcome);
    }

    fn room_changed(&self, channel: &Channel, previous: Option<&str>) {
        let _ = previous;
        let outcome = self.shared.buffer.lock().room_changed(channel);
        self.shared.note(outcome);
    }
}

/// The background side: one registration, the session sender and the heartbeat.
struct Link {
    shared: Arc<Shared>,
    client: ControlClient,
    /// Whose token the calls present; waited for before registering.
    credentials: Arc<NodeCredentials>,
    /// Most rooms listed in a heartbeat.
    max_rooms: usize,
    registration: NodeRegistration,
    /// Successful registrations so far; a call that got 404 registers again only if nobody did since
    /// it was sent.
    generation: tokio::sync::Mutex<u64>,
    stop: CancellationToken,
    backoff: Backoff,
    batch: usize,
    flush: Duration,
    heartbeat_every: Duration,
    renew_every: Duration,
}

impl Link {
    /// Waits for the credential, registers, then sends sessions and heartbeats until stopped.
    async fn run(self: Arc<Self>) {
        tokio::select! {
            () = self.stop.cancelled() => return,
            () = self.credentials.ready() => {}
        }
        if !self.register(0).await {
            return;
        }
        tokio::join!(self.send_sessions(), self.send_heartbeats());
    }

    /// Registers unless a registration happened after generation `seen`; on success, queues every
    /// live connection again (control may have forgotten them). Retries until it succeeds; false
    /// if stopped first.
    async fn register(&self, seen: u64) -> bool {
        let mut generation = self.generation.lock().await;
        if *generation != seen {
            return true;
        }
        let mut backoff = self.backoff.clone();
        loop {
            let result = self.client.register(&self.registration).await;
            metrics::call("register", result.as_ref().copied());
            match result {
                Ok(()) => {
                    *generation += 1;
                    let live = self.shared.buffer.lock().reannounce_all();
                    metrics::registered();
                    tracing::info!(node = %self.registration.node_id, live, "registered with the control plane");
                    self.shared.wake.notify_one();
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, "registering with the control plane failed; retrying");
                    if !self.pause(&mut backoff).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Sends one heartbeat bounded by `timeout`, unless the node is not registered (or registering
    /// again right now).
    async fn heartbeat_if_registered(&self, timeout: Duration) {
        if self.is_registered() {
            let _ = tokio::time::timeout(timeout, self.heartbeat()).await;
        }
    }

    /// True once registered and not registering again right now.
    fn is_registered(&self) -> bool {
        self.generation
            .try_lock()
            .is_ok_and(|generation| *generation > 0)
    }

    /// Sleeps the next backoff pause; false if stopped meanwhile.
    async fn pause(&self, backoff: &mut Backoff) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(backoff.next_pause()) => true,
        }
    }

    /// The session sender: wakes on new changes and on the renewal period, sends everything queued.
    async fn send_sessions(&self) {
        let mut renew = tokio::time::interval_at(
            tokio::time::Instant::now() + self.renew_every,
            self.renew_every,
        );
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // When the next batch that is not full may start.
        let mut next_partial = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = self.shared.wake.notified() => {}
                _ = renew.tick() => {
                    let renewed = self.shared.buffer.lock().renew_all();
                    tracing::debug!(renewed, "renewing live sessions");
                }
            }
            if self.shared.buffer.lock().unsent() < self.batch {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep_until(next_partial) => {}
                }
            }
            next_partial = tokio::time::Instant::now() + self.flush;
            loop {
                let (events, up_to) = {
                    let mut buffer = self.shared.buffer.lock();
                    let events = buffer.take(self.batch);
                    self.shared.inflight.store(events.len(), Ordering::Relaxed);
                    metrics::buffer(buffer.unsent(), buffer.ended());
                    (events, buffer.taken_up_to())
                };
                if events.is_empty() {
                    break;
                }
                let delivered = self.deliver(events).await;
                self.shared.inflight.store(0, Ordering::Relaxed);
                if !delivered {
                    return;
                }
                self.shared.accepted.send_replace(up_to);
            }
        }
    }

    /// Sends `events` in order until control accepted (or refused) all of them; false if stopped.
    async fn deliver(&self, events: Vec<SessionEvent>) -> bool {
        let mut chunks = vec![events];
        let mut backoff = self.backoff.clone();
        while let Some(events) = chunks.pop() {
            let batch = SessionBatch {
                node_id: self.registration.node_id.clone(),
                events,
            };
            loop {
                let generation = *self.generation.lock().await;
                let result = self.client.sessions(&batch).await;
                metrics::call("sessions", result.as_ref().map(|_| ()));
                match result {
                    Ok(report) => {
                        metrics::sent(batch.events.len());
                        tracing::trace!(?report, "session batch applied");
                        backoff.reset();
                        break;
                    }
                    Err(CallError::UnknownNode) => {
                        if !self.register(generation).await {
                            return false;
                        }
                    }
                    Err(CallError::TooLarge(_)) if batch.events.len() > 1 => {
                        let mut first = batch.events;
                        let second = first.split_off(first.len() / 2);
                        chunks.push(second);
                        chunks.push(first);
                        break;
                    }
                    Err(error @ (CallError::TooLarge(_) | CallError::Refused { .. })) => {
                        tracing::error!(%error, events = batch.events.len(), "control refused a session batch; dropped");
                        metrics::dropped("refused", batch.events.len() as u64);
                        break;
                    }
                    Err(error @ (CallError::Unavailable(_) | CallError::Unauthorized(_))) => {
                        tracing::warn!(%error, events = batch.events.len(), "session batch not delivered; retrying");
                        if !self.pause(&mut backoff).await {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// Sends a heartbeat every period until stopped.
    async fn send_heartbeats(&self) {
        let mut tick = tokio::time::interval(self.heartbeat_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => self.heartbeat().await,
            }
        }
    }

    /// Sends one heartbeat; on 404 registers again and sends it once more; refused for its room
    /// statistics (too large, malformed), sends it once more without them.
    async fn heartbeat(&self) {
        let mut with_rooms = true;
        for _ in 0..3 {
            let generation = *self.generation.lock().await;
            let report = {
                let load = self.shared.buffer.lock().load(self.max_rooms);
                let (rooms, omitted_rooms, omitted_room_connections) = if with_rooms {
                    (
                        load.rooms,
                        load.omitted_rooms,
                        load.omitted_room_connections,
                    )
                } else {
                    let listed = load.rooms.len() as u64;
                    let in_listed = load.rooms.iter().map(|room| room.count).sum::<u64>();
                    (
                        Vec::new(),
                        load.omitted_rooms + listed,
                        load.omitted_room_connections.saturating_add(in_listed),
                    )
                };
                NodeHeartbeat {
                    node_id: self.registration.node_id.clone(),
                    connection_count: load.connections,
                    ip_count: load.ips,
                    rooms,
                    draining: self.shared.draining.load(Ordering::Relaxed),
                    stopped: self.shared.stopped.load(Ordering::Relaxed),
                    omitted_rooms,
                    omitted_room_connections,
                }
            };
            let result = self.client.heartbeat(&report).await;
            metrics::call("heartbeat", result.as_ref().copied());
            match result {
                Ok(()) => return,
                Err(CallError::UnknownNode) => {
                    if !self.register(generation).await {
                        return;
                    }
                }
                Err(error @ (CallError::TooLarge(_) | CallError::Refused { status: 400, .. }))
                    if with_rooms && !report.rooms.is_empty() =>
                {
                    tracing::warn!(%error, rooms = report.rooms.len(),
                        "control refused the heartbeat's room statistics; sending it without them");
                    with_rooms = false;
                }
                Err(error) => {
                    tracing::warn!(%error, "node heartbeat failed");
                    return;
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch, the time unit of session events.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
