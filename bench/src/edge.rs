//! An edge alone in a child process (`edge-under-test`, insecure auth, per-IP and total limits
//! off), so `/proc/<pid>` shows its memory and CPU and nothing else: start it, read its addresses,
//! push to it through its internal API, read what it counted on `/metrics`, stop it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use prost::Message;
use rim_proto::schema::{EdgePushRequest, EdgePushResponse};

use crate::child::spawn_announced;
use tokio::process::{Child, ChildStdin, Command};

/// A running `edge-under-test`.
pub struct EdgeProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its process id (for `/proc`).
    pub pid: u32,
    /// TCP listener.
    pub tcp: SocketAddr,
    /// WebSocket listener.
    pub ws: SocketAddr,
    /// Internal API (pushes, `/metrics`).
    pub internal: SocketAddr,
    http: reqwest::Client,
    secret: String,
}

/// Counters the edge exposes on `/metrics`, summed over labels.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct EdgeCounters {
    /// `rim_edge_deliveries_total`: frames queued to connections.
    pub deliveries: f64,
    /// `rim_edge_drops_total`: frames not queued (full queue, closing).
    pub drops: f64,
    /// `rim_edge_closes_total`: connections closed, any reason.
    pub closes: f64,
    /// Writes made by connection writers.
    pub writes: f64,
    /// Frames those writes carried.
    pub written_frames: f64,
}

impl std::ops::Sub for EdgeCounters {
    type Output = Self;
    fn sub(self, before: Self) -> Self {
        Self {
            deliveries: self.deliveries - before.deliveries,
            drops: self.drops - before.drops,
            closes: self.closes - before.closes,
            writes: self.writes - before.writes,
            written_frames: self.written_frames - before.written_frames,
        }
    }
}

/// The `edge-under-test` binary next to the running program.
pub fn default_binary() -> anyhow::Result<std::path::PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("edge-under-test"))
}

impl EdgeProcess {
    /// Starts `binary` with limits that fit a benchmark (plus `extra` edge flags) and waits for its
    /// address line.
    pub async fn start(binary: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let secret = format!("bench-{}", std::process::id());
        let mut command = Command::new(binary);
        command
            .args([
                "--edge-tcp-listen=127.0.0.1:0",
                "--edge-ws-listen=127.0.0.1:0",
                "--edge-internal-listen=127.0.0.1:0",
                "--edge-auth=insecure",
                "--edge-max-conns-per-ip=0",
                "--edge-max-connections=0",
                "--edge-handshake-timeout-ms=60000",
            ])
            .args(extra)
            .env("RIM_BENCH_SECRET", &secret);
        let what = binary.display().to_string();
        let (mut child, announced) =
            spawn_announced(&mut command, &what, Duration::from_secs(30)).await?;
        Ok(Self {
            pid: child.id().context("edge exited")?,
            stdin: child.stdin.take(),
            tcp: announced.addr("tcp")?,
            ws: announced.addr("ws")?,
            internal: announced.addr("internal")?,
            child,
            http: reqwest::Client::new(),
            secret,
        })
    }

    /// Sends one push request; returns, per push, the connections it reached.
    pub async fn push(&self, request: &EdgePushRequest) -> anyhow::Result<Vec<u32>> {
        let response = self
            .http
            .post(format!("http://{}/internal/push", self.internal))
            .bearer_auth(&self.secret)
            .body(request.encode_to_vec())
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("push: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(EdgePushResponse::decode(body)?.delivered)
    }

    /// Reads the counters the edge exposes.
    pub async fn counters(&self) -> anyhow::Result<EdgeCounters> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.internal))
            .send()
            .await?
            .text()
            .await?;
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| line.rsplit_once(' '))
                .filter(|(key, _)| {
                    key.strip_prefix(name)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                })
                .filter_map(|(_, value)| value.parse::<f64>().ok())
                .sum()
        };
        Ok(EdgeCounters {
            deliveries: sum("rim_edge_deliveries_total"),
            drops: sum("rim_edge_drops_total"),
            closes: sum("rim_edge_closes_total"),
            writes: sum("rim_edge_write_batch_frames_count"),
            written_frames: sum("rim_edge_write_batch_frames_sum"),
        })
    }

    /// Closes the child's stdin (it shuts down gracefully) and waits, killing it after a while.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
