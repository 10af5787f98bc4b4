//! What a scenario measured, as one value: printed for humans and written as JSON (`--json`).
//!
//! Numbers measured on a shared machine mean little alone, so every report carries the load
//! average before and after the run and the load generator's own CPU next to the server's.

use serde::Serialize;

use crate::client::Counters;
use crate::procfs::{Cpu, ProcessSample};
use crate::swarm::Percentiles;

/// A whole scenario run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The scenario (`idle`, `room`, ...).
    pub scenario: String,
    /// The command line that ran it.
    pub command: String,
    /// 1/5/15-minute load average before the run.
    pub load_average_before: [f64; 3],
    /// ... and after it.
    pub load_average_after: [f64; 3],
    /// Connections asked for.
    pub connections: usize,
    /// How they connected.
    pub connect: Option<ConnectReport>,
    /// Memory of the server processes.
    pub memory: Option<MemoryReport>,
    /// Push phases.
    pub phases: Vec<Phase>,
    /// The clients' counters at the end.
    pub counters: Counters,
    /// Server processes at the end.
    pub servers: Vec<ProcessSample>,
    /// Whether every count was what it should be.
    pub ok: bool,
    /// What went wrong, if anything.
    pub problems: Vec<String>,
}

/// How the connections were opened.
#[derive(Debug, Serialize)]
pub struct ConnectReport {
    /// Wall time until every connection was authenticated.
    pub seconds: f64,
    /// Connections authenticated per second.
    pub per_second: f64,
    /// Connect-to-auth-reply time per connection.
    pub handshake: Percentiles,
    /// Server CPU while connecting.
    pub server_cpu: Cpu,
    /// Failed attempts.
    pub failed: u64,
}

/// Server memory at the moments that matter.
#[derive(Debug, Serialize)]
pub struct MemoryReport {
    /// Resident memory of the servers before any connection, bytes.
    pub before: u64,
    /// With every connection idle.
    pub idle: u64,
    /// After the pushes were delivered (and a settle time).
    pub after: Option<u64>,
    /// (idle - before) / connections.
    pub idle_per_connection: f64,
    /// (after - before) / connections.
    pub after_per_connection: Option<f64>,
}

/// One push phase.
#[derive(Debug, Serialize)]
pub struct Phase {
    /// What was pushed, how.
    pub name: String,
    /// Push calls made (requests, or pushes through REST).
    pub requests: u64,
    /// Messages pushed.
    pub messages: u64,
    /// Deliveries expected (messages x recipients).
    pub expected: u64,
    /// Deliveries counted by the clients.
    pub delivered: u64,
    /// Deliveries the server said it queued, when it says.
    pub server_reached: Option<u64>,
    /// Fewest deliveries one connection got, and the most.
    pub per_connection: (u64, u64),
    /// Connections that got fewer than expected (when every connection expects the same).
    pub short_connections: Option<u64>,
    /// Wall time from the first push to the last delivery.
    pub seconds: f64,
    /// Deliveries per second.
    pub deliveries_per_second: f64,
    /// Server CPU in the phase.
    pub server_cpu: Cpu,
    /// Server CPU per delivery, µs (user + system).
    pub server_us_per_delivery: f64,
    /// ... user space only.
    pub server_user_us_per_delivery: f64,
    /// ... kernel only.
    pub server_system_us_per_delivery: f64,
    /// The load generator's CPU in the phase.
    pub bench_cpu: Cpu,
    /// Send-to-client latency.
    pub latency: Percentiles,
    /// Op-9 frames received in the phase.
    pub batches: u64,
    /// Pushes the schedule could not start on time (open-loop phases).
    pub late_pushes: u64,
}

impl Phase {
    /// Derived per-delivery figures from the raw ones.
    pub fn finish(mut self) -> Self {
        let per = |cpu: f64| cpu * 1e6 / self.delivered.max(1) as f64;
        self.server_us_per_delivery = per(self.server_cpu.total());
        self.server_user_us_per_delivery = per(self.server_cpu.user);
        self.server_system_us_per_delivery = per(self.server_cpu.system);
        self.deliveries_per_second = self.delivered as f64 / self.seconds.max(f64::EPSILON);
        self
    }
}

impl Report {
    /// The human summary.
    pub fn print(&self) {
        let [a, b, c] = self.load_average_before;
        let [x, y, z] = self.load_average_after;
        println!("== rim-bench {}: {}", self.scenario, self.command);
        println!("load average before {a:.2} {b:.2} {c:.2}, after {x:.2} {y:.2} {z:.2}");
        if let Some(connect) = &self.connect {
            println!(
                "connect: {} connections in {:.2} s ({:.0}/s, {} failed), server CPU {:.2} s user + {:.2} s sys; handshake {}",
                self.connections,
                connect.seconds,
                connect.per_second,
                connect.failed,
                connect.server_cpu.user,
                connect.server_cpu.system,
                connect.handshake
            );
        }
        if let Some(m) = &self.memory {
            println!(
                "memory: servers {:.1} MB before, {:.1} MB idle = {:.0} B per idle connection{}",
                m.before as f64 / 1e6,
                m.idle as f64 / 1e6,
                m.idle_per_connection,
                match (m.after, m.after_per_connection) {
                    (Some(after), Some(per)) => format!(
                        "; {:.1} MB after the pushes = {per:.0} B per connection ({:+.0} B vs idle)",
                        after as f64 / 1e6,
                        per - m.idle_per_connection
                    ),
                    _ => String::new(),
                }
            );
        }
        for p in &self.phases {
            println!(
                "{}: {} messages in {} calls, {} of {} deliveries{} in {:.2} s = {:.0}/s; per connection {}..{}{}",
                p.name,
                p.messages,
                p.requests,
                p.delivered,
                p.expected,
                p.server_reached
                    .map(|r| format!(" (server queued {r})"))
                    .unwrap_or_default(),
                p.seconds,
                p.deliveries_per_second,
                p.per_connection.0,
                p.per_connection.1,
                if p.late_pushes > 0 {
                    format!("; {} pushes started late", p.late_pushes)
                } else {
                    String::new()
                }
            );
            println!(
                "  server CPU {:.3} us per delivery (user {:.3}, sys {:.3}); {} op-9 frames; bench CPU {:.2} s",
                p.server_us_per_delivery,
                p.server_user_us_per_delivery,
                p.server_system_us_per_delivery,
                p.batches,
                p.bench_cpu.total()
            );
            println!("  latency {}", p.latency);
        }
        let c = &self.counters;
        println!(
            "clients: {} authenticated, {} open, {} failed, {} closed, {} heartbeats ({} replies), {} malformed",
            c.authed,
            c.open(),
            c.failed,
            c.closed,
            c.heartbeats,
            c.heartbeat_replies,
            c.malformed
        );
        for s in &self.servers {
            println!(
                "  {} (pid {}): {:.1} MB, CPU {:.2} s user + {:.2} s sys",
                s.name,
                s.pid,
                s.rss as f64 / 1e6,
                s.cpu.user,
                s.cpu.system
            );
        }
        if self.ok {
            println!("OK: every count is what it should be");
        } else {
            for problem in &self.problems {
                println!("PROBLEM: {problem}");
            }
        }
    }
}
