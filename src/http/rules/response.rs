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
