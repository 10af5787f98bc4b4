//! The coordinator's side of a load: worker processes started from this binary, their counters
//! summed, measurements marked and collected, progress shown.
//!
//! A load of N connections is cut into slices of at most `per_worker` connections, one
//! `rim-bench worker` process each (see [`crate::worker`]); the connect rate is shared out evenly.
//! Each worker's status lines are read by a task that keeps the latest counters, so
//! [`Swarm::counters`] is a cheap sum that is at most [`STATUS_EVERY`] old.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::client::{ClientSpec, Counters, micros_histogram};
use crate::worker::{Line, STATUS_EVERY, WorkerReport, WorkerSpec};

/// A whole load: what each connection does and how connections are opened.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// What each connection does.
    pub client: ClientSpec,
    /// Connections in all.
    pub connections: usize,
    /// Connections per worker process at most.
    pub per_worker: usize,
    /// Connections per second over all workers (0: as fast as the handshakes allow).
    pub connect_rate: f64,
    /// Handshakes in progress at once, over all workers.
    pub concurrency: usize,
}

/// One worker process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    status: Arc<Mutex<(Counters, Option<String>)>>,
    replies: mpsc::UnboundedReceiver<Line>,
}

/// The running load.
pub struct Swarm {
    workers: Vec<Worker>,
    /// Connections in all.
    pub connections: usize,
}

/// What all workers measured since the last mark.
pub struct SwarmReport {
    /// Send-to-receive latency of stamped messages, µs.
    pub latency: Histogram<u64>,
    /// Connect-to-auth-reply time of every connection, µs.
    pub connect: Histogram<u64>,
    /// Fewest messages one connection received since the mark.
    pub min_per_connection: u64,
    /// Most messages one connection received since the mark.
    pub max_per_connection: u64,
    /// Connections that received fewer messages than expected.
    pub short: u64,
    /// Connections that received more messages than expected.
    pub extra: u64,
}

/// Percentiles of a histogram of microseconds, in milliseconds, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest value, ms.
    pub max_ms: f64,
}

impl Percentiles {
    /// The percentiles of `histogram` (µs).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2} ({} samples)",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

/// A progress bar on stderr (drawn only on a terminal).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

impl Swarm {
    /// Starts the workers of `spec`; they begin connecting at once.
    pub async fn start(spec: &LoadSpec) -> anyhow::Result<Swarm> {
        anyhow::ensure!(spec.connections > 0, "no connections to open");
        anyhow::ensure!(!spec.client.targets.is_empty(), "no target address");
        let binary: PathBuf = std::env::current_exe().context("locating rim-bench")?;
        let per_worker = spec.per_worker.max(1);
        let count = spec.connections.div_ceil(per_worker);
        let mut workers = Vec::with_capacity(count);
        for n in 0..count {
            let first = n * per_worker;
            let slice = WorkerSpec {
                client: spec.client.clone(),
                first,
                count: per_worker.min(spec.connections - first),
                connect_rate: spec.connect_rate / count as f64,
                concurrency: spec.concurrency.div_ceil(count),
            };
            workers.push(Worker::start(&binary, &slice)?);
        }
        Ok(Swarm {
            workers,
            connections: spec.connections,
        })
    }

    /// The workers' pids (to measure the load generator's own cost).
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    /// All workers' counters, at most [`STATUS_EVERY`] old.
    pub fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for worker in &self.workers {
            if let Ok(status) = worker.status.lock() {
                total.add(&status.0);
            }
        }
        total
    }

    /// The first connection error any worker saw.
    pub fn first_error(&self) -> Option<String> {
        self.workers
            .iter()
            .find_map(|w| w.status.lock().ok().and_then(|s| s.1.clone()))
    }

