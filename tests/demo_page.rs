//! The demo page of `rim dev` in a real browser (issue 7's "done when"): headless Chromium, driven
//! over the Chrome DevTools Protocol, loads the page, which connects through HTTPDNS with the
//! JavaScript client; pushes to the room, the user and everyone through the REST API show on the
//! page, and so do a room change and the page's own push form; after `rim dev` restarts on the same
//! ports the page reconnects and receives again.
//!
//! Needs `/usr/bin/chromium` (`scripts/test.sh` installs Debian's package when it is missing).

mod cluster;

use cluster::PATIENCE;
use cluster::process::Process;
use futures_util::{SinkExt, StreamExt};
use rim_testkit::ports::free_port;
use serde_json::{Value, json};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The browser the test drives.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The user the page connects as.
const MID: i64 = 4242;
/// How often a wait looks at the page again.
const POLL: Duration = Duration::from_millis(100);

/// What the page shows, read from its DOM (what a person sees, not the client's internals).
const SNAPSHOT: &str = r#"(() => {
  const text = (id) => document.getElementById(id)?.textContent ?? null;
  const state = document.getElementById('state');
  const answer = document.getElementById('push-answer');
  return {
    state: state?.dataset.state ?? null,
    opens: Number(state?.dataset.opens ?? 0),
    endpoint: text('endpoint'),
    room: text('room'),
    online: Number(text('online')) || 0,
    messages: [...document.querySelectorAll('#messages li')].map((li) => ({op: Number(li.dataset.op), text: li.dataset.text})),
    events: [...document.querySelectorAll('#events li')].map((li) => li.dataset.text),
    push_status: answer?.dataset.status ?? null,
    push_answer: answer?.textContent ?? null,
  };
})()"#;

/// The test's directory (Chromium's profile, the logs of `rim dev` and Chromium): removed after a
/// passing run, kept (and named on stderr) when the test fails.
struct Logs(tempfile::TempDir);

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.disable_cleanup(true);
            eprintln!("logs kept in {}", self.0.path().display());
        }
    }
}

/// Headless Chromium on a fresh profile; killed when dropped.
struct Browser {
    child: Child,
}

impl Browser {
    /// Starts Chromium with its DevTools endpoint on `port`, logging to `<dir>/chromium.log`.
    fn start(dir: &Path, port: u16) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: install Debian's chromium package (scripts/test.sh does)"
        );
        let log = File::create(dir.join("chromium.log")).expect("chromium log");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(format!("--remote-debugging-port={port}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {CHROMIUM}: {err}"));
        Browser { child }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools Protocol session with one page; keeps what the page logged.
struct Page {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    console: Vec<String>,
}

impl Page {
    /// Attaches to the first page target of the browser whose DevTools endpoint is `devtools`.
    async fn attach(http: &reqwest::Client, devtools: &str) -> Result<Page, String> {
        let deadline = Instant::now() + PATIENCE;
        let url = loop {
            let targets = async {
                http.get(format!("{devtools}/json/list"))
                    .send()
                    .await?
                    .json::<Vec<Value>>()
                    .await
            };
            if let Ok(targets) = targets.await
                && let Some(url) = targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break url.to_owned();
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Chromium's DevTools endpoint {devtools} listed no page within {PATIENCE:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(&url)
            .await
            .map_err(|err| format!("DevTools WebSocket {url}: {err}"))?;
        let mut page = Page {
            socket,
            next_id: 0,
            console: Vec::new(),
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await?;
        }
        Ok(page)
    }

    /// Calls a DevTools method and returns its result, recording the events that arrive meanwhile.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(request.to_string()))
            .await
            .map_err(|err| format!("sending {method}: {err}"))?;
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .map_err(|_| format!("no answer to {method} within {PATIENCE:?}"))?
                .ok_or_else(|| format!("DevTools closed the connection during {method}"))?
                .map_err(|err| format!("DevTools connection failed during {method}: {err}"))?;
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text)
                .map_err(|err| format!("DevTools sent no JSON ({err}): {text}"))?;
            if value["id"] == id {
                return match value.get("error") {
                    Some(error) => Err(format!("{method}: {error}")),
                    None => Ok(value["result"].clone()),
                };
            }
            self.record(&value);
        }
    }

    /// Keeps console calls, uncaught exceptions and browser log entries (failed loads) of the page.
    fn record(&mut self, event: &Value) {
        let params = &event["params"];
        let line = match event["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|arg| match &arg["value"] {
                        Value::String(text) => text.clone(),
                        Value::Null => arg["description"].as_str().unwrap_or("?").to_owned(),
                        other => other.to_string(),
                    })
                    .collect();
                format!(
                    "console.{}: {}",
                    params["type"].as_str().unwrap_or("?"),
                    args.join(" ")
                )
            }
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let description = details["exception"]["description"]
                    .as_str()
                    .or(details["text"].as_str())
                    .unwrap_or("?");
                format!("uncaught: {description}")
            }
            Some("Log.entryAdded") => {
                let entry = &params["entry"];
                format!(
                    "log.{}: {} {}",
                    entry["level"].as_str().unwrap_or("?"),
                    entry["text"].as_str().unwrap_or("?"),
                    entry["url"].as_str().unwrap_or("")
                )
            }
            _ => return,
        };
        self.console.push(line);
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON.
    async fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call("Runtime.evaluate", params).await?;
        match result.get("exceptionDetails") {
            Some(details) => Err(format!("evaluating {expression}: {details}")),
            None => Ok(result["result"]["value"].clone()),
        }
    }
}

