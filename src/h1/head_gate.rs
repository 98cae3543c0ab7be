//! The client socket as hyper sees it, with the request-head gate in front.
//!
//! Every byte hyper reads passes the gate. A request head is held back until it is whole and
//! has passed [`crate::h1::request_head::read`]; then it and its body (counted by `Content-Length`
//! or scanned by [`Chunked`]) are released, and the next head is held back again. A refused
//! head never reaches hyper: hyper reads the end of the stream instead, finishes what it was
//! answering, and the refusal is written as the connection shuts down. After an honoured
//! upgrade head the gate opens for good: what follows belongs to the tunnel.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::accept::tls::TlsStream;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::accept::detect::Prefixed;
use crate::conn::send_timeout::SendClock;
use crate::conn::state::ConnCtx;
use crate::h1::request_head::{self, Head};
use crate::http::chunked::Chunked;
use crate::http::rules::BodyLength;
use crate::http::rules::{HeadLimits, MAX_HEADERS};
use crate::http::Protocol;
use crate::proxy::tunnel::{ClientSocket, Side};
use crate::telemetry::metrics::Metrics;

/// Where the gate is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Before a request head.
    Head,
    /// In a body, with this many bytes left.
    Body(u64),
    /// In a chunked body.
    Chunked(Chunked),
    /// After an upgrade: everything passes.
    Open,
    /// A head was refused: hyper reads the end of the stream.
    Refused,
}

/// The client connection for hyper: a socket, or the plaintext of a TLS stream.
pub(crate) struct HeadGate<S = TcpStream> {
    stream: S,
    ctx: Arc<ConnCtx>,
    metrics: Arc<Metrics>,
    limits: Arc<HeadLimits>,
    /// Bytes read from the client, not yet given to hyper; the first `released` may be.
    pending: BytesMut,
    released: usize,
    gate: Gate,
    /// The start of a chunk-size or trailer line already given to hyper, kept for the scanner
    /// until the rest of the line arrives.
    carry: Vec<u8>,
    /// A refusal still to be written, and how much of it has been.
    refusal: Option<(Vec<u8>, usize)>,
    /// `SEND_TIMEOUT` for every write to `stream`.
    send: SendClock,
}

impl<S> HeadGate<S> {
    /// Wraps `stream`; `leftover` holds bytes already read from it.
    pub(crate) fn new(
        stream: S,
        leftover: BytesMut,
        ctx: Arc<ConnCtx>,
        metrics: Arc<Metrics>,
        limits: Arc<HeadLimits>,
        send_timeout: Option<Duration>,
    ) -> Self {
        let send = SendClock::new(send_timeout, ctx.forwarding.client, Protocol::Http1);
        let mut io = HeadGate {
            stream,
            ctx,
            metrics,
            limits,
            pending: leftover,
            released: 0,
            gate: Gate::Head,
            carry: Vec::new(),
            refusal: None,
            send,
        };
        io.judge();
        io
    }

    /// Releases what the gate allows of `pending`.
    fn judge(&mut self) {
        loop {
            let unjudged = &self.pending[self.released..];
            match self.gate {
                Gate::Open => {
                    self.released = self.pending.len();
                    return;
                }
                Gate::Refused => return,
                Gate::Body(left) => {
                    let n = left.min(unjudged.len() as u64);
                    self.released += n as usize;
                    self.gate = if n == left {
                        Gate::Head
                    } else {
                        Gate::Body(left - n)
                    };
                    if n < left {
                        return;
                    }
                }
                Gate::Chunked(mut scan) => match scan.feed(unjudged) {
                    Ok((n, done)) => {
                        self.released += n;
                        self.gate = if done {
                            Gate::Head
                        } else {
                            Gate::Chunked(scan)
                        };
                        if !done {
                            return;
                        }
                    }
                    Err(bad) => {
                        // hyper reads the body up to here and fails it; the app gets no more.
                        tracing::warn!(client = %self.ctx.forwarding.client, error = bad.why, "malformed chunked request body");
                        self.gate = Gate::Refused;
                        return;
                    }
                },
                Gate::Head if unjudged.is_empty() => return,
                Gate::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let limits = &self.limits;
                    match request_head::read(unjudged, &mut headers, limits) {
                        Head::Partial => return,
                        Head::Refused(refused) => {
                            let from = &self.ctx.forwarding;
                            let bytes = request_head::refuse(from, &self.metrics, refused);
                            self.refusal = Some((bytes, 0));
                            self.gate = Gate::Refused;
                            return;
                        }
                        Head::Parsed(parsed) => {
                            self.released += parsed.len;
                            self.gate = match &parsed.rules {
                                Some(r) if r.upgrade.is_some() => Gate::Open,
                                Some(r) => match r.body {
                                    BodyLength::None => Gate::Head,
                                    BodyLength::Length(0) => Gate::Head,
                                    BodyLength::Length(n) => Gate::Body(n),
                                    BodyLength::Chunked => Gate::Chunked(Chunked::default()),
                                },
                                None => Gate::Head,
                            };
                            self.ctx.push_rules(parsed.rules, parsed.ids);
                        }
                    }
                }
            }
        }
    }
}

