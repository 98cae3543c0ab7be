//! Prometheus metrics; `server::metrics_endpoint` serves them at `/metrics`.
//!
//! Every labelled series the proxy updates is created once at start-up, so the hot path only
//! touches atomics, never the family's lock or a label hash.

use std::time::Duration;

use http::StatusCode;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::accept::proxy_header::Refusal;
use crate::config::Port;
use crate::http::error::UpstreamError;
use crate::http::Protocol;
use crate::telemetry::process::ProcessCollector;
use crate::telemetry::timing::{time_buckets, Durations, Histograms, UpstreamTiming};
use crate::telemetry::tls::TlsMetrics;

type Labels = Vec<(&'static str, &'static str)>;
/// What the proxy was doing when the descriptors ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DescriptorUse {
    /// Accepting a client connection.
    Accept,
    /// Connecting to the app.
    Connect,
}

impl DescriptorUse {
    /// The `at` label of `descriptors_exhausted_total` and the warning.
    pub(crate) fn label(self) -> &'static str {
        match self {
            DescriptorUse::Accept => "accept",
            DescriptorUse::Connect => "connect",
        }
    }
}

/// Refused after the header: a request other than `/ping` on a header-less health-check
/// connection.
const NO_HEADER_REQUEST: &str = "no_proxy_header_request";

/// Refused after the header: a cleartext connection while `TLS_MODE=required`.
const CLEARTEXT: &str = "tls_required";

