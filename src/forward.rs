//! Forwarding requests to the app: header rewriting, the pooled upstream client, and the
//! mapping of upstream failures to `502`, `504` and `413`.
//!
//! The app's name is resolved by the connector on every new connection (never pinned at
//! start), and idle upstream connections are kept and reused.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
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

/// The app behind the proxy and the pooled client that reaches it.
pub struct Upstream {
    client: Client<HttpConnector, RequestBody>,
    authority: Authority,
    host: String,
    port: u16,
    connect_timeout: Duration,
    response_timeout: Duration,
    body_timeout: Duration,
    max_body: Option<u64>,
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
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(55))
            .set_host(false)
            .build(connector);
        Ok(Upstream {
            client,
            authority,
            host: config.destination_hostname.clone(),
            port: config.destination_port,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            body_timeout: config.request_header_timeout,
            max_body: config.max_body_bytes,
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
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path);
        parts.uri = match Uri::from_parts(uri) {
            Ok(u) => u,
            Err(_) => return body::text(StatusCode::BAD_REQUEST, "unsupported request target\n"),
        };
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
        let body = RequestBody { first, rest };
        let sent = tokio::time::timeout(
            self.response_timeout,
            self.client.request(Request::from_parts(parts, body)),
        );
        match sent.await {
            Ok(Ok(resp)) => finish_response(resp),
            Ok(Err(e)) if caused_by::<LengthLimitError>(&e) || client_body_failed(&e) => {
                self.bad_body(ctx, limit, &e)
            }
            Ok(Err(e)) => {
                let kind = if e.is_connect() {
                    UpstreamError::Connect
                } else {
                    UpstreamError::Reset
                };
                self.fail(ctx, metrics, kind, &e)
            }
            Err(_) => self.fail(
                ctx,
                metrics,
                UpstreamError::Timeout,
                &"no response headers within RESPONSE_TIMEOUT",
            ),
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

/// An error and each of its causes, outermost first.
fn causes<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&err| err.source())
}

/// Displays an error with all its causes: "client error (Connect): connection refused".
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
    headers.remove(header::FORWARDED);
    headers.remove("x-real-ip");
    if headers
        .keys()
        .any(|k| k.as_str().starts_with("x-forwarded-"))
    {
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-forwarded-"))
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
