//! A server under measurement in a child process of its own, so that `/proc/<pid>` shows its CPU
//! and memory apart from the load's. Each such child (`edge-under-test`, `rim-bench
//! httpdns-server`, `control-bench --serve`) prints one line once it listens, `name=<address>`
//! pairs separated by spaces, and runs until its standard input closes.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The line a child printed once it was listening.
#[derive(Debug)]
pub struct Announcement(String);

impl Announcement {
    /// The address printed as `name=<address>`.
    pub fn addr(&self, name: &str) -> anyhow::Result<SocketAddr> {
        self.0
            .split_whitespace()
            .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name}= in {:?}", self.0))?
            .parse()
            .with_context(|| format!("bad {name} address in {:?}", self.0))
    }
}

/// Starts `command` (`what` names it in errors) with piped standard input and output, killed when
/// dropped, and waits at most `within` for its announcement.
pub async fn spawn_announced(
    command: &mut Command,
    what: &str,
    within: Duration,
) -> anyhow::Result<(Child, Announcement)> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().context("no child stdout")?;
    let mut line = String::new();
    tokio::time::timeout(within, BufReader::new(stdout).read_line(&mut line))
        .await
        .with_context(|| format!("{what} did not print its address"))??;
    Ok((child, Announcement(line)))
}

#[cfg(test)]
mod tests {
    use super::Announcement;

    #[test]
    fn an_announcement_names_each_address() {
        let line = Announcement("tcp=127.0.0.1:3101 ws=127.0.0.1:3102\n".into());
        assert_eq!(line.addr("tcp").unwrap().port(), 3101);
        assert_eq!(line.addr("ws").unwrap().port(), 3102);
        assert!(line.addr("internal").is_err(), "a name it did not print");
        assert!(Announcement("addr=nowhere".into()).addr("addr").is_err());
    }
}
