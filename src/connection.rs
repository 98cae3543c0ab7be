//! One client connection from accept to close: the PROXY header, HTTP/1.1 served by hyper,
//! the request and keep-alive timeouts, the drain, and, after a `101`, the tunnel.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection sits idle, which
//! would close it long before the balancer's 60 s idle timeout. So this task keeps two
//! clocks itself: a short one from the first byte of a request head until its last, and the
//! long keep-alive one while nothing is in flight.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::body::{self, Body};
use crate::config::Config;
use crate::fast_path::{self, Outcome};
use crate::metrics::Metrics;
use crate::proxy_header::{read_origin, Origin};
use crate::shutdown::Watch;
use crate::{forward, health, logging, redirect, tunnel, Shared};

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// `LISTEN_ON`: redirect to https.
    Plain,
    /// `LISTEN_ON_TLS`: forward to the app.
    Tls,
}

/// Two upgrades waiting to be joined once hyper has handed both sockets back.
pub struct PendingUpgrade {
    pub client: OnUpgrade,
    pub upstream: OnUpgrade,
}

/// What a connection knows about itself; shared by its task, its IO and its requests.
pub struct ConnCtx {
    pub client: SocketAddr,
    pub port: Port,
    pub health_only: bool,
    /// `X-Forwarded-For` and `X-Forwarded-Port`, formatted once per connection.
    pub forwarded_for: HeaderValue,
    pub forwarded_port: Option<HeaderValue>,
    in_flight: AtomicU32,
    /// Milliseconds on [`clock`]; `head_started` is 0 while no request head is arriving.
    idle_since: AtomicU64,
    head_started: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    upgrade: Mutex<Option<PendingUpgrade>>,
    /// The upstream connection this client connection is using; polled by its task.
    pub upstream: forward::Driver,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the process's first call, never 0 (0 means "unset" above).
fn clock() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The instant a [`clock`] reading stands for.
fn at(ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(*EPOCH.get_or_init(Instant::now) + Duration::from_millis(ms))
}

/// Which of the connection's clocks ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    RequestHeader,
    KeepAlive,
}

impl ConnCtx {
    fn new(origin: &Origin, port: Port) -> Self {
        ConnCtx {
            port,
            health_only: origin.health_only,
            ..ConnCtx::for_client(origin.client, origin.destination_port)
        }
    }

    /// A forwarding-port connection from `client`, who reached the balancer on `port`.
    pub fn for_client(client: SocketAddr, port: Option<u16>) -> Self {
        ConnCtx {
            client,
            port: Port::Tls,
            health_only: false,
            forwarded_for: forward::forwarded_for(client),
            forwarded_port: port.map(HeaderValue::from),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(clock()),
            head_started: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            upgrade: Mutex::new(None),
            upstream: forward::Driver::default(),
        }
    }

