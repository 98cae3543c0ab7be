//! Watches the frames of an HTTP/2 client connection for the floods h2 leaves unbounded: PING
//! and SETTINGS frames, each of which obliges the server to answer (CVE-2019-9512, -9515).
//!
//! h2 answers every one and only stops reading when its answers cannot be written, so a
//! client that floods and reads the answers costs the proxy a frame for a frame, for ever.
//! This layer sits between hyper and the socket, reads only the 9-byte frame headers going
//! by, and counts those frames. More than [`CONTROL_FRAMES_PER_SECOND`] of one kind within a
//! second is a flood: the client is told GOAWAY `ENHANCE_YOUR_CALM` (with the last stream id
//! it opened), nothing more it sends is processed, and the connection task closes the
//! connection shortly after. The GOAWAY is written at a frame boundary of what h2 was
//! sending, so the client sees well-formed frames up to it. A gRPC keepalive or BDP ping, or
//! a browser's, comes nowhere near the limit.
//!
//! The connection task can cut a client off the same way (its debug data `SEND_TIMEOUT`) when
//! the client has taken none of its responses' data for that long
//! ([`crate::conn::send_timeout`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use frames::{Cursor, Rate};

mod frames;

/// More PING (or SETTINGS) frames than this within a second end the connection.
pub(crate) const CONTROL_FRAMES_PER_SECOND: u32 = 1000;

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const HEADERS: u8 = 0x1;
const ACK: u8 = 0x1;
/// Not a frame type: the verdict for a client that stopped reading.
const STALLED: u8 = 0xff;
/// RFC 9113 §7.
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// The client's connection preface, which precedes its first frame.
const PREFACE_LEN: usize = crate::accept::detect::PREFACE.len();
/// What a flooding client's further bytes are read and dropped in, per poll.
const DISCARD_PER_POLL: usize = 64 * 1024;

/// Why a connection was cut off (a flood, or the client no longer reading), shared with the
/// connection task.
#[derive(Default)]
pub(crate) struct Verdict(AtomicU8);

impl Verdict {
    /// The connection task's verdict: the client took nothing within `SEND_TIMEOUT`.
    pub(crate) fn stalled(&self) {
        self.0.store(STALLED, Ordering::Relaxed);
    }

    /// The kind of frame that flooded (`"PING"` or `"SETTINGS"`), once one has.
    pub(crate) fn flood(&self) -> Option<&'static str> {
        match self.0.load(Ordering::Relaxed) {
            PING => Some("PING"),
            SETTINGS => Some("SETTINGS"),
            _ => None,
        }
    }
}

/// The client connection as hyper's HTTP/2 server sees it.
pub(crate) struct Guarded<T> {
    inner: T,
    /// Frames from the client; it starts with the connection preface.
    inbound: Cursor,
    /// Frames to the client, for writing the GOAWAY between two of them.
    outbound: Cursor,
    pings: Rate,
    settings: Rate,
    /// The highest stream the client opened, for the GOAWAY.
    last_stream: u32,
    /// The GOAWAY, once a flood is found.
    goaway: Option<GoAway>,
    verdict: Arc<Verdict>,
}

impl<T> Guarded<T> {
    /// Wraps a connection whose first bytes are the client's preface.
    pub(crate) fn new(inner: T, verdict: Arc<Verdict>) -> Self {
        Guarded {
            inner,
            inbound: Cursor::after(PREFACE_LEN),
            outbound: Cursor::default(),
            pings: Rate::default(),
            settings: Rate::default(),
            last_stream: 0,
            goaway: None,
            verdict,
        }
    }

    /// Counts the frames in bytes just read; on a flood, prepares the GOAWAY.
    fn inspect(&mut self, bytes: &[u8]) {
        let (pings, settings, last) = (&mut self.pings, &mut self.settings, &mut self.last_stream);
        let mut flood = 0;
        self.inbound.walk(bytes, |kind, flags, stream| {
            let rate = match kind {
                PING if flags & ACK == 0 => &mut *pings,
                SETTINGS if flags & ACK == 0 => &mut *settings,
                HEADERS => {
                    *last = (*last).max(stream);
                    return;
                }
                _ => return,
            };
            if flood == 0 && rate.count(Instant::now()) {
                flood = kind;
            }
        });
        if flood != 0 && self.goaway.is_none() {
            self.verdict.0.store(flood, Ordering::Relaxed);
            self.cut(flood);
        }
    }

