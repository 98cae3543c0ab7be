//! The one mapping from a failed request to the app to what the client gets, on every path:
//! counted by kind, one warning that names the client, the app and the cause (none while
//! running out of descriptors, which warns on its own), and `502` or `504`.

use std::fmt::Display;
use std::net::SocketAddr;

use http::{Response, StatusCode};

use crate::http::body::{self, Body};
use crate::http::error::UpstreamError;
use crate::telemetry::metrics::Metrics;
use crate::upstream::Upstream;

/// Counts and logs a failure; the status and short text the client gets.
pub(crate) fn answer(
    up: &Upstream,
    metrics: &Metrics,
    client: SocketAddr,
    kind: UpstreamError,
    why: &dyn Display,
) -> (StatusCode, &'static str) {
    metrics.upstream_error(kind);
    if !(kind == UpstreamError::Connect && up.out_of_descriptors()) {
        tracing::warn!(%client, app = %up.authority, kind = kind.label(), error = %why, "upstream request failed");
    }
    kind.answer()
}

/// [`answer`] as a response.
pub(crate) fn response(
    up: &Upstream,
    metrics: &Metrics,
    client: SocketAddr,
    kind: UpstreamError,
    why: &dyn Display,
) -> Response<Body> {
    let (status, text) = answer(up, metrics, client, kind, why);
    body::text(status, text)
}
