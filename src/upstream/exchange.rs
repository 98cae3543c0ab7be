//! One HTTP/1.1 exchange with the app on a plain pooled connection, spoken by the proxy
//! itself: the request head out, the response head back and judged by
//! [`rules::check_response`]. The lean path relays what follows as bytes to an HTTP/1.1
//! client; an HTTP/2 stream gets it as a header map and a body ([`crate::proxy::h2_to_h1`]).

use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::error::UpstreamError;
use crate::http::rules::MAX_HEADERS;
use crate::http::rules::{self, RequestRules, ResponseKind, ResponseRules};
use crate::upstream::Upstream;

/// The largest response head accepted from the app.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A final response head from the app, as the rules judged it.
pub(crate) struct Judged<'a> {
    pub(crate) status: StatusCode,
    /// The app's reason phrase, if it sent one.
    pub(crate) reason: Option<&'a str>,
    /// Every header field the app sent; [`ResponseRules::forwards`] says which pass on.
    pub(crate) fields: &'a [httparse::Header<'a>],
    pub(crate) rules: ResponseRules,
    /// Where the body starts in the app's buffered bytes.
    pub(crate) head_len: usize,
}

/// Why an exchange with the app failed before any of its response was passed on.
pub(crate) struct Failed {
    pub(crate) kind: UpstreamError,
    pub(crate) why: String,
    /// Nothing came back: a pooled connection the app had already closed.
    silent: bool,
}

impl Failed {
    fn reset(why: impl ToString, silent: bool) -> Self {
        Failed {
            kind: UpstreamError::Reset,
            why: why.to_string(),
            silent,
        }
    }
}

/// Sends `head` on a pooled connection (or a new one) and reads the final response head into
/// `ubuf`, skipping any `1xx`. `emit` turns the judged head into what the caller keeps while
/// the head's bytes are still borrowed; the body's first bytes stay in `ubuf` after it. A
/// pooled connection that turns out dead is replaced once, as
/// [`rules::retry_on_fresh_connection`] says.
///
/// `now` is the caller's reading of the clock as it began, taken as the moment a pooled
/// connection is asked: the checkout between them takes microseconds, and clock readings are
/// not free on the per-request path. The instant the response head arrived comes back with it.
pub(crate) async fn exchange<T>(
    upstream: &Upstream,
    now: Instant,
    head: &[u8],
    request: &RequestRules,
    ubuf: &mut BytesMut,
    mut emit: impl FnMut(Judged<'_>) -> T,
) -> Result<(TcpStream, T, Instant), Failed> {
    let mut fresh_only = false;
    loop {
        let pooled = if fresh_only {
            None
        } else {
            upstream.checkout_plain(now)
        };
        let reused = pooled.is_some();
        let mut app = match pooled {
            Some(stream) => stream,
            None => upstream.connect().await.map_err(|e| Failed {
                kind: UpstreamError::Connect,
                why: e.to_string(),
                silent: false,
            })?,
        };
        ubuf.clear();
        let asked = if reused { now } else { Instant::now() };
        match ask(&mut app, head, request, ubuf, &mut emit).await {
            Ok(out) => {
                let answered = Instant::now();
                upstream
                    .timing
                    .answered(answered.saturating_duration_since(asked));
                return Ok((app, out, answered));
            }
            Err(f)
                if f.silent
                    && rules::retry_on_fresh_connection(reused, false, request.idempotent) =>
            {
                tracing::debug!(error = %f.why, "pooled upstream connection was closed; sending on a new one");
                fresh_only = true;
            }
            Err(f) => return Err(f),
        }
    }
}

/// Writes the request to the app and reads its response head (skipping any `1xx`).
async fn ask<T>(
    app: &mut TcpStream,
    head: &[u8],
    request: &RequestRules,
    ubuf: &mut BytesMut,
    emit: &mut impl FnMut(Judged<'_>) -> T,
) -> Result<T, Failed> {
    app.write_all(head)
        .await
        .map_err(|e| Failed::reset(e, true))?;
    let mut received = false;
    loop {
        if !ubuf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match parse(ubuf, request, &mut headers).map_err(|e| Failed::reset(e, false))? {
                Parsed::Final(judged) => return Ok(emit(judged)),
                Parsed::Informational(n) => {
                    ubuf.advance(n);
                    continue;
                }
                Parsed::Partial => {}
            }
        }
        ubuf.reserve(4096);
        match app.read_buf(ubuf).await {
            Ok(0) => {
                return Err(Failed::reset(
                    "the app closed the connection before answering",
                    !received,
                ))
            }
            Ok(_) => received = true,
            Err(e) => return Err(Failed::reset(e, !received)),
        }
    }
}

/// What the app's buffered bytes hold.
enum Parsed<'a> {
    Final(Judged<'a>),
    /// A `1xx` to skip, of this many bytes.
    Informational(usize),
    Partial,
}

/// Parses the app's response head and judges it by the rules.
fn parse<'a>(
    ubuf: &'a [u8],
    request: &RequestRules,
    headers: &'a mut [httparse::Header<'a>],
) -> Result<Parsed<'a>, &'static str> {
    let mut resp = httparse::Response::new(headers);
    let head_len = match resp.parse(ubuf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if ubuf.len() < MAX_RESPONSE_HEAD => {
            return Ok(Parsed::Partial)
        }
        Ok(httparse::Status::Partial) => return Err("response head too large"),
        Err(_) => return Err("malformed response head"),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| "invalid response status")?;
    let fields = resp.headers.iter().map(|h| (h.name, h.value));
    let rules = match rules::check_response(code, resp.version == Some(1), request, fields)? {
        ResponseKind::Final(r) => r,
        ResponseKind::Informational => return Ok(Parsed::Informational(head_len)),
        ResponseKind::Switching => return Err("101 to a request that did not upgrade"),
    };
    Ok(Parsed::Final(Judged {
        status,
        reason: resp.reason,
        fields: resp.headers,
        rules,
        head_len,
    }))
}