/// The proxy's counters, gauges and histogram.
pub struct Metrics {
    registry: Registry,
    accepted_plain: Counter,
    accepted_tls: Counter,
    open: Gauge,
    refused: Family<Labels, Counter>,
    /// Requests by protocol (`http1`, `h2`) and status class.
    status: [[Counter; 5]; 2],
    h2_connections: Gauge,
    h2_streams: Gauge,
    upstream: [Counter; 3],
    tunnels_open: Gauge,
    tunnels_total: Counter,
    health_ok: Counter,
    health_draining: Counter,
    exhausted_accept: Counter,
    exhausted_connect: Counter,
    connection_limit: Gauge,
    bytes_from_clients: Counter,
    bytes_to_clients: Counter,
    durations: Durations,
    upstream_timing: UpstreamTiming,
    /// The TLS listener's.
    pub(crate) tls: TlsMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        // The standard process metrics keep their own names; everything else is the proxy's.
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("elb_ws_proxy");
        let build = Family::<Labels, Gauge>::default();
        registry.register(
            "build_info",
            "1, labelled with the version and the git commit the binary was built from",
            build.clone(),
        );
        build
            .get_or_create(&vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("ELB_WS_PROXY_REVISION")),
            ])
            .set(1);
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
        for reason in Refusal::LABELS
            .into_iter()
            .chain([NO_HEADER_REQUEST, CLEARTEXT])
        {
            drop(refused.get_or_create(&vec![("reason", reason)]));
        }
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by client protocol and status class",
            requests.clone(),
        );
        let h2_connections = Gauge::default();
        registry.register(
            "h2_connections_open",
            "HTTP/2 client connections open now",
            h2_connections.clone(),
        );
        let h2_streams = Gauge::default();
        registry.register(
            "h2_streams_open",
            "HTTP/2 streams being served now",
            h2_streams.clone(),
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
        let health = Family::<Labels, Counter>::default();
        registry.register(
            "health_checks",
            "/ping requests answered, by status (not in the access log unless LOG_HEALTH_CHECKS)",
            health.clone(),
        );
        let exhausted = Family::<Labels, Counter>::default();
        registry.register(
            "descriptors_exhausted",
            "Accepts and app connects that failed for want of file descriptors",
            exhausted.clone(),
        );
        let connection_limit = Gauge::default();
        registry.register(
            "connection_limit",
            "Client connections served at once: MAX_CONNECTIONS, or less when descriptors are short",
            connection_limit.clone(),
        );
        let durations: Histograms = Family::new_with_constructor(time_buckets);
        registry.register(
            "request_duration_seconds",
            "Requests the app was asked, from the request's head to the response's head, by client protocol and status code",
            durations.clone(),
        );
        let connect = time_buckets();
        registry.register(
            "upstream_connect_seconds",
            "New connections to the app: time to connect",
            connect.clone(),
        );
        let response = time_buckets();
        registry.register(
            "upstream_response_seconds",
            "Requests to the app: time from the request sent to the response's head",
            response.clone(),
        );
        let tls = TlsMetrics::register(registry);
        let counter = |f: &Family<Labels, Counter>, k: &'static str, v: &'static str| {
            f.get_or_create(&vec![(k, v)]).clone()
        };
        Metrics {
            accepted_plain: counter(&accepted, "listener", "plain"),
            accepted_tls: counter(&accepted, "listener", "tls"),
            open,
            status: [Protocol::Http1, Protocol::H2].map(|p| {
                ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| {
                    requests
                        .get_or_create(&vec![("protocol", p.label()), ("class", c)])
                        .clone()
                })
            }),
            h2_connections,
            h2_streams,
            upstream: UpstreamError::ALL.map(|k| counter(&upstream, "kind", k.label())),
            refused,
            tunnels_open,
            tunnels_total,
            health_ok: counter(&health, "status", "200"),
            health_draining: counter(&health, "status", "503"),
            exhausted_accept: counter(&exhausted, "at", "accept"),
            exhausted_connect: counter(&exhausted, "at", "connect"),
            connection_limit,
            bytes_from_clients: counter(&bytes, "direction", "from_client"),
            bytes_to_clients: counter(&bytes, "direction", "to_client"),
            durations: Durations::new(durations),
            upstream_timing: UpstreamTiming { connect, response },
            tls,
            registry: root,
        }
    }

    pub(crate) fn accepted(&self, port: Port) {
        match port {
            Port::Tls => &self.accepted_tls,
            Port::Plain => &self.accepted_plain,
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

    fn refused_reason(&self, reason: &'static str) {
        self.refused.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// A request other than `/ping` on a connection that came without a PROXY header.
    pub fn refused_header_less_request(&self) {
        self.refused_reason(NO_HEADER_REQUEST);
    }

    /// Refused: a cleartext connection while `TLS_MODE=required`.
    pub(crate) fn refused_cleartext(&self) {
        self.refused_reason(CLEARTEXT);
    }

    /// A `/ping` answered (`200`, or `503` while draining).
    pub fn health_check(&self, status: StatusCode) {
        if status == StatusCode::OK {
            &self.health_ok
        } else {
            &self.health_draining
        }
        .inc();
    }

    /// An accept or app connect that ran out of file descriptors.
    pub(crate) fn descriptors_exhausted(&self, at: DescriptorUse) {
        match at {
            DescriptorUse::Connect => &self.exhausted_connect,
            DescriptorUse::Accept => &self.exhausted_accept,
        }
        .inc();
    }

    /// The connection cap in force.
    pub fn set_connection_limit(&self, n: usize) {
        self.connection_limit.set(n as i64);
    }

    /// One request answered to a client speaking HTTP/2 (`h2`) or HTTP/1.x; `asked` is the
    /// time from its head to the response's head when the app was asked (`/ping`, redirects
    /// and refusals are counted, but kept out of the duration histogram).
    pub(crate) fn request(&self, protocol: Protocol, status: StatusCode, asked: Option<Duration>) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        // A tunnel's request is the HTTP/1.1 handshake that opened it.
        let by = usize::from(protocol == Protocol::H2);
        self.status[by][class].inc();
        if let Some(elapsed) = asked {
            self.durations.observe(protocol, status, elapsed);
        }
    }

    /// The handles [`crate::upstream`] records the app's timings with.
    pub(crate) fn upstream_timing(&self) -> UpstreamTiming {
        self.upstream_timing.clone()
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream[kind as usize].inc();
    }

    /// An HTTP/2 client connection opened (`+1`) or closed (`-1`).
    pub fn h2_connection(&self, delta: i64) {
        self.h2_connections.inc_by(delta);
    }

    /// An HTTP/2 stream started (`+1`) or ended (`-1`).
    pub fn h2_stream(&self, delta: i64) {
        self.h2_streams.inc_by(delta);
    }

    pub fn tunnel_opened(&self) {
        self.tunnels_total.inc();
        self.tunnels_open.inc();
    }

    pub fn tunnel_closed(&self) {
        self.tunnels_open.dec();
    }

    /// Tunnels open now.
    pub fn tunnels_open(&self) -> usize {
        usize::try_from(self.tunnels_open.get()).unwrap_or(0)
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
