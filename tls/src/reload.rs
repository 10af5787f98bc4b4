//! Reloading files without a restart: a task that asks something to re-read its files every interval
//! (it compares modification times itself) and at once on SIGHUP.
//!
//! Used by the TLS certificate ([`crate::acceptor`]) and the edge's JWT key files. The task
//! holds only a weak reference and ends once the reloadable thing is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

/// Something that re-reads its files: `forced` (SIGHUP) re-reads even if nothing seems changed.
pub trait Reload: Send + Sync + 'static {
    /// Re-reads if `forced` or a file changed; returns whether anything was reloaded. On error the
    /// previous state stays in force.
    fn reload(&self, forced: bool) -> anyhow::Result<bool>;
    /// What to call it in logs.
    fn what(&self) -> &'static str;
}

/// Starts the reload task of `target` (see the module docs).
pub fn watch<T: Reload>(target: &Arc<T>, interval: Duration) {
    let weak: Weak<T> = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut hangup = hangup_signal();
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = recv_hangup(&mut hangup) => true,
            };
            let Some(target) = weak.upgrade() else {
                return;
            };
            if let Err(error) = target.reload(forced) {
                tracing::error!(
                    error = format!("{error:#}"),
                    "{} reload failed; keeping the previous ones",
                    target.what()
                );
            }
        }
    });
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP; file polling only"))
        .ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

/// Resolves on SIGHUP; never if SIGHUP cannot be received.
async fn recv_hangup(hangup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        return signal.recv().await;
    }
    let _ = hangup;
    std::future::pending().await
}
