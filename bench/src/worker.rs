//! A load worker: one process holding a slice of the connections (at most ~9,000 sockets, as a
//! process may have 20,000 open files here), talking to its coordinator over stdin/stdout.
//!
//! The coordinator starts `rim-bench worker '<json WorkerSpec>'`. The worker opens its connections
//! at its share of the connect rate, prints a [`Line::Status`] with its cumulative counters every
//! [`STATUS_EVERY`], and answers commands read from stdin, one per line:
//!
//! - `mark`: start a measurement (per-connection counts and latencies from now); answers
//!   [`Line::Marked`];
//! - `report <expected>`: answers [`Line::Report`]: latencies since the mark, connect times, and how
//!   many connections received other than `expected` messages since the mark.
//!
//! When stdin closes (the coordinator exited or is done), the worker exits, closing its sockets.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::client::{self, ClientSpec, Counters, Shared};

/// How often a worker reports its counters.
pub const STATUS_EVERY: Duration = Duration::from_millis(20);

/// One worker's slice of a load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// What every connection does.
    pub client: ClientSpec,
    /// Global index of this worker's first connection.
    pub first: usize,
    /// Connections of this worker.
    pub count: usize,
    /// This worker's share of the connect rate, connections per second (0: as fast as allowed).
    pub connect_rate: f64,
    /// Handshakes in progress at once.
    pub concurrency: usize,
}

/// A histogram as (value, count) pairs, the way it crosses the process boundary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Buckets(pub Vec<(u64, u64)>);

impl Buckets {
    /// The recorded values of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self(
            histogram
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Adds these values to `histogram`.
    pub fn add_to(&self, histogram: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            histogram.saturating_record_n(value, count);
        }
    }
}

/// What a worker measured since the last mark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Send-to-receive latency of stamped messages, µs.
    pub latency: Buckets,
    /// Connect-to-auth-reply time of every connection, µs.
    pub connect: Buckets,
    /// Fewest messages one connection received since the mark.
    pub min_per_connection: u64,
    /// Most messages one connection received since the mark.
    pub max_per_connection: u64,
    /// Connections that received fewer messages than expected.
    pub short: u64,
    /// Connections that received more messages than expected.
    pub extra: u64,
}

/// A line a worker prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Line {
    /// Cumulative counters and the first connection error.
    Status(Counters, Option<String>),
    /// A `mark` was done.
    Marked,
    /// The answer to `report`.
    Report(WorkerReport),
}

fn emit(line: &Line) {
    if let Ok(text) = serde_json::to_string(line) {
        println!("{text}");
    }
}

/// Runs a worker until its stdin closes.
pub fn main(spec: &str) -> anyhow::Result<()> {
    let spec: WorkerSpec = serde_json::from_str(spec).context("bad worker spec")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(spec))
}

async fn run(spec: WorkerSpec) -> anyhow::Result<()> {
    let shared = Shared::new(spec.count);
    let client = Arc::new(spec.client.clone());
    let connector = tokio::spawn(connect_all(spec.clone(), client, shared.clone()));
    let status = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(STATUS_EVERY);
            loop {
                every.tick().await;
                emit(&Line::Status(shared.counters(), shared.first_error()));
            }
        })
    };
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(command) = commands.next_line().await? {
        let mut words = command.split_whitespace();
        match words.next() {
            Some("mark") => {
                shared.mark();
                emit(&Line::Marked);
            }
            Some("report") => {
                let expected: u64 = words.next().unwrap_or("0").parse()?;
                emit(&Line::Report(report(&shared, expected)));
            }
            _ => anyhow::bail!("unknown worker command {command:?}"),
        }
    }
    status.abort();
    connector.abort();
    Ok(())
}

fn report(shared: &Shared, expected: u64) -> WorkerReport {
    let mut out = WorkerReport {
        latency: Buckets::of(&shared.latency()),
        connect: Buckets::of(&shared.connect_times()),
        min_per_connection: u64::MAX,
        ..WorkerReport::default()
    };
    for got in shared.since_mark() {
        out.min_per_connection = out.min_per_connection.min(got);
        out.max_per_connection = out.max_per_connection.max(got);
        out.short += u64::from(got < expected);
        out.extra += u64::from(got > expected);
    }
    out
}

/// Opens every connection of the slice at the worker's rate, at most `concurrency` handshakes at
/// a time; then keeps their tasks alive.
async fn connect_all(spec: WorkerSpec, client: Arc<ClientSpec>, shared: Arc<Shared>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(spec.concurrency.max(1)));
    let mut pace = (spec.connect_rate > 0.0).then(|| {
        let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / spec.connect_rate));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        pace
    });
    let mut tasks = tokio::task::JoinSet::new();
    for local in 0..spec.count {
        if let Some(pace) = &mut pace {
            pace.tick().await;
        }
        let Ok(permit) = gate.clone().acquire_owned().await else {
            return;
        };
        tasks.spawn(client::run(
            spec.first,
            local,
            client.clone(),
            shared.clone(),
            permit,
        ));
    }
    while tasks.join_next().await.is_some() {}
}
