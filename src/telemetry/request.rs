//! The end of every answered request, whichever path served it: its metrics and the
//! health-check count for `/ping` as its response head goes out, and its access line once the
//! response has ended, when its body sizes and total time are known.

use std::time::Instant;

use http::{Method, StatusCode};

pub(crate) use crate::telemetry::access_line::{Answered, Ended};

use crate::http::body::BodyBytes;
use crate::http::forwarding::Forwarding;
use crate::http::rules::{self, Ids};
use crate::http::Protocol;
use crate::telemetry::access_log;
use crate::telemetry::metrics::Metrics;

impl Answered<'_> {
    /// Counts the request as its response head goes out; `/ping` is counted as a health
    /// check too. Returns whether it gets an access line: `/ping` only with
    /// `LOG_HEALTH_CHECKS=true` (balancers poll it from every node many times a minute).
    pub(crate) fn count(&self, metrics: &Metrics, log_health_checks: bool) -> bool {
        let asked = self.upstream.then_some(self.elapsed);
        metrics.request(self.protocol, self.status, asked);
        let ping = rules::is_ping(self.method, self.path);
        if ping {
            metrics.health_check(self.status);
        }
        !ping || log_health_checks
    }

    /// Writes the access line of a response that has ended.
    pub(crate) fn log(&self, ended: &Ended) {
        access_log::record(self, ended);
    }

    /// Counts the request and keeps what the access line of a response that ends later
    /// needs; `None` when it gets none. The request started at `started`; its body, if
    /// any, is counted in `received`.
    pub(crate) fn pending(
        self,
        metrics: &Metrics,
        log_health_checks: bool,
        started: Instant,
        received: Option<BodyBytes>,
    ) -> Option<Pending> {
        if !self.count(metrics, log_health_checks) {
            return None;
        }
        Some(Pending {
            protocol: self.protocol,
            method: Method::from_bytes(self.method.as_bytes()).unwrap_or_default(),
            path: self.path.into(),
            host: self.host.map(Into::into),
            user_agent: self.user_agent.map(Into::into),
            ids: self.ids.clone(),
            status: self.status,
            elapsed: self.elapsed,
            upstream: self.upstream,
            started,
            received,
            sent: 0,
        })
    }
}

/// The access line of a response still being sent: its body counts as it goes, and the line
/// is written when the body is done or dropped.
pub(crate) struct Pending {
    protocol: Protocol,
    method: Method,
    path: Box<str>,
    host: Option<Box<str>>,
    user_agent: Option<Box<str>>,
    ids: Ids,
    status: StatusCode,
    elapsed: std::time::Duration,
    upstream: bool,
    started: Instant,
    /// The request body's bytes, counted as they go to the app.
    received: Option<BodyBytes>,
    /// Response body bytes written so far.
    sent: u64,
}

impl Pending {
    /// `n` more response body bytes went to the client.
    pub(crate) fn sent(&mut self, n: usize) {
        self.sent += n as u64;
    }

    /// Writes the access line: the response is done (or was abandoned).
    pub(crate) fn finish(&self, from: &Forwarding) {
        let answered = Answered {
            from,
            protocol: self.protocol,
            method: self.method.as_str(),
            path: &self.path,
            host: self.host.as_deref(),
            user_agent: self.user_agent.as_deref(),
            ids: &self.ids,
            status: self.status,
            elapsed: self.elapsed,
            upstream: self.upstream,
        };
        answered.log(&Ended {
            received: self.received.as_ref().map_or(0, BodyBytes::get),
            sent: self.sent,
            total: self.started.elapsed(),
        });
    }
}