    /// Waits until every connection is authenticated or has failed (or `timeout`); the time taken.
    /// Fails if some did not authenticate.
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let n = self.connections as u64;
        let progress = bar(n, "connected");
        loop {
            let c = self.counters();
            progress.set_position(c.authed);
            if c.authed + c.failed >= n || started.elapsed() > timeout {
                break;
            }
            tokio::time::sleep(STATUS_EVERY).await;
        }
        progress.finish_and_clear();
        let elapsed = started.elapsed();
        let c = self.counters();
        if c.authed < n {
            bail!(
                "only {} of {n} connections authenticated in {elapsed:.1?} ({} failed, {} closed; first error: {})",
                c.authed,
                c.failed,
                c.closed,
                self.first_error().unwrap_or_else(|| "none".into())
            );
        }
        Ok(elapsed)
    }

    /// Waits until the connections received `total` messages in all (counted since they started),
    /// or until the count stops moving for `stall`; true if reached.
    pub async fn wait_messages(&self, total: u64, stall: Duration, what: &str) -> bool {
        let progress = bar(total, what);
        let reached = self
            .wait_until(stall, |c| c.messages >= total, &progress)
            .await;
        progress.finish_and_clear();
        reached
    }

    /// Waits until `done(counters)`, or until the message count stops moving for `stall`.
    pub async fn wait_until(
        &self,
        stall: Duration,
        done: impl Fn(&Counters) -> bool,
        progress: &ProgressBar,
    ) -> bool {
        let mut last = self.counters().messages;
        let mut moved = Instant::now();
        loop {
            let c = self.counters();
            progress.set_position(c.messages);
            if done(&c) {
                return true;
            }
            if c.messages != last {
                last = c.messages;
                moved = Instant::now();
            } else if moved.elapsed() > stall {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Starts a measurement in every worker: per-connection counts and latencies from now.
    pub async fn mark(&mut self) -> anyhow::Result<()> {
        for worker in &mut self.workers {
            worker.command("mark").await?;
        }
        for worker in &mut self.workers {
            match worker.reply().await? {
                Line::Marked => {}
                other => bail!("worker answered {other:?} to mark"),
            }
        }
        Ok(())
    }

    /// What every worker measured since the mark, `expected` messages per connection.
    pub async fn report(&mut self, expected: u64) -> anyhow::Result<SwarmReport> {
        for worker in &mut self.workers {
            worker.command(&format!("report {expected}")).await?;
        }
        let mut out = SwarmReport {
            latency: micros_histogram(),
            connect: micros_histogram(),
            min_per_connection: u64::MAX,
            max_per_connection: 0,
            short: 0,
            extra: 0,
        };
        for worker in &mut self.workers {
            let report: WorkerReport = match worker.reply().await? {
                Line::Report(report) => report,
                other => bail!("worker answered {other:?} to report"),
            };
            report.latency.add_to(&mut out.latency);
            report.connect.add_to(&mut out.connect);
            out.min_per_connection = out.min_per_connection.min(report.min_per_connection);
            out.max_per_connection = out.max_per_connection.max(report.max_per_connection);
            out.short += report.short;
            out.extra += report.extra;
        }
        Ok(out)
    }

    /// Ends every worker (closing its connections) and waits for them.
    pub async fn stop(self) {
        for mut worker in self.workers {
            drop(worker.stdin);
            if tokio::time::timeout(Duration::from_secs(10), worker.child.wait())
                .await
                .is_err()
            {
                let _ = worker.child.kill().await;
            }
        }
    }
}

impl Worker {
    fn start(binary: &std::path::Path, spec: &WorkerSpec) -> anyhow::Result<Worker> {
        let mut child = Command::new(binary)
            .arg("worker")
            .arg(serde_json::to_string(spec)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting worker {}", binary.display()))?;
        let stdin = child.stdin.take().context("worker has no stdin")?;
        let stdout = child.stdout.take().context("worker has no stdout")?;
        let status = Arc::new(Mutex::new((Counters::default(), None)));
        let (replies_tx, replies) = mpsc::unbounded_channel();
        let latest = status.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Line>(&line) {
                    Ok(Line::Status(counters, error)) => {
                        if let Ok(mut status) = latest.lock() {
                            *status = (counters, error);
                        }
                    }
                    Ok(reply) => {
                        let _ = replies_tx.send(reply);
                    }
                    Err(error) => eprintln!("worker said {line:?}: {error}"),
                }
            }
        });
        Ok(Worker {
            child,
            stdin,
            status,
            replies,
        })
    }

    async fn command(&mut self, command: &str) -> anyhow::Result<()> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .context("worker exited")
    }

    async fn reply(&mut self) -> anyhow::Result<Line> {
        tokio::time::timeout(Duration::from_secs(30), self.replies.recv())
            .await
            .context("worker did not answer")?
            .context("worker exited")
    }
}
