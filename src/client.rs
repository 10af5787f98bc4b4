//! `rim client`: a goim-protocol client for people at a terminal, built on rim-client.
//!
//! It connects to one of the given edges, or where HTTPDNS says (reconnecting with backoff), authenticates
//! with a token or, for `rim dev`'s trust mode, with goim's auth JSON made from `--mid`, `--key`
//! and `--room`, and prints one JSON object per line for everything that happens:
//! `{"event":"connected","address":...}`, `{"event":"push","op":1000,"body":"..."}` (bodies that
//! are not UTF-8 come as `body_base64`), `{"event":"disconnected","error":...}`. Each line read
//! from standard input is sent upstream as op 4; `/room <type://id>` changes room instead.

use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use rim_client::{AdaptiveHeartbeat, Push, Session, SessionConfig, SessionEvent};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// goim's upstream message operation.
const SEND_MSG: i32 = 4;

/// `rim client` options.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Edge TCP addresses (`host:port`), tried in turn (the fallback when `--httpdns` is given).
    #[arg(
        long = "address",
        value_delimiter = ',',
        default_value = "127.0.0.1:3101"
    )]
    pub addresses: Vec<String>,
    /// Ask this HTTPDNS URL where to connect, e.g. `http://127.0.0.1:3111/v1/dns?lat=31.2&lon=121.5`
    /// (asked again after a round of failed attempts).
    #[arg(long)]
    pub httpdns: Option<String>,
    /// A signed token (JWT) to authenticate with; without it, goim's auth JSON is sent (accepted
    /// only by edges in trust mode, such as `rim dev`).
    #[arg(long, env = "RIM_CLIENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// User id claimed in goim's auth JSON (trust mode only).
    #[arg(long, default_value_t = 0)]
    pub mid: i64,
    /// Connection key in goim's auth JSON (empty: the edge picks one).
    #[arg(long, default_value = "")]
    pub key: String,
    /// Room to join (`type://id`).
    #[arg(long, default_value = "")]
    pub room: String,
    /// Operations to accept, besides room pushes.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub accepts: Vec<i32>,
    /// Seconds between heartbeats; without it the heartbeat adapts (60 s up to 300 s in steps of
    /// 30 s, stepping back when one goes unanswered).
    #[arg(long)]
    pub heartbeat_secs: Option<u64>,
}

impl ClientArgs {
    /// The auth body: the token in goim's JSON, or goim's plain claims.
    fn auth_body(&self) -> Vec<u8> {
        let body = match &self.token {
            Some(token) => json!({"token": token, "platform": "cli", "accepts": self.accepts}),
            None => json!({
                "mid": self.mid,
                "key": self.key,
                "room_id": self.room,
                "platform": "cli",
                "accepts": self.accepts,
            }),
        };
        body.to_string().into_bytes()
    }
}

/// Runs the client until standard input ends or the process is stopped.
pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let body = args.auth_body();
    let config = SessionConfig {
        addresses: args.addresses.clone(),
        auth_body: Arc::new(move || body.clone()),
        httpdns: args.httpdns.clone(),
        heartbeat: args
            .heartbeat_secs
            .map_or_else(AdaptiveHeartbeat::default, |secs| {
                AdaptiveHeartbeat::fixed(Duration::from_secs(secs.max(1)))
            }),
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(30),
    };
    let mut session = Session::start(config, 1024);
    if !args.room.is_empty() && args.token.is_some() {
        session.change_room(&args.room);
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            event = session.next() => match event {
                Some(event) => println!("{}", describe(event)),
                None => return Ok(()),
            },
            line = lines.next_line(), if stdin_open => match line? {
                Some(line) => match line.strip_prefix("/room ") {
                    Some(room) => session.change_room(room.trim()),
                    None => session.send(SEND_MSG, Bytes::from(line)),
                },
                None => stdin_open = false,
            },
        }
    }
}

/// One event as a JSON line.
fn describe(event: SessionEvent) -> Value {
    match event {
        SessionEvent::Connected { address } => json!({"event": "connected", "address": address}),
        SessionEvent::Push(Push { op, body }) => match std::str::from_utf8(&body) {
            Ok(text) => json!({"event": "push", "op": op, "body": text}),
            Err(_) => json!({
                "event": "push",
                "op": op,
                "body_base64": base64::engine::general_purpose::STANDARD.encode(&body),
            }),
        },
        SessionEvent::Resolved { addresses } => {
            json!({"event": "resolved", "addresses": addresses})
        }
        SessionEvent::Disconnected { error } => {
            json!({"event": "disconnected", "error": error.to_string()})
        }
        SessionEvent::RoomRefused(refused) => json!({
            "event": "room_refused",
            "room": refused.room,
            "reason": refused.reason.label(),
            "error": refused.message,
        }),
        // Only durable sessions (Session::start_durable) report these; `rim client` is plain.
        SessionEvent::Durable(push) => json!({"event": "durable_push", "op": push.operation,
            "id": push.message_id.to_string(), "seq": push.position.seq}),
        SessionEvent::Resume(answer) => json!({"event": "resume", "answer": format!("{answer:?}")}),
    }
}
