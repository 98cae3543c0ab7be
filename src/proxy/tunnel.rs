//! WebSockets and any other honoured `Upgrade`, after the app's `101` (see
//! [`crate::proxy::hyper_client::forward_upgrade`]): the two sockets are joined byte for byte until
//! both sides have closed.
//!
//! The join holds no buffer while idle. It waits for readiness, then copies through a buffer
//! borrowed from the worker thread for that moment; only bytes the other side cannot take yet
//! are kept, in an allocation freed as soon as they are written. An idle tunnel costs its two
//! sockets and a few words of state, which is what lets one instance hold many of them.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::conn::send_timeout::SendClock;
use crate::conn::state::PendingUpgrade;
use crate::telemetry::metrics::Metrics;

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
            SendClock::new(self.send, client, "tunnel"),
            SendClock::new(None, client, "tunnel"),
        )
    }
}

/// An HTTP/1.1 client connection as its server hands it back after an upgrade: the socket and
/// the bytes read from it that the server has not consumed.
pub(crate) trait ClientSocket:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
    /// The socket and the bytes already read past the upgrade request.
    fn into_parts(self) -> (TcpStream, Bytes);
}

/// Waits for both sides of an accepted upgrade, then joins them until they close. `C` is the
/// type of the client's connection under hyper's server.
pub(crate) async fn run<C: ClientSocket>(
    metrics: &Metrics,
    limits: Limits,
    client_addr: SocketAddr,
    pending: PendingUpgrade,
) {
    let Some((client, upstream)) = both_sides(pending, client_addr).await else {
        return;
    };
    let (Ok(client), Ok(upstream)) = (
        client.downcast::<TokioIo<C>>(),
        upstream.downcast::<TokioIo<TcpStream>>(),
    ) else {
        tracing::error!(client = %client_addr, "upgraded connection has an unexpected type; closing");
        return;
    };
    let (mut client_stream, leftover) = client.io.into_inner().into_parts();
    let to_app = [leftover, client.read_buf].concat();
    // `read_buf` is a view into hyper's whole read buffer: copy out the few bytes it holds
    // and let the buffer go, or every idle tunnel keeps 8 KiB alive.
    let hyper::upgrade::Parts { io, read_buf, .. } = upstream;
    let to_client = read_buf.to_vec();
    drop(read_buf);
    let mut upstream_stream = io.into_inner();
    metrics.tunnel_opened();
    let started = Instant::now();
    let (to_client_clock, to_app_clock) = limits.clocks(client_addr);
    let result = splice(
        (&mut client_stream, to_client_clock),
        to_app,
        (&mut upstream_stream, to_app_clock),
        to_client,
        limits.idle,
    )
    .await;
    let (up, down, why) = match &result {
        Ok((up, down)) => (*up, *down, "closed".to_owned()),
        Err((up, down, e)) => (*up, *down, e.to_string()),
    };
    ended(metrics, client_addr, started, (up, down), &why);
}

/// Both upgraded connections, once hyper has let go of them; `None` (logged) if either failed.
async fn both_sides(
    pending: PendingUpgrade,
    client_addr: SocketAddr,
) -> Option<(hyper::upgrade::Upgraded, hyper::upgrade::Upgraded)> {
    match (pending.client.await, pending.upstream.await) {
        (Ok(c), Ok(u)) => Some((c, u)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(client = %client_addr, error = %e, "upgrade did not complete");
            None
        }
    }
}

/// Counts and logs the end of a tunnel: `bytes` to the app and to the client, and why.
fn ended(metrics: &Metrics, client: SocketAddr, started: Instant, bytes: (u64, u64), why: &str) {
    metrics.tunnel_closed();
    metrics.client_bytes(bytes.0, bytes.1);
    tracing::info!(
        client = %client,
        bytes_to_app = bytes.0,
        bytes_to_client = bytes.1,
        seconds = started.elapsed().as_secs_f64(),
        end = why,
        "tunnel ended"
    );
}

/// Bytes copied one way, and those read but not yet written.
#[derive(Default)]
struct Direction {
    owed: Vec<u8>,
    offset: usize,
    eof: bool,
    done: bool,
    bytes: u64,
}

