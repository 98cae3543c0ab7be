//! Time histograms: request durations by client protocol and status code, found without a
//! lock once created, and the app's connect and response times.

use std::sync::OnceLock;
use std::time::Duration;

use http::StatusCode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::http::Protocol;

type OwnedLabels = Vec<(&'static str, String)>;
pub(crate) type Histograms = Family<OwnedLabels, Histogram, fn() -> Histogram>;

/// Half a millisecond doubling to about 131 s: past `RESPONSE_TIMEOUT`'s default of 60 s and
/// the 120 s a slow app may be given.
pub(crate) fn time_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 19))
}

/// Status codes a histogram is kept for: 100 to 599.
const CODES: usize = 500;

/// `request_duration_seconds{protocol,code}`, its series created on first use and then found
/// by index, so recording takes no lock.
pub(crate) struct Durations {
    family: Histograms,
    /// By client protocol (`http1`, `h2`) and status code.
    series: [Box<[OnceLock<Histogram>; CODES]>; 2],
}

impl Durations {
    pub(crate) fn new(family: Histograms) -> Self {
        Durations {
            family,
            series: [(); 2].map(|()| Box::new(std::array::from_fn(|_| OnceLock::new()))),
        }
    }

    pub(crate) fn observe(&self, protocol: Protocol, status: StatusCode, elapsed: Duration) {
        let by = usize::from(protocol == Protocol::H2);
        let code = status.as_u16().clamp(100, 599);
        let series = self.series[by][usize::from(code - 100)].get_or_init(|| {
            let label = [Protocol::Http1, Protocol::H2][by].label();
            let labels = vec![("protocol", label.to_owned()), ("code", code.to_string())];
            self.family.get_or_create(&labels).clone()
        });
        series.observe(elapsed.as_secs_f64());
    }
}

/// The app's side of a request: how long connecting took, and how long the app took from the
/// request sent to its response head. [`crate::upstream`] records them.
#[derive(Clone)]
pub(crate) struct UpstreamTiming {
    /// `upstream_connect_seconds`.
    pub(crate) connect: Histogram,
    /// `upstream_response_seconds`.
    pub(crate) response: Histogram,
}

impl UpstreamTiming {
    /// A new connection to the app took `elapsed`.
    pub(crate) fn connected(&self, elapsed: Duration) {
        self.connect.observe(elapsed.as_secs_f64());
    }

    /// The app answered a request's head in `elapsed` after it was sent.
    pub(crate) fn answered(&self, elapsed: Duration) {
        self.response.observe(elapsed.as_secs_f64());
    }
}
