//! Graceful drain on SIGTERM, in three phases:
//! 1. leaving (`SHUTDOWN_DELAY`): `/ping` answers as `SHUTDOWN_PING_STATUS` says, every
//!    HTTP/1.1 response closes its connection and says so, HTTP/2 connections get GOAWAY, so
//!    clients move to other targets while everything is still served;
//! 2. stop accepting (`SHUTDOWN_TIMEOUT`): listeners close, idle connections close, requests
//!    in flight finish, and tunnels still open close one after another over the timeout;
//! 3. hard stop, at the deadline or on a second signal: whatever is open is cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::config::PingWhileDraining;

/// The phases of a drain, shared by every listener and connection.
#[derive(Clone)]
pub struct Drain {
    /// A shutdown was asked for: clients are told to go elsewhere, everything is still served.
    pub leaving: Signal,
    /// Listeners stop accepting; idle keep-alive connections close; requests in flight finish.
    pub stop_accepting: Signal,
    /// The shutdown deadline has passed (or a second signal came): everything closes now.
    pub hard_stop: Signal,
    /// What `/ping` answers once leaving.
    ping: PingWhileDraining,
    /// The turns of the tunnels still open when accepting stops.
    turns: Arc<Turns>,
}

/// Tunnels close one at a time, evenly over most of `SHUTDOWN_TIMEOUT`, so that the clients
/// of a stopping instance do not all reconnect to the others in the same instant.
#[derive(Default)]
struct Turns {
    /// Tunnels open when accepting stopped; set by [`Drain::stop`] before it fires
    /// `stop_accepting`.
    open: AtomicUsize,
    /// Turns handed out so far.
    taken: AtomicUsize,
    /// The time the closes are spread over, in milliseconds.
    span_ms: AtomicUsize,
}

impl Drain {
    pub(crate) fn new(ping: PingWhileDraining) -> Self {
        Drain {
            leaving: Signal::default(),
            stop_accepting: Signal::default(),
            hard_stop: Signal::default(),
            ping,
            turns: Arc::default(),
        }
    }

    /// Whether `/ping` should fail: leaving, unless told to stay healthy.
    pub(crate) fn ping_fails(&self) -> bool {
        self.ping == PingWhileDraining::Unavailable && self.leaving.is_set()
    }

    /// Whether a shutdown has been asked for: responses close their connections.
    pub fn is_draining(&self) -> bool {
        self.leaving.is_set()
    }

    /// Stops accepting, with `open` tunnels to close one after another over `span`.
    pub(crate) fn stop(&self, open: usize, span: Duration) {
        self.turns.open.store(open.max(1), Ordering::Relaxed);
        let ms = usize::try_from(span.as_millis()).unwrap_or(usize::MAX);
        self.turns.span_ms.store(ms, Ordering::Relaxed);
        self.stop_accepting.fire();
    }

    /// Resolves when a tunnel's turn to close has come: after accepting stops, at its place
    /// in the spread (of `n`, the first after a `n`th of the span, the last at its end).
    pub(crate) async fn tunnel_turn(&self) -> (usize, usize) {
        self.stop_accepting.cancelled().await;
        let t = &self.turns;
        let open = t.open.load(Ordering::Relaxed);
        let turn = t.taken.fetch_add(1, Ordering::Relaxed).min(open - 1);
        let span = t.span_ms.load(Ordering::Relaxed) as u128;
        let wait = (span * (turn as u128 + 1) / open as u128) as u64;
        // Boxed: every idle tunnel holds this future, and only a draining one needs the timer.
        Box::pin(tokio::time::sleep(Duration::from_millis(wait))).await;
        (turn + 1, open)
    }
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

/// SIGTERM (what `docker stop`, ECS and Kubernetes send) and SIGINT (Ctrl-C), one item each:
/// the first starts the drain, a second ends it at once. The handlers are installed when the
/// stream is first polled, inside the runtime.
pub fn signals() -> impl Stream<Item = ()> + Unpin {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal as Handler, SignalKind};
        let install = || match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => {
                tracing::error!(
                    "cannot install signal handlers; the proxy will only stop when killed"
                );
                None
            }
        };
        let installed: Option<(Handler, Handler)> = None;
        futures_util::stream::unfold(installed, move |installed| async move {
            let (mut term, mut int) = match installed {
                Some(handlers) => handlers,
                None => install()?,
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            Some(((), Some((term, int))))
        })
        .boxed()
    }
    #[cfg(not(unix))]
    {
        futures_util::stream::unfold((), |()| async {
            tokio::signal::ctrl_c().await.ok()?;
            Some(((), ()))
        })
        .boxed()
    }
}
