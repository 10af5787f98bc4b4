//! How a scenario pushes: straight into an edge through its internal API (what `rim job` does,
//! so the edge's own cost is measured alone), or through a goim-compatible REST API (`rim
//! control`, or goim's logic in front of its comets) for the whole path.
//!
//! Every body is stamped with its send time ([`crate::wire::stamped_body`]), so the clients
//! measure end-to-end latency whatever the path.

use anyhow::{Context, bail};
use rim_proto::schema::{EdgePush, EdgePushRequest, edge_push::Target};

use crate::client::{room_id, room_name};
use crate::edge::EdgeProcess;
use crate::wire::{stamped_body, unix_nanos};

/// A goim-compatible REST API: `POST /goim/push/room?operation=&type=&room=` and
/// `POST /goim/push/mids?operation=&mids=`, raw body.
#[derive(Clone)]
pub struct Rest {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Rest {
    /// The API at `base` (`http://host:port`), authenticated with `key` when given.
    pub fn new(base: &str, key: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path_and_query: String, body: Vec<u8>) -> anyhow::Result<()> {
        let mut request = self
            .http
            .post(format!("{}{path_and_query}", self.base))
            .body(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.context("push request")?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("code")?.as_i64());
        if !status.is_success() || code.is_some_and(|c| c != 0) {
            bail!("push answered {status}: {text}");
        }
        Ok(())
    }

    /// One push of `body` to room `room` (goim's `type=live&room=bench-N`).
    pub async fn room(&self, operation: i32, room: usize, body: Vec<u8>) -> anyhow::Result<()> {
        self.room_named(operation, &room_name(room), body).await
    }

    /// One push of `body` to the live room called `name`.
    pub async fn room_named(
        &self,
        operation: i32,
        name: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<()> {
        self.post(
            format!("/goim/push/room?operation={operation}&type=live&room={name}"),
            body,
        )
        .await
    }

    /// One push of `body` to user `mid`.
    pub async fn user(&self, operation: i32, mid: u64, body: Vec<u8>) -> anyhow::Result<()> {
        self.post(
            format!("/goim/push/mids?operation={operation}&mids={mid}"),
            body,
        )
        .await
    }
}

/// Where room pushes go.
pub enum Pusher<'a> {
    /// Straight into one edge (its internal API).
    Edge(&'a EdgeProcess),
    /// Through a goim-compatible REST API.
    Rest(Rest),
}

impl Pusher<'_> {
    /// Pushes `count` messages of `body` bytes to room `room` together: one edge request holding
    /// them all (as `rim job` sends what it has), or `count` concurrent REST calls. Returns the
    /// deliveries the edge says it queued, when it says.
    pub async fn room_burst(
        &self,
        operation: i32,
        room: usize,
        count: usize,
        body: usize,
    ) -> anyhow::Result<Option<u64>> {
        match self {
            Pusher::Edge(edge) => {
                let room_id = room_id(room);
                let pushes = (0..count)
                    .map(|n| EdgePush {
                        message_id: format!("bench-{}-{n}", unix_nanos()),
                        operation,
                        body: stamped_body(unix_nanos(), body).into(),
                        target: Some(Target::Room(room_id.clone())),
                        ..EdgePush::default()
                    })
                    .collect();
                let reached = edge.push(&EdgePushRequest { pushes }).await?;
                Ok(Some(reached.iter().map(|n| u64::from(*n)).sum()))
            }
            Pusher::Rest(rest) => {
                let calls = (0..count)
                    .map(|_| rest.room(operation, room, stamped_body(unix_nanos(), body)));
                for result in futures_util::future::join_all(calls).await {
                    result?;
                }
                Ok(None)
            }
        }
    }
}
