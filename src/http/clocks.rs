//! The clocks of a client connection, one rule for every path: while nothing is asked it may
//! stay idle for `KEEPALIVE_TIMEOUT`; once the first byte of a request (or of the HTTP/2
//! preface, or the first stream) has arrived, the rest of the head has
//! `REQUEST_HEADER_TIMEOUT`; while a request is being answered neither runs.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::config::Config;

/// Where a connection stands, which says which clock runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing asked since `since`: the keep-alive clock.
    Idle { since: Instant },
    /// A head began arriving at `started`: the request-header clock.
    Head { started: Instant },
    /// A request is being answered: no clock.
    Busy,
}

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    KeepAlive,
    RequestHeader,
}

/// A connection's clocks, sharing one timer. The timer is moved only when it must fire
/// earlier; firing early just re-arms it, because registering and removing a timer for each
/// request costs more than the rest of the request's bookkeeping.
pub(crate) struct Clocks {
    keepalive: Duration,
    request_header: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Clocks {
    pub(crate) fn new(config: &Config) -> Self {
        Clocks {
            keepalive: config.keepalive_timeout,
            request_header: config.request_header_timeout,
            timer: Box::pin(tokio::time::sleep(config.keepalive_timeout)),
        }
    }

    /// When a connection in `phase` runs out of time, and which clock that is.
    pub(crate) fn deadline(&self, phase: Phase) -> Option<(Instant, Expiry)> {
        match phase {
            Phase::Idle { since } => Some((since + self.keepalive, Expiry::KeepAlive)),
            Phase::Head { started } => Some((started + self.request_header, Expiry::RequestHeader)),
            Phase::Busy => None,
        }
    }

    /// `Ready` once the deadline of `phase` has passed.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>, phase: Phase) -> Poll<Expiry> {
        match self.deadline(phase) {
            Some((at, expiry)) => self.poll_at(cx, at).map(|()| expiry),
            None => {
                // Busy: look again after a keep-alive period, when the phase may have changed.
                while self.timer.as_mut().poll(cx).is_ready() {
                    let next = Instant::now() + self.keepalive;
                    self.timer.as_mut().reset(next);
                }
                Poll::Pending
            }
        }
    }

    /// `Ready` once `at` has passed.
    fn poll_at(&mut self, cx: &mut Context<'_>, at: Instant) -> Poll<()> {
        loop {
            if self.timer.deadline() > at {
                self.timer.as_mut().reset(at);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= at {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(at);
        }
    }

    /// Runs `fut` unless the deadline of `phase` comes first.
    pub(crate) async fn until<F: Future>(
        &mut self,
        phase: Phase,
        fut: F,
    ) -> Result<F::Output, Expiry> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            self.poll_expired(cx, phase).map(Err)
        })
        .await
    }

    /// Runs `fut` unless `at` comes first (another limit, such as `RESPONSE_TIMEOUT`, on the
    /// same timer).
    pub(crate) async fn before<F: Future>(&mut self, at: Instant, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.poll_at(cx, at).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clocks() -> Clocks {
        let mut config = Config::new(0, 0, "app", 80);
        config.keepalive_timeout = Duration::from_secs(75);
        config.request_header_timeout = Duration::from_secs(10);
        Clocks::new(&config)
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_runs_its_own_clock() {
        let mut c = clocks();
        let now = Instant::now();
        let idle = Phase::Idle { since: now };
        let head = Phase::Head { started: now };
        assert_eq!(
            c.deadline(idle),
            Some((now + Duration::from_secs(75), Expiry::KeepAlive))
        );
        assert_eq!(
            c.deadline(head),
            Some((now + Duration::from_secs(10), Expiry::RequestHeader))
        );
        assert_eq!(c.deadline(Phase::Busy), None);
        let started = Instant::now();
        assert_eq!(
            c.until(head, std::future::pending::<()>()).await,
            Err(Expiry::RequestHeader)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        let started = Instant::now();
        let idle = Phase::Idle { since: started };
        assert_eq!(
            c.until(idle, std::future::pending::<()>()).await,
            Err(Expiry::KeepAlive)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(75));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_never_expires_and_what_finishes_first_wins() {
        let mut c = clocks();
        let busy = c.until(Phase::Busy, tokio::time::sleep(Duration::from_secs(1000)));
        assert_eq!(busy.await, Ok(()));
        let head = Phase::Head {
            started: Instant::now(),
        };
        let quick = c.until(head, tokio::time::sleep(Duration::from_secs(9)));
        assert_eq!(quick.await, Ok(()));
    }
}
