//! The app behind the proxy: resolving its name and connecting (on every new connection, never
//! pinned at start), and the idle connections kept to it for reuse by either HTTP/1.1 path.
//!
//! A hyper-path connection in use is driven by the task of the client connection using it
//! ([`Driver`]): a request, its response and both bodies never change task or thread on the
//! way, which is what a second task per upstream connection cost in wake-ups.

pub(crate) mod exchange;
pub(crate) mod h2c;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::accept::descriptors;
use crate::accept::sockets;
use crate::config::Config;
use crate::http::body::RequestBody;
use crate::http::error::{ErrorChain, UpstreamError};
use crate::telemetry::exhaustion::Exhaustion;
use crate::telemetry::metrics::DescriptorUse;
use crate::telemetry::timing::UpstreamTiming;

/// Looks up the app's addresses: `(host, port)` to addresses, tried in order.
pub type Resolver = Arc<
    dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver (`/etc/hosts`, DNS), asked afresh for every new connection.
pub fn system_resolver() -> Resolver {
    Arc::new(|host: String, port: u16| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

/// Idle upstream connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// The request body type hyper's client sends.
pub(crate) type SendBody = RequestBody;

type UpstreamConnection = http1::Connection<TokioIo<TcpStream>, SendBody>;

/// One hyper-path upstream connection: the handle that sends on it and the connection future
/// that does the reading and writing. Whoever holds a `Link` polls its connection; in the pool
/// nobody does, so a connection is checked (one poll) before it is used again.
pub(crate) struct Link {
    sender: SendRequest<SendBody>,
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

/// The upstream link a client connection is using, polled by that connection's task.
#[derive(Default)]
pub(crate) struct Driver(Mutex<Option<Link>>);

impl Driver {
    /// Moves the link's connection along. Once no request is in flight and the connection
    /// is ready for another, it goes back to the pool for any client to use.
    pub(crate) fn poll(&self, cx: &mut Context<'_>, upstream: &Upstream, busy: bool) {
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

    /// Drops the link: after an answer that leaves the connection unusable (an unasked `101`).
    pub(crate) fn discard(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }

    /// At the end of the client connection, or before the next request: an idle link goes
    /// back to the pool.
    pub(crate) fn release(&self, upstream: &Upstream) {
        let link = self.0.lock().ok().and_then(|mut slot| slot.take());
        if let Some(link) = link {
            if link.sender.is_ready() {
                upstream.put(link);
            }
        }
    }

    /// Sends the request on `link` and keeps the link here, where this task polls it.
    pub(crate) fn send_on(
        &self,
        mut link: Link,
        req: Request<SendBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, TrySendError<Request<SendBody>>>> {
        let sent = link.sender.try_send_request(req);
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(link);
        }
        sent
    }
}

/// The app and the idle connections kept to it.
pub struct Upstream {
    /// Idle hyper-path connections, most recently used last.
    idle: Mutex<Vec<Link>>,
    /// Idle lean-path connections, which that path speaks HTTP/1.1 on itself.
    plain_idle: Mutex<Vec<(TcpStream, Instant)>>,
    max_idle: usize,
    /// `host:port` of the app, for log lines.
    pub(crate) authority: String,
    host: String,
    port: u16,
    connect_timeout: Duration,
    /// `RESPONSE_TIMEOUT`.
    pub(crate) response_timeout: Duration,
    /// `TCP_KEEPALIVE`, for app connections as for clients'.
    keepalive: Option<Duration>,
    resolver: Resolver,
    /// Counts and rate-limits warnings when connects run out of descriptors.
    exhaustion: Arc<Exhaustion>,
    /// `upstream_connect_seconds` and `upstream_response_seconds`.
    pub(crate) timing: UpstreamTiming,
}

impl Upstream {
    pub(crate) fn new(
        config: &Config,
        resolver: Resolver,
        exhaustion: Arc<Exhaustion>,
        timing: UpstreamTiming,
    ) -> Self {
        let host = &config.destination_hostname;
        let authority = match host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("[{v6}]:{}", config.destination_port),
            Err(_) => format!("{host}:{}", config.destination_port),
        };
        Upstream {
            idle: Mutex::new(Vec::new()),
            plain_idle: Mutex::new(Vec::new()),
            max_idle: config.max_connections,
            authority,
            host: host.clone(),
            port: config.destination_port,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            keepalive: config.tcp_keepalive,
            resolver,
            exhaustion,
            timing,
        }
    }

    /// Returns an idle hyper-path connection to the pool (the most recent is reused first).
    pub(crate) fn put(&self, mut link: Link) {
        link.idle_since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(link);
            }
        }
    }

    /// An idle hyper-path connection that is still open, polled once with `cx` to find out.
    pub(crate) fn checkout(&self, cx: &mut Context<'_>) -> Option<Link> {
        loop {
            let mut link = self.idle.lock().ok()?.pop()?;
            if link.idle_since.elapsed() < IDLE_TIMEOUT && link.reusable(cx) {
                return Some(link);
            }
        }
    }

    /// Returns a lean-path connection to its pool, for the next request to reuse; it has been
    /// idle since `now`.
    pub(crate) fn put_plain(&self, stream: TcpStream, now: Instant) {
        if let Ok(mut idle) = self.plain_idle.lock() {
            if idle.len() < self.max_idle {
                idle.push((stream, now));
            }
        }
    }

    /// An idle lean-path connection the app has not closed, most recently used first; `now`
    /// is the caller's clock reading.
    pub(crate) fn checkout_plain(&self, now: Instant) -> Option<TcpStream> {
        loop {
            let (stream, since) = self.plain_idle.lock().ok()?.pop()?;
            if now.saturating_duration_since(since) < IDLE_TIMEOUT && still_open(&stream) {
                return Some(stream);
            }
        }
    }

    /// Closes pooled connections the app has closed or that sat idle too long; run now and
    /// then so that no half-closed socket lingers while there is no traffic.
    pub(crate) fn sweep(&self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain_mut(|link| {
                link.idle_since.elapsed() < IDLE_TIMEOUT && !link.poll_closed(&mut cx)
            });
        }
        if let Ok(mut idle) = self.plain_idle.lock() {
            idle.retain(|(stream, since)| since.elapsed() < IDLE_TIMEOUT && still_open(stream));
        }
    }

    /// A new hyper-path connection, ready to send on. Any failure is `connect`.
    pub(crate) async fn open(&self) -> Result<Link, (UpstreamError, String)> {
        let stream = self
            .connect()
            .await
            .map_err(|e| (UpstreamError::Connect, e.to_string()))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| (UpstreamError::Connect, ErrorChain(&e).to_string()))?;
        Ok(Link {
            sender,
            conn: Box::pin(conn),
            idle_since: Instant::now(),
        })
    }

    /// A fresh connection to the app, resolving its name now, within `CONNECT_TIMEOUT`.
    pub(crate) async fn connect(&self) -> io::Result<TcpStream> {
        let started = Instant::now();
        let attempt = async {
            let mut last = None;
            for addr in (self.resolver)(self.host.clone(), self.port).await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                io::Error::other(format!("{} resolved to no address", self.host))
            }))
        };
        let stream = tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connect timed out (CONNECT_TIMEOUT)",
                )
            })?
            .inspect_err(|e| {
                if descriptors::is_exhausted(e) {
                    self.exhaustion.note(DescriptorUse::Connect, e);
                }
            })?;
        sockets::configure(&stream, self.keepalive)?;
        self.timing.connected(started.elapsed());
        Ok(stream)
    }

    /// Whether connecting has run out of descriptors lately, which has its own warning.
    pub(crate) fn out_of_descriptors(&self) -> bool {
        self.exhaustion.recent()
    }
}

/// Whether an idle connection is still open: nothing to read, not even the end of the stream.
/// No system call unless the socket has become readable since it was last drained.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
