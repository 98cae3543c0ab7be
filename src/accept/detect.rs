//! Which HTTP a connection speaks, from its first bytes after the PROXY header: the HTTP/2
//! connection preface (prior knowledge, as an NLB TLS listener forwards a client that
//! negotiated h2) or anything else, which stays on the HTTP/1.1 paths. The bytes read to decide
//! are handed on, so the chosen parser sees the stream intact.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::http::clocks::{Clocks, Expiry, Phase};

/// RFC 9113 §3.4.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection starts with, as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detected {
    Http1,
    H2,
}

/// What the bytes so far say; `None` until they can tell.
pub(crate) fn detect(buf: &[u8]) -> Option<Detected> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        Some(Detected::Http1)
    } else if n == PREFACE.len() {
        Some(Detected::H2)
    } else {
        None
    }
}

/// Why no protocol was found.
#[derive(Debug)]
pub(crate) enum Silence {
    /// Nothing arrived within `KEEPALIVE_TIMEOUT`, or the peer closed without a request.
    Idle,
    /// The start of a preface arrived and the rest did not within `REQUEST_HEADER_TIMEOUT`.
    Stalled,
}

/// Reads onto `buf` until [`detect`] can tell, by the connection's clocks: an idle connection
/// has `KEEPALIVE_TIMEOUT`, a started preface `REQUEST_HEADER_TIMEOUT` from its first byte.
pub(crate) async fn read_until_known<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    clocks: &mut Clocks,
) -> Result<Detected, Silence> {
    let now = tokio::time::Instant::now();
    let mut phase = match buf.is_empty() {
        true => Phase::Idle { since: now },
        false => Phase::Head { started: now },
    };
    loop {
        if let Some(p) = detect(buf) {
            return Ok(p);
        }
        match clocks.until(phase, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) | Err(Expiry::KeepAlive) => return Err(Silence::Idle),
            Err(Expiry::RequestHeader) => return Err(Silence::Stalled),
        }
        if let Phase::Idle { .. } = phase {
            phase = Phase::Head {
                started: tokio::time::Instant::now(),
            };
        }
    }
}

/// A stream that first yields bytes already read from it.
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // An empty view still holds its whole buffer, for as long as the connection
                // lives (a TLS tunnel may live for days): let it go.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_told_from_http1_as_early_as_possible() {
        assert_eq!(detect(PREFACE), Some(Detected::H2));
        assert_eq!(
            detect(&[PREFACE, b"\0\0\x12\x04"].concat()),
            Some(Detected::H2)
        );
        for cut in 1..PREFACE.len() {
            assert_eq!(detect(&PREFACE[..cut]), None, "cut at {cut}");
        }
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(detect(b"POST"), Some(Detected::Http1));
        assert_eq!(detect(b"PROPFIND"), Some(Detected::Http1));
        assert_eq!(detect(b"PRI * HTTP/1.1\r\n"), Some(Detected::Http1));
    }
}
