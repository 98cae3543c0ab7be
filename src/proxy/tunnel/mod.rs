//! WebSockets and any other honoured `Upgrade`, once the app has accepted it (its `101`, or its
//! `200` to an extended CONNECT): the client's side and the app's are joined byte for byte by
//! [`splice`] until both have closed.
//!
//! Each side is a plain socket when hyper hands one back, or an HTTP/2 stream (an RFC 8441
//! WebSocket from the client, or one to an h2c app). Every tunnel is started by [`start`].

mod splice;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::accept::tls::TlsStream;
use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::accept::detect::Prefixed;

use crate::config::Config;
use crate::conn::send_timeout::SendClock;
use crate::conn::shared::Shared;
use crate::conn::state::PendingUpgrade;
use crate::http::Protocol;
use crate::telemetry::metrics::Metrics;

use splice::{splice, Ends};

/// The clocks of a tunnel.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    /// `WEBSOCKET_IDLE_TIMEOUT`: nothing moved either way for this long.
    pub(crate) idle: Option<Duration>,
    /// `SEND_TIMEOUT`: the client took none of the bytes waiting for it for this long.
    pub(crate) send: Option<Duration>,
}

impl Limits {
    pub(crate) fn of(config: &Config) -> Self {
        Limits {
            idle: config.websocket_idle_timeout,
            send: config.send_timeout,
        }
    }

    /// The clocks for writes to the client (`SEND_TIMEOUT`) and to the app (none: it is the
    /// client's clock).
    fn clocks(&self, client: SocketAddr) -> (SendClock, SendClock) {
        (
            SendClock::new(self.send, client, Protocol::Tunnel),
            SendClock::new(None, client, Protocol::Tunnel),
        )
    }
}

/// A client connection as its HTTP/1.1 server hands it back after an upgrade: the connection
/// without the server's wrappers, and the bytes read from it that the server has not consumed.
pub(crate) trait ClientSocket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The connection and the bytes already read past the upgrade request.
    fn into_parts(self) -> (Side, Bytes);
}

impl ClientSocket for TcpStream {
    fn into_parts(self) -> (Side, Bytes) {
        (Side::Socket(self), Bytes::new())
    }
}

/// Runs the tunnel of an accepted upgrade in a task of its own, so that it holds none of the
/// state of the connection or stream that set it up (a tunnel may stay open for days), until
/// it ends or the drain's deadline comes. `C` is the type of the client's connection under
/// hyper's HTTP/1.1 server; `keep` is dropped when the tunnel ends.
pub(crate) fn start<C: ClientSocket>(
    shared: &Arc<Shared>,
    client: SocketAddr,
    pending: PendingUpgrade,
    keep: impl Send + 'static,
) {
    let shared = shared.clone();
    shared.tasks.clone().spawn(async move {
        let _keep = keep;
        let limits = Limits::of(&shared.config);
        let drain = &shared.drain;
        // Once joined, the drain ends a tunnel inside the copy loop, so that its end is logged
        // and counted like any other; before that, the deadline simply drops it.
        let closed_by_drain = async {
            tokio::select! {
                (turn, of) = drain.tunnel_turn() => format!("closed by the drain, {turn} of {of}"),
                _ = drain.hard_stop.cancelled() => "shutdown deadline (SHUTDOWN_TIMEOUT) reached".to_owned(),
            }
        };
        let closed_by_drain = pin!(closed_by_drain);
        tokio::select! {
            biased;
            _ = run::<C>(&shared.metrics, limits, client, pending, closed_by_drain) => {}
            _ = drain.hard_stop.cancelled() => {
                tracing::info!(%client, "upgrade still pending at the shutdown deadline");
            }
        }
    });
}

/// Waits for both sides of an accepted upgrade, then joins them until they close, or until
/// `stop` gives the reason to close them.
async fn run<C: ClientSocket>(
    metrics: &Metrics,
    limits: Limits,
    client_addr: SocketAddr,
    pending: PendingUpgrade,
    stop: Pin<&mut impl Future<Output = String>>,
) {
    let (client, upstream) = match (pending.client.await, pending.upstream.await) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(client = %client_addr, error = %e, "upgrade did not complete");
            return;
        }
    };
    let (mut client, to_app) = Side::of::<C>(client);
    let (mut upstream, to_client) = Side::of::<TcpStream>(upstream);
    metrics.tunnel_opened();
    let started = Instant::now();
    let (to_client_clock, to_app_clock) = limits.clocks(client_addr);
    let result = splice(
        (&mut client, to_client_clock),
        to_app,
        (&mut upstream, to_app_clock),
        to_client,
        Ends {
            idle: limits.idle,
            stop,
        },
    )
    .await;
    let (up, down, why) = match &result {
        Ok((up, down)) => (*up, *down, "closed".to_owned()),
        Err((up, down, e)) => (*up, *down, e.to_string()),
    };
    metrics.tunnel_closed();
    metrics.client_bytes(up, down);
    tracing::info!(
        client = %client_addr,
        bytes_to_app = up,
        bytes_to_client = down,
        seconds = started.elapsed().as_secs_f64(),
        end = why,
        "tunnel ended"
    );
}

/// One side of a tunnel.
pub(crate) enum Side {
    /// A plain socket, taken back from hyper: copied without hyper's buffers in the way.
    Socket(TcpStream),
    /// A TLS stream the proxy ended, taken back from hyper the same way.
    Tls(Box<TlsStream<Prefixed<TcpStream>>>),
    /// An HTTP/2 stream (or any other upgraded connection hyper keeps).
    Stream(TokioIo<Upgraded>),
}

impl Side {
    /// The side, with the bytes already read from it that belong to the other side. `S` is
    /// the socket type hyper may hold it as.
    fn of<S: ClientSocket>(upgraded: Upgraded) -> (Side, Vec<u8>) {
        match upgraded.downcast::<TokioIo<S>>() {
            Ok(parts) => {
                let (side, leftover) = parts.io.into_inner().into_parts();
                // `read_buf` is a view into hyper's whole read buffer: copy out the few bytes
                // it holds and let the buffer go, or every idle tunnel keeps 8 KiB alive.
                (side, [leftover, parts.read_buf].concat())
            }
            // hyper's own type replays what it read ahead.
            Err(upgraded) => (Side::Stream(TokioIo::new(upgraded)), Vec::new()),
        }
    }
}

impl AsyncRead for Side {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Side::Socket(s) => Pin::new(s).poll_read(cx, buf),
            Side::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Side::Stream(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Side {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Side::Socket(s) => Pin::new(s).poll_write(cx, buf),
            Side::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Side::Stream(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Side::Socket(s) => Pin::new(s).poll_flush(cx),
            Side::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Side::Stream(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Side::Socket(s) => Pin::new(s).poll_shutdown(cx),
            Side::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Side::Stream(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
