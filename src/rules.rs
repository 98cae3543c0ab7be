//! The HTTP rules, decided once here for every path that forwards a request: the lean HTTP/1.1
//! path, hyper's HTTP/1.1, and the request-head gate in front of hyper.
//!
//! In the manner of Pingora's `protocols/http/v1/common.rs`, these are plain functions over
//! header names and values (`(&str, &[u8])`), so the byte-level lean path and hyper's header
//! maps ask the same questions and get the same answers. Nothing here does I/O.

use bytes::Bytes;
use http::StatusCode;

/// Headers that describe one hop only (RFC 9110 §7.6.1), besides those `Connection` names.
/// `HTTP2-Settings` belongs to an `h2c` upgrade, which is never honoured.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
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
/// `X-Real-IP`, any `X-Forwarded-*`, or a look-alike with `_`). The proxy's own replace them all.
pub(crate) fn is_forwarding(name: &str) -> bool {
    let n = name.as_bytes();
    same_name(n, b"forwarded")
        || same_name(n, b"x-real-ip")
        || (n.len() > 12 && same_name(&n[..12], b"x-forwarded-"))
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

/// A refused request: the status the client gets, and why (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
}

const fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLength {
    None,
    Length(u64),
    Chunked,
}

/// What the rules decided about a request the proxy will forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestRules {
    pub(crate) connection: Connection,
    pub(crate) body: BodyLength,
    /// The `Upgrade` protocols honoured (`UPGRADE_PROTOCOLS`), as the value sent to the app.
    pub(crate) upgrade: Option<String>,
    /// The client's connection closes after the response.
    pub(crate) close: bool,
    /// Safe to send again when a reused upstream connection turns out to be dead.
    pub(crate) idempotent: bool,
    /// A `HEAD`: the response carries no body.
    pub(crate) head: bool,
}

impl RequestRules {
    /// Whether a client's request header reaches the app (the proxy's own are added after).
    pub(crate) fn forwards(&self, name: &str) -> bool {
        // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); only one goes on.
        let superseded =
            self.body == BodyLength::Chunked && name.eq_ignore_ascii_case("content-length");
        !(is_hop_by_hop(name) || is_forwarding(name) || self.connection.removes(name) || superseded)
    }

    /// The hop-by-hop headers the proxy itself sends to the app: the body framing (so hyper's
    /// client does not drop a chunked body on a `GET`) and an honoured upgrade.
    pub(crate) fn hop_headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let chunked =
            (self.body == BodyLength::Chunked).then_some(("transfer-encoding", "chunked"));
        let upgrade = self.upgrade.as_deref().map(|p| ("upgrade", p));
        let connection = self.upgrade.as_ref().map(|_| ("connection", "upgrade"));
        chunked.into_iter().chain(upgrade).chain(connection)
    }
}

/// Checks the method and request target (RFC 9112 §3.2): origin-form, or absolute-form
/// (`http://…`, which the app gets as origin-form); `*` only for `OPTIONS`; never a fragment.
/// `CONNECT` is refused: this proxy tunnels only `Upgrade`.
pub(crate) fn check_target(method: &str, target: &str) -> Result<(), Refusal> {
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported",
        ));
    }
    if target.contains('#') {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "fragment in the request target",
        ));
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(())
        } else {
            Err(refuse(
                StatusCode::BAD_REQUEST,
                "asterisk-form is only for OPTIONS",
            ))
        };
    }
    let absolute = ["http://", "https://"].iter().any(|scheme| {
        target
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    });
    if target.starts_with('/') || absolute {
        Ok(())
    } else {
        Err(refuse(StatusCode::BAD_REQUEST, "malformed request target"))
    }
}

/// Whether a `Host` value is `host[:port]`: a DNS name, an IPv4 address or a bracketed IPv6
/// address, and an optional port of up to five digits.
pub(crate) fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(end) => {
                let inner = &value[1..end];
                let ok = std::str::from_utf8(inner)
                    .is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
                if !ok {
                    return false;
                }
                (&value[..=end], &value[end + 1..])
            }
            None => return false,
        },
        _ => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => {
            (1..=5).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    let name_ok = host.starts_with(b"[")
        || (!host.is_empty()
            && host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')));
    port_ok && name_ok
}

/// A `Content-Length` value: digits only, one value (a list, even of equal values, is not one).
fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The last coding of a `Transfer-Encoding` list, lower-case compared.
fn last_coding(values: &[&[u8]]) -> Option<Vec<u8>> {
    let last = values.last()?;
    let coding = last.rsplit(|&b| b == b',').next()?.trim_ascii();
    Some(coding.to_ascii_lowercase())
}

/// Checks a request's headers and decides how it is forwarded: exactly one valid `Host`; at
/// most one `Content-Length`; `Transfer-Encoding` only on HTTP/1.1 and exactly `chunked`;
/// `Upgrade` honoured only on HTTP/1.1 with `Connection: upgrade` and a protocol in `upgrades`
/// (`h2c` never).
pub(crate) fn check_request<'h>(
    method: &str,
    http11: bool,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    upgrades: &[String],
) -> Result<RequestRules, Refusal> {
    let mut connection = Connection::default();
    let (mut hosts, mut host_ok) = (0, true);
    let (mut lengths, mut length) = (0, None);
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut upgrade: Option<&[u8]> = None;
    for (name, value) in headers {
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        if is("host") {
            hosts += 1;
            host_ok &= valid_host(value);
        } else if is("content-length") {
            lengths += 1;
            length = content_length(value);
            if length.is_none() {
                return Err(refuse(StatusCode::BAD_REQUEST, "invalid Content-Length"));
            }
        } else if is("transfer-encoding") {
            codings.push(value);
        } else if is("connection") {
            connection.add(value);
        } else if is("upgrade") {
            upgrade = Some(value);
        }
    }
    match hosts {
        0 => return Err(refuse(StatusCode::BAD_REQUEST, "no Host header")),
        1 if host_ok => {}
        1 => return Err(refuse(StatusCode::BAD_REQUEST, "invalid Host header")),
        _ => return Err(refuse(StatusCode::BAD_REQUEST, "more than one Host header")),
    }
    if lengths > 1 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "more than one Content-Length",
        ));
    }
    let body = if codings.is_empty() {
        length.map_or(BodyLength::None, BodyLength::Length)
    } else if !http11 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Transfer-Encoding on HTTP/1.0",
        ));
    } else if codings.len() == 1 && codings[0].trim_ascii().eq_ignore_ascii_case(b"chunked") {
        BodyLength::Chunked
    } else if last_coding(&codings).as_deref() == Some(b"chunked") {
        return Err(refuse(
            StatusCode::NOT_IMPLEMENTED,
            "transfer coding not supported",
        ));
    } else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Transfer-Encoding not ending in chunked",
        ));
    };
    let upgrade = upgrade
        .filter(|_| http11 && connection.upgrade)
        .and_then(|value| honoured_upgrade(value, upgrades));
    let close = connection.close || (!http11 && !connection.keep_alive);
    let m = |other: &str| method.eq_ignore_ascii_case(other);
    Ok(RequestRules {
        connection,
        body: if upgrade.is_some() {
            BodyLength::None
        } else {
            body
        },
        upgrade,
        close,
        idempotent: ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
            .iter()
            .any(|&x| m(x)),
        head: m("HEAD"),
    })
}

