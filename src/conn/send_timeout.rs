//! `SEND_TIMEOUT`: what the proxy does about a client that stops taking what it is sent.
//!
//! Without it, a client that never reads holds its connection, the app's connection and the
//! bytes between them for as long as it likes (nginx has `send_timeout` for the same reason).
//! The clock runs only while bytes for the client are waiting and none go out: a client that
//! reads slowly, or a response that is merely slow to come from the app, never trips it.
//!
//! Two forms, one rule. [`SendClock`] wraps the writes to an HTTP/1.1 client socket or a
//! tunnel's client side: a write that stays pending for the limit fails with `TimedOut`, and
//! the path closes the connection as it does for any write error. HTTP/2 multiplexes, and
//! flow control stops data long before the socket fills, so there [`Stalls`] counts response
//! bodies whose last piece h2 has not yet sent on, and [`StallWatch`] tells the connection
//! task when no piece has gone out for the limit while one waits; the client then gets GOAWAY.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::http::Protocol;

/// Why a client was cut off, for its warning.
pub(crate) fn why(limit: Duration) -> String {
    format!("the client took none of the bytes waiting for it within SEND_TIMEOUT ({limit:?})")
}

/// Says, once per connection, that a client was cut off for not reading.
fn warn(client: SocketAddr, limit: Duration, protocol: Protocol) {
    let why = why(limit);
    tracing::warn!(%client, protocol = protocol.label(), "{why}; closing the connection");
}

/// The error a timed-out write fails with.
fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client stopped reading (SEND_TIMEOUT)",
    )
}

/// Times the writes to one client; see the module's documentation.
pub(crate) struct SendClock {
    limit: Option<Duration>,
    client: SocketAddr,
    /// What the connection carries, for the warning: `http1` or `tunnel`.
    protocol: Protocol,
    /// Armed while a write is pending; absent otherwise, so a connection that never blocks
    /// allocates nothing for it.
    blocked: Option<Pin<Box<Sleep>>>,
}

impl SendClock {
    /// A clock for writes to `client`; `limit` is `SEND_TIMEOUT` (`None`: never).
    pub(crate) fn new(limit: Option<Duration>, client: SocketAddr, protocol: Protocol) -> Self {
        SendClock {
            limit,
            client,
            protocol,
            blocked: None,
        }
    }

    /// Passes on the outcome of one write attempt. A write that has been pending for the
    /// limit, counted from the first attempt that could not go out, becomes `TimedOut`.
    pub(crate) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        attempt: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if attempt.is_ready() {
            self.blocked = None;
            return attempt;
        }
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        let sleep = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.blocked = None;
            warn(self.client, limit, self.protocol);
            return Poll::Ready(Err(timed_out()));
        }
        Poll::Pending
    }
}

/// A connection's response bodies that handed h2 a piece it has not yet sent on, and when a
/// piece last went out. Shared by the bodies (which run in the connection's task) and the
/// connection task.
pub(crate) struct Stalls {
    epoch: Instant,
    /// Bodies whose last piece is still with h2.
    waiting: AtomicUsize,
    /// When a body was last asked for more, in nanoseconds since `epoch`.
    taken: AtomicU64,
}

impl Default for Stalls {
    fn default() -> Self {
        Stalls {
            epoch: Instant::now(),
            waiting: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
        }
    }
}

impl Stalls {
    /// A body handed h2 a piece of data.
    pub(crate) fn handed(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// h2 asks the body for more: its last piece went out (or fits the window).
    pub(crate) fn taken(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let at = self.epoch.elapsed().as_nanos();
        self.taken
            .store(u64::try_from(at).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A body that handed a piece ended before h2 asked again (the stream was reset or is done).
    pub(crate) fn forget(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    fn last_taken(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.taken.load(Ordering::Relaxed))
    }
}

/// The connection task's side of [`Stalls`].
pub(crate) struct StallWatch {
    limit: Option<Duration>,
    stalls: Arc<Stalls>,
    /// When the watch first saw a body waiting since nothing was.
    since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl StallWatch {
    /// Watches `stalls` against `SEND_TIMEOUT` (`None`: never).
    pub(crate) fn new(limit: Option<Duration>, stalls: Arc<Stalls>) -> Self {
        StallWatch {
            limit,
            stalls,
            since: None,
            timer: None,
        }
    }

    /// `Ready` once a body has waited and nothing went out for the limit. Called on every
    /// poll of the connection; costs one load while nothing waits.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Duration> {
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        if self.stalls.waiting.load(Ordering::Relaxed) == 0 {
            self.since = None;
            return Poll::Pending;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(since + limit)));
        // The timer is moved on only when it fires, not for every piece that goes out.
        while timer.as_mut().poll(cx).is_ready() {
            let due = since.max(self.stalls.last_taken()) + limit;
            if Instant::now() >= due {
                return Poll::Ready(limit);
            }
            timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::future::poll_fn;

    #[tokio::test(start_paused = true)]
    async fn a_write_pending_for_the_limit_times_out_and_a_ready_one_resets_the_clock() {
        let limit = Duration::from_secs(60);
        let mut clock = SendClock::new(
            Some(limit),
            "192.0.2.1:4000".parse().unwrap(),
            Protocol::Http1,
        );
        let pending = |clock: &mut SendClock| {
            poll_fn(|cx| Poll::Ready(clock.poll::<usize>(cx, Poll::Pending))).now_or_never()
        };
        assert!(pending(&mut clock).unwrap().is_pending());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(pending(&mut clock).unwrap().is_pending());
        // One byte goes out: the clock starts again from the next block.
        let ok = poll_fn(|cx| Poll::Ready(clock.poll(cx, Poll::Ready(Ok(1usize)))));
        assert!(matches!(ok.await, Poll::Ready(Ok(1))));
        assert!(pending(&mut clock).unwrap().is_pending());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(pending(&mut clock).unwrap().is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        let err = match pending(&mut clock).unwrap() {
            Poll::Ready(Err(e)) => e,
            other => panic!("expected a timeout, got {other:?}"),
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_counts_from_the_last_piece_taken_and_only_while_one_waits() {
        let limit = Duration::from_secs(60);
        let stalls = Arc::new(Stalls::default());
        let mut watch = StallWatch::new(Some(limit), stalls.clone());
        let mut check = || {
            poll_fn(|cx| Poll::Ready(watch.poll(cx)))
                .now_or_never()
                .unwrap()
        };
        // Nothing waiting: no clock, however long.
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(check().is_pending());
        stalls.handed();
        assert!(check().is_pending());
        tokio::time::advance(Duration::from_secs(50)).await;
        // Another body's piece goes out: the connection is being read.
        stalls.handed();
        stalls.taken();
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(
            check().is_pending(),
            "70 s since the stall began, 20 s since a piece went out"
        );
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(check(), Poll::Ready(limit));
    }
}
