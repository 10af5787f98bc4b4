//! A throwaway Kafka-protocol broker for tests: [tansu](https://tansu.io) with in-memory storage.
//!
//! The bus is tested against a real broker speaking the Kafka wire protocol (produce, fetch, consumer
//! groups, offset commits, topic creation), never a mock. tansu is a single Rust binary that starts in
//! well under a second with in-memory storage, so each test gets its own broker on its own free port
//! and no state leaks between tests. The broker process is killed when the [`TestKafka`] is dropped.

use crate::ports::free_port;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh broker may take to answer its first metadata request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What to install when the broker binary is missing.
const INSTALL_HINT: &str = "install it with `cargo install tansu --version 0.6.0 --features dynostore --locked` \
     (scripts/test.sh does this) or point RIM_TANSU_BIN at the binary";

/// A running tansu broker on a free loopback port; killed on drop.
pub struct TestKafka {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl TestKafka {
    /// Starts a broker and waits until it answers a metadata request.
    ///
    /// Panics with the install hint when tansu cannot be found, and with the broker's own output when
    /// it does not come up: a test without its broker cannot mean anything.
    pub fn start() -> TestKafka {
        let binary =
            find_tansu().unwrap_or_else(|| panic!("tansu broker binary not found: {INSTALL_HINT}"));
        let port = free_port().expect("no free loopback port");
        let url = format!("tcp://127.0.0.1:{port}");
        let log = tempfile::NamedTempFile::new().expect("temporary log file for tansu");
        // Clones share one file offset, so the two streams interleave instead of overwriting.
        let stdout = log.as_file().try_clone().expect("tansu log handle");
        let stderr = log.as_file().try_clone().expect("tansu log handle");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let mut broker = TestKafka { child, port, log };
        broker.wait_ready();
        broker
    }

    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Polls metadata until the broker answers, or panics with its output after [`START_TIMEOUT`].
    fn wait_ready(&mut self) {
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("log_level", "0")
            .create()
            .expect("rdkafka client for the readiness probe");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tansu exited during startup ({status}):\n{}", self.output());
            }
            if probe
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "tansu did not answer metadata within {START_TIMEOUT:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the broker printed so far (for failure messages).
    fn output(&self) -> String {
        let mut text = String::new();
        match self.log.reopen() {
            Ok(mut file) => {
                let _ = file.read_to_string(&mut text);
            }
            Err(err) => text = format!("(log unreadable: {err})"),
        }
        text
    }
}

impl Drop for TestKafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tansu binary: `RIM_TANSU_BIN`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu`.
fn find_tansu() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RIM_TANSU_BIN") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"));
    let in_cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map(|dir| dir.join("bin").join("tansu"));
    on_path.chain(in_cargo_home).find(|path| path.is_file())
}
