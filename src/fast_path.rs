//! The lean path for the common request: HTTP/1.1, no body, no upgrade, on the forwarding port.
//!
//! Its head is parsed once (with httparse, as hyper does) and passed to the app as the client's
//! own bytes with the forwarding headers swapped in; the app's response comes back the same way,
//! its body copied as it arrives. No header maps, no re-encoding, no channel between a server
//! and a client half: that was most of the proxy's user-space work per request
//! (`bench/NOTES.md`).
//!
//! Anything else (a request body, an upgrade, HTTP/1.0, `Expect`, `/ping`, an absolute-form
//! target, a head that is malformed or too large) hands the connection, with the bytes read
//! so far, to hyper for the rest of its life ([`Outcome::Handoff`]). hyper then answers it,
//! errors included, as it answers every connection that never came this way.

use std::future::Future;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::pin::{pin, Pin};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::body::Body;
use crate::connection::ConnCtx;
use crate::forward::{is_forwarding, is_hop_by_hop, UpstreamError};
use crate::shutdown::Watch;
use crate::{logging, Shared};

/// As many header lines as hyper accepts by default; more goes to hyper, which refuses it.
const MAX_HEADERS: usize = 100;
/// The largest response head accepted from the app.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// How much of a response body is read from the app at a time.
const COPY_CHUNK: usize = 64 * 1024;
/// Read buffers larger than this are not kept between requests.
const KEEP_CAPACITY: usize = 16 * 1024;

/// How the lean path left a connection.
pub enum Outcome {
    /// The connection is finished, for this reason.
    Closed(&'static str),
    /// hyper takes over: the socket, and the bytes read from it and not yet answered.
    Handoff(TcpStream, BytesMut),
}

/// Bytes moved on the client's socket, for the metrics.
#[derive(Default)]
pub struct Counts {
    pub read: u64,
    pub written: u64,
}

/// A request the lean path takes, as read from the client's head.
struct Plan {
    head_len: usize,
    method: Range<usize>,
    /// The path without its query, for the access log.
    path: Range<usize>,
    /// The client asked to close after this response.
    close: bool,
    head: bool,
    /// Safe to send again when a pooled connection turns out to have been closed by the app.
    idempotent: bool,
}

/// What the client's buffered bytes hold.
enum Head {
    /// A request for the lean path; its upstream head has been written out.
    Take(Plan),
    /// Not a whole head yet.
    Partial,
    /// One for hyper.
    Handoff,
}

/// The client connection as the lean path holds it.
struct Client<'a> {
    shared: &'a Shared,
    ctx: &'a ConnCtx,
    stream: TcpStream,
    counts: &'a mut Counts,
    /// The one timer behind every clock of the connection (see [`until`]).
    timer: Pin<Box<Sleep>>,
    stop: Watch<'a>,
}

/// Serves requests on `client` until it closes or needs hyper. `buf` holds what was read past
/// the PROXY header.
pub async fn serve(
    shared: &Shared,
    ctx: &ConnCtx,
    client: TcpStream,
    mut buf: BytesMut,
    counts: &mut Counts,
) -> Outcome {
    let limit = shared.config.max_header_bytes;
    let mut conn = Client {
        shared,
        ctx,
        stream: client,
        counts,
        timer: Box::pin(tokio::time::sleep(shared.config.keepalive_timeout)),
        stop: Watch::new(&shared.drain.stop_accepting),
    };
    let mut out = Vec::new();
    let mut reply_head = Vec::new();
    let mut ubuf = BytesMut::new();
    let mut head_started: Option<tokio::time::Instant> = None;
    loop {
        let plan = match parse_request(&buf, ctx, limit, &mut out) {
            Head::Take(plan) => plan,
            Head::Handoff => return Outcome::Handoff(conn.stream, buf),
            Head::Partial if buf.len() >= limit => return Outcome::Handoff(conn.stream, buf),
            Head::Partial => {
                if let Err(why) = read_more(&mut conn, &mut buf, &mut head_started).await {
                    return Outcome::Closed(why);
                }
                continue;
            }
        };
        head_started = None;
        let started = Instant::now();
        let answer = exchange(&mut conn, &out, &plan, &mut reply_head, &mut ubuf).await;
        let elapsed = started.elapsed();
        if ubuf.capacity() > KEEP_CAPACITY {
            ubuf = BytesMut::new();
        }
        let (status, close) = match answer {
            Ok(a) => a,
            Err(why) => {
                tracing::debug!(client = %ctx.client, why, "closing connection mid-response");
                return Outcome::Closed(why);
            }
        };
        shared.metrics.request(status, elapsed);
        let text = |r: &Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap_or("-");
        logging::access(
            ctx.client,
            text(&plan.method),
            text(&plan.path),
            status,
            Some(elapsed),
        );
        buf.advance(plan.head_len);
        if close {
            return Outcome::Closed("closed after the response");
        }
        if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
            buf = BytesMut::new();
        }
    }
}

