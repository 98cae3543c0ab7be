//! A bound proxy and its life: [`Proxy::bind`], then [`Proxy::serve`] until the shutdown
//! future resolves, then the drain.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

mod certificates;
mod connection;
mod listener;
mod metrics_endpoint;

use crate::accept::descriptors;
use crate::accept::tls::Terminator;
use crate::config::{Config, LogFormat};
use crate::conn::shared::Shared;
use crate::conn::shutdown::Drain;
use crate::http::rules::{HeadLimits, IdRules};
use crate::telemetry::exhaustion::Exhaustion;
use crate::telemetry::metrics;
use crate::upstream::h2c::H2Upstream;
use crate::upstream::{system_resolver, Resolver, Upstream};

/// Raises the descriptor limit as far as allowed, and returns the connection cap it can hold:
/// `wanted`, or less with one warning that gives both numbers.
fn descriptor_cap(wanted: usize) -> usize {
    let Some(limit) = descriptors::raise() else {
        return wanted;
    };
    if limit.soft > limit.was {
        tracing::debug!(
            from = limit.was,
            to = limit.soft,
            "raised the soft RLIMIT_NOFILE"
        );
    }
    let cap = descriptors::connection_cap(limit.soft, wanted);
    if cap < wanted {
        tracing::warn!(
            max_connections = wanted,
            descriptors = limit.soft,
            serving = cap,
            "RLIMIT_NOFILE cannot hold MAX_CONNECTIONS (two descriptors each); serving fewer at once, the rest wait to be accepted"
        );
    }
    cap
}

/// A proxy whose listeners are bound and which is ready to serve.
pub struct Proxy {
    shared: Arc<Shared>,
    plain: TcpListener,
    tls: TcpListener,
    metrics: Option<TcpListener>,
}

/// Why a listener could not be bound, and for a port below 1024 refused for want of privilege
/// (podman, and some Kubernetes runtimes, keep those privileged; Docker does not) what to do.
fn cannot_listen(var: &str, addr: SocketAddr, e: &io::Error) -> String {
    let mut why = format!("{var}: cannot listen on {addr}: {e}");
    if e.kind() == io::ErrorKind::PermissionDenied && addr.port() < 1024 {
        why.push_str(&format!(
            "; ports below 1024 need privileges in this runtime: set {var} to a port above 1023 \
             (and map the balancer's port to it), or set the sysctl \
             net.ipv4.ip_unprivileged_port_start=0 as Docker does"
        ));
    }
    why
}

impl Proxy {
    /// Binds both listeners (and the metrics one, if set). Nothing is resolved here: the app's
    /// name is looked up when connecting, so the proxy starts while the app is not up yet.
    pub async fn bind(config: Config) -> io::Result<Self> {
        Self::bind_with_resolver(config, system_resolver()).await
    }

