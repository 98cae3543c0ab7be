//! A TLS stream over rustls's unbuffered connection, holding only the buffers it is using.
//!
//! tokio-rustls wraps rustls's buffered connection, whose record reader keeps a 4 KiB buffer
//! for the whole life of a connection, idle or not. Here the stream owns its three buffers
//! (TLS bytes read, plaintext decrypted and not yet taken, TLS bytes not yet sent) and lets
//! each go when it is empty and the connection waits on its peer, so an idle TLS WebSocket
//! costs rustls's state and nothing more.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use super::hello::Hello;
use super::outgoing::Out;

/// Bytes asked of the socket per read: a full TLS record and its header.
const READ_CHUNK: usize = 16 * 1024 + 256;

/// Most TLS bytes held at once: the largest handshake message rustls accepts (64 KiB, joined
/// across records) and a record beyond it. More means a peer that is not speaking TLS.
const MAX_INCOMING: usize = 64 * 1024 + READ_CHUNK;

/// Plaintext encrypted per write: enough for a few full records in one `write`, bounded so
/// one write cannot make the pending output much larger than [`super::SEND_BUFFER`].
const MAX_WRITE: usize = 64 * 1024;

/// Pieces of a vectored write that together are smaller than this are joined into one record.
const JOIN_BELOW: usize = 4096;

/// A server-side TLS stream whose handshake has completed.
pub(crate) struct TlsStream<IO> {
    io: IO,
    conn: UnbufferedServerConnection,
    /// TLS bytes read and not yet processed: at most part of a record once the handshake is done.
    incoming: BytesMut,
    /// Decrypted bytes the reader has not taken yet.
    plain: BytesMut,
    /// TLS bytes made and not yet written to the socket: `outgoing[sent..made]`. The vector
    /// only grows while the connection is busy, so it is not zeroed again for every write.
    outgoing: Vec<u8>,
    sent: usize,
    made: usize,
    /// The peer sent close_notify, or its socket ended: reads return end of stream.
    read_done: bool,
    /// close_notify is made: nothing more may be encrypted.
    close_sent: bool,
    /// rustls reported a fatal error: it must not be asked anything again.
    failed: bool,
}

/// What one pass over the connection's state found.
enum Step {
    /// Something moved (plaintext decrypted, a handshake message made, the peer closed): look
    /// again.
    Moved,
    /// The connection needs more bytes from the peer to go on.
    NeedsBytes,
    /// The handshake is done and nothing is waiting: application data may be sent.
    Open,
    /// This many bytes of the plaintext offered were encrypted (0 for close_notify).
    Encrypted(usize),
    /// Both sides have sent close_notify.
    Closed,
}