/// `rim dev`, Chromium showing the demo page, and an HTTP client for the REST API.
struct Demo {
    rim: Process,
    _browser: Browser,
    page: Page,
    http: reqwest::Client,
    control: String,
    ws_port: u16,
    _logs: Logs,
}

impl Demo {
    /// Starts `rim dev` on free loopback ports and Chromium, and opens the demo page as [`MID`].
    async fn start() -> Demo {
        // reqwest is built without a bundled TLS provider; an error means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let logs = Logs(
            tempfile::Builder::new()
                .prefix("rim-demo-page-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("test directory"),
        );
        let dir = logs.0.path();
        let port = || free_port().expect("free port");
        let (control_port, ws_port) = (port(), port());
        let mut args = vec!["dev".to_owned()];
        for (flag, port) in [
            ("--edge-tcp-listen", port()),
            ("--edge-ws-listen", ws_port),
            ("--edge-wss-listen", port()),
            ("--edge-tls-listen", port()),
            ("--edge-internal-listen", port()),
            ("--control-listen", control_port),
            ("--job-listen", port()),
        ] {
            args.push(format!("{flag}=127.0.0.1:{port}"));
        }
        let rim = Process::start(dir, "rim-dev", args);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let devtools_port = port();
        let browser = Browser::start(dir, devtools_port);
        let page = Page::attach(&http, &format!("http://127.0.0.1:{devtools_port}"))
            .await
            .unwrap_or_else(|err| {
                let log = std::fs::read_to_string(dir.join("chromium.log")).unwrap_or_default();
                panic!("{err}\n--- chromium ---\n{log}")
            });
        let mut demo = Demo {
            rim,
            _browser: browser,
            page,
            http,
            control: format!("http://127.0.0.1:{control_port}"),
            ws_port,
            _logs: logs,
        };
        demo.wait_for_httpdns().await;
        let url = format!("{}/?mid={MID}", demo.control);
        if let Err(err) = demo.page.call("Page.navigate", json!({"url": url})).await {
            panic!(
                "{}",
                demo.failure(&format!("navigating to {url}: {err}"), &Value::Null)
            );
        }
        demo
    }