/// Runs `fut` until `deadline`; `None` if the deadline came first.
///
/// The connection's clocks share one timer, which is moved only when it must fire earlier;
/// firing early just re-arms it. A timer registered and removed for each request cost more
/// than the rest of the request's bookkeeping.
async fn until<F: Future>(
    timer: &mut Pin<Box<Sleep>>,
    deadline: tokio::time::Instant,
    fut: F,
) -> Option<F::Output> {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    let mut fut = pin!(fut);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            _ = timer.as_mut() => {
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// Reads more of a request head: the keep-alive clock runs while nothing has arrived, the
/// request-header clock from the first byte; a drain closes a connection that is idle.
async fn read_more(
    conn: &mut Client<'_>,
    buf: &mut BytesMut,
    head_started: &mut Option<tokio::time::Instant>,
) -> Result<(), &'static str> {
    let config = &conn.shared.config;
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let idle = buf.is_empty();
    let deadline = if idle {
        tokio::time::Instant::now() + config.keepalive_timeout
    } else {
        *head_started.get_or_insert_with(tokio::time::Instant::now) + config.request_header_timeout
    };
    let (stream, stop) = (&mut conn.stream, &mut conn.stop);
    let read = async {
        tokio::select! {
            biased;
            read = stream.read_buf(buf) => Ok(read),
            _ = stop, if idle => Err("draining"),
        }
    };
    let n = match until(&mut conn.timer, deadline, read).await {
        Some(Ok(Ok(n))) => n,
        Some(Ok(Err(_))) => return Err("client read error"),
        Some(Err(why)) => return Err(why),
        None if idle => return Err("keep-alive idle timeout"),
        None => {
            tracing::warn!(client = %conn.ctx.client, "request headers not received within REQUEST_HEADER_TIMEOUT; closing");
            return Err("request header timeout");
        }
    };
    if n == 0 {
        return Err("client closed the connection");
    }
    conn.counts.read += n as u64;
    Ok(())
}

/// Parses the client's head and, if the lean path takes it, writes the head the app gets into
/// `out`: the client's request line and headers, less hop-by-hop and forwarding headers, plus
/// the proxy's own `X-Forwarded-*`.
fn parse_request(buf: &[u8], ctx: &ConnCtx, limit: usize, out: &mut Vec<u8>) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= limit => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        _ => return Head::Handoff,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Head::Handoff;
    };
    // Origin-form only, in plain printable ASCII: anything else is hyper's to judge.
    if !path.starts_with('/') || !path.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Head::Handoff;
    }
    let bare_path = path.split('?').next().unwrap_or(path);
    if bare_path == "/ping" {
        return Head::Handoff;
    }
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut close = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name;
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        if is("content-length") {
            if h.value.trim_ascii() != b"0" {
                return Head::Handoff;
            }
        } else if is("transfer-encoding") || is("upgrade") || is("expect") {
            return Head::Handoff;
        } else if is("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    // It names other headers to drop, or asks for an upgrade.
                    return Head::Handoff;
                }
            }
            continue;
        } else if is("host") {
            hosts += 1;
        }
        if is_hop_by_hop(name) || is_forwarding(name) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if hosts != 1 {
        return Head::Handoff;
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    out.extend_from_slice(ctx.forwarded_for.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: https\r\n");
    if let Some(port) = &ctx.forwarded_port {
        out.extend_from_slice(b"x-forwarded-port: ");
        out.extend_from_slice(port.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let at = |s: &str| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    let head = method == "HEAD";
    Head::Take(Plan {
        head_len,
        method: at(method),
        path: at(bare_path),
        close,
        head,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
    })
}

/// How the app's response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the app closes: the client connection closes after it too.
    Close,
}

/// The app's response head, as the client will get it.
struct Reply {
    status: StatusCode,
    head_len: usize,
    framing: Framing,
    /// The app's connection can carry another request afterwards.
    reusable: bool,
    /// The client's connection closes after this response.
    close: bool,
}

/// What the app's buffered bytes hold.
enum ReplyHead {
    Reply(Reply),
    /// A `1xx` to skip, of this many bytes.
    Informational(usize),
    Partial,
}

/// Parses the app's response head and writes the client's into `out`.
fn parse_response(
    ubuf: &[u8],
    plan: &Plan,
    draining: bool,
    out: &mut Vec<u8>,
) -> Result<ReplyHead, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(ubuf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if ubuf.len() < MAX_RESPONSE_HEAD => {
            return Ok(ReplyHead::Partial)
        }
        Ok(httparse::Status::Partial) => return Err("response head too large"),
        Err(_) => return Err("malformed response head"),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| "invalid response status")?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err("101 to a request that asked for no upgrade");
    }
    if status.is_informational() {
        return Ok(ReplyHead::Informational(head_len));
    }
    let mut app_close = resp.version != Some(1);
    let mut chunked = None;
    let mut length: Option<u64> = None;
    let mut named: Vec<&[u8]> = Vec::new();
    for h in resp.headers.iter() {
        let is = |other: &str| h.name.eq_ignore_ascii_case(other);
        if is("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    app_close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    named.push(token);
                }
            }
        } else if is("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if is("content-length") {
            let n = std::str::from_utf8(h.value.trim_ascii())
                .ok()
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("invalid content-length")?;
            if length.is_some_and(|m| m != n) {
                return Err("conflicting content-length");
            }
            length = Some(n);
        }
    }
    let framing =
        if plan.head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Empty
        } else {
            match (chunked, length) {
                (Some(true), _) => Framing::Chunked,
                (Some(false), _) => return Err("unsupported transfer-encoding"),
                (None, Some(n)) => Framing::Length(n),
                (None, None) => Framing::Close,
            }
        };
    let close = plan.close || draining || framing == Framing::Close;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match resp.reason {
        Some(reason) if !reason.is_empty() => out.extend_from_slice(reason.as_bytes()),
        _ => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let hop = is_hop_by_hop(h.name)
            || (framing == Framing::Chunked && h.name.eq_ignore_ascii_case("content-length"))
            || named
                .iter()
                .any(|n| h.name.as_bytes().eq_ignore_ascii_case(n));
        if hop {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(ReplyHead::Reply(Reply {
        status,
        head_len,
        framing,
        reusable: !app_close && framing != Framing::Close,
        close,
    }))
}

/// Why an exchange with the app failed before the client got any of the response.
struct Failed {
    kind: UpstreamError,
    why: String,
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

/// Sends one request to the app and the response to the client, its head rewritten into
/// `out`. `Ok` carries the status and
/// whether the client connection must close; `Err` means the response was cut short and the
/// client connection closes now.
async fn exchange(
    conn: &mut Client<'_>,
    head: &[u8],
    plan: &Plan,
    out: &mut Vec<u8>,
    ubuf: &mut BytesMut,
) -> Result<(StatusCode, bool), &'static str> {
    let shared = conn.shared;
    let upstream = &shared.upstream;
    let asking = async {
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                upstream.checkout_plain()
            };
            let retryable = pooled.is_some() && plan.idempotent;
            let mut app = match pooled {
                Some(stream) => stream,
                None => upstream.connect().await.map_err(|e| Failed {
                    kind: UpstreamError::Connect,
                    why: e.to_string(),
                    silent: false,
                })?,
            };
            ubuf.clear();
            let draining = shared.drain.stop_accepting.is_set();
            match ask(&mut app, head, plan, ubuf, draining, out).await {
                Ok(reply) => return Ok((app, reply)),
                Err(f) if f.silent && retryable => {
                    tracing::debug!(error = %f.why, "pooled upstream connection was closed; sending on a new one");
                    fresh_only = true;
                }
                Err(f) => return Err(f),
            }
        }
    };
    let deadline = tokio::time::Instant::now() + upstream.response_timeout();
    let (mut app, reply) = match until(&mut conn.timer, deadline, asking).await {
        Some(Ok(found)) => found,
        Some(Err(f)) => return refuse(conn, f.kind, &f.why, plan).await,
        None => {
            let why = "no response headers within RESPONSE_TIMEOUT";
            return refuse(conn, UpstreamError::Timeout, why, plan).await;
        }
    };
    let (ctx, client, counts) = (conn.ctx, &mut conn.stream, &mut *conn.counts);
    let clean = relay_body(ctx, client, &mut app, out, &reply, ubuf, counts).await?;
    if clean && reply.reusable {
        upstream.put_plain(app);
    }
    Ok((reply.status, reply.close))
}

