//! The streams of one HTTP/2 client connection run inside that connection's task.
//!
//! hyper hands each new stream to an executor. With tokio's, every stream became a task of
//! its own: spawned, scheduled, often woken on the other worker thread and handed back, for a
//! request that takes a few microseconds. Under `h2load` that scheduling was the largest single
//! cost in the profile. Here the executor only queues the stream, and the connection's task
//! polls its streams itself, each woken on its own, between polls of the connection. The
//! connection's streams then share one thread, as HAProxy's do; connections still spread over
//! the workers. Anything long-lived a stream starts (a WebSocket tunnel) is spawned as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};

/// A stream as hyper hands it over: its service call and the sending of its response.
type StreamTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor given to hyper's HTTP/2 server: it queues each stream for [`Streams`].
#[derive(Clone, Default)]
pub(crate) struct Inbox(Arc<Mutex<Vec<StreamTask>>>);

impl<F> hyper::rt::Executor<F> for Inbox
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut queued = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        queued.push(Box::pin(fut));
    }
}

/// One connection's running streams. Dropping it drops the streams: they cannot outlive the
/// connection that carries their frames.
#[derive(Default)]
pub(crate) struct Streams {
    /// Streams hyper has accepted and not yet handed over.
    inbox: Inbox,
    /// Streams in progress, each polled only when woken.
    running: FuturesUnordered<StreamTask>,
}

impl Streams {
    /// The executor for this connection's hyper server.
    pub(crate) fn executor(&self) -> Inbox {
        self.inbox.clone()
    }

    /// Takes over newly accepted streams and polls every stream that was woken; call after
    /// each poll of the connection, which is where hyper accepts streams.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) {
        loop {
            {
                let mut queued = self.inbox.0.lock().unwrap_or_else(PoisonError::into_inner);
                if queued.is_empty() {
                    return;
                }
                self.running.extend(queued.drain(..));
            }
            // Ready(None) once all are done; Pending when none is ready (or after a fair
            // share of polls, with a wake-up arranged).
            while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
        }
    }

    /// Polls the woken streams without taking new ones: for the start of a connection poll.
    pub(crate) fn poll_running(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
    }

    /// Streams in progress, for tests of this module.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::future::poll_fn;

    #[tokio::test]
    async fn queued_streams_run_in_the_polling_task_and_are_dropped_with_it() {
        let mut streams = Streams::default();
        let exec = streams.executor();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        exec.execute(async move {
            let _ = rx.await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        exec.execute(async {});
        poll_fn(|cx| {
            streams.poll(cx);
            Poll::Ready(())
        })
        .await;
        assert_eq!(
            streams.len(),
            1,
            "the finished stream is gone, the waiting one stays"
        );
        tx.send(()).unwrap();
        poll_fn(|cx| {
            streams.poll_running(cx);
            Poll::Ready(())
        })
        .await;
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(streams.len(), 0);
    }
}
