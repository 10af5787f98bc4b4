//! What a process costs, from `/proc`: resident memory and CPU time (user and kernel), and the
//! machine's load average to print next to any number measured on a shared machine.

use anyhow::Context;
use serde::Serialize;

/// CPU ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident set size in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kb * 1024)
}

/// CPU seconds of a whole process (exited threads included), split as the kernel accounts them.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Cpu {
    /// In the process's own code.
    pub user: f64,
    /// In the kernel on its behalf (on loopback this includes the peer's TCP receive path).
    pub system: f64,
}

impl Cpu {
    /// User + system.
    pub fn total(&self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Sub for Cpu {
    type Output = Self;
    fn sub(self, before: Self) -> Self {
        Self {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }
}

impl std::ops::Add for Cpu {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

/// The CPU time `pid` has used so far (`ticks` from [`clock_ticks`]).
pub fn cpu(pid: u32, ticks: f64) -> anyhow::Result<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<f64> {
        let value = fields.get(n - 3).context("short /proc stat")?;
        Ok(value.parse::<u64>()? as f64 / ticks)
    };
    Ok(Cpu {
        user: field(14)?,
        system: field(15)?,
    })
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`).
pub fn load_average() -> anyhow::Result<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let mut next = || -> anyhow::Result<f64> { Ok(fields.next().context("short /proc/loadavg")??) };
    Ok([next()?, next()?, next()?])
}

/// Named server processes whose cost a scenario measures.
#[derive(Debug, Clone)]
pub struct Watched {
    /// (name, pid) of each process.
    pub processes: Vec<(String, u32)>,
    ticks: f64,
}

/// One process's CPU and memory at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSample {
    /// The name the scenario gave it.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// CPU used so far.
    pub cpu: Cpu,
    /// Resident memory, bytes.
    pub rss: u64,
}

impl Watched {
    /// Watches `processes` (name, pid).
    pub fn new(processes: Vec<(String, u32)>) -> Self {
        Self {
            processes,
            ticks: clock_ticks(),
        }
    }

    /// Every watched process's CPU and memory now.
    pub fn sample(&self) -> anyhow::Result<Vec<ProcessSample>> {
        self.processes
            .iter()
            .map(|(name, pid)| {
                Ok(ProcessSample {
                    name: name.clone(),
                    pid: *pid,
                    cpu: cpu(*pid, self.ticks)?,
                    rss: rss_bytes(*pid)?,
                })
            })
            .collect()
    }
}

/// The CPU all processes used between two samples.
pub fn cpu_between(before: &[ProcessSample], after: &[ProcessSample]) -> Cpu {
    let sum = |samples: &[ProcessSample]| {
        samples
            .iter()
            .fold(Cpu::default(), |total, sample| total + sample.cpu)
    };
    sum(after) - sum(before)
}

/// The resident memory of all processes in a sample, bytes.
pub fn total_rss(samples: &[ProcessSample]) -> u64 {
    samples.iter().map(|sample| sample.rss).sum()
}