    fn on_bytes_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(clock(), Ordering::Relaxed);
        }
    }

    /// Whether a request is being answered.
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    fn request_finished(&self) {
        self.idle_since.store(clock(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// When this connection should be closed if nothing changes; `None` while a request is in flight.
    fn deadline(&self, config: &Config) -> Option<(tokio::time::Instant, Expiry)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 {
            return Some((
                at(head) + config.request_header_timeout,
                Expiry::RequestHeader,
            ));
        }
        Some((
            at(self.idle_since.load(Ordering::Relaxed)) + config.keepalive_timeout,
            Expiry::KeepAlive,
        ))
    }

    /// Called by the upgrade path once the app has answered `101`.
    pub fn set_upgrade(&self, pending: PendingUpgrade) {
        if let Ok(mut slot) = self.upgrade.lock() {
            *slot = Some(pending);
        }
    }

    fn take_upgrade(&self) -> Option<PendingUpgrade> {
        self.upgrade.lock().ok()?.take()
    }
}

/// The client socket as hyper sees it: the bytes read past the PROXY header come first.
pub struct ClientIo {
    leftover: Bytes,
    stream: TcpStream,
    ctx: Arc<ConnCtx>,
}

impl ClientIo {
    /// The socket and any bytes not yet read from `leftover`, once hyper hands the connection back.
    pub fn into_parts(self) -> (TcpStream, Bytes) {
        (self.stream, self.leftover)
    }

    fn wrote(&self, n: usize) {
        self.ctx
            .bytes_written
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if !this.leftover.is_empty() {
            let n = this.leftover.len().min(buf.remaining());
            buf.put_slice(&this.leftover[..n]);
            this.leftover.advance(n);
        } else {
            ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        }
        let n = buf.filled().len() - before;
        if n > 0 {
            this.ctx.on_bytes_read(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.stream).poll_write(cx, buf))?;
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.stream).poll_write_vectored(cx, bufs))?;
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A response body that tells the connection when the response is done (sent or dropped),
/// which is when the keep-alive clock starts.
pub struct Tracked {
    inner: Body,
    ctx: Arc<ConnCtx>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.ctx.request_finished();
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs one accepted connection to its end. Never panics on anything the peer sends.
pub async fn serve(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    port: Port,
    permit: OwnedSemaphorePermit,
) {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    shared.metrics.accepted(port == Port::Tls);
    let open = OpenGuard {
        metrics: shared.metrics.clone(),
        _permit: permit,
    };
    let origin = match read_origin(&mut stream, peer, &shared.config).await {
        Ok(origin) => origin,
        Err(refusal) => {
            shared.metrics.refused(&refusal);
            tracing::warn!(%peer, reason = %refusal, "connection refused");
            return;
        }
    };
    let ctx = Arc::new(ConnCtx::new(&origin, port));
    let mut hard_stop = Watch::new(&shared.drain.hard_stop);
    let (stream, leftover) = if port == Port::Tls && !origin.health_only {
        let mut counts = fast_path::Counts::default();
        let buf = BytesMut::from(origin.leftover);
        let outcome = tokio::select! {
            biased;
            _ = &mut hard_stop => Outcome::Closed("shutdown deadline (SHUTDOWN_TIMEOUT) reached"),
            outcome = fast_path::serve(&shared, &ctx, stream, buf, &mut counts) => outcome,
        };
        ctx.bytes_read.fetch_add(counts.read, Ordering::Relaxed);
        ctx.bytes_written
            .fetch_add(counts.written, Ordering::Relaxed);
        match outcome {
            Outcome::Handoff(stream, buf) => (stream, buf.freeze()),
            Outcome::Closed(why) => {
                shared.metrics.client_bytes(counts.read, counts.written);
                tracing::debug!(client = %ctx.client, why, "closing connection");
                return;
            }
        }
    } else {
        (stream, origin.leftover)
    };
    let io = ClientIo {
        leftover,
        stream,
        ctx: ctx.clone(),
    };
    let svc = {
        let (shared, ctx) = (shared.clone(), ctx.clone());
        service_fn(move |req| handle(shared.clone(), ctx.clone(), req))
    };
    // Boxed so that its state is freed when it ends, not kept for a tunnel's whole life.
    let mut conn = Box::pin(
        shared
            .http
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades(),
    );
    let ended = {
        let config = &shared.config;
        let mut stop = Watch::new(&shared.drain.stop_accepting);
        let mut sleep = pin!(tokio::time::sleep(config.keepalive_timeout));
        let mut graceful = false;
        poll_fn(|cx| {
            if hard_stop.poll_set(cx) {
                return Poll::Ready(Err("shutdown deadline (SHUTDOWN_TIMEOUT) reached"));
            }
            if !graceful && stop.poll_set(cx) {
                conn.as_mut().graceful_shutdown();
                graceful = true;
            }
            // The upstream side first (a response may have arrived), then the client side,
            // then the upstream side again to send what the client side just handed it.
            ctx.upstream.poll(cx, &shared.upstream, ctx.busy());
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(e) = result {
                    tracing::debug!(client = %ctx.client, error = %e, "connection ended with an error");
                }
                return Poll::Ready(Ok(()));
            }
            ctx.upstream.poll(cx, &shared.upstream, ctx.busy());
            poll_deadline(cx, &ctx, config, sleep.as_mut())
        })
        .await
    };
    drop(conn);
    drop(hard_stop);
    ctx.upstream.release(&shared.upstream);
    shared.metrics.client_bytes(
        ctx.bytes_read.load(Ordering::Relaxed),
        ctx.bytes_written.load(Ordering::Relaxed),
    );
    if let Err(why) = ended {
        tracing::debug!(client = %ctx.client, why, "closing connection");
        return;
    }
    if let Some(pending) = ctx.take_upgrade() {
        // A task of its own: this one's state (hyper's connection, the clocks) is far larger
        // than a tunnel needs, and a tunnel may stay open for days.
        let client = ctx.client;
        let tasks = shared.tasks.clone();
        tasks.spawn(async move {
            let _open = open;
            tokio::select! {
                _ = tunnel::run(&shared, client, pending) => {}
                _ = shared.drain.hard_stop.cancelled() => {
                    tracing::info!(%client, "closing tunnel at the shutdown deadline");
                }
            }
        });
    }
}

/// Polls the connection's clocks; `Ready(Err)` when one ran out.
fn poll_deadline(
    cx: &mut Context<'_>,
    ctx: &ConnCtx,
    config: &Config,
    mut sleep: Pin<&mut tokio::time::Sleep>,
) -> Poll<Result<(), &'static str>> {
    loop {
        if let Some((deadline, _)) = ctx.deadline(config) {
            if deadline != sleep.deadline() {
                sleep.as_mut().reset(deadline);
            }
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match ctx.deadline(config) {
            // Busy: look again after another keep-alive period.
            None => sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + config.keepalive_timeout),
            Some((deadline, expiry)) if deadline <= tokio::time::Instant::now() => {
                return Poll::Ready(Err(match expiry {
                    Expiry::RequestHeader => {
                        tracing::warn!(client = %ctx.client, "request headers not received within REQUEST_HEADER_TIMEOUT; closing");
                        "request header timeout"
                    }
                    Expiry::KeepAlive => "keep-alive idle timeout",
                }));
            }
            Some(_) => {}
        }
    }
}

