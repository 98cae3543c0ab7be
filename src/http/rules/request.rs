//! The rules for a client's request: target, Host, framing, `Connection`, `Upgrade`.

use http::StatusCode;

use http::{HeaderName, HeaderValue};

use super::{content_length, is_hop_by_hop, is_replaced, last_coding, Connection, Ids};
use crate::http::forwarding::Forwarding;

/// A refused request: the status the client gets, and why (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
}

pub(super) const fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
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
    /// `Expect` was sent: hyper answers `100 Continue` when the body is read.
    pub(crate) expect: bool,
}

impl RequestRules {
    /// Whether a client's request header reaches the app (the proxy's own, from `from` and
    /// `ids`, are added after: [`proxy_headers`]).
    pub(crate) fn forwards(&self, name: &str, from: &Forwarding, ids: &Ids) -> bool {
        // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); only one goes on.
        let superseded =
            self.body == BodyLength::Chunked && name.eq_ignore_ascii_case("content-length");
        !(is_hop_by_hop(name)
            || is_replaced(name, from)
            || self.connection.removes(name)
            || superseded)
            && ids.forwards(name)
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

/// The headers the proxy writes to the app on every path, after the client's it forwards:
/// the forwarding headers, then the request id and trace id.
pub(crate) fn proxy_headers<'a>(
    from: &'a Forwarding,
    ids: &'a Ids,
) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
    from.headers().chain(ids.to_app())
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
    if target.starts_with('/') || target_authority(target).is_some() {
        Ok(())
    } else {
        Err(refuse(StatusCode::BAD_REQUEST, "malformed request target"))
    }
}

/// The authority of an absolute-form target (`http://a.example:8080/x` → `a.example:8080`);
/// `None` for any other form.
fn target_authority(target: &str) -> Option<&[u8]> {
    let rest = ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &target.as_bytes()[scheme.len()..])
    })?;
    let end = rest.iter().position(|&b| matches!(b, b'/' | b'?'));
    Some(&rest[..end.unwrap_or(rest.len())])
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

