//! The same request rules for an HTTP/2 stream. HTTP/2 frames bodies itself and the h2 codec
//! already refuses connection-specific headers, so what is left is the authority (`:authority`
//! or one `Host`, agreeing when both are sent), the target, `Content-Length`, the extended
//! `CONNECT` of RFC 8441, and how the body is framed if the app is reached over HTTP/1.1.

use http::{StatusCode, Uri};

use super::request::{check_target, refuse, valid_host, BodyLength, Refusal, RequestRules};
use super::{content_length, Connection};

/// What the rules decided about an HTTP/2 request, and the authority it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct H2Request {
    pub(crate) rules: RequestRules,
    /// `host[:port]`, from `:authority` or `Host`.
    pub(crate) authority: String,
}

/// Checks one stream's request head. `protocol` is the extended CONNECT's `:protocol`;
/// `end_stream` says the headers carried END_STREAM (no body at all).
pub(crate) fn check_h2_request<'h>(
    method: &str,
    uri: &Uri,
    protocol: Option<&str>,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    end_stream: bool,
    upgrades: &[String],
) -> Result<H2Request, Refusal> {
    let mut hosts: Vec<&[u8]> = Vec::new();
    let (mut lengths, mut length) = (0, None);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("host") {
            hosts.push(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = content_length(value);
            if length.is_none() {
                return Err(refuse(StatusCode::BAD_REQUEST, "invalid Content-Length"));
            }
        }
    }
    if lengths > 1 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "more than one Content-Length",
        ));
    }
    let authority = match (uri.authority(), hosts.as_slice()) {
        (_, [_, _, ..]) => {
            return Err(refuse(StatusCode::BAD_REQUEST, "more than one Host header"))
        }
        (Some(a), [host]) if !a.as_str().as_bytes().eq_ignore_ascii_case(host) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Host differs from :authority",
            ))
        }
        (Some(a), _) => a.as_str().as_bytes(),
        (None, [host]) => *host,
        (None, []) => return Err(refuse(StatusCode::BAD_REQUEST, "no :authority or Host")),
    };
    if !valid_host(authority) {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid :authority"));
    }
    let authority = String::from_utf8_lossy(authority).into_owned();
    let m = |other: &str| method.eq_ignore_ascii_case(other);
    let upgrade = if m("CONNECT") {
        // RFC 8441: only an extended CONNECT for an honoured protocol; a plain CONNECT is a
        // tunnel to anywhere, which this proxy never opens.
        match protocol {
            Some(p) if upgrades.iter().any(|u| u.eq_ignore_ascii_case(p)) => {
                Some(p.to_ascii_lowercase())
            }
            _ => {
                return Err(refuse(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "CONNECT is not supported",
                ))
            }
        }
    } else {
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        check_target(method, if target == "*" { "*" } else { target })?;
        None
    };
    let body = if upgrade.is_some() || end_stream {
        BodyLength::None
    } else {
        length.map_or(BodyLength::Chunked, BodyLength::Length)
    };
    Ok(H2Request {
        rules: RequestRules {
            connection: Connection::default(),
            body,
            upgrade,
            close: false,
            idempotent: ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
                .iter()
                .any(|&x| m(x)),
            head: m("HEAD"),
            expect: false,
        },
        authority,
    })
}

/// HTTP/2 lets a client split `cookie` into several fields (RFC 9113 §8.2.3), which an
/// HTTP/1.1 app must get as one, joined with `"; "`. `Some` only when there is more than one.
pub(crate) fn joined_cookies<'h>(
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
) -> Option<Vec<u8>> {
    let mut cookies = headers.filter(|(name, _)| name.eq_ignore_ascii_case("cookie"));
    let (_, first) = cookies.next()?;
    let (_, second) = cookies.next()?;
    let mut joined = [first, b"; ", second].concat();
    for (_, more) in cookies {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(more);
    }
    Some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cookies_are_joined_for_http1() {
        let h = |v: &'static [(&'static str, &'static str)]| {
            joined_cookies(v.iter().map(|(n, v)| (*n, v.as_bytes())))
        };
        assert_eq!(h(&[("cookie", "a=1"), ("accept", "*/*")]), None);
        assert_eq!(
            h(&[
                ("cookie", "a=1"),
                ("x", "y"),
                ("cookie", "b=2"),
                ("cookie", "c=3")
            ]),
            Some(b"a=1; b=2; c=3".to_vec())
        );
    }

    fn check(
        method: &str,
        uri: &str,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
        end_stream: bool,
    ) -> Result<H2Request, (u16, &'static str)> {
        let uri: Uri = uri.parse().unwrap();
        let h = headers.iter().map(|(n, v)| (*n, v.as_bytes()));
        check_h2_request(method, &uri, protocol, h, end_stream, &["websocket".into()])
            .map_err(|r| (r.status.as_u16(), r.reason))
    }

    #[test]
    fn authority_and_host_must_agree() {
        let ok = check("GET", "https://a.example/x", None, &[], true).unwrap();
        assert_eq!(ok.authority, "a.example");
        assert_eq!(ok.rules.body, BodyLength::None);
        let same = check(
            "GET",
            "https://a.example/x",
            None,
            &[("host", "A.example")],
            true,
        );
        assert!(same.is_ok());
        let differ = check(
            "GET",
            "https://a.example/x",
            None,
            &[("host", "b.example")],
            true,
        );
        assert_eq!(differ.unwrap_err().0, 400);
        let two = [("host", "a.example"), ("host", "a.example")];
        assert_eq!(check("GET", "/x", None, &two, true).unwrap_err().0, 400);
        assert_eq!(check("GET", "/x", None, &[], true).unwrap_err().0, 400);
        let bad = check("GET", "/x", None, &[("host", "a b")], true);
        assert_eq!(bad.unwrap_err().0, 400);
    }

    #[test]
    fn bodies_are_framed_for_an_http1_app() {
        let r = |cl: &[(&str, &str)], end| check("POST", "https://a/x", None, cl, end).unwrap();
        assert_eq!(r(&[], true).rules.body, BodyLength::None);
        assert_eq!(r(&[], false).rules.body, BodyLength::Chunked);
        assert_eq!(
            r(&[("content-length", "5")], false).rules.body,
            BodyLength::Length(5)
        );
        let two = [("content-length", "5"), ("content-length", "5")];
        assert_eq!(
            check("POST", "https://a/x", None, &two, false)
                .unwrap_err()
                .0,
            400
        );
    }

    #[test]
    fn only_an_extended_connect_for_an_honoured_protocol_passes() {
        let ws = check("CONNECT", "https://a/chat", Some("websocket"), &[], false).unwrap();
        assert_eq!(ws.rules.upgrade.as_deref(), Some("websocket"));
        assert_eq!(ws.rules.body, BodyLength::None);
        let plain = check("CONNECT", "https://a:443", None, &[], false);
        assert_eq!(plain.unwrap_err().0, 405);
        let other = check("CONNECT", "https://a/x", Some("connect-udp"), &[], false);
        assert_eq!(other.unwrap_err().0, 405);
        // A fragment never survives parsing of `:path` (the http crate drops it), so there
        // is nothing left to refuse; what the app gets has none.
        let uri: Uri = "https://a/x#f".parse().unwrap();
        assert_eq!(uri.path_and_query().unwrap().as_str(), "/x");
    }
}
