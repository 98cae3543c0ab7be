//! The one copy loop of every tunnel: both ways at once, each write timed by its side's
//! clock, bytes counted as they are read so that a tunnel that fails still reports them.
//!
//! It holds no buffer while idle. It waits for readiness, then copies through a buffer
//! borrowed from the worker thread for that moment; only bytes the other side cannot take yet
//! are kept, in an allocation freed as soon as they are written. An idle tunnel costs its two
//! sockets and a few words of state, which is what lets one instance hold many of them.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::send_timeout::SendClock;

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

/// What ends a tunnel besides its sides: nothing moving either way, or the drain.
pub(crate) struct Ends<'s, F> {
    /// `WEBSOCKET_IDLE_TIMEOUT`.
    pub(crate) idle: Option<Duration>,
    /// Resolves with the reason when the drain closes the tunnel. Pinned by the caller and
    /// lent, so that the tunnel's task holds it once.
    pub(crate) stop: Pin<&'s mut F>,
}

/// Copies both ways until each side has sent FIN (passed on as a half-close), one side fails,
/// or one of `ends` comes; writes to each side go by that side's clock. Resolves to the bytes
/// sent to `b` and to `a`.
///
/// A plain function around one closure, not an `async fn`: an idle tunnel's task is mostly
/// this future, and an `async fn` keeps each argument beside the local it is moved into.
#[allow(clippy::type_complexity)]
pub(crate) fn splice<'s, A, B, F>(
    (a, mut to_a): (&'s mut A, SendClock),
    a_to_b: Vec<u8>,
    (b, mut to_b): (&'s mut B, SendClock),
    b_to_a: Vec<u8>,
    ends: Ends<'s, F>,
) -> impl Future<Output = Result<(u64, u64), (u64, u64, io::Error)>> + 's
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = String>,
{
    let mut stop = ends.stop;
    let mut ab = Direction {
        owed: a_to_b,
        ..Default::default()
    };
    let mut ba = Direction {
        owed: b_to_a,
        ..Default::default()
    };
    // Only a tunnel with an idle limit carries a timer.
    let mut idle = ends
        .idle
        .map(|limit| (limit, Box::pin(tokio::time::sleep(limit))));
    let mut moved = 0;
    poll_fn(move |cx| {
        let result = SCRATCH.with(|scratch| {
            let scratch = &mut scratch.borrow_mut()[..];
            if !ab.done {
                if let Poll::Ready(Err(e)) =
                    copy(cx, &mut *a, (&mut *b, &mut to_b), &mut ab, scratch)
                {
                    return Err(e);
                }
            }
            if !ba.done {
                if let Poll::Ready(Err(e)) =
                    copy(cx, &mut *b, (&mut *a, &mut to_a), &mut ba, scratch)
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
        if let Poll::Ready(why) = stop.as_mut().poll(cx) {
            return Poll::Ready(Err((ab.bytes, ba.bytes, io::Error::other(why))));
        }
        if let Some((limit, timer)) = &mut idle {
            if ab.bytes + ba.bytes != moved {
                moved = ab.bytes + ba.bytes;
                timer.as_mut().reset(tokio::time::Instant::now() + *limit);
            }
            if timer.as_mut().poll(cx).is_ready() {
                let e = io::Error::new(io::ErrorKind::TimedOut, "idle for WEBSOCKET_IDLE_TIMEOUT");
                return Poll::Ready(Err((ab.bytes, ba.bytes, e)));
            }
        }
        Poll::Pending
    })
}

/// Moves what `from` has to `to`; `Ready(Ok)` once `from` has ended and `to` got the FIN.
///
/// Reads go through tokio's `poll_read`, which takes a short read to mean the socket is
/// drained: a small WebSocket message costs one `recv` per direction, not a second one that
/// only finds `EAGAIN`.
fn copy<R, W>(
    cx: &mut Context<'_>,
    from: &mut R,
    (to, clock): (&mut W, &mut SendClock),
    d: &mut Direction,
    scratch: &mut [u8],
) -> Poll<io::Result<()>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
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
            // The half-close passed on: a FIN on a socket, END_STREAM on an HTTP/2 stream. The
            // peer may already be gone; the tunnel ends when both sides have.
            let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
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
