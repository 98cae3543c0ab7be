//! Forwarding requests to the app: header rewriting, the pooled upstream client, and the
//! mapping of upstream failures to `502`, `504` and `413`.
//!
//! The app's name is resolved on every new connection (never pinned at start), and idle
//! upstream connections are kept and reused.
//!
//! An upstream connection in use is driven by the task of the client connection using it
//! (see [`Link`]): a request, its response and both bodies never change task or thread on
//! the way, which is what a second task per upstream connection cost in wake-ups.

use std::error::Error as StdError;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{self, Body};
use crate::config::Config;
use crate::connection::ConnCtx;
use crate::metrics::Metrics;

/// The client's body on its way to the app: its first frame was read before the request was
/// sent, so a body malformed from its first byte is answered `400` without reaching the app.
pub struct RequestBody {
    first: Option<Frame<Bytes>>,
    rest: Limited<Incoming>,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this.first.take() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut this.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let first = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map_or(0, |d| d.len() as u64);
        // Upper first: `set_lower` asserts it does not exceed the current upper bound.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint.set_lower(rest.lower().saturating_add(first));
        hint
    }
}

/// The app behind the proxy and the idle connections kept to it.
pub struct Upstream {
    idle: Mutex<Vec<Link>>,
    /// Idle connections of the lean path (`fast_path`), which speaks HTTP/1.1 on them itself.
    plain_idle: Mutex<Vec<(TcpStream, Instant)>>,
    max_idle: usize,
    authority: Authority,
    host: String,
    port: u16,
    connect_timeout: Duration,
    response_timeout: Duration,
    body_timeout: Duration,
    max_body: Option<u64>,
}

/// Idle upstream connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

type UpstreamConnection = http1::Connection<TokioIo<TcpStream>, RequestBody>;

/// One upstream connection: the handle that sends on it and the connection future that does
/// the reading and writing. Whoever holds a `Link` polls its connection; in the pool nobody
/// does, so a connection is checked (one poll) before it is used again.
pub struct Link {
    sender: SendRequest<RequestBody>,
    conn: Pin<Box<UpstreamConnection>>,
    idle_since: Instant,
}

impl Link {
    /// Whether the link can take a request now: still open (polled once with `cx` to find
    /// out) and done with the previous exchange.
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        !self.poll_closed(cx) && self.sender.is_ready()
    }

    /// Polls the connection; `true` once it has closed (or failed) and must be dropped.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> bool {
        match self.conn.as_mut().poll(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %ErrorChain(&e), "upstream connection closed");
                true
            }
            Poll::Pending => false,
        }
    }
}

/// The upstream connection a client connection is using, polled by that connection's task.
#[derive(Default)]
pub struct Driver(Mutex<Option<Link>>);

impl Driver {
    /// Moves the link's connection along. Once no request is in flight and the connection
    /// is ready for another, it goes back to the pool for any client to use.
    pub fn poll(&self, cx: &mut Context<'_>, upstream: &Upstream, busy: bool) {
        let Ok(mut slot) = self.0.lock() else { return };
        let Some(link) = slot.as_mut() else { return };
        if link.poll_closed(cx) {
            *slot = None;
        } else if !busy && link.sender.is_ready() {
            if let Some(link) = slot.take() {
                upstream.put(link);
            }
        }
    }

    /// At the end of the client connection: an idle link goes back to the pool.
    pub fn release(&self, upstream: &Upstream) {
        let link = self.0.lock().ok().and_then(|mut slot| slot.take());
        if let Some(link) = link {
            if link.sender.is_ready() {
                upstream.put(link);
            }
        }
    }

    /// Sends the request on `link` and keeps the link here, where this task polls it.
    fn send_on(
        &self,
        mut link: Link,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>> {
        let sent = link.sender.try_send_request(req);
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(link);
        }
        sent
    }
}

/// How sending to the app failed: no connection, or a failed exchange on one.
enum Failure {
    Open(UpstreamError, String),
    Send(hyper::Error),
}

/// Why the app could not be reached; a label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    Connect,
    Timeout,
    Reset,
}

impl UpstreamError {
    pub fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Reset => "reset",
        }
    }
}

impl Upstream {
    pub fn new(config: &Config) -> Result<Self, String> {
        let authority: Authority =
            match config.destination_hostname.parse::<std::net::Ipv6Addr>() {
                Ok(v6) => format!("[{v6}]:{}", config.destination_port),
                Err(_) => format!(
                    "{}:{}",
                    config.destination_hostname, config.destination_port
                ),
            }
            .parse()
            .map_err(|e| format!("DESTINATION_HOSTNAME: cannot form an address: {e}"))?;
        Ok(Upstream {
            idle: Mutex::new(Vec::new()),
            plain_idle: Mutex::new(Vec::new()),
            max_idle: config.max_connections,
            authority,
            host: config.destination_hostname.clone(),
            port: config.destination_port,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            body_timeout: config.request_header_timeout,
            max_body: config.max_body_bytes,
        })
    }

