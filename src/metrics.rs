//! Prometheus metrics; [`crate::metrics_listener`] serves them at `/metrics`.
//!
//! Every labelled series the proxy updates is created once at start-up, so the hot path only
//! touches atomics, never the family's lock or a label hash.

use std::time::Duration;

use http::StatusCode;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::UpstreamError;
use crate::proxy_header::Refusal;

type Labels = Vec<(&'static str, &'static str)>;

const REFUSAL_REASONS: [&str; 7] = [
    "proxy_header_missing",
    "proxy_header_malformed",
    "proxy_header_timeout",
    "untrusted_peer",
    "closed_before_header",
    "io_error",
    "no_proxy_header_request",
];

/// The proxy's counters, gauges and histogram.
pub struct Metrics {
    registry: Registry,
    accepted_plain: Counter,
    accepted_tls: Counter,
    open: Gauge,
    refused: Family<Labels, Counter>,
    status: [Counter; 5],
    upstream: [Counter; 3],
    tunnels_open: Gauge,
    tunnels_total: Counter,
    bytes_from_clients: Counter,
    bytes_to_clients: Counter,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("elb_ws_proxy");
        let accepted = Family::<Labels, Counter>::default();
        registry.register(
            "connections_accepted",
            "Client connections accepted, by listener",
            accepted.clone(),
        );
        let open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open now",
            open.clone(),
        );
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed before any HTTP, by reason",
            refused.clone(),
        );
        for reason in REFUSAL_REASONS {
            drop(refused.get_or_create(&vec![("reason", reason)]));
        }
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by status class",
            requests.clone(),
        );
        let upstream = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failed requests to the app, by kind",
            upstream.clone(),
        );
        let tunnels_open = Gauge::default();
        registry.register(
            "websocket_tunnels_open",
            "Upgraded connections open now",
            tunnels_open.clone(),
        );
        let tunnels_total = Counter::default();
        registry.register(
            "websocket_tunnels",
            "Upgraded connections opened",
            tunnels_total.clone(),
        );
        let bytes = Family::<Labels, Counter>::default();
        registry.register(
            "client_bytes",
            "Bytes on client connections, by direction",
            bytes.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head",
            duration.clone(),
        );
        let counter = |f: &Family<Labels, Counter>, k: &'static str, v: &'static str| {
            f.get_or_create(&vec![(k, v)]).clone()
        };
        Metrics {
            accepted_plain: counter(&accepted, "listener", "plain"),
            accepted_tls: counter(&accepted, "listener", "tls"),
            open,
            status: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| counter(&requests, "class", c)),
            upstream: UpstreamError::ALL.map(|k| counter(&upstream, "kind", k.label())),
            refused,
            tunnels_open,
            tunnels_total,
            bytes_from_clients: counter(&bytes, "direction", "from_client"),
            bytes_to_clients: counter(&bytes, "direction", "to_client"),
            duration,
            registry,
        }
    }

    pub fn accepted(&self, tls: bool) {
        if tls {
            &self.accepted_tls
        } else {
            &self.accepted_plain
        }
        .inc();
        self.open.inc();
    }

    pub fn closed(&self) {
        self.open.dec();
    }

    pub fn refused(&self, why: &Refusal) {
        self.refused_reason(why.label());
    }

    pub fn refused_reason(&self, reason: &'static str) {
        self.refused.get_or_create(&vec![("reason", reason)]).inc();
    }

    pub fn request(&self, status: StatusCode, elapsed: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.status[class].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream[kind as usize].inc();
    }

    pub fn tunnel_opened(&self) {
        self.tunnels_total.inc();
        self.tunnels_open.inc();
    }

    pub fn tunnel_closed(&self) {
        self.tunnels_open.dec();
    }

    pub fn client_bytes(&self, from_client: u64, to_client: u64) {
        self.bytes_from_clients.inc_by(from_client);
        self.bytes_to_clients.inc_by(to_client);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