/// The protocols of an `Upgrade` value that `UPGRADE_PROTOCOLS` lists, joined as a value;
/// `None` when there are none. `h2c` is never honoured.
fn honoured_upgrade(value: &[u8], upgrades: &[String]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let kept: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|p| {
            let name = p.split('/').next().unwrap_or(p);
            !name.eq_ignore_ascii_case("h2c")
                && upgrades.iter().any(|u| u.eq_ignore_ascii_case(name))
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// How a response body is delimited on its way to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `HEAD`, `204`, `304`: no body whatever the headers say.
    Empty,
    Length(u64),
    /// Chunked, passed on with the app's `Transfer-Encoding` (`gzip, chunked` stays so).
    Chunked,
    /// Until the app closes: the client connection closes after it too.
    Close,
}

/// What the rules decided about a final (non-`1xx`) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseRules {
    pub(crate) framing: Framing,
    pub(crate) connection: Connection,
    /// The one `Content-Length` the client gets (equal duplicates collapsed); `None` when chunked.
    pub(crate) content_length: Option<u64>,
    /// The app's `Transfer-Encoding`, when chunked.
    pub(crate) transfer_encoding: Option<Bytes>,
    /// The app's connection can carry another request afterwards.
    pub(crate) reusable: bool,
}

impl ResponseRules {
    /// Whether an app's response header reaches the client as it is; the framing headers are
    /// written from [`ResponseRules::content_length`] and [`ResponseRules::transfer_encoding`].
    pub(crate) fn forwards(&self, name: &str) -> bool {
        !is_hop_by_hop(name)
            && !self.connection.removes(name)
            && !name.eq_ignore_ascii_case("content-length")
    }
}

/// What kind of response head the app sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResponseKind {
    /// `100`, `102`–`199`: skipped, as hyper's client skips them.
    Informational,
    /// `101` to an honoured upgrade: the connections are joined.
    Switching,
    Final(ResponseRules),
}

/// Checks the app's response head against the request it answers (RFC 9112 §6.3). An `Err`
/// is a response the proxy cannot pass on safely: the client gets `502`.
pub(crate) fn check_response<'h>(
    status: u16,
    http11: bool,
    request: &RequestRules,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
) -> Result<ResponseKind, &'static str> {
    match status {
        101 if request.upgrade.is_none() => {
            return Err("101 to a request that asked for no upgrade")
        }
        101 => return Ok(ResponseKind::Switching),
        100..=199 => return Ok(ResponseKind::Informational),
        200..=999 => {}
        _ => return Err("invalid response status"),
    }
    let mut connection = Connection::default();
    let mut length: Option<u64> = None;
    let mut codings: Vec<&[u8]> = Vec::new();
    for (name, value) in headers {
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        if is("connection") {
            connection.add(value);
        } else if is("transfer-encoding") {
            codings.push(value);
        } else if is("content-length") {
            for v in value.split(|&b| b == b',') {
                let n = content_length(v).ok_or("invalid content-length")?;
                if length.is_some_and(|m| m != n) {
                    return Err("conflicting content-length");
                }
                length = Some(n);
            }
        }
    }
    let chunked = if codings.is_empty() {
        false
    } else if !http11 {
        return Err("transfer-encoding in an HTTP/1.0 response");
    } else if last_coding(&codings).as_deref() == Some(b"chunked") {
        true
    } else {
        return Err("unsupported transfer-encoding");
    };
    let framing = if request.head || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else {
        length.map_or(Framing::Close, Framing::Length)
    };
    let transfer_encoding = chunked.then(|| match codings.as_slice() {
        [one] if one.trim_ascii().eq_ignore_ascii_case(b"chunked") => {
            Bytes::from_static(b"chunked")
        }
        many => Bytes::from(many.join(&b", "[..])),
    });
    Ok(ResponseKind::Final(ResponseRules {
        reusable: http11 && !connection.close && framing != Framing::Close,
        framing,
        connection,
        content_length: if chunked { None } else { length },
        transfer_encoding,
    }))
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