/// Writes the request to the app and reads its response head (skipping any `1xx`).
async fn ask(
    app: &mut TcpStream,
    head: &[u8],
    plan: &Plan,
    ubuf: &mut BytesMut,
    draining: bool,
    out: &mut Vec<u8>,
) -> Result<Reply, Failed> {
    app.write_all(head)
        .await
        .map_err(|e| Failed::reset(e, true))?;
    let mut received = false;
    loop {
        if !ubuf.is_empty() {
            match parse_response(ubuf, plan, draining, out).map_err(|e| Failed::reset(e, false))? {
                ReplyHead::Reply(reply) => return Ok(reply),
                ReplyHead::Informational(n) => {
                    ubuf.advance(n);
                    continue;
                }
                ReplyHead::Partial => {}
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

/// Sends the response head and body to the client as the body arrives. `Ok(true)` when the
/// body ended exactly where its framing said, so the app's connection can be used again.
async fn relay_body(
    ctx: &ConnCtx,
    client: &mut TcpStream,
    app: &mut TcpStream,
    head: &[u8],
    reply: &Reply,
    ubuf: &mut BytesMut,
    counts: &mut Counts,
) -> Result<bool, &'static str> {
    ubuf.advance(reply.head_len);
    let mut left = match reply.framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut chunks = Chunked::default();
    let mut first = Some(head);
    loop {
        let (take, done) = match reply.framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let take = (ubuf.len() as u64).min(left) as usize;
                left -= take as u64;
                (take, left == 0)
            }
            Framing::Chunked => {
                let (n, done) = chunks.feed(ubuf).map_err(|e| {
                    tracing::warn!(client = %ctx.client, error = e, "malformed chunked response from the app");
                    "malformed chunked response"
                })?;
                (n, done)
            }
            Framing::Close => (ubuf.len(), false),
        };
        let head = first.take().unwrap_or_default();
        write_two(client, head, &ubuf[..take])
            .await
            .map_err(|_| "client write error")?;
        counts.written += (head.len() + take) as u64;
        ubuf.advance(take);
        if done {
            // Bytes past the end of the response mean the app and the proxy disagree on framing.
            return Ok(ubuf.is_empty());
        }
        ubuf.clear();
        ubuf.reserve(COPY_CHUNK);
        match app.read_buf(ubuf).await {
            Ok(0) if reply.framing == Framing::Close => return Ok(false),
            Ok(0) | Err(_) => {
                tracing::warn!(client = %ctx.client, "the app closed the connection mid-response");
                return Err("the app closed the connection mid-response");
            }
            Ok(_) => {}
        }
    }
}

/// Writes `a` then `b` in as few system calls as the socket allows.
async fn write_two(w: &mut TcpStream, a: &[u8], b: &[u8]) -> io::Result<()> {
    let mut slices = [IoSlice::new(a), IoSlice::new(b)];
    let mut bufs = &mut slices[..];
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// Logs an upstream failure and gives the client the same answer the hyper path gives.
async fn refuse(
    conn: &mut Client<'_>,
    kind: UpstreamError,
    why: &str,
    plan: &Plan,
) -> Result<(StatusCode, bool), &'static str> {
    let shared = conn.shared;
    let mut resp = shared.upstream.fail(conn.ctx, &shared.metrics, kind, &why);
    let close = plan.close || shared.drain.stop_accepting.is_set();
    if close {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let status = resp.status();
    let bytes = serialize(resp).await;
    conn.stream
        .write_all(&bytes)
        .await
        .map_err(|_| "client write error")?;
    conn.counts.written += bytes.len() as u64;
    Ok((status, close))
}

/// A short answer of the proxy's own, as bytes on the wire.
async fn serialize(resp: http::Response<Body>) -> Vec<u8> {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out
}

/// Where a chunked body's framing is: it is passed through byte for byte, and read only to
/// find where the body ends (RFC 9112 §7.1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Before the first digit of a chunk size.
    #[default]
    Start,
    Size {
        size: u64,
    },
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line or of the final empty line; `seen` trailer bytes so far.
    TrailerStart {
        seen: usize,
    },
    Trailer {
        seen: usize,
    },
    TrailerLf {
        seen: usize,
    },
    EndLf,
    Done,
}

/// Trailer sections longer than this are refused.
const MAX_TRAILERS: usize = 64 * 1024;

impl Chunked {
    /// Scans `bytes`; returns how many belong to the body and whether the body ended there.
    fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut i = 0;
        while i < bytes.len() && *self != Chunked::Done {
            if let Chunked::Data { left } = *self {
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                *self = match left - take {
                    0 => Chunked::DataCr,
                    left => Chunked::Data { left },
                };
                continue;
            }
            let b = bytes[i];
            i += 1;
            *self = match (*self, b) {
                (Chunked::Start, _) => match (b as char).to_digit(16) {
                    Some(d) => Chunked::Size { size: d.into() },
                    None => return Err("missing chunk size"),
                },
                (Chunked::Size { size }, _) => match (b as char).to_digit(16) {
                    Some(d) => Chunked::Size {
                        size: size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(d.into()))
                            .ok_or("chunk size too large")?,
                    },
                    None if b == b';' || b == b' ' || b == b'\t' => Chunked::Extension { size },
                    None if b == b'\r' => Chunked::SizeLf { size },
                    None => return Err("invalid chunk size"),
                },
                (Chunked::Extension { size }, b'\r') => Chunked::SizeLf { size },
                (Chunked::Extension { .. }, b'\n') => return Err("bare LF in a chunk extension"),
                (Chunked::Extension { size }, _) => Chunked::Extension { size },
                (Chunked::SizeLf { size: 0 }, b'\n') => Chunked::TrailerStart { seen: 0 },
                (Chunked::SizeLf { size }, b'\n') => Chunked::Data { left: size },
                (Chunked::DataCr, b'\r') => Chunked::DataLf,
                (Chunked::DataLf, b'\n') => Chunked::Start,
                (Chunked::TrailerStart { .. }, b'\r') => Chunked::EndLf,
                (Chunked::TrailerStart { seen } | Chunked::Trailer { seen }, _) => {
                    if seen >= MAX_TRAILERS {
                        return Err("trailer section too large");
                    }
                    match b {
                        b'\r' => Chunked::TrailerLf { seen: seen + 1 },
                        b'\n' => return Err("bare LF in a trailer"),
                        _ => Chunked::Trailer { seen: seen + 1 },
                    }
                }
                (Chunked::TrailerLf { seen }, b'\n') => Chunked::TrailerStart { seen },
                (Chunked::EndLf, b'\n') => Chunked::Done,
                _ => return Err("CRLF expected"),
            };
        }
        Ok((i, *self == Chunked::Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; returns the bytes taken and whether it ended.
    fn scan(body: &[u8], step: usize) -> Result<(usize, bool), &'static str> {
        let mut state = Chunked::default();
        let mut taken = 0;
        for piece in body.chunks(step) {
            let (n, done) = state.feed(piece)?;
            taken += n;
            if done {
                return Ok((taken, true));
            }
        }
        Ok((taken, false))
    }

    #[test]
    fn chunked_bodies_end_where_their_framing_says_in_any_split() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\n";
        for step in 1..=body.len() {
            assert_eq!(scan(body, step), Ok((body.len(), true)), "step {step}");
        }
        let mut next = body.to_vec();
        next.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(scan(&next, next.len()), Ok((body.len(), true)));
        assert_eq!(scan(b"0\r\n\r\n", 1), Ok((5, true)));
        assert_eq!(scan(b"A\r\n0123456789\r\n", 3), Ok((15, false)));
    }

    /// A connection context as the PROXY header of client 192.0.2.1, port 443, makes it.
    fn ctx() -> ConnCtx {
        ConnCtx::for_client("192.0.2.1:5000".parse().unwrap(), Some(443))
    }

    #[test]
    fn the_app_gets_the_clients_head_with_forwarding_headers_replaced() {
        let head = b"GET /a?b=%20 HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n\
                     Keep-Alive: 5\r\nX-Real-IP: 6.6.6.6\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\nGET";
        let mut out = Vec::new();
        let Head::Take(plan) = parse_request(head, &ctx(), 8192, &mut out) else {
            panic!("taken");
        };
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a?b=%20 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nx-forwarded-for: 192.0.2.1\r\n\
             x-forwarded-proto: https\r\nx-forwarded-port: 443\r\n\r\n"
        );
        assert_eq!(plan.head_len, head.len() - 3);
        assert_eq!(&head[plan.path], b"/a");
        assert!(!plan.close && plan.idempotent);
    }

    #[test]
    fn requests_hyper_must_judge_are_handed_over() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Hop\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        ] {
            let taken = matches!(
                parse_request(head, &ctx(), 8192, &mut Vec::new()),
                Head::Take(_)
            );
            assert!(!taken, "{}", String::from_utf8_lossy(head));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_chunked_body_is_found_whole_in_any_split(
            sizes in proptest::collection::vec(0usize..300, 0..8),
            step in 1usize..64,
        ) {
            let mut body = Vec::new();
            for (i, n) in sizes.iter().filter(|&&n| n > 0).enumerate() {
                body.extend_from_slice(format!("{n:x}{}\r\n", if i % 2 == 0 { "" } else { ";x=y" }).as_bytes());
                body.extend(std::iter::repeat_n(b'a', *n));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\nT: 1\r\n\r\n");
            let whole = body.len();
            body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            proptest::prop_assert_eq!(scan(&body, step), Ok((whole, true)));
        }

        #[test]
        fn parsers_never_panic_and_never_overrun(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            if let Ok((n, _)) = Chunked::default().feed(&input) {
                proptest::prop_assert!(n <= input.len());
            }
            let mut out = Vec::new();
            if let Head::Take(plan) = parse_request(&input, &ctx(), 8192, &mut out) {
                proptest::prop_assert!(plan.head_len <= input.len());
                proptest::prop_assert!(out.ends_with(b"\r\n\r\n"));
            }
        }
    }

    #[test]
    fn malformed_chunked_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
            b"0\r\n\r\r",
        ] {
            assert!(scan(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
