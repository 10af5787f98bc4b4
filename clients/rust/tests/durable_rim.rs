//! A durable session against a real `rim dev` (control plane with its in-memory inbox, bus, job and
//! edge in one process) over real sockets: user pushes arrive with their positions; a connection
//! cut by a proxy comes back by itself and receives what was sent meanwhile, replayed, in order,
//! once, then the "resumed n" answer, then live pushes; acks follow what the app processed.
//!
//! The rim binary comes from `RIM_BIN` (`scripts/test.sh` names the one its workspace build made),
//! or is the workspace's `target/debug/rim`, built first when the test runs under cargo-nextest
//! (which holds no build lock while tests run). That build has rim's own feature set, not the
//! workspace's, so it may rebuild rim. Under plain `cargo test`, build it first
//! (`cargo build -p rim --bin rim`).

use rim_client::{
    AdaptiveHeartbeat, Durable, MemoryPositions, ResumeOutcome, Session, SessionConfig,
    SessionEvent, StreamKind,
};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(30);
const MID: i64 = 4343;

/// The rim binary to run.
fn rim_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RIM_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "RIM_BIN names {}, which is missing",
            path.display()
        );
        return path;
    }
    // This test runs from target/<profile>/deps/; the binary is target/<profile>/rim.
    let exe = std::env::current_exe().expect("the test's own path");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("rim");
    if std::env::var_os("NEXTEST").is_some() {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = std::process::Command::new(cargo)
            .args(["build", "--quiet", "--locked", "-p", "rim", "--bin", "rim"])
            .current_dir(workspace)
            .status()
            .expect("running cargo build");
        assert!(built.success(), "cargo build -p rim --bin rim failed");
    }
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p rim --bin rim` (or set RIM_BIN)",
        binary.display()
    );
    binary
}

/// A free loopback port for `rim dev` to bind (see rim-testkit's ports module for why not 0).
fn free_port() -> u16 {
    rim_testkit::ports::free_port().expect("a free port")
}

/// `rim dev` on free loopback ports, killed when dropped.
struct RimDev {
    _child: Child,
    tcp: u16,
    control: String,
}

impl RimDev {
    async fn start() -> RimDev {
        // reqwest is built without a bundled TLS provider in this workspace.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let [tcp, ws, internal, control] = [free_port(), free_port(), free_port(), free_port()];
        let child = Command::new(rim_binary())
            .arg("dev")
            .args(["--edge-tcp-listen", &format!("127.0.0.1:{tcp}")])
            .args(["--edge-ws-listen", &format!("127.0.0.1:{ws}")])
            .args(["--edge-wss-listen", "", "--edge-tls-listen", ""])
            .args(["--edge-internal-listen", &format!("127.0.0.1:{internal}")])
            .args(["--control-listen", &format!("127.0.0.1:{control}")])
            .args(["--edge-public-hostname", "127.0.0.1"])
            .args(["--edge-public-addresses", "127.0.0.1"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting rim dev");
        let control = format!("http://127.0.0.1:{control}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if registered(&http, &control).await {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rim dev never came up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        RimDev {
            _child: child,
            tcp,
            control,
        }
    }

    async fn push_to_user(&self, body: &str) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/goim/push/mids?operation=1000&mids={MID}",
                self.control
            ))
            .body(body.to_owned())
            .send()
            .await
            .expect("the push API answers");
        assert!(
            response.status().is_success(),
            "push: {}",
            response.status()
        );
    }
}

/// Whether HTTPDNS names a registered node (not only the fallback domain) yet.
async fn registered(http: &reqwest::Client, control: &str) -> bool {
    let Ok(response) = http
        .get(format!("{control}/v1/dns?platform=web"))
        .send()
        .await
    else {
        return false;
    };
    let Ok(body) = response.bytes().await else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|json| {
        json["ranked"]
            .as_array()
            .is_some_and(|nodes| !nodes.is_empty())
    })
}

/// A TCP forwarder to the edge whose connections the test can cut (and refuse while cut).
struct Proxy {
    addr: String,
    down: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let down = Arc::new(AtomicBool::new(false));
        let pipes = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (down, pipes) = (down.clone(), pipes.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if down.load(Ordering::Acquire) {
                        continue; // dropped: refused
                    }
                    let pipe = tokio::spawn(async move {
                        if let Ok(mut edge) = TcpStream::connect(("127.0.0.1", target)).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut edge).await;
                        }
                    });
                    pipes.lock().await.push(pipe);
                }
            }
        });
        Proxy {
            addr,
            down,
            pipes,
            _accept: accept,
        }
    }

    /// Cuts every connection and refuses new ones until [`Proxy::restore`].
    async fn cut(&self) {
        self.down.store(true, Ordering::Release);
        for pipe in self.pipes.lock().await.drain(..) {
            pipe.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::Release);
    }
}

/// What the app saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Push {
        body: String,
        seq: u64,
        replay: bool,
    },
    Answer(ResumeOutcome, u64),
    Connected,
}

/// Takes events (processing each push by asking for the next) until `done` holds.
async fn until(session: &mut Session, seen: &mut Vec<Seen>, done: impl Fn(&[Seen]) -> bool) {
    while !done(seen) {
        let event = tokio::time::timeout(PATIENCE, session.next())
            .await
            .unwrap_or_else(|_| panic!("nothing more arrived; saw {seen:?}"))
            .expect("session alive");
        match event {
            SessionEvent::Durable(push) => {
                assert_eq!(push.kind, StreamKind::User);
                seen.push(Seen::Push {
                    body: String::from_utf8_lossy(&push.body).into_owned(),
                    seq: push.position.seq,
                    replay: push.replay,
                });
            }
            SessionEvent::Resume(answer) if answer.kind == StreamKind::User => {
                seen.push(Seen::Answer(answer.outcome, answer.position.seq));
            }
            SessionEvent::Connected { .. } => seen.push(Seen::Connected),
            _ => {}
        }
    }
}

fn bodies(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter_map(|event| match event {
            Seen::Push { body, .. } => Some(body.clone()),
            _ => None,
        })
        .collect()
}

fn answers(seen: &[Seen]) -> usize {
    seen.iter()
        .filter(|event| matches!(event, Seen::Answer(..)))
        .count()
}

#[tokio::test]
async fn a_cut_connection_comes_back_and_receives_what_it_missed_once_in_order_then_live() {
    let rim = RimDev::start().await;
    let proxy = Proxy::start(rim.tcp).await;
    let store = Arc::new(MemoryPositions::default());
    let body = serde_json::json!({"mid": MID, "key": "durable-rs", "accepts": [1000]})
        .to_string()
        .into_bytes();
    let config = SessionConfig {
        addresses: vec![proxy.addr.clone()],
        httpdns: None,
        auth_body: Arc::new(move || body.clone()),
        heartbeat: AdaptiveHeartbeat::fixed(Duration::from_secs(30)),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    let mut session = Session::start_durable(config, Durable::new().store(store.clone()), 1024);
    let mut seen = Vec::new();
    until(&mut session, &mut seen, |seen| answers(seen) == 1).await;
    for n in 0..5 {
        rim.push_to_user(&format!("live {n}")).await;
    }
    until(&mut session, &mut seen, |seen| bodies(seen).len() == 5).await;

    proxy.cut().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..50 {
        rim.push_to_user(&format!("away {n}")).await;
    }
    proxy.restore();
    until(&mut session, &mut seen, |seen| answers(seen) == 2).await;
    rim.push_to_user("live after").await;
    until(&mut session, &mut seen, |seen| {
        bodies(seen).last().map(String::as_str) == Some("live after")
    })
    .await;

    let expected: Vec<String> = (0..5)
        .map(|n| format!("live {n}"))
        .chain((0..50).map(|n| format!("away {n}")))
        .chain(["live after".to_owned()])
        .collect();
    assert_eq!(bodies(&seen), expected, "every push once, in order");
    let pushes: Vec<(u64, bool)> = seen
        .iter()
        .filter_map(|event| match event {
            Seen::Push { seq, replay, .. } => Some((*seq, *replay)),
            _ => None,
        })
        .collect();
    assert!(
        pushes.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "{pushes:?}"
    );
    assert!(
        pushes[5..55].iter().all(|(_, replay)| *replay),
        "{pushes:?}"
    );
    let second_answer = seen
        .iter()
        .filter(|event| matches!(event, Seen::Answer(..)))
        .nth(1)
        .cloned();
    assert_eq!(
        second_answer,
        Some(Seen::Answer(ResumeOutcome::Resumed(50), pushes[54].0)),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|event| **event == Seen::Connected)
            .count()
            >= 2,
        "reconnected"
    );
    // Ask once more so the last push counts as processed; the store follows.
    let _ = tokio::time::timeout(Duration::from_millis(100), session.next()).await;
    assert_eq!(store.get().user.map(|p| p.seq), Some(pushes[55].0));
}
