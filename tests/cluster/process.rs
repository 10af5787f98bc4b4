//! One `rim` process of a test cluster: started with its arguments, logging to its own file,
//! killed (SIGKILL), stopped (SIGTERM, waited for) and started again with the same arguments.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a stopped process may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A `rim` child process; killed when dropped.
pub struct Process {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `rim <args>`, logging to `<dir>/<name>.log`.
    pub fn start(dir: &Path, name: &str, args: Vec<String>) -> Process {
        let mut process = Process {
            name: name.to_owned(),
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        process.restart();
        process
    }

    /// Starts the process again with the same arguments (after [`Process::kill`] or
    /// [`Process::stop`]); its log continues in the same file.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("process log file");
        let child = Command::new(env!("CARGO_BIN_EXE_rim"))
            .args(&self.args)
            .env("RIM_CLUSTER_SECRET", super::CLUSTER_SECRET)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start rim {}: {err}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL: the process ends at once, without any cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a graceful exit (killed after a bound).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        // The wait blocks this thread only: the test's other tasks (the clients recording what
        // arrives) keep running on the runtime's other workers.
        let exited = tokio::task::block_in_place(|| {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        if exited {
            return;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{} did not stop within {STOP_TIMEOUT:?}", self.name);
    }

    /// The last lines of its log, headed by its name (and how it ended, if it did).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        let ended = self.child.as_ref().and_then(|child| ended(child.id()));
        format!(
            "--- {}{} ---\n{}\n",
            self.name,
            ended.unwrap_or_default(),
            lines[start..].join("\n")
        )
    }
}

/// How a child that ended on its own ended (" (exited: ...)"), read from its not yet reaped
/// entry in `/proc` (Linux; `None` elsewhere, or while it runs): a process that crashed (e.g. a
/// SIGSEGV in librdkafka) leaves no line in its log, only this.
fn ended(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses): state is field 3, exit_code field 52.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() != Some(&"Z") {
        return None;
    }
    let code: i32 = fields.get(49)?.parse().ok()?;
    Some(match code & 0x7f {
        0 => format!(" (exited: status {})", code >> 8),
        signal => format!(" (exited: killed by signal {signal})"),
    })
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
