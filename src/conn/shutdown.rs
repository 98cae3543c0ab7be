//! Graceful drain on SIGTERM: first advertise it (`/ping` answers 503), then stop accepting and
//! let in-flight work finish, then cut whatever is still open at the deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The phases of a drain, shared by every listener and connection.
#[derive(Clone, Default)]
pub struct Drain {
    draining: Arc<AtomicBool>,
    /// Listeners stop accepting; idle keep-alive connections close; requests in flight finish.
    pub stop_accepting: Signal,
    /// The shutdown deadline has passed: every connection and tunnel is closed now.
    pub hard_stop: Signal,
}

/// A one-way switch that can be waited for. `CancellationToken::is_cancelled` takes a lock,
/// and connections ask on every request, so the switch's state is also kept in an atomic.
#[derive(Clone, Default)]
pub struct Signal {
    token: CancellationToken,
    set: Arc<AtomicBool>,
}

impl Signal {
    /// Throws the switch and wakes everyone waiting for it.
    pub fn fire(&self) {
        self.set.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the switch has been thrown.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Resolves once the switch has been thrown.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }
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

/// Waits for a [`Signal`], registering with it only when the waker changes.
///
/// Connection tasks poll their shutdown tokens on every wake-up, and each poll of tokio's
/// `Notified` takes a lock; a task's waker does not change, so once is enough.
pub struct Watch<'a> {
    signal: &'a Signal,
    wait: Pin<Box<WaitForCancellationFuture<'a>>>,
    registered: Option<Waker>,
}

impl<'a> Watch<'a> {
    pub fn new(signal: &'a Signal) -> Self {
        Watch {
            signal,
            wait: Box::pin(signal.cancelled()),
            registered: None,
        }
    }

    /// Whether the signal has fired; if not, `cx` is woken when it is.
    pub fn poll_set(&mut self, cx: &mut Context<'_>) -> bool {
        if self.signal.is_set() {
            return true;
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return false;
        }
        self.registered = Some(cx.waker().clone());
        self.wait.as_mut().poll(cx).is_ready()
    }
}

impl Future for Watch<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.get_mut().poll_set(cx) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
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
