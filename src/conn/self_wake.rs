//! Polls a connection's future again at once when it woke its own task while being polled.
//!
//! hyper's server and client for one connection run in one task, so a body chunk handed from
//! one to the other wakes the task that is polling both. tokio counts such a wake as a yield:
//! the task goes to the back of the run queue and an idle worker is woken through its eventfd
//! to look for work, a system call here and an `epoll_wait` on another thread per chunk.
//! Polling again while the task's cooperative budget lasts does the same work without them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Polls in a row at most, so that a future that keeps waking itself still lets others run.
const MAX_POLLS: usize = 16;

/// Not being polled: a wake goes to the task.
const IDLE: u8 = 0;
/// Being polled: a wake is noted, and the poll goes round again.
const POLLING: u8 = 1;
/// Woken while being polled.
const WOKEN: u8 = 2;

/// The waker the inner future sees.
struct Signal {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

/// `inner`, polled again in the same turn when it wakes itself.
pub(crate) struct SelfWake<F> {
    inner: F,
    signal: Arc<Signal>,
    waker: Waker,
}

impl<F: Future + Unpin> SelfWake<F> {
    pub(crate) fn new(inner: F) -> Self {
        let signal = Arc::new(Signal {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(signal.clone());
        SelfWake {
            inner,
            signal,
            waker,
        }
    }
}

impl<F: Future + Unpin> Future for SelfWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.signal.task.register(cx.waker());
        for _ in 0..MAX_POLLS {
            this.signal.state.store(POLLING, Ordering::Release);
            let polled = Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.waker));
            let was = this.signal.state.swap(IDLE, Ordering::AcqRel);
            if polled.is_ready() {
                return polled;
            }
            if was == POLLING {
                return Poll::Pending;
            }
            // Woken during the poll. Without budget left, tokio's resources would only say
            // Pending again: the task yields as it would have.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A future that wakes itself `left` more times before it is ready, counting its polls.
    struct WakesItself {
        left: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for WakesItself {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.left == 0 {
                return Poll::Ready(());
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts the wakes the task itself receives.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_self_wake_is_polled_again_in_the_same_turn_not_handed_to_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = SelfWake::new(WakesItself {
            left: 3,
            polls: polls.clone(),
        });
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let ready = Pin::new(&mut f).poll(&mut Context::from_waker(&waker));
        assert!(ready.is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 4);
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "the task was not woken");
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_after_the_limit() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = SelfWake::new(WakesItself {
            left: usize::MAX,
            polls: polls.clone(),
        });
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert!(Pin::new(&mut f)
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), MAX_POLLS);
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "woken once, to run again"
        );
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let mut f = SelfWake::new(std::future::pending::<()>());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert!(Pin::new(&mut f)
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        f.waker.wake_by_ref();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }
}
