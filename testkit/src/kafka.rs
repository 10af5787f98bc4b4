//! A throwaway Kafka-protocol broker for tests: [tansu](https://tansu.io) with in-memory storage.
//!
//! The bus is tested against a real broker speaking the Kafka wire protocol (produce, fetch, consumer
//! groups, offset commits, topic creation), never a mock. tansu is a single Rust binary that starts in
//! well under a second with in-memory storage, so each test gets its own broker on its own free port
//! and no state leaks between tests. The broker process is killed when the [`TestKafka`] is dropped.
//!
//! Outages: [`TestKafka::stop`] kills the broker and [`TestKafka::start_again`] starts a fresh one on
//! the same port. With memory storage the fresh broker has lost every topic, group and offset, which
//! is the harshest broker restart a client must survive.

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
    /// The broker process; `None` while stopped.
    child: Option<Child>,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl TestKafka {
    /// Starts a broker and waits until it answers a metadata request.
    ///
    /// Panics with the install hint when tansu cannot be found, and with the broker's own output when
    /// it does not come up: a test without its broker cannot mean anything.
    pub fn start() -> TestKafka {
        let port = free_port().expect("no free loopback port");
        let log = tempfile::NamedTempFile::new().expect("temporary log file for tansu");
        let mut broker = TestKafka {
            child: None,
            port,
            log,
        };
        broker.start_again();
        broker
    }

    /// Kills the broker (SIGKILL: no clean shutdown); clients see a dead broker until
    /// [`TestKafka::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh broker on the same port (stopping the running one first) and waits until it
    /// answers. With memory storage it knows no topics, groups or offsets.
    pub fn start_again(&mut self) {
        self.stop();
        let binary =
            find_tansu().unwrap_or_else(|| panic!("tansu broker binary not found: {INSTALL_HINT}"));
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // Clones share one file offset, so the two streams interleave instead of overwriting.
        let stdout = self.log.as_file().try_clone().expect("tansu log handle");
        let stderr = self.log.as_file().try_clone().expect("tansu log handle");
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
        self.child = Some(child);
        self.wait_ready();
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
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
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
        self.stop();
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