/// Counts the connection as open until it ends (tunnel included), holding its
/// `MAX_CONNECTIONS` slot.
struct OpenGuard {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.metrics.closed();
    }
}

/// Routes one request: health check, redirect, upgrade or forward; then logs it.
async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<Tracked>, Infallible> {
    ctx.request_started();
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut upstream = false;
    let resp = if health::is_ping(&req) {
        health::answer(shared.drain.is_draining())
    } else if ctx.health_only {
        shared.metrics.refused_reason("no_proxy_header_request");
        tracing::warn!(client = %ctx.client, path = uri.path(), "request without a PROXY header refused (only /ping is answered)");
        let mut resp = body::text(
            StatusCode::BAD_REQUEST,
            "a PROXY protocol header is required\n",
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    } else if ctx.port == Port::Plain {
        redirect::answer(&req)
    } else if tunnel::is_upgrade(&req) {
        upstream = true;
        tunnel::forward_upgrade(&shared, &ctx, req).await
    } else {
        upstream = true;
        shared.upstream.forward(&ctx, &shared.metrics, req).await
    };
    let elapsed = started.elapsed();
    shared.metrics.request(resp.status(), elapsed);
    logging::access(
        ctx.client,
        method.as_str(),
        uri.path(),
        resp.status(),
        upstream.then_some(elapsed),
    );
    Ok(resp.map(|inner| Tracked { inner, ctx }))
}