/// Checks a request's headers and decides how it is forwarded: exactly one valid `Host`, the
/// same as the target's authority when the target is in absolute-form (one host, as HTTP/2's
/// `:authority` and `Host` must agree); at most one `Content-Length`; `Transfer-Encoding` only
/// on HTTP/1.1 and exactly `chunked`; `Upgrade` honoured only on HTTP/1.1 with
/// `Connection: upgrade` and a protocol in `upgrades` (`h2c` never).
pub(crate) fn check_request<'h>(
    method: &str,
    target: &str,
    http11: bool,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    upgrades: &[String],
) -> Result<RequestRules, Refusal> {
    let mut connection = Connection::default();
    let authority = target_authority(target);
    if authority.is_some_and(|a| !valid_host(a)) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid authority in the request target",
        ));
    }
    let (mut hosts, mut host_ok) = (0, true);
    let mut host_agrees = true;
    let (mut lengths, mut length) = (0, None);
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut upgrade: Option<&[u8]> = None;
    let mut expect = false;
    for (name, value) in headers {
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        if is("host") {
            hosts += 1;
            host_ok &= valid_host(value);
            host_agrees &= authority.is_none_or(|a| a.eq_ignore_ascii_case(value));
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
        } else if is("expect") {
            expect = true;
        }
    }
    match hosts {
        0 => return Err(refuse(StatusCode::BAD_REQUEST, "no Host header")),
        1 if !host_ok => return Err(refuse(StatusCode::BAD_REQUEST, "invalid Host header")),
        1 if !host_agrees => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Host differs from the request target's authority",
            ))
        }
        1 => {}
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
        expect,
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

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADES: &[&str] = &["websocket"];

    fn check(
        method: &str,
        target: &str,
        http11: bool,
        head: &str,
    ) -> Result<RequestRules, Refusal> {
        let fields = super::super::test_fields(head);
        let upgrades: Vec<String> = UPGRADES.iter().map(|s| s.to_string()).collect();
        check_request(method, target, http11, fields.into_iter(), &upgrades)
    }

    #[test]
    fn targets() {
        // (method, target, accepted or the status)
        let table: &[(&str, &str, Result<(), u16>)] = &[
            ("GET", "/", Ok(())),
            ("GET", "/a?b=c", Ok(())),
            ("GET", "http://a.example/x", Ok(())),
            ("GET", "HTTPS://a.example", Ok(())),
            ("OPTIONS", "*", Ok(())),
            ("GET", "*", Err(400)),
            ("GET", "/a#frag", Err(400)),
            ("GET", "a.example/x", Err(400)),
            ("GET", "ftp://a.example/x", Err(400)),
            ("CONNECT", "a.example:443", Err(405)),
            ("connect", "/", Err(405)),
        ];
        for (method, target, want) in table {
            let got = check_target(method, target).map_err(|r| r.status.as_u16());
            assert_eq!(got, *want, "{method} {target}");
        }
    }

    #[test]
    fn hosts() {
        let table: &[(&str, bool)] = &[
            ("a.example", true),
            ("a.example:8080", true),
            ("192.0.2.1:80", true),
            ("[2001:db8::1]", true),
            ("[2001:db8::1]:443", true),
            ("under_score~tilde", true),
            ("", false),
            (":80", false),
            ("a.example:", false),
            ("a.example:123456", false),
            ("a.example:8o", false),
            ("user@a.example", false),
            ("a example", false),
            ("[not-v6]", false),
            ("[2001:db8::1", false),
            ("a.example/x", false),
        ];
        for (host, ok) in table {
            assert_eq!(valid_host(host.as_bytes()), *ok, "{host:?}");
        }
    }

    #[test]
    fn requests_refused() {
        // (method, target, HTTP/1.1, header lines, status, reason)
        let table: &[(&str, &str, bool, &str, u16, &str)] = &[
            ("GET", "/", true, "", 400, "no Host header"),
            (
                "GET",
                "/",
                true,
                "Host: a\r\nHost: b",
                400,
                "more than one Host header",
            ),
            ("GET", "/", true, "Host: a b", 400, "invalid Host header"),
            (
                "GET",
                "http://b/x",
                true,
                "Host: a",
                400,
                "Host differs from the request target's authority",
            ),
            (
                "GET",
                "http://u@b/x",
                true,
                "Host: b",
                400,
                "invalid authority in the request target",
            ),
            (
                "POST",
                "/",
                true,
                "Host: a\r\nContent-Length: x",
                400,
                "invalid Content-Length",
            ),
            (
                "POST",
                "/",
                true,
                "Host: a\r\nContent-Length: 1\r\nContent-Length: 1",
                400,
                "more than one Content-Length",
            ),
            (
                "POST",
                "/",
                false,
                "Host: a\r\nTransfer-Encoding: chunked",
                400,
                "Transfer-Encoding on HTTP/1.0",
            ),
            (
                "POST",
                "/",
                true,
                "Host: a\r\nTransfer-Encoding: gzip, chunked",
                501,
                "transfer coding not supported",
            ),
            (
                "POST",
                "/",
                true,
                "Host: a\r\nTransfer-Encoding: chunked, gzip",
                400,
                "Transfer-Encoding not ending in chunked",
            ),
        ];
        for (method, target, http11, head, status, reason) in table {
            let got = check(method, target, *http11, head).unwrap_err();
            assert_eq!(
                (got.status.as_u16(), got.reason),
                (*status, *reason),
                "{head:?}"
            );
        }
    }

    #[test]
    fn requests_forwarded() {
        // (method, HTTP/1.1, header lines, body, upgrade, close, idempotent)
        type Row = (
            &'static str,
            bool,
            &'static str,
            BodyLength,
            Option<&'static str>,
            bool,
            bool,
        );
        let table: &[Row] = &[
            ("GET", true, "Host: a", BodyLength::None, None, false, true),
            ("GET", false, "Host: a", BodyLength::None, None, true, true),
            (
                "GET",
                false,
                "Host: a\r\nConnection: keep-alive",
                BodyLength::None,
                None,
                false,
                true,
            ),
            (
                "POST",
                true,
                "Host: a\r\nContent-Length: 5",
                BodyLength::Length(5),
                None,
                false,
                false,
            ),
            (
                "POST",
                true,
                "Host: a\r\nTransfer-Encoding: Chunked",
                BodyLength::Chunked,
                None,
                false,
                false,
            ),
            (
                "DELETE",
                true,
                "Host: a\r\nConnection: close",
                BodyLength::None,
                None,
                true,
                true,
            ),
            (
                "GET",
                true,
                "Host: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket",
                BodyLength::None,
                Some("WebSocket"),
                false,
                true,
            ),
            // Not honoured: no `Connection: upgrade`, HTTP/1.0, h2c, a protocol not listed.
            (
                "GET",
                true,
                "Host: a\r\nUpgrade: websocket",
                BodyLength::None,
                None,
                false,
                true,
            ),
            (
                "GET",
                false,
                "Host: a\r\nConnection: upgrade\r\nUpgrade: websocket",
                BodyLength::None,
                None,
                true,
                true,
            ),
            (
                "GET",
                true,
                "Host: a\r\nConnection: upgrade\r\nUpgrade: h2c",
                BodyLength::None,
                None,
                false,
                true,
            ),
            (
                "GET",
                true,
                "Host: a\r\nConnection: upgrade\r\nUpgrade: irc, websocket",
                BodyLength::None,
                Some("websocket"),
                false,
                true,
            ),
            // An honoured upgrade has no body of its own: what follows belongs to the tunnel.
            (
                "GET",
                true,
                "Host: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 3",
                BodyLength::None,
                Some("websocket"),
                false,
                true,
            ),
        ];
        for (method, http11, head, body, upgrade, close, idempotent) in table {
            let r = check(method, "/", *http11, head).unwrap();
            let got = (r.body, r.upgrade.as_deref(), r.close, r.idempotent);
            assert_eq!(
                got,
                (*body, *upgrade, *close, *idempotent),
                "{method} {head:?}"
            );
        }
        let head = check("HEAD", "/", true, "Host: a\r\nExpect: 100-continue").unwrap();
        assert!(head.head && head.expect);
    }

    #[test]
    fn which_fields_reach_the_app() {
        let from = Forwarding::new("192.0.2.1:1".parse().unwrap(), Some(443), None, None);
        let chunked = check(
            "POST",
            "/",
            true,
            "Host: a\r\nTransfer-Encoding: chunked\r\nConnection: x-secret",
        )
        .unwrap();
        // (field, forwarded)
        let table: &[(&str, bool)] = &[
            ("host", true),
            ("user-agent", true),
            ("trailer", true),
            ("content-length", false),
            ("transfer-encoding", false),
            ("connection", false),
            ("keep-alive", false),
            ("te", false),
            ("upgrade", false),
            ("x-secret", false),
            ("X-Forwarded-For", false),
            ("x_forwarded_proto", false),
            ("forwarded", false),
            ("x-real-ip", false),
        ];
        for (name, forwarded) in table {
            let ids = Ids::default();
            assert_eq!(chunked.forwards(name, &from, &ids), *forwarded, "{name}");
        }
        let hop: Vec<_> = chunked.hop_headers().collect();
        assert_eq!(hop, [("transfer-encoding", "chunked")]);
    }
}