    /// Returns an idle connection to the pool (the most recently used is reused first).
    fn put(&self, mut link: Link) {
        link.idle_since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(link);
            }
        }
    }

    /// An idle connection that is still open, polled once with `cx` to find out.
    fn checkout(&self, cx: &mut Context<'_>) -> Option<Link> {
        loop {
            let mut link = self.idle.lock().ok()?.pop()?;
            if link.idle_since.elapsed() < IDLE_TIMEOUT && link.reusable(cx) {
                return Some(link);
            }
        }
    }

    /// Returns a lean-path connection to its pool, for the next request to reuse.
    pub fn put_plain(&self, stream: TcpStream) {
        if let Ok(mut idle) = self.plain_idle.lock() {
            if idle.len() < self.max_idle {
                idle.push((stream, Instant::now()));
            }
        }
    }

    /// An idle lean-path connection the app has not closed, most recently used first.
    pub fn checkout_plain(&self) -> Option<TcpStream> {
        loop {
            let (stream, since) = self.plain_idle.lock().ok()?.pop()?;
            if since.elapsed() < IDLE_TIMEOUT && still_open(&stream) {
                return Some(stream);
            }
        }
    }

    /// Closes pooled connections the app has closed or that sat idle too long; run now and
    /// then so that no half-closed socket lingers while there is no traffic.
    pub fn sweep(&self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.retain_mut(|link| {
            link.idle_since.elapsed() < IDLE_TIMEOUT && !link.poll_closed(&mut cx)
        });
        drop(idle);
        if let Ok(mut idle) = self.plain_idle.lock() {
            idle.retain(|(stream, since)| since.elapsed() < IDLE_TIMEOUT && still_open(stream));
        }
    }

    /// A new upstream connection, ready to send on.
    async fn open(&self) -> Result<Link, Failure> {
        // A connect that times out is a 502 like any other (CONNECT_TIMEOUT); 504 is for an
        // app that accepted the request and did not answer.
        let stream = self
            .connect()
            .await
            .map_err(|e| Failure::Open(UpstreamError::Connect, e.to_string()))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Open(UpstreamError::Connect, ErrorChain(&e).to_string()))?;
        Ok(Link {
            sender,
            conn: Box::pin(conn),
            idle_since: Instant::now(),
        })
    }

    /// Forwards one ordinary (non-upgrade) request; every failure becomes a response.
    pub async fn forward(
        &self,
        ctx: &ConnCtx,
        metrics: &Metrics,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let limit = self.max_body.unwrap_or(u64::MAX);
        if content_length(&parts.headers).is_some_and(|n| n > limit) {
            return too_large(ctx, limit);
        }
        rewrite_request_headers(&mut parts.headers, ctx, None);
        if parts.uri.scheme().is_some() || parts.uri.path_and_query().is_none() {
            // Absolute-form targets are for proxies; the app gets origin-form.
            let path = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            parts.uri = Uri::from(path);
        }
        let mut rest = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
        let first = if rest.is_end_stream() {
            None
        } else {
            match tokio::time::timeout(self.body_timeout, rest.frame()).await {
                Err(_) => {
                    tracing::warn!(client = %ctx.client, "request body did not start within REQUEST_HEADER_TIMEOUT");
                    return body::text(
                        StatusCode::REQUEST_TIMEOUT,
                        "request body did not arrive in time\n",
                    );
                }
                Ok(None) => None,
                Ok(Some(Ok(frame))) => Some(frame),
                Ok(Some(Err(e))) => return self.bad_body(ctx, limit, &*e),
            }
        };
        let req = Request::from_parts(parts, RequestBody { first, rest });
        match tokio::time::timeout(self.response_timeout, self.send(&ctx.upstream, req)).await {
            Ok(Ok(resp)) => finish_response(resp),
            Ok(Err(Failure::Open(kind, why))) => self.fail(ctx, metrics, kind, &why),
            Ok(Err(Failure::Send(e)))
                if caused_by::<LengthLimitError>(&e) || client_body_failed(&e) =>
            {
                self.bad_body(ctx, limit, &e)
            }
            Ok(Err(Failure::Send(e))) => {
                self.fail(ctx, metrics, UpstreamError::Reset, &ErrorChain(&e))
            }
            Err(_) => self.fail(
                ctx,
                metrics,
                UpstreamError::Timeout,
                &"no response headers within RESPONSE_TIMEOUT",
            ),
        }
    }

    /// Sends on a pooled connection, or a new one. A request the pooled connection could not
    /// take (the app closed it as it was picked) is sent again on a new connection.
    async fn send(
        &self,
        driver: &Driver,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, Failure> {
        // A link this connection still holds goes back first: the pool is LIFO, so it is
        // the one picked again if it is free.
        driver.release(self);
        let pooled = poll_fn(|cx| Poll::Ready(self.checkout(cx))).await;
        let (sent, fresh) = match pooled {
            Some(link) => (driver.send_on(link, req), false),
            None => (driver.send_on(self.open().await?, req), true),
        };
        match sent.await {
            Ok(resp) => Ok(resp),
            Err(mut e) => match e.take_message() {
                Some(req) if !fresh => {
                    tracing::debug!(error = %ErrorChain(e.error()), "pooled upstream connection was closed; sending on a new one");
                    driver
                        .send_on(self.open().await?, req)
                        .await
                        .map_err(|e| Failure::Send(e.into_error()))
                }
                _ => Err(Failure::Send(e.into_error())),
            },
        }
    }

    /// The answer when the client's own body is too large (`413`) or malformed (`400`).
    fn bad_body(&self, ctx: &ConnCtx, limit: u64, e: &(dyn StdError + 'static)) -> Response<Body> {
        if caused_by::<LengthLimitError>(e) {
            return too_large(ctx, limit);
        }
        tracing::warn!(client = %ctx.client, error = %ErrorChain(e), "malformed request body");
        closing(body::text(
            StatusCode::BAD_REQUEST,
            "malformed request body\n",
        ))
    }

    /// Logs an upstream failure and returns the answer the client gets for it.
    pub fn fail(
        &self,
        ctx: &ConnCtx,
        metrics: &Metrics,
        kind: UpstreamError,
        why: &dyn std::fmt::Display,
    ) -> Response<Body> {
        metrics.upstream_error(kind);
        tracing::warn!(client = %ctx.client, app = %self.authority, kind = kind.label(), error = %why, "upstream request failed");
        match kind {
            UpstreamError::Timeout => body::text(
                StatusCode::GATEWAY_TIMEOUT,
                "the app did not answer in time\n",
            ),
            _ => body::text(StatusCode::BAD_GATEWAY, "the app is not reachable\n"),
        }
    }

    /// A fresh connection to the app (for upgrades), resolving its name now.
    pub async fn connect(&self) -> std::io::Result<TcpStream> {
        let attempt = async {
            let mut last = None;
            for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                std::io::Error::other(format!("{} resolved to no address", self.host))
            }))
        };
        let stream = tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out (CONNECT_TIMEOUT)",
                )
            })??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// How long to wait for the app's response headers.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }
}

