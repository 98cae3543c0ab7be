//! What every connection of a running proxy shares.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::accept::tls::Terminator;
use crate::config::Config;
use crate::conn::shutdown::Drain;
use crate::http::rules::HeadLimits;
use crate::telemetry::exhaustion::Exhaustion;
use crate::telemetry::metrics::Metrics;
use crate::upstream::h2c::H2Upstream;
use crate::upstream::Upstream;

/// Settings, the upstream pools, the drain, the metrics, and the limits every connection uses.
pub(crate) struct Shared {
    /// The validated settings.
    pub(crate) config: Config,
    /// The app and the idle connections kept to it.
    pub(crate) upstream: Upstream,
    /// The phases of a shutdown.
    pub(crate) drain: Drain,
    /// Counters and gauges, also served at `/metrics`.
    pub(crate) metrics: Arc<Metrics>,
    /// One permit per open client connection (`MAX_CONNECTIONS`).
    pub(crate) limiter: Arc<Semaphore>,
    /// hyper's HTTP/1.1 server settings, built once.
    pub(crate) http: hyper::server::conn::http1::Builder,
    /// The shared connection to an h2c app (`DESTINATION_PROTOCOL` `h2c` or `auto`).
    pub(crate) h2_upstream: H2Upstream,
    /// What reading a request head needs: `MAX_HEADER_BYTES`, `UPGRADE_PROTOCOLS`.
    pub(crate) limits: Arc<HeadLimits>,
    /// Every connection and tunnel task, so the drain can wait for them.
    pub(crate) tasks: TaskTracker,
    /// Rate-limited warnings when accepts run out of descriptors.
    pub(crate) exhaustion: Arc<Exhaustion>,
    /// TLS ended by the proxy on `LISTEN_ON_TLS`; `None` with `TLS_MODE=off`.
    pub(crate) tls: Option<Arc<Terminator>>,
}
