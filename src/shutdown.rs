//! The signal that ends a `rim` process: Ctrl-C (SIGINT) or SIGTERM, whichever comes first.
//!
//! Roles receive it as a future and shut down gracefully (edges tell their clients, drain queues and
//! exit within a bound; the control plane finishes in-flight requests).

/// Completes when the process is asked to stop.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("stop requested");
}
