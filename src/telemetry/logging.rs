//! Log set-up: tracing to stdout, text or one JSON object per line, level from `RUST_LOG`.
//!
//! Lines at `info` and below (the access log, one line per request) are batched and written
//! when 32 KiB have gathered or every 200 ms, like nginx's `access_log buffer= flush=`: one
//! `write` per line cost about a tenth of the proxy's throughput. Warnings and errors, and
//! everything before them, are written at once.

use std::io::{self, Write};
use std::sync::Mutex;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::telemetry::access_log::Lines;

/// Batched lines not yet written to stdout.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
const FLUSH_AT: usize = 32 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Installs the global subscriber with `filter` (`RUST_LOG`, which the configuration has
/// checked; should it not parse after all, `info` is used and the log says so).
pub fn init(format: LogFormat, filter: &str) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (
            EnvFilter::new("info"),
            Some(format!("RUST_LOG={filter:?} is invalid ({e}); using info")),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(BatchedStdout);
    match format {
        LogFormat::Text => builder
            .with_ansi(false)
            .map_event_format(|other| Lines { other, json: false })
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .map_event_format(|other| Lines { other, json: true })
            .init(),
    }
    let flusher = std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(|| loop {
            std::thread::sleep(FLUSH_EVERY);
            flush();
        });
    if let Err(e) = flusher {
        tracing::warn!(error = %e, "cannot start the log flusher; logging unbatched");
    }
    if let Some(msg) = bad {
        tracing::warn!("{msg}");
    }
}

/// Writes out every batched line. Called at exit so nothing logged is lost.
pub fn flush() {
    if let Ok(mut pending) = PENDING.lock() {
        let _ = write_out(&mut pending);
    }
}

fn write_out(pending: &mut Vec<u8>) -> io::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    let result = out.write_all(pending).and_then(|()| out.flush());
    pending.clear();
    // Keep one burst's worth, not the largest ever seen.
    pending.shrink_to(FLUSH_AT * 2);
    result
}

/// stdout for the subscriber: `info` and below batched, `warn` and `error` written at once.
struct BatchedStdout;

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { urgent: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

/// One log line on its way to [`PENDING`].
struct LineWriter {
    urgent: bool,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(buf);
        if self.urgent || pending.len() >= FLUSH_AT {
            write_out(&mut pending)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
