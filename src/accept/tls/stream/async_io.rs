//! tokio's `AsyncRead` and `AsyncWrite` for the stream: reads take decrypted bytes (reading
//! from the socket only when nothing is decrypted), writes encrypt and start sending at once.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Offer, Step, TlsStream, JOIN_BELOW, MAX_WRITE};

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.read_done {
                return Poll::Ready(Ok(()));
            }
            match this.pass(cx, Offer::Nothing, Some(buf))? {
                Step::Moved if buf.filled().len() > before => return Poll::Ready(Ok(())),
                Step::Moved => {}
                Step::NeedsBytes | Step::Open => {
                    // Anything made in the meantime (a key update's answer) goes out first; a
                    // peer that is not reading does not stop this side from reading.
                    if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                    match this.poll_fill(cx) {
                        Poll::Pending => {
                            this.release_idle();
                            return Poll::Pending;
                        }
                        Poll::Ready(Ok(0)) => this.read_done = true,
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    }
                }
                Step::Encrypted(_) | Step::Closed => this.read_done = true,
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    /// Small pieces in a row (a response's head and body, HTTP/2 frame headers) are joined
    /// into one record; a large piece is a record of its own, or several. All of them go out
    /// in one `write`.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.made - this.sent >= crate::accept::tls::SEND_BUFFER {
            ready!(this.poll_send(cx))?;
        }
        let mut joined = [0u8; JOIN_BELOW];
        let (mut held, mut taken) = (0, 0);
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            if held + b.len() > JOIN_BELOW && held > 0 {
                taken += this.seal(cx, &joined[..held])?;
                held = 0;
            }
            if b.len() <= JOIN_BELOW {
                joined[held..held + b.len()].copy_from_slice(b);
                held += b.len();
                continue;
            }
            let n = this.seal(cx, b)?;
            taken += n;
            if n < b.len() || taken >= MAX_WRITE {
                break;
            }
        }
        if held > 0 {
            taken += this.seal(cx, &joined[..held])?;
        }
        // Start it on its way; what the socket does not take now goes at the next write or
        // flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.close_sent {
            match this.pass(cx, Offer::CloseNotify, None) {
                Ok(Step::Encrypted(_)) => {}
                Ok(Step::Moved) => {}
                // Closed already, or broken: there is nothing to say.
                Ok(_) | Err(_) => this.close_sent = true,
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
