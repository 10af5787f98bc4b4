//! A throwaway PostgreSQL cluster for tests: its own data directory, a free loopback port, removed
//! when dropped.
//!
//! The store is tested against the real server, never a mock. Creating a cluster with `initdb` costs
//! seconds, so it runs once per PostgreSQL version into a template directory (shared by every test
//! process of the machine, published with an atomic rename) and each cluster starts from a copy of it.
//! Tests that only need an empty database share one cluster per process ([`TestPostgres::shared`])
//! and take a fresh database each ([`TestPostgres::fresh_database`]); tests that stop the server own
//! a cluster ([`TestPostgres::start`]). Durability is switched off (`fsync=off`): the data is thrown
//! away anyway.
//!
//! `initdb` and `postgres` refuse to run as root; under root (CI) every server command runs as the
//! `postgres` user through `runuser`, and the cluster directory is handed to that user. A watchdog
//! shell stops the server and removes the directory once the test process is gone, so clusters of a
//! crashed test, or the shared one (a static is never dropped), do not outlive their process.

use crate::ports::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// What to do when the server binaries are missing.
const INSTALL_HINT: &str = "install the PostgreSQL server (scripts/test.sh does: `apt-get install postgresql`) \
     or point RIM_PG_BIN at the directory holding initdb, pg_ctl and postgres";

/// Bumped whenever the `initdb` arguments change, so an old cached template is not reused.
const TEMPLATE_LAYOUT: &str = "v1";

/// The superuser `initdb` creates; tests connect as it without a password (trust on loopback).
const SUPERUSER: &str = "postgres";

/// A PostgreSQL cluster of this test process; stopped and deleted on drop.
pub struct TestPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    watchdog: Child,
    databases: AtomicU64,
}

impl TestPostgres {
    /// Creates and starts a new cluster on a free port, waiting until it accepts connections.
    ///
    /// Panics with an install hint when the server binaries are missing and with the server log when
    /// it does not start: a store test without its database cannot mean anything.
    pub fn start() -> TestPostgres {
        let bin = find_bin_dir()
            .unwrap_or_else(|| panic!("PostgreSQL server binaries not found: {INSTALL_HINT}"));
        let template = template_cluster(&bin);
        let dir = tempfile::Builder::new()
            .prefix("rim-pg-")
            .tempdir()
            .unwrap_or_else(|err| panic!("cannot create a directory for PostgreSQL: {err}"));
        let data = dir.path().join("data");
        run(
            Command::new("cp").arg("-a").arg(&template).arg(&data),
            "copy the template cluster",
        );
        hand_to_server_user(dir.path());
        let port = free_port().unwrap_or_else(|err| panic!("no free loopback port: {err}"));
        let watchdog = spawn_watchdog(&bin, dir.path());
        let cluster = TestPostgres {
            bin,
            dir,
            port,
            watchdog,
            databases: AtomicU64::new(0),
        };
        cluster.start_again();
        cluster
    }

    /// The cluster shared by every test of this process, started on first use.
    pub fn shared() -> &'static TestPostgres {
        static SHARED: OnceLock<TestPostgres> = OnceLock::new();
        SHARED.get_or_init(TestPostgres::start)
    }

    /// URL of the cluster's default `postgres` database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Creates a new, empty database and returns its URL; tests sharing a cluster stay isolated.
    pub fn fresh_database(&self) -> String {
        let number = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("rim_test_{}_{number}", std::process::id());
        let port = self.port.to_string();
        run(
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                ])
                .args(["-U", SUPERUSER, "-d", "postgres", "-c"])
                .arg(format!("CREATE DATABASE \"{name}\"")),
            "create a test database",
        );
        self.database_url(&name)
    }

    /// Stops the server (fast shutdown: open connections are closed). Clients see it as down until
    /// [`TestPostgres::start_again`].
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-w", "-m", "fast"], "stop PostgreSQL");
    }

    /// Starts the server again on the same port, with the same data, and waits until it is ready.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let started = self
            .server_command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-o", &options])
            .stdin(Stdio::null())
            .output();
        match started {
            Ok(output) if output.status.success() => {}
            other => panic!(
                "PostgreSQL did not start ({}); its log:\n{}",
                describe(&other),
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }

    fn database_url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str], what: &str) {
        run(
            self.server_command("pg_ctl")
                .args(args)
                .arg("-D")
                .arg(self.data_dir()),
            what,
        );
    }

    fn server_command(&self, program: &str) -> Command {
        server_command(&self.bin, program)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Best effort: the watchdog would do the same once the process is gone.
        let _ = self
            .server_command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .output();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

/// The directory holding initdb/pg_ctl/postgres: `RIM_PG_BIN`, else PostgreSQL 15 from the Debian
/// packages, else the newest installed major version.
fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("RIM_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|dir| dir.join("initdb").exists());
    }
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if preferred.join("initdb").exists() {
        return Some(preferred);
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

/// A freshly initialised cluster directory for this server version, created once per machine.
fn template_cluster(bin: &Path) -> PathBuf {
    let version = run(
        server_command(bin, "postgres").arg("--version"),
        "ask postgres its version",
    );
    let version: String = String::from_utf8_lossy(&version.stdout)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let template = std::env::temp_dir().join(format!(
        "rim-testkit-pg-template-{TEMPLATE_LAYOUT}-{}",
        version.trim_matches('_')
    ));
    if template.join("PG_VERSION").exists() {
        return template;
    }
    let staging = tempfile::Builder::new()
        .prefix("rim-pg-template-")
        .tempdir()
        .unwrap_or_else(|err| panic!("cannot create a directory for initdb: {err}"));
    hand_to_server_user(staging.path());
    let data = staging.path().join("data");
    run(
        server_command(bin, "initdb")
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data),
        "initdb",
    );
    // Another test process may have published its template meanwhile; either one will do.
    if std::fs::rename(&data, &template).is_err() && !template.join("PG_VERSION").exists() {
        panic!(
            "cannot publish the template cluster at {}",
            template.display()
        );
    }
    template
}

/// Whether server commands must switch to the `postgres` user (they refuse to run as root).
fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
    })
}

/// A command running `program` of the server binaries, as the `postgres` user when we are root.
fn server_command(bin: &Path, program: &str) -> Command {
    let program = bin.join(program);
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", SUPERUSER, "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Gives a directory we created to the `postgres` user when the server runs as that user.
fn hand_to_server_user(dir: &Path) {
    if running_as_root() {
        run(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir),
            "give the cluster directory to the postgres user",
        );
    }
}

/// Starts a shell that waits for this process to end, then stops the cluster in `dir` and removes it.
fn spawn_watchdog(bin: &Path, dir: &Path) -> Child {
    let pg_ctl = server_command(bin, "pg_ctl");
    let script = r#"pid=$1; dir=$2; shift 2
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
"$@" stop -m immediate -D "$dir/data" >/dev/null 2>&1
rm -rf "$dir""#;
    Command::new("sh")
        .args(["-c", script, "rim-pg-watchdog"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(pg_ctl.get_program())
        .args(pg_ctl.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start the cluster watchdog: {err}"))
}

/// Runs a command to completion, panicking with its output when it fails.
fn run(command: &mut Command, what: &str) -> Output {
    let output = command.stdin(Stdio::null()).output();
    match output {
        Ok(output) if output.status.success() => output,
        other => panic!("cannot {what}: {}", describe(&other)),
    }
}

fn describe(output: &std::io::Result<Output>) -> String {
    match output {
        Ok(output) => format!(
            "{}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(err) => err.to_string(),
    }
}