    /// Prepares the GOAWAY for `kind`; from now on the client is cut off.
    fn cut(&mut self, kind: u8) {
        self.goaway = Some(GoAway {
            frame: goaway(self.last_stream, kind),
            written: 0,
            closed: false,
        });
    }

    /// Whether the client is cut off, by a flood found here or the connection task's verdict.
    fn judged(&mut self) -> bool {
        if self.goaway.is_none() && self.verdict.0.load(Ordering::Relaxed) == STALLED {
            self.cut(STALLED);
        }
        self.goaway.is_some()
    }
}

/// GOAWAY `ENHANCE_YOUR_CALM` naming the flood (or the stall) in its debug data.
fn goaway(last_stream: u32, flood: u8) -> Vec<u8> {
    let debug: &[u8] = match flood {
        PING => b"PING flood",
        SETTINGS => b"SETTINGS flood",
        _ => b"SEND_TIMEOUT",
    };
    let len = 8 + debug.len();
    let mut f = Vec::with_capacity(9 + len);
    f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&[0x7, 0]);
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&last_stream.to_be_bytes());
    f.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    f.extend_from_slice(debug);
    f
}

impl<T: AsyncRead + AsyncWrite + Unpin> Guarded<T> {
    /// After a flood: reads and drops what the client still sends, so that closing the
    /// socket sends a FIN after the GOAWAY rather than a reset that could destroy it. The
    /// end of the client's bytes is passed on, so h2 ends the connection then.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 8192];
        let mut dropped = 0;
        while dropped < DISCARD_PER_POLL {
            let mut rb = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            dropped += rb.filled().len();
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// After a flood: finishes the frame in flight, writes the GOAWAY and a FIN, then
    /// swallows whatever h2 still writes.
    fn poll_write_flooded(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let boundary = self.outbound.to_boundary();
        if boundary > 0 {
            let part = &buf[..boundary.min(buf.len())];
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, part))?;
            self.outbound.walk(&buf[..n], |_, _, _| {});
            return Poll::Ready(Ok(n));
        }
        if let Some(goaway) = &mut self.goaway {
            while goaway.written < goaway.frame.len() {
                let rest = &goaway.frame[goaway.written..];
                goaway.written += ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            }
            if !goaway.closed {
                ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
                goaway.closed = true;
            }
        }
        Poll::Ready(Ok(buf.len()))
    }
}

/// The GOAWAY for a flood and how far it has gone out.
struct GoAway {
    frame: Vec<u8>,
    written: usize,
    /// The FIN after it is sent.
    closed: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.judged() {
            return this.poll_discard(cx);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.inspect(&buf.filled()[before..]);
        if this.goaway.is_some() {
            // Nothing from the flood reaches h2; the GOAWAY goes out with its next write.
            buf.set_filled(before);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.judged() {
            return this.poll_write_flooded(cx, buf);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.outbound.walk(&buf[..n], |_, _, _| {});
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.judged() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return this.poll_write_flooded(cx, first);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            let take = left.min(b.len());
            this.outbound.walk(&b[..take], |_, _, _| {});
            left -= take;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.goaway.as_ref().is_some_and(|g| g.closed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.goaway.as_ref().is_some_and(|g| g.closed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_goaway_names_the_last_stream_and_the_flood() {
        let f = goaway(7, PING);
        assert_eq!(&f[..9], &[0, 0, 18, 0x7, 0, 0, 0, 0, 0]);
        assert_eq!(&f[9..13], &7u32.to_be_bytes());
        assert_eq!(&f[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
        assert_eq!(&f[17..], b"PING flood");
    }
}
