//! Reading one HTTP/1 request head from the client's raw bytes and judging it by
//! [`crate::http::rules`]: the lean path reads every head it serves this way, and the gate in front
//! of hyper ([`crate::h1::head_gate`]) reads every head hyper is given. hyper's parser drops what
//! the rules must see (a second equal `Content-Length`, a `#` fragment), so no head reaches it
//! unread.

use http::StatusCode;

use crate::http::forwarding::Forwarding;
use crate::http::head::HeadWriter;
use crate::http::rules::{self, HeadLimits, Ids, Refusal, RequestRules};
use crate::http::Protocol;
use crate::telemetry::metrics::Metrics;

/// A refused head and how to answer it.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) refusal: Refusal,
    /// It was a `HEAD`: the answer has no body.
    pub(crate) to_head: bool,
    /// The request's ids; the answer carries its request id.
    pub(crate) ids: Ids,
}

/// What the start of a buffer holds.
pub(crate) enum Head<'b> {
    /// Not a whole head yet.
    Partial,
    /// A head the proxy refuses; nothing of it reaches the app.
    Refused(Refused),
    Parsed(Parsed<'b>),
}

/// A request head that passed the rules.
pub(crate) struct Parsed<'b> {
    /// Bytes of the head, final CRLF included.
    pub(crate) len: usize,
    /// Header lines, the first this many of the caller's array.
    pub(crate) headers: usize,
    pub(crate) method: &'b str,
    pub(crate) target: &'b str,
    pub(crate) http11: bool,
    /// What the rules decided; `None` for `/ping`, which the proxy answers itself.
    pub(crate) rules: Option<RequestRules>,
    /// Its ids, `/ping`'s too.
    pub(crate) ids: Ids,
}

/// Reads the head at the start of `buf` into `headers` and applies the rules. Heads over
/// `MAX_HEADER_BYTES` or [`MAX_HEADERS`](rules::MAX_HEADERS) lines get `431`.
pub(crate) fn read<'b>(
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
    limits: &HeadLimits,
) -> Head<'b> {
    let limit = limits.max_header_bytes;
    const TOO_LARGE: Refusal = Refusal {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        reason: "request head too large",
    };
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= limit => n,
        Ok(httparse::Status::Partial) if buf.len() < limit => return Head::Partial,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return Head::Refused(Refused {
                refusal: TOO_LARGE,
                to_head: false,
                ids: limits.ids.fresh(),
            })
        }
        Err(_) => {
            let malformed = Refusal {
                status: StatusCode::BAD_REQUEST,
                reason: "malformed request head",
            };
            return Head::Refused(Refused {
                refusal: malformed,
                to_head: false,
                ids: limits.ids.fresh(),
            });
        }
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Head::Partial;
    };
    let head = method == "HEAD";
    let fields = || req.headers.iter().map(|h| (h.name, h.value));
    let ids = limits.ids.judge(fields());
    if let Err(refusal) = rules::check_target(method, target) {
        return Head::Refused(Refused {
            refusal,
            to_head: head,
            ids,
        });
    }
    let rules = if rules::is_ping(method, target) {
        None
    } else {
        match rules::check_request(method, target, version == 1, fields(), &limits.upgrades) {
            Ok(rules) => Some(rules),
            Err(refusal) => {
                return Head::Refused(Refused {
                    refusal,
                    to_head: head,
                    ids,
                })
            }
        }
    };
    Head::Parsed(Parsed {
        len,
        headers: req.headers.len(),
        method,
        target,
        http11: version == 1,
        rules,
        ids,
    })
}

/// Logs a refused request, counts it by its status, and returns the answer the client gets,
/// which closes the connection (`head`: it was a `HEAD`, so no body).
pub(crate) fn refuse(from: &Forwarding, metrics: &Metrics, refused: Refused) -> Vec<u8> {
    let Refused {
        refusal,
        to_head,
        ids,
    } = refused;
    metrics.request(Protocol::Http1, refusal.status, None);
    log_refusal(from, &refusal);
    let text = format!("{}\n", refusal.reason);
    answer_bytes(refusal.status, &text, to_head, true, &ids)
}

/// The warning every refused request gets, whichever protocol it came in.
pub(crate) fn log_refusal(from: &Forwarding, refusal: &Refusal) {
    tracing::warn!(client = %from.client, status = refusal.status.as_u16(), reason = refusal.reason, "request refused");
}

/// An answer of the proxy's own as bytes on the wire: a short text with the request's id,
/// closing the connection when `close`. A `HEAD` gets the same head and no body.
pub(crate) fn answer_bytes(
    status: StatusCode,
    text: &str,
    head: bool,
    close: bool,
    ids: &Ids,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + text.len());
    let mut h = HeadWriter::response(&mut out, status, None);
    h.field(b"content-type", b"text/plain; charset=utf-8");
    if let Some((name, value)) = ids.to_client() {
        h.field(name.as_str().as_bytes(), value.as_bytes());
    }
    if close {
        h.field(b"connection", b"close");
    }
    h.date();
    h.content_length(text.len() as u64);
    h.end();
    if !head {
        out.extend_from_slice(text.as_bytes());
    }
    out
}