impl<S> HeadGate<S> {
    /// Scans chunked-body bytes just read into hyper's buffer (`buf` from `before` on). Bytes
    /// past the body's end are taken back, to be judged as the next head; a malformed body is
    /// taken back whole and the gate refuses. Returns whether hyper got any of the new bytes.
    fn scan_in_place(&mut self, buf: &mut ReadBuf<'_>, before: usize, mut scan: Chunked) -> bool {
        let new = &buf.filled()[before..];
        let input_len = self.carry.len() + new.len();
        let result = if self.carry.is_empty() {
            scan.feed(new)
        } else {
            self.carry.extend_from_slice(new);
            scan.feed(&self.carry)
        };
        match result {
            Err(bad) => {
                tracing::warn!(client = %self.ctx.forwarding.client, error = bad.why, "malformed chunked request body");
                buf.set_filled(before);
                self.carry.clear();
                self.gate = Gate::Refused;
                false
            }
            Ok((settled, true)) => {
                let past_end = (input_len - settled).min(buf.filled().len() - before);
                let end = buf.filled().len() - past_end;
                self.pending.extend_from_slice(&buf.filled()[end..]);
                buf.set_filled(end);
                self.carry.clear();
                self.gate = Gate::Head;
                self.judge();
                end > before
            }
            Ok((settled, false)) => {
                let unsettled = input_len - settled;
                if self.carry.is_empty() {
                    let filled = buf.filled();
                    self.carry
                        .extend_from_slice(&filled[filled.len() - unsettled..]);
                } else {
                    self.carry.drain(..settled);
                }
                self.gate = Gate::Chunked(scan);
                true
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.released > 0 {
                let n = this.released.min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                this.released -= n;
                return Poll::Ready(Ok(()));
            }
            if this.gate == Gate::Refused {
                return Poll::Ready(Ok(()));
            }
            // A body (or a tunnel) with nothing held back is read straight into hyper's buffer,
            // never past the body's end.
            let straight = match this.gate {
                Gate::Body(left) if this.pending.is_empty() => Some(left),
                Gate::Open if this.pending.is_empty() => Some(u64::MAX),
                _ => None,
            };
            if let Some(left) = straight {
                let max = left.min(buf.remaining() as u64) as usize;
                let mut part = buf.take(max);
                ready!(Pin::new(&mut this.stream).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                // SAFETY: `part` is the unfilled part of `buf`, and the read initialised `n` bytes of it.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                if n > 0 {
                    this.ctx.on_bytes_read(n);
                    if let Gate::Body(left) = this.gate {
                        this.gate = if n as u64 == left {
                            Gate::Head
                        } else {
                            Gate::Body(left - n as u64)
                        };
                    }
                }
                return Poll::Ready(Ok(()));
            }
            // A chunked body is read straight in as well, and scanned where it lies.
            if let (Gate::Chunked(scan), true) = (this.gate, this.pending.is_empty()) {
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
                if buf.filled().len() == before {
                    return Poll::Ready(Ok(()));
                }
                this.ctx.on_bytes_read(buf.filled().len() - before);
                if this.scan_in_place(buf, before, scan) {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.pending.reserve(8 * 1024);
            let spare = this.pending.spare_capacity_mut();
            let mut into = ReadBuf::uninit(spare);
            ready!(Pin::new(&mut this.stream).poll_read(cx, &mut into))?;
            let n = into.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            // SAFETY: the read initialised `n` bytes of the spare capacity.
            unsafe { this.pending.set_len(this.pending.len() + n) };
            this.ctx.on_bytes_read(n);
            this.judge();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadGate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.stream).poll_write(cx, buf);
        let n = ready!(this.send.poll(cx, attempt))?;
        this.ctx
            .bytes_written
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        let n = ready!(this.send.poll(cx, attempt))?;
        this.ctx
            .bytes_written
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    /// hyper shuts down after the last response: a refusal goes out first.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some((bytes, written)) = &mut this.refusal {
            while *written < bytes.len() {
                let attempt = Pin::new(&mut this.stream).poll_write(cx, &bytes[*written..]);
                let n = ready!(this.send.poll(cx, attempt))?;
                if n == 0 {
                    break;
                }
                *written += n;
            }
            this.refusal = None;
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

impl ClientSocket for HeadGate<TcpStream> {
    /// The bytes hyper has not taken are those the gate still holds.
    fn into_parts(self) -> (Side, Bytes) {
        (Side::Socket(self.stream), self.pending.freeze())
    }
}

impl ClientSocket for HeadGate<TlsStream<Prefixed<TcpStream>>> {
    /// As for a socket: the gate's buffers go, the TLS stream stays.
    fn into_parts(self) -> (Side, Bytes) {
        (Side::Tls(Box::new(self.stream)), self.pending.freeze())
    }
}