    /// Waits until `rim dev`'s HTTPDNS answers a node (its edge registered); returns the answer.
    async fn wait_for_httpdns(&mut self) -> Value {
        let url = format!("{}/v1/dns?platform=web", self.control);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = async { self.http.get(&url).send().await?.json::<Value>().await };
            if let Ok(answer) = answer.await
                && answer["answer"]["nodes"]
                    .as_array()
                    .is_some_and(|nodes| !nodes.is_empty())
            {
                return answer;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}",
                    self.failure(&format!("{url} answering a node"), &Value::Null)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the page shows now (null while no document answers, e.g. during navigation).
    async fn snapshot(&mut self) -> Value {
        self.page.eval(SNAPSHOT).await.unwrap_or(Value::Null)
    }

    /// Waits until what the page shows satisfies `check`; fails with the page, its console and the
    /// gateway's log after [`PATIENCE`].
    async fn wait_until(&mut self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let snapshot = self.snapshot().await;
            if !snapshot.is_null() && check(&snapshot) {
                return snapshot;
            }
            if Instant::now() > deadline {
                panic!("{}", self.failure(&format!("the page: {what}"), &snapshot));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The failure message: what did not happen, the page, its console, and `rim dev`'s log.
    fn failure(&self, what: &str, snapshot: &Value) -> String {
        format!(
            "{what}: not within {PATIENCE:?}\npage: {snapshot:#}\nconsole:\n  {}\n{}",
            self.page.console.join("\n  "),
            self.rim.log_tail()
        )
    }

    /// Pushes `body` through the goim route `route` (path and query) and expects success.
    async fn push(&self, route: &str, body: &str) {
        let url = format!("{}{route}", self.control);
        let response = self
            .http
            .post(&url)
            .body(body.to_owned())
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST {url}: {err}"));
        let status = response.status();
        let answer = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST {url}: HTTP {status}: {answer}");
    }

    /// Pushes `body` through `route` and waits until the page lists it as an op-1000 message.
    async fn push_and_see(&mut self, route: &str, body: &str) {
        self.push(route, body).await;
        self.wait_for_message(body).await;
    }

    /// Waits until the page lists `body` as an op-1000 message.
    async fn wait_for_message(&mut self, body: &str) {
        let expected = json!({"op": 1000, "text": body});
        self.wait_until(&format!("shows the message {body:?}"), |page| {
            page["messages"]
                .as_array()
                .is_some_and(|messages| messages.contains(&expected))
        })
        .await;
    }

    /// Pushes to the user, to everyone and to `room` (`type://id`), and sees each on the page. The
    /// room comes last: after a reconnect the client sends its room change as soon as it is open
    /// (before the page shows `open`), and two pushes later the edge has long applied it.
    async fn push_to_all_targets(&mut self, room: &str, round: &str) {
        self.push_and_see(
            &format!("/goim/push/mids?operation=1000&mids={MID}"),
            &format!("{round}: to user {MID}"),
        )
        .await;
        self.push_and_see(
            "/goim/push/all?operation=1000",
            &format!("{round}: to everyone"),
        )
        .await;
        let (kind, id) = room.split_once("://").expect("room is type://id");
        self.push_and_see(
            &format!("/goim/push/room?operation=1000&type={kind}&room={id}"),
            &format!("{round}: to room {room}"),
        )
        .await;
    }

    /// Runs `script` in the page (filling and submitting its forms), failing with the page's state.
    async fn act(&mut self, script: &str) {
        if let Err(err) = self.page.eval(script).await {
            let snapshot = self.snapshot().await;
            panic!("{}", self.failure(&err, &snapshot));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_connects_through_httpdns_receives_pushes_and_survives_a_restart() {
    let mut demo = Demo::start().await;

    // Connected where HTTPDNS said (the page has no other source of endpoints), with an online count.
    let dns = demo.wait_for_httpdns().await;
    let answer = &dns["answer"];
    assert_eq!(
        answer["ws_port"], demo.ws_port,
        "HTTPDNS advertises the edge's WebSocket port: {dns:#}"
    );
    let endpoint = format!(
        "ws://{}:{}/sub",
        answer["nodes"][0].as_str().unwrap_or("?"),
        demo.ws_port
    );
    let page = demo
        .wait_until(
            &format!("open at {endpoint} with an online count"),
            |page| {
                page["state"] == "open"
                    && page["endpoint"] == endpoint.as_str()
                    && page["online"].as_i64().unwrap_or(0) >= 1
            },
        )
        .await;
    let asked_httpdns = format!("httpdns: {endpoint}");
    assert!(
        page["events"].as_array().is_some_and(|events| events
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains(&asked_httpdns)))),
        "the page asked HTTPDNS: {page:#}"
    );
    assert_eq!(page["room"], "live://1000", "{page:#}");

    demo.push_to_all_targets("live://1000", "first").await;

    // The page's room form moves it to another room; the page's push form reaches everyone.
    demo.act(
        "(() => { const f = document.getElementById('room-form'); \
         f.elements.room.value = 'live://1001'; f.requestSubmit(); })()",
    )
    .await;
    demo.wait_until("moved to live://1001", |page| page["room"] == "live://1001")
        .await;
    demo.push_and_see(
        "/goim/push/room?operation=1000&type=live&room=1001",
        "to the new room",
    )
    .await;
    demo.act(
        "(() => { const f = document.getElementById('push-form'); \
         f.elements.target.value = 'all'; f.elements.target.dispatchEvent(new Event('change')); \
         f.elements.body.value = 'from the page form'; f.requestSubmit(); })()",
    )
    .await;
    demo.wait_until("shows the push form's answer", |page| {
        page["push_status"] == "200"
    })
    .await;
    demo.wait_for_message("from the page form").await;

    // Restart the gateway on the same ports: the page notices, reconnects, and receives again (in
    // the room it changed to, which the client applies again after reconnecting).
    let opens = demo.snapshot().await["opens"].as_i64().unwrap_or(0);
    demo.rim.stop();
    demo.wait_until("noticed the gateway went away", |page| {
        page["state"] != "open"
    })
    .await;
    demo.rim.restart();
    demo.wait_for_httpdns().await;
    demo.wait_until("reconnected after the restart", |page| {
        page["state"] == "open" && page["opens"].as_i64().unwrap_or(0) > opens
    })
    .await;
    demo.push_to_all_targets("live://1001", "after the restart")
        .await;
}
