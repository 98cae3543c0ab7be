//! Running out of file descriptors: counted every time, warned about at most every
//! [`WARN_EVERY`], since when it happens it happens thousands of times a second.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::telemetry::metrics::{DescriptorUse, Metrics};

/// At most one warning per [`WARN_EVERY`] about exhausted descriptors, with a count of what
/// happened since the last one: when it happens it happens thousands of times a second.
pub(crate) struct Exhaustion {
    metrics: Arc<Metrics>,
    last_warned: Mutex<Option<Instant>>,
    since: AtomicU64,
}

/// The shortest gap between two warnings.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

impl Exhaustion {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Exhaustion {
            metrics,
            last_warned: Mutex::new(None),
            since: AtomicU64::new(0),
        }
    }

    /// Counts one failure at `at` and warns if it is time to.
    pub(crate) fn note(&self, at: DescriptorUse, e: &io::Error) {
        self.metrics.descriptors_exhausted(at);
        let count = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last_warned.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.since.store(0, Ordering::Relaxed);
        tracing::warn!(
            at = at.label(),
            error = %e,
            failures = count,
            "out of file descriptors; raise the hard RLIMIT_NOFILE or lower MAX_CONNECTIONS"
        );
    }

    /// Whether a failure was noted within the last [`WARN_EVERY`].
    pub(crate) fn recent(&self) -> bool {
        self.last_warned
            .lock()
            .is_ok_and(|t| t.is_some_and(|t| t.elapsed() < WARN_EVERY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_of_failures_is_counted_whole_and_warned_about_once() {
        let metrics = Arc::new(Metrics::new());
        let exhaustion = Exhaustion::new(metrics.clone());
        let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let e = io::Error::from_raw_os_error(libc::EMFILE);
            for _ in 0..1000 {
                exhaustion.note(DescriptorUse::Accept, &e);
            }
            exhaustion.note(DescriptorUse::Connect, &e);
        });
        let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("out of file descriptors").count(), 1, "{text}");
        assert!(exhaustion.recent());
        let m = metrics.render();
        assert!(
            m.contains("elb_ws_proxy_descriptors_exhausted_total{at=\"accept\"} 1000\n"),
            "{m}"
        );
        assert!(
            m.contains("elb_ws_proxy_descriptors_exhausted_total{at=\"connect\"} 1\n"),
            "{m}"
        );
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
