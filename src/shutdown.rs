//! Graceful drain on SIGTERM: first advertise it (`/ping` answers 503), then stop accepting and
//! let in-flight work finish, then cut whatever is still open at the deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// The phases of a drain, shared by every listener and connection.
#[derive(Clone, Default)]
pub struct Drain {
    draining: Arc<AtomicBool>,
    /// Listeners stop accepting; idle keep-alive connections close; requests in flight finish.
    pub stop_accepting: CancellationToken,
    /// The shutdown deadline has passed: every connection and tunnel is closed now.
    pub hard_stop: CancellationToken,
}

impl Drain {
    /// Marks the instance as leaving, so health checks fail while traffic is still served.
    pub fn start(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether a shutdown has been requested.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Resolves on the first SIGTERM (what `docker stop` and ECS send) or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                tracing::error!(
                    "cannot install signal handlers; the proxy will only stop when killed"
                );
                std::future::pending::<()>().await
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
