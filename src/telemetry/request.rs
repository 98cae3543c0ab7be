//! The end of every answered request, whichever path served it: its metrics, the health-check
//! count for `/ping`, and its access line.

use std::time::Duration;

use http::StatusCode;

use crate::http::forwarding::Forwarding;
use crate::http::{rules, Protocol};
use crate::telemetry::access_log;
use crate::telemetry::metrics::Metrics;

/// One answered request.
pub(crate) struct Answered<'a> {
    /// Who asked.
    pub(crate) from: &'a Forwarding,
    /// What the client speaks.
    pub(crate) protocol: Protocol,
    pub(crate) method: &'a str,
    /// The target's path, without the query.
    pub(crate) path: &'a str,
    pub(crate) status: StatusCode,
    /// From the request's head to the response's head.
    pub(crate) elapsed: Duration,
    /// The app was asked: `elapsed` is its time too.
    pub(crate) upstream: bool,
}

impl Answered<'_> {
    /// Counts the request and writes its access line; `/ping` is counted as a health check
    /// too, and gets an access line only with `LOG_HEALTH_CHECKS=true` (balancers poll it
    /// from every node many times a minute).
    pub(crate) fn record(self, metrics: &Metrics, log_health_checks: bool) {
        let asked = self.upstream.then_some(self.elapsed);
        metrics.request(self.protocol, self.status, asked);
        let ping = rules::is_ping(self.method, self.path);
        if ping {
            metrics.health_check(self.status);
        }
        if !ping || log_health_checks {
            access_log::record(
                self.from,
                self.protocol,
                self.method,
                self.path,
                self.status,
                asked,
            );
        }
    }
}