/// How many reads one direction may do per wake-up before yielding to other tasks.
const READS_PER_POLL: usize = 16;
const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Copies both ways until each side has sent FIN (passed on as a half-close), one side fails,
/// or nothing moved for `idle_timeout`; writes to each side go by that side's clock. Returns
/// the bytes sent to `b` and to `a`.
#[allow(clippy::type_complexity)]
pub(crate) async fn splice(
    (a, mut to_a): (&mut TcpStream, SendClock),
    a_to_b: Vec<u8>,
    (b, mut to_b): (&mut TcpStream, SendClock),
    b_to_a: Vec<u8>,
    idle_timeout: Option<std::time::Duration>,
) -> Result<(u64, u64), (u64, u64, io::Error)> {
    let (mut a_read, mut a_write) = a.split();
    let (mut b_read, mut b_write) = b.split();
    let mut ab = Direction {
        owed: a_to_b,
        ..Default::default()
    };
    let mut ba = Direction {
        owed: b_to_a,
        ..Default::default()
    };
    let mut idle = pin!(tokio::time::sleep(idle_timeout.unwrap_or_default()));
    let mut moved = 0;
    poll_fn(|cx| {
        let result = SCRATCH.with(|scratch| {
            let scratch = &mut scratch.borrow_mut()[..];
            if !ab.done {
                if let Poll::Ready(Err(e)) =
                    copy(cx, &mut a_read, (&mut b_write, &mut to_b), &mut ab, scratch)
                {
                    return Err(e);
                }
            }
            if !ba.done {
                if let Poll::Ready(Err(e)) =
                    copy(cx, &mut b_read, (&mut a_write, &mut to_a), &mut ba, scratch)
                {
                    return Err(e);
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            return Poll::Ready(Err((ab.bytes, ba.bytes, e)));
        }
        if ab.done && ba.done {
            return Poll::Ready(Ok((ab.bytes, ba.bytes)));
        }
        if let Some(limit) = idle_timeout {
            if ab.bytes + ba.bytes != moved {
                moved = ab.bytes + ba.bytes;
                idle.as_mut().reset(tokio::time::Instant::now() + limit);
            }
            if idle.as_mut().poll(cx).is_ready() {
                let e = io::Error::new(io::ErrorKind::TimedOut, "idle for WEBSOCKET_IDLE_TIMEOUT");
                return Poll::Ready(Err((ab.bytes, ba.bytes, e)));
            }
        }
        Poll::Pending
    })
    .await
}

/// Moves what `from` has to `to`; `Ready(Ok)` once `from` has ended and `to` got the FIN.
///
/// Reads go through tokio's `poll_read`, which takes a short read to mean the socket is
/// drained: a small WebSocket message costs one `recv` per direction, not a second one that
/// only finds `EAGAIN`.
fn copy(
    cx: &mut Context<'_>,
    from: &mut ReadHalf<'_>,
    (to, clock): (&mut WriteHalf<'_>, &mut SendClock),
    d: &mut Direction,
    scratch: &mut [u8],
) -> Poll<io::Result<()>> {
    for _ in 0..READS_PER_POLL {
        while d.offset < d.owed.len() {
            let attempt = Pin::new(&mut *to).poll_write(cx, &d.owed[d.offset..]);
            match ready!(clock.poll(cx, attempt))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => d.offset += n,
            }
        }
        if !d.owed.is_empty() {
            d.owed = Vec::new();
            d.offset = 0;
        }
        if d.eof {
            // The peer may already be gone; the tunnel ends when both sides have.
            let _ = socket2::SockRef::from(to.as_ref()).shutdown(Shutdown::Write);
            d.done = true;
            return Poll::Ready(Ok(()));
        }
        let mut buf = ReadBuf::new(scratch);
        ready!(Pin::new(&mut *from).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        if n == 0 {
            d.eof = true;
            continue;
        }
        d.bytes += n as u64;
        let mut written = 0;
        while written < n {
            let attempt = Pin::new(&mut *to).poll_write(cx, &scratch[written..n]);
            match clock.poll(cx, attempt) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(m)) => written += m,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    d.owed = scratch[written..n].to_vec();
                    break;
                }
            }
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Joins two upgraded streams of any kind (an HTTP/2 extended CONNECT stream and the app's
/// socket after its `101`) until both sides have closed or, with `idle_timeout`, nothing moved
/// for that long.
pub(crate) async fn join_upgraded(
    metrics: &Metrics,
    limits: Limits,
    client_addr: SocketAddr,
    pending: PendingUpgrade,
) {
    let Some((client, upstream)) = both_sides(pending, client_addr).await else {
        return;
    };
    let activity = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (to_client, to_app) = limits.clocks(client_addr);
    let mut client = Active::new(TokioIo::new(client), activity.clone(), to_client);
    let mut upstream = Active::new(TokioIo::new(upstream), activity.clone(), to_app);
    metrics.tunnel_opened();
    let started = Instant::now();
    let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let result = match limits.idle {
        None => copied.await,
        Some(limit) => tokio::select! {
            r = copied => r,
            () = idle_for(limit, &activity) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle for WEBSOCKET_IDLE_TIMEOUT")),
        },
    };
    let (bytes, why) = match &result {
        Ok(bytes) => (*bytes, "closed".to_owned()),
        Err(e) => ((0, 0), e.to_string()),
    };
    ended(metrics, client_addr, started, bytes, &why);
}

/// Resolves once `activity` has not moved for `limit`.
async fn idle_for(limit: std::time::Duration, activity: &std::sync::atomic::AtomicU64) {
    use std::sync::atomic::Ordering;
    let mut seen = activity.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(limit).await;
        let now = activity.load(Ordering::Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// A stream that counts every read and write into a shared activity counter, its writes timed
/// by `send`.
struct Active<T> {
    inner: T,
    activity: std::sync::Arc<std::sync::atomic::AtomicU64>,
    send: SendClock,
}

impl<T> Active<T> {
    fn new(
        inner: T,
        activity: std::sync::Arc<std::sync::atomic::AtomicU64>,
        send: SendClock,
    ) -> Self {
        Active {
            inner,
            activity,
            send,
        }
    }

    fn moved(&self) {
        self.activity
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let attempt = Pin::new(&mut this.inner).poll_write(cx, buf);
        let r = this.send.poll(cx, attempt);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
