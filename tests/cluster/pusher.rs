//! A business caller that pushes numbered messages at a steady rate and remembers which of them
//! the control plane accepted (answered 2xx): those, and only those, every client must receive.

use parking_lot::Mutex;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// What one push stream sends: a `/v1` route and the JSON target fields of its body.
#[derive(Clone)]
pub struct Stream {
    /// Tag of the bodies (`<tag>:<n>`).
    pub tag: String,
    /// `/v1/push/...` route.
    pub route: String,
    /// Target fields (`{"room": ...}`, `{"mids": [...]}`).
    pub target: Value,
}

/// Pushes running in the background.
pub struct Pusher {
    accepted: Vec<Arc<Mutex<Vec<usize>>>>,
    refused: Arc<Mutex<u64>>,
    slowest: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Pusher {
    /// Sends push `n` of every stream, then sleeps `interval`, for n = 0, 1, 2, ... until stopped.
    pub fn start(control_url: String, streams: Vec<Stream>, interval: Duration) -> Pusher {
        let accepted: Vec<Arc<Mutex<Vec<usize>>>> =
            streams.iter().map(|_| Arc::default()).collect();
        let refused = Arc::new(Mutex::new(0));
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let task = tokio::spawn({
            let accepted = accepted.clone();
            let refused = refused.clone();
            let slowest = slowest.clone();
            let stop = stop.clone();
            async move {
                let mut n = 0;
                while !stop.load(Ordering::Acquire) {
                    for (stream, accepted) in streams.iter().zip(&accepted) {
                        let mut body = stream.target.clone();
                        body["operation"] = json!(super::OPERATION);
                        body["body_text"] = json!(format!("{}:{n}", stream.tag));
                        let started = std::time::Instant::now();
                        let sent = http
                            .post(format!("{control_url}{}", stream.route))
                            .bearer_auth(super::ADMIN_KEY)
                            .json(&body)
                            .send()
                            .await;
                        let took = started.elapsed();
                        let mut slowest = slowest.lock();
                        *slowest = (*slowest).max(took);
                        drop(slowest);
                        match sent {
                            Ok(response) if response.status().is_success() => {
                                accepted.lock().push(n);
                            }
                            _ => *refused.lock() += 1,
                        }
                    }
                    n += 1;
                    tokio::time::sleep(interval).await;
                }
            }
        });
        Pusher {
            accepted,
            refused,
            slowest,
            stop,
            task: Some(task),
        }
    }

    /// Stops pushing (waits for the push in progress).
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// The numbers of stream `index` that were accepted.
    pub fn accepted(&self, index: usize) -> Vec<usize> {
        self.accepted[index].lock().clone()
    }

    /// The longest time one push took to be answered.
    pub fn slowest(&self) -> Duration {
        *self.slowest.lock()
    }

    /// Pushes the control plane did not accept (errors and non-2xx answers).
    pub fn refused(&self) -> u64 {
        *self.refused.lock()
    }
}