    /// As [`Proxy::bind`], looking the app's name up with `resolver` (tests use this to make
    /// the name unresolvable, then resolvable, without touching the system's files).
    pub async fn bind_with_resolver(mut config: Config, resolver: Resolver) -> io::Result<Self> {
        let tls = Terminator::new(&config.tls)?.map(Arc::new);
        config.max_connections = descriptor_cap(config.max_connections);
        let counters = Arc::new(metrics::Metrics::new());
        counters.set_connection_limit(config.max_connections);
        let exhaustion = Arc::new(Exhaustion::new(counters.clone()));
        let upstream = Upstream::new(
            &config,
            resolver,
            exhaustion.clone(),
            counters.upstream_timing(),
        );
        let bind = |port: u16, var: &str| {
            let addr = SocketAddr::new(config.listen_address, port);
            listener::bind_for_clients(addr, config.tcp_keepalive)
                .map_err(|e| io::Error::new(e.kind(), cannot_listen(var, addr, &e)))
        };
        let plain = bind(config.listen_on, "LISTEN_ON")?;
        let tls_listener = bind(config.listen_on_tls, "LISTEN_ON_TLS")?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(listener::bind(addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("METRICS_LISTEN: cannot listen on {addr}: {e}"),
                )
            })?),
            None => None,
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            // The connection task keeps the header and keep-alive clocks (see `connection`).
            .header_read_timeout(None)
            // A client's FIN (or the head gate's end of stream after a refused head) lets the
            // responses in flight finish first.
            .half_close(true)
            .max_header_size(config.max_header_bytes)
            .max_buf_size(config.max_header_bytes.max(400 * 1024) + 8 * 1024);
        let limits = Arc::new(HeadLimits {
            max_header_bytes: config.max_header_bytes,
            upgrades: config.upgrade_protocols.clone(),
            ids: IdRules {
                request_id: config.request_id_header.clone(),
                amzn_trace: config.amzn_trace_id,
            },
        });
        let shared = Shared {
            limiter: Arc::new(Semaphore::new(config.max_connections)),
            limits,
            upstream,
            drain: Drain::new(config.shutdown_ping_status),
            metrics: counters,
            http,
            h2_upstream: H2Upstream::default(),
            tasks: TaskTracker::new(),
            exhaustion,
            tls,
            config,
        };
        Ok(Proxy {
            shared: Arc::new(shared),
            plain,
            tls: tls_listener,
            metrics,
        })
    }

    /// Where the plain-HTTP listener is bound (useful with port 0 in tests).
    pub fn plain_addr(&self) -> SocketAddr {
        self.plain
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where the TLS-origin listener is bound.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where the metrics listener is bound, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The proxy's metrics, for tests and embedding.
    pub fn metrics(&self) -> Arc<metrics::Metrics> {
        self.shared.metrics.clone()
    }

    /// Serves until `shutdown` yields, then drains (see [`crate::shutdown`]): clients are sent
    /// elsewhere for `SHUTDOWN_DELAY` while traffic is still served, then the listeners close
    /// and in-flight work gets up to `SHUTDOWN_TIMEOUT` before everything still open is
    /// closed. A second item from `shutdown` ends the drain at once.
    pub async fn serve(self, mut shutdown: impl Stream<Item = ()> + Unpin) -> io::Result<()> {
        let Proxy {
            shared,
            plain,
            tls,
            metrics,
        } = self;
        let tracker = shared.tasks.clone();
        let config = &shared.config;
        let settings = match config.log_format {
            LogFormat::Text => config.summary(),
            LogFormat::Json => config.summary_json(),
        };
        tracing::info!(
            plain = %plain.local_addr()?,
            tls = %tls.local_addr()?,
            settings = %settings,
            "elb-ws-proxy {} ({}) listening",
            env!("CARGO_PKG_VERSION"),
            env!("ELB_WS_PROXY_REVISION")
        );
        let accepting = tokio::spawn(listener::accept_loop(shared.clone(), plain, tls));
        if let Some(l) = metrics {
            tokio::spawn(metrics_endpoint::serve(
                l,
                shared.metrics.clone(),
                shared.drain.clone(),
            ));
        }
        let watcher =
            (shared.tls.clone()).map(|t| tokio::spawn(certificates::watch(shared.clone(), t)));
        let sweeper = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    every.tick().await;
                    shared.upstream.sweep();
                }
            })
        };
        // A stream that ends asks for nothing: serve until killed.
        if shutdown.next().await.is_none() {
            std::future::pending::<()>().await;
        }
        tokio::select! {
            _ = drain(&shared, accepting, &tracker) => {}
            Some(()) = shutdown.next() => {
                tracing::warn!(open = tracker.len(), "second signal: closing everything now");
                shared.drain.stop(0, std::time::Duration::ZERO);
                shared.drain.hard_stop.fire();
                tracker.close();
                tracker.wait().await;
            }
        }
        let drain = &shared.drain;
        drain.hard_stop.fire();
        sweeper.abort();
        if let Some(w) = watcher {
            w.abort();
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// The drain's phases in order, up to the moment every task has ended.
async fn drain(shared: &Shared, accepting: JoinHandle<()>, tracker: &TaskTracker) {
    let config = &shared.config;
    let drain = &shared.drain;
    drain.leaving.fire();
    if !config.shutdown_delay.is_zero() {
        tracing::info!(delay = ?config.shutdown_delay, ping = ?config.shutdown_ping_status, "draining: responses close their connections, still serving");
        tokio::time::sleep(config.shutdown_delay).await;
    }
    let tunnels = shared.metrics.tunnels_open();
    tracing::info!(timeout = ?config.shutdown_timeout, tunnels, "no longer accepting; waiting for open connections, closing tunnels one by one");
    // The last tunnel closes at nine tenths of the timeout, before the deadline cuts it.
    drain.stop(tunnels, config.shutdown_timeout.mul_f64(0.9));
    let _ = accepting.await;
    tracker.close();
    if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "shutdown deadline reached; closing what is still open"
        );
        drain.hard_stop.fire();
        tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_privileged_port_refused_says_what_to_do() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let low = cannot_listen("LISTEN_ON", "0.0.0.0:81".parse().unwrap(), &denied);
        assert!(
            low.starts_with("LISTEN_ON: cannot listen on 0.0.0.0:81: "),
            "{low}"
        );
        assert!(low.contains("set LISTEN_ON to a port above 1023"), "{low}");
        assert!(
            low.contains("net.ipv4.ip_unprivileged_port_start=0"),
            "{low}"
        );
        // A high port, or another error, gets the plain message.
        let high = cannot_listen("LISTEN_ON_TLS", "0.0.0.0:8443".parse().unwrap(), &denied);
        assert!(!high.contains("sysctl"), "{high}");
        let taken = io::Error::from(io::ErrorKind::AddrInUse);
        let busy = cannot_listen("LISTEN_ON", "0.0.0.0:81".parse().unwrap(), &taken);
        assert!(!busy.contains("sysctl"), "{busy}");
    }
}