/// What a pass may encrypt once the connection allows it.
#[derive(Clone, Copy)]
enum Offer<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Runs the server's side of a handshake on `io`; the stream once it is done, and the name
    /// the client asked for (SNI).
    pub(crate) async fn accept(
        io: IO,
        config: Arc<ServerConfig>,
    ) -> io::Result<(TlsStream<IO>, Option<String>)> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = TlsStream {
            io,
            conn,
            incoming: BytesMut::new(),
            plain: BytesMut::new(),
            outgoing: Vec::new(),
            sent: 0,
            made: 0,
            read_done: false,
            close_sent: false,
            failed: false,
        };
        let mut hello = Hello::Reading(Box::default());
        std::future::poll_fn(|cx| stream.poll_handshake(cx, &mut hello)).await?;
        let sni = match hello {
            Hello::Read(sni) => sni,
            Hello::Reading(_) => None,
        };
        Ok((stream, sni))
    }

    /// The connection's negotiated parameters and the client's certificates.
    pub(crate) fn connection(&self) -> &UnbufferedServerConnection {
        &self.conn
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>, hello: &mut Hello) -> Poll<io::Result<()>> {
        loop {
            match self.pass(cx, Offer::Nothing, None)? {
                Step::Moved => {
                    if self.read_done {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Step::NeedsBytes => {
                    // The peer waits for what was made before it answers.
                    ready!(self.poll_send(cx))?;
                    let before = self.incoming.len();
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    hello.read(&self.incoming[before..]);
                }
                Step::Open => {
                    ready!(self.poll_send(cx))?;
                    return Poll::Ready(Ok(()));
                }
                Step::Encrypted(_) | Step::Closed => {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                }
            }
        }
    }

    /// One pass of rustls's state machine over the bytes read: decrypted data goes to `read`
    /// as far as it fits and to `plain` after that; handshake messages and alerts go to
    /// `outgoing`; `offer` is encrypted if the connection is open.
    fn process(
        &mut self,
        offer: Offer<'_>,
        mut read: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<Step> {
        if self.failed {
            return Err(io::Error::other("the TLS connection failed earlier"));
        }
        let TlsStream {
            conn,
            incoming,
            plain,
            outgoing,
            made,
            read_done,
            close_sent,
            failed,
            ..
        } = self;
        let mut out = Out {
            buf: outgoing,
            made,
        };
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(incoming);
        let step = match state {
            Err(e) => {
                incoming.advance(discard);
                self.failed = true;
                self.queue_alert();
                return Err(tls_error(e));
            }
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                while let Some(record) = records.next_record() {
                    let record = match record {
                        Ok(record) => record,
                        Err(e) => {
                            incoming.advance(discard);
                            *failed = true;
                            return Err(tls_error(e));
                        }
                    };
                    discard += record.discard;
                    let mut payload = record.payload;
                    if let Some(buf) = read.as_deref_mut() {
                        let n = payload.len().min(buf.remaining());
                        buf.put_slice(&payload[..n]);
                        payload = &payload[n..];
                    }
                    plain.extend_from_slice(payload);
                }
                Step::Moved
            }
            Ok(ConnectionState::EncodeTlsData(mut message)) => {
                out.encode(|o| message.encode(o))
                    .map_err(io::Error::other)?;
                Step::Moved
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                // `outgoing` holds the messages in order and goes out before anything made
                // later, so for rustls they are sent.
                transmit.done();
                Step::Moved
            }
            Ok(ConnectionState::BlockedHandshake) => Step::NeedsBytes,
            Ok(ConnectionState::PeerClosed) => {
                *read_done = true;
                Step::Moved
            }
            Ok(ConnectionState::Closed) => Step::Closed,
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match offer {
                Offer::Nothing => Step::Open,
                Offer::Data(_) | Offer::CloseNotify if *close_sent => {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                Offer::Data(data) => {
                    let data = &data[..data.len().min(MAX_WRITE)];
                    out.encrypt(|o| traffic.encrypt(data, o))?;
                    Step::Encrypted(data.len())
                }
                Offer::CloseNotify => {
                    out.encrypt(|o| traffic.queue_close_notify(o))?;
                    *close_sent = true;
                    Step::Encrypted(0)
                }
            },
            Ok(_) => {
                // Early data is not enabled, and no other state exists in this rustls.
                incoming.advance(discard);
                return Err(io::Error::other("unexpected TLS state"));
            }
        };
        incoming.advance(discard);
        Ok(step)
    }

    /// [`Self::process`], and on a fatal error one try at sending rustls's alert, so the peer
    /// learns why (a handshake with no version in common, a bad record).
    fn pass(
        &mut self,
        cx: &mut Context<'_>,
        offer: Offer<'_>,
        read: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<Step> {
        let step = self.process(offer, read);
        if step.is_err() {
            let _ = self.poll_send(cx);
        }
        step
    }

    /// After a fatal error rustls has queued an alert for the peer: moves it to `outgoing`,
    /// for whatever write comes next (the connection is about to close either way).
    fn queue_alert(&mut self) {
        // rustls remembers where it is in `incoming`, so it is given the same bytes again; the
        // alert comes out before it looks at them.
        let status = self.conn.process_tls_records(&mut self.incoming);
        let discard = status.discard;
        if let Ok(ConnectionState::EncodeTlsData(mut message)) = status.state {
            let mut out = Out {
                buf: &mut self.outgoing,
                made: &mut self.made,
            };
            let _ = out.encode(|o| message.encode(o));
        }
        self.incoming.advance(discard);
    }

    /// Reads what the socket has into `incoming`; 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message larger than the buffer allows",
            )));
        }
        if self.incoming.capacity() - self.incoming.len() < READ_CHUNK / 2 {
            self.incoming.reserve(READ_CHUNK);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.incoming)
    }

    /// Writes `outgoing` to the socket; ready once all of it is written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.made {
            let unsent = &self.outgoing[self.sent..self.made];
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, unsent))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        self.made = 0;
        Poll::Ready(Ok(()))
    }

    /// Encrypts as much of `data` as one pass allows into `outgoing`: how much it took.
    fn seal(&mut self, cx: &mut Context<'_>, data: &[u8]) -> io::Result<usize> {
        loop {
            match self.pass(cx, Offer::Data(data), None)? {
                Step::Encrypted(n) => return Ok(n),
                Step::Moved => {}
                Step::NeedsBytes | Step::Open | Step::Closed => {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
            }
        }
    }

    /// Lets the buffers go that hold nothing, while the connection waits on its peer.
    fn release_idle(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = BytesMut::new();
        }
        if self.plain.is_empty() {
            self.plain = BytesMut::new();
        }
        if self.made == 0 {
            self.outgoing = Vec::new();
        }
    }
}

/// A rustls error as tokio-rustls gives it: `InvalidData` carrying the error.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

mod async_io;

#[cfg(test)]
mod tests;
