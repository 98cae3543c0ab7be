//! The HTTP rules, decided once here for every path that forwards a request: the lean HTTP/1.1
//! path, hyper's HTTP/1.1, and the request-head gate in front of hyper.
//!
//! In the manner of Pingora's `protocols/http/v1/common.rs`, these are plain functions over
//! header names and values (`(&str, &[u8])`), so the byte-level lean path and hyper's header
//! maps ask the same questions and get the same answers. Nothing here does I/O.

mod h2;
mod ids;
mod request;
mod response;

pub(crate) use h2::{check_h2_request, joined_cookies};
pub(crate) use ids::{IdRules, Ids};
pub(crate) use request::{
    check_request, check_target, proxy_headers, BodyLength, Refusal, RequestRules,
};
pub(crate) use response::{check_response, strip_trailers, Framing, ResponseKind, ResponseRules};

use http::HeaderName;

use crate::http::forwarding::Forwarding;

/// As many header lines as hyper accepts by default; more gets `431`.
pub(crate) const MAX_HEADERS: usize = 100;

/// What reading a head needs from the settings.
pub(crate) struct HeadLimits {
    /// `MAX_HEADER_BYTES`.
    pub(crate) max_header_bytes: usize,
    /// `UPGRADE_PROTOCOLS`.
    pub(crate) upgrades: Vec<String>,
    /// `REQUEST_ID_HEADER` and `AMZN_TRACE_ID`.
    pub(crate) ids: IdRules,
}

/// Headers that describe one hop only (RFC 9110 §7.6.1), besides those `Connection` names.
/// `HTTP2-Settings` belongs to an `h2c` upgrade, which is never honoured. `Trailer` is not one of
/// them: it announces the trailer fields end to end (RFC 9110 §6.6.2), and hyper's HTTP/1.1
/// server sends a response's trailers only when it is there.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Whether a header describes one hop only and is never passed on as it is.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// `a` and `b` are the same header name, ignoring case and reading `_` as `-`: CGI, WSGI and
/// Rack servers turn both into `HTTP_X_FORWARDED_FOR`, so a look-alike is as good as the real one.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| fold(x) == fold(y))
}

/// Whether a client-sent header claims to say where the request came from (`Forwarded`,
/// `X-Real-IP`, `X-Amzn-Vpce-Id`, any `X-Forwarded-*`, or a look-alike with `_`). The proxy's
/// own replace them all.
pub(crate) fn is_forwarding(name: &str) -> bool {
    let n = name.as_bytes();
    same_name(n, b"forwarded")
        || same_name(n, b"x-real-ip")
        || same_name(n, b"x-amzn-vpce-id")
        || (n.len() > 12 && same_name(&n[..12], b"x-forwarded-"))
}

/// Whether a client-sent header is one the proxy replaces for this connection: the forwarding
/// headers above, the configured `VPC_ENDPOINT_HEADER` and `CLIENT_CERT_HEADER` (on every
/// connection, TLS or not: only the proxy vouches for a client certificate).
pub(crate) fn is_replaced(name: &str, from: &Forwarding) -> bool {
    let own = |h: &Option<HeaderName>| {
        h.as_ref()
            .is_some_and(|own| same_name(name.as_bytes(), own.as_str().as_bytes()))
    };
    is_forwarding(name) || own(&from.vpce_header) || own(&from.client_cert_header)
}

/// Headers the proxy frames or routes by: `Connection` naming them does not remove them.
fn relied_on(name: &str) -> bool {
    ["host", "content-length", "transfer-encoding"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// What the `Connection` header(s) of a message said.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Connection {
    /// `close`: the connection ends after this message.
    pub(crate) close: bool,
    /// `keep-alive`: an HTTP/1.0 peer asks to keep the connection.
    pub(crate) keep_alive: bool,
    /// `upgrade`: the `Upgrade` header is meant.
    pub(crate) upgrade: bool,
    /// Other headers named as hop-by-hop; empty (no allocation) on nearly every message.
    named: Vec<String>,
}

impl Connection {
    /// Adds the tokens of one `Connection` header value.
    pub(crate) fn add(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if !token.is_empty() {
                self.named
                    .push(String::from_utf8_lossy(token).to_ascii_lowercase());
            }
        }
    }

    /// Whether `name` goes because `Connection` named it; headers the proxy relies on stay.
    pub(crate) fn removes(&self, name: &str) -> bool {
        !self.named.is_empty()
            && !relied_on(name)
            && self.named.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// A `Content-Length` value: digits only, one value (a list, even of equal values, is not one).
pub(super) fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The last coding of a `Transfer-Encoding` list, lower-case compared.
pub(super) fn last_coding(values: &[&[u8]]) -> Option<Vec<u8>> {
    let last = values.last()?;
    let coding = last.rsplit(|&b| b == b',').next()?.trim_ascii();
    Some(coding.to_ascii_lowercase())
}

/// Whether a request that failed on a reused upstream connection is sent once more on a fresh
/// one: only when the connection was reused (the app may have closed it as it was picked) and
/// the request either never left or is idempotent.
pub(crate) fn retry_on_fresh_connection(reused: bool, unsent: bool, idempotent: bool) -> bool {
    reused && (unsent || idempotent)
}

/// Whether a request is the health check the proxy answers itself: exactly the path `/ping`
/// (any query), `GET` or `HEAD`.
pub(crate) fn is_ping(method: &str, target: &str) -> bool {
    let path = target.split('?').next().unwrap_or(target);
    path == "/ping" && (method == "GET" || method == "HEAD")
}

/// Header lines (`name: value`, CRLF-separated) as the rules take them, for the unit tables.
#[cfg(test)]
pub(crate) fn test_fields(head: &str) -> Vec<(&str, &[u8])> {
    head.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once(": ").unwrap())
        .map(|(n, v)| (n, v.as_bytes()))
        .collect()
}
