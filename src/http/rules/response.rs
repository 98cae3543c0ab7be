//! The rules for the app's response: which heads may pass, and how the body is framed.

use bytes::Bytes;

use super::{content_length, is_hop_by_hop, last_coding, Connection, RequestRules};

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
    /// The app sent a `Date`; a response forwarded without one gets the proxy's.
    pub(crate) dated: bool,
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

/// Removes from the app's trailers what an HTTP/2 client must not get: fields that describe
/// one hop (HTTP/2 forbids them, and h2 would reset the stream rather than send them), and
/// framing, which trailers cannot change (RFC 9110 §6.5.1). HTTP/1.1 clients get a chunked
/// body, trailers included, byte for byte.
pub(crate) fn strip_trailers(trailers: &mut http::HeaderMap) {
    let barred: Vec<_> = (trailers.keys())
        .filter(|n| is_hop_by_hop(n.as_str()) || *n == http::header::CONTENT_LENGTH)
        .cloned()
        .collect();
    for name in barred {
        trailers.remove(name);
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
    let mut dated = false;
    for (name, value) in headers {
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        if is("date") {
            dated = true;
        } else if is("connection") {
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
    } else if last_coding(&codings).as_deref() != Some(b"chunked") {
        return Err("unsupported transfer-encoding");
    } else if codings
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .filter(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .count()
        > 1
    {
        return Err("chunked applied more than once");
    } else {
        true
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
    // A response that has no body carries no Transfer-Encoding; a 204 no Content-Length
    // either (RFC 9110 §8.6), nor a 304, whose is optional. A response to HEAD keeps its
    // Content-Length: it tells the client the size a GET would get.
    let no_length = chunked || status == 204 || status == 304;
    Ok(ResponseKind::Final(ResponseRules {
        reusable: http11 && !connection.close && framing != Framing::Close,
        connection,
        content_length: if no_length { None } else { length },
        transfer_encoding: transfer_encoding.filter(|_| framing != Framing::Empty),
        framing,
        dated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::rules::BodyLength;

    fn request(head: bool, upgrade: bool) -> RequestRules {
        RequestRules {
            connection: Connection::default(),
            body: BodyLength::None,
            upgrade: upgrade.then(|| "websocket".to_owned()),
            close: false,
            idempotent: true,
            head,
            expect: false,
        }
    }

    fn check(
        status: u16,
        http11: bool,
        req: &RequestRules,
        head: &str,
    ) -> Result<ResponseKind, &'static str> {
        let fields = super::super::test_fields(head);
        check_response(status, http11, req, fields.into_iter())
    }

    #[test]
    fn heads_that_cannot_pass() {
        let get = request(false, false);
        // (status, HTTP/1.1, header lines, why)
        let table: &[(u16, bool, &str, &str)] = &[
            (
                101,
                true,
                "Upgrade: websocket",
                "101 to a request that asked for no upgrade",
            ),
            (99, true, "", "invalid response status"),
            (
                200,
                true,
                "Content-Length: 5\r\nContent-Length: 6",
                "conflicting content-length",
            ),
            (
                200,
                true,
                "Content-Length: 5, 6",
                "conflicting content-length",
            ),
            (200, true, "Content-Length: -1", "invalid content-length"),
            (
                200,
                false,
                "Transfer-Encoding: chunked",
                "transfer-encoding in an HTTP/1.0 response",
            ),
            (
                200,
                true,
                "Transfer-Encoding: chunked, gzip",
                "unsupported transfer-encoding",
            ),
            (
                200,
                true,
                "Transfer-Encoding: chunked, chunked",
                "chunked applied more than once",
            ),
            (
                200,
                true,
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                "chunked applied more than once",
            ),
        ];
        for (status, http11, head, why) in table {
            assert_eq!(
                check(*status, *http11, &get, head),
                Err(*why),
                "{status} {head:?}"
            );
        }
    }

    #[test]
    fn framing() {
        // (status, to HEAD, header lines, framing, content-length, transfer-encoding, reusable)
        type Row = (
            u16,
            bool,
            &'static str,
            Framing,
            Option<u64>,
            Option<&'static str>,
            bool,
        );
        let table: &[Row] = &[
            (
                200,
                false,
                "Content-Length: 5",
                Framing::Length(5),
                Some(5),
                None,
                true,
            ),
            (
                200,
                false,
                "Content-Length: 5, 5",
                Framing::Length(5),
                Some(5),
                None,
                true,
            ),
            (
                200,
                false,
                "Transfer-Encoding: chunked",
                Framing::Chunked,
                None,
                Some("chunked"),
                true,
            ),
            (
                200,
                false,
                "Transfer-Encoding: gzip, chunked",
                Framing::Chunked,
                None,
                Some("gzip, chunked"),
                true,
            ),
            // Transfer-Encoding wins over Content-Length (RFC 9112 6.3).
            (
                200,
                false,
                "Content-Length: 3\r\nTransfer-Encoding: chunked",
                Framing::Chunked,
                None,
                Some("chunked"),
                true,
            ),
            (200, false, "", Framing::Close, None, None, false),
            (
                200,
                false,
                "Content-Length: 5\r\nConnection: close",
                Framing::Length(5),
                Some(5),
                None,
                false,
            ),
            (
                204,
                false,
                "Content-Length: 5\r\nTransfer-Encoding: chunked",
                Framing::Empty,
                None,
                None,
                true,
            ),
            (
                304,
                false,
                "Content-Length: 5",
                Framing::Empty,
                None,
                None,
                true,
            ),
            (
                200,
                true,
                "Content-Length: 5",
                Framing::Empty,
                Some(5),
                None,
                true,
            ),
            (
                200,
                true,
                "Transfer-Encoding: chunked",
                Framing::Empty,
                None,
                None,
                true,
            ),
        ];
        for (status, head, fields, framing, length, want_te, reusable) in table {
            let req = request(*head, false);
            let Ok(ResponseKind::Final(r)) = check(*status, true, &req, fields) else {
                panic!("{status} {fields:?}: not a final response");
            };
            let te = r
                .transfer_encoding
                .as_deref()
                .map(|b| std::str::from_utf8(b).unwrap());
            assert_eq!(
                (r.framing, r.content_length, te, r.reusable),
                (*framing, *length, *want_te, *reusable),
                "{status} {fields:?}"
            );
        }
    }

    #[test]
    fn interim_and_switching_and_the_date() {
        let ws = request(false, true);
        assert_eq!(check(101, true, &ws, ""), Ok(ResponseKind::Switching));
        assert_eq!(check(100, true, &ws, ""), Ok(ResponseKind::Informational));
        assert_eq!(
            check(103, true, &ws, "Link: </a>"),
            Ok(ResponseKind::Informational)
        );
        let Ok(ResponseKind::Final(r)) = check(200, true, &ws, "Date: x\r\nContent-Length: 0")
        else {
            panic!("final");
        };
        assert!(r.dated);
        // An HTTP/1.0 app's response ends when it closes unless it gives a length.
        let Ok(ResponseKind::Final(r)) = check(200, false, &ws, "") else {
            panic!("final");
        };
        assert_eq!(
            (r.framing, r.reusable, r.dated),
            (Framing::Close, false, false)
        );
    }

    #[test]
    fn which_fields_reach_the_client() {
        let Ok(ResponseKind::Final(r)) = check(
            200,
            true,
            &request(false, false),
            "Connection: x-internal\r\nContent-Length: 1",
        ) else {
            panic!("final");
        };
        // (field, passed as it is)
        let table: &[(&str, bool)] = &[
            ("content-type", true),
            ("set-cookie", true),
            ("trailer", true),
            ("content-length", false),
            ("transfer-encoding", false),
            ("connection", false),
            ("keep-alive", false),
            ("x-internal", false),
        ];
        for (name, passes) in table {
            assert_eq!(r.forwards(name), *passes, "{name}");
        }
        let mut trailers = http::HeaderMap::new();
        for (name, value) in [
            ("grpc-status", "0"),
            ("connection", "close"),
            ("content-length", "3"),
            ("te", "x"),
        ] {
            trailers.insert(http::HeaderName::from_static(name), value.parse().unwrap());
        }
        strip_trailers(&mut trailers);
        assert_eq!(
            trailers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["grpc-status"]
        );
    }
}