/// Whether an idle connection is still open: nothing to read, not even the end of the stream.
/// No system call unless the socket has become readable since it was last drained.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// An error and each of its causes, outermost first.
fn causes<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&err| err.source())
}

/// Displays an error with all its causes: "connection error: connection refused".
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in causes(self.0).enumerate() {
            write!(f, "{}{e}", if i == 0 { "" } else { ": " })?;
        }
        Ok(())
    }
}

/// `413`, closing the connection: the rest of the body is not worth reading.
fn too_large(ctx: &ConnCtx, limit: u64) -> Response<Body> {
    tracing::warn!(client = %ctx.client, limit, "request body larger than MAX_BODY_BYTES");
    closing(body::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body too large\n",
    ))
}

/// Asks hyper to close the client connection after this answer.
fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether sending failed because the client's body stream failed (not the app).
fn client_body_failed(e: &(dyn StdError + 'static)) -> bool {
    causes(e).any(|err| {
        err.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
    })
}

fn caused_by<E: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
    causes(e).any(|err| err.is::<E>())
}

/// Headers that describe one hop and must not be passed on (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Whether a header describes one hop only: `Connection` or one of the fixed hop-by-hop set.
pub fn is_hop_by_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("connection")
        || HOP_BY_HOP
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_str()))
}

/// Whether a client-sent header claims to say where the request came from; the proxy's own
/// `X-Forwarded-*` replace all of them.
pub fn is_forwarding(name: &str) -> bool {
    name.eq_ignore_ascii_case("forwarded")
        || name.eq_ignore_ascii_case("x-real-ip")
        || name
            .get(..12)
            .is_some_and(|p| p.eq_ignore_ascii_case("x-forwarded-"))
}

/// Removes `Connection`, every header it names, and the fixed hop-by-hop set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Prepares a client's request headers for the app: hop-by-hop headers and every
/// client-supplied forwarding header go; the proxy's own `X-Forwarded-*` come in.
pub fn rewrite_request_headers(
    headers: &mut HeaderMap,
    ctx: &ConnCtx,
    upgrade: Option<HeaderValue>,
) {
    // A message framed by Transfer-Encoding must not also reach the app with a Content-Length
    // (RFC 9112 §6.3): the body is re-framed by the client side of the proxy.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(headers);
    if headers.keys().any(|k| is_forwarding(k.as_str())) {
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| is_forwarding(k.as_str()))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
    }
    headers.insert(X_FORWARDED_FOR.clone(), ctx.forwarded_for.clone());
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    if let Some(port) = &ctx.forwarded_port {
        headers.insert(X_FORWARDED_PORT.clone(), port.clone());
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The app's response, minus its hop-by-hop headers, with its body streaming through.
pub fn finish_response(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Either::Left(body))
}

/// The client address as it goes into `X-Forwarded-For`.
pub fn forwarded_for(client: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&client.ip().to_canonical().to_string())
        .expect("an IP address is a valid header value")
}
