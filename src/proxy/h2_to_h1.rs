//! HTTP/2 streams without a request body (most of them: `GET`, `HEAD`, `DELETE`) to an
//! HTTP/1.1 app, spoken by the proxy itself as the lean path speaks it: the head written
//! from the checked fields, the response head judged by the same rules ([`crate::upstream::exchange`]),
//! and the body decoded from its HTTP/1.1 framing as it arrives, on the plain connection
//! pool. hyper's client cost a channel, a second state machine and a header map per
//! request (`bench/NOTES.md`). Streams with a body keep going through hyper's client.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::net::TcpStream;

use crate::conn::shared::Shared;
use crate::http::body::Body;
use crate::http::chunked::Chunked;
use crate::http::error::{UpstreamError, NO_RESPONSE_HEADERS};
use crate::http::forwarding::Forwarding;
use crate::http::head::HeadWriter;
use crate::http::rules::{self, Framing, Ids, RequestRules};
use crate::proxy::failure;
use crate::upstream::exchange::{self, Judged};

/// Room kept free in the read buffer for the app's next bytes.
const READ_ROOM: usize = 16 * 1024;

/// Forwards a bodiless stream; every failure becomes the answer every path gives for it.
pub(crate) async fn forward<B>(
    shared: &Arc<Shared>,
    (from, ids): (&Forwarding, &Ids),
    rules: &RequestRules,
    authority: &str,
    req: &Request<B>,
) -> Result<Response<AppBody>, Response<Body>> {
    let mut head = Vec::with_capacity(512);
    write_head(req, rules, authority, (from, ids), &mut head);
    let up = &shared.upstream;
    let mut ubuf = BytesMut::with_capacity(READ_ROOM);
    let exchange = exchange::exchange(up, Instant::now(), &head, rules, &mut ubuf, client_head);
    let fail = |kind: UpstreamError, why: &dyn std::fmt::Display| {
        failure::response(up, &shared.metrics, from.client, kind, why)
    };
    let (app, (parts, framing, reusable, head_len), _) =
        match tokio::time::timeout(up.response_timeout, exchange).await {
            Ok(Ok(found)) => found,
            Ok(Err(f)) => return Err(fail(f.kind, &f.why)),
            Err(_) => {
                let why = NO_RESPONSE_HEADERS;
                return Err(fail(UpstreamError::Timeout, &why));
            }
        };
    ubuf.advance(head_len);
    let mut body = AppBody {
        app: Some(app),
        ubuf,
        framing,
        left: match framing {
            Framing::Length(n) => n,
            _ => 0,
        },
        chunks: Chunked::default(),
        trailers: None,
        reusable,
        ended: false,
        shared: shared.clone(),
        client: from.client,
    };
    body.settle();
    Ok(Response::from_parts(parts, body))
}

/// The head the app gets: the stream's method and path, `Host` from the authority, the
/// fields the rules forward (cookies joined), then the proxy's forwarding headers.
fn write_head<B>(
    req: &Request<B>,
    rules: &RequestRules,
    authority: &str,
    (from, ids): (&Forwarding, &Ids),
    out: &mut Vec<u8>,
) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = HeadWriter::request(out, req.method().as_str(), target);
    let mut field = |name: &[u8], value: &[u8]| head.field(name, value);
    let fields = || {
        req.headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
    };
    let cookies = rules::joined_cookies(fields());
    field(b"host", authority.as_bytes());
    if let Some(joined) = &cookies {
        field(b"cookie", joined);
    }
    for (name, value) in fields() {
        let replaced = name == "host" || (cookies.is_some() && name == "cookie");
        if !replaced && rules.forwards(name, from, ids) {
            field(name.as_bytes(), value);
        }
    }
    for (name, value) in rules::proxy_headers(from, ids) {
        field(name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in rules.hop_headers() {
        field(name.as_bytes(), value.as_bytes());
    }
    head.end();
}

/// The response head an HTTP/2 client gets for the app's judged one: the fields the rules
/// pass on and the one `Content-Length`; HTTP/2 frames the body itself.
fn client_head(judged: Judged<'_>) -> (http::response::Parts, Framing, bool, usize) {
    let r = &judged.rules;
    let mut headers = HeaderMap::with_capacity(judged.fields.len() + 1);
    for h in judged.fields.iter().filter(|h| r.forwards(h.name)) {
        let name = HeaderName::from_bytes(h.name.as_bytes());
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_bytes(h.value)) {
            headers.append(name, value);
        }
    }
    if let Some(n) = r.content_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = judged.status;
    parts.headers = headers;
    (parts, r.framing, r.reusable, judged.head_len)
}

/// The app's response body, decoded from its HTTP/1.1 framing as it arrives. The app's
/// connection goes back to the pool the moment the body has been read whole, which for a
/// small body is before the client has had any of it.
pub(crate) struct AppBody {
    /// The app's connection, until the body has been read.
    app: Option<TcpStream>,
    /// Body bytes read from the app and not yet passed on.
    ubuf: BytesMut,
    framing: Framing,
    /// Bytes still due when framed by `Content-Length`.
    left: u64,
    chunks: Chunked,
    /// The chunked body's trailer fields, passed on after its data.
    trailers: Option<HeaderMap>,
    /// The rules allow the connection to carry another request.
    reusable: bool,
    /// Every byte of the body has been passed on.
    ended: bool,
    shared: Arc<Shared>,
    client: std::net::SocketAddr,
}

/// What the buffered bytes give next.
enum Next {
    Data(Bytes),
    Done,
    More,
}

impl AppBody {
    /// The next body bytes in the buffer, the end, or a need for more.
    fn take(&mut self) -> Result<Next, &'static str> {
        let ubuf = &mut self.ubuf;
        Ok(match self.framing {
            Framing::Empty => Next::Done,
            Framing::Length(_) if self.left == 0 => Next::Done,
            Framing::Length(_) if ubuf.is_empty() => Next::More,
            Framing::Length(_) => {
                let n = self.left.min(ubuf.len() as u64);
                self.left -= n;
                Next::Data(ubuf.split_to(n as usize).freeze())
            }
            Framing::Chunked => match self.chunks.decode(ubuf, &mut |line| {
                add_trailer(&mut self.trailers, line);
            })? {
                (skip, 0, done) => {
                    ubuf.advance(skip);
                    if done {
                        Next::Done
                    } else {
                        Next::More
                    }
                }
                (skip, n, _) => {
                    ubuf.advance(skip);
                    Next::Data(ubuf.split_to(n).freeze())
                }
            },
            Framing::Close if ubuf.is_empty() => Next::More,
            Framing::Close => Next::Data(ubuf.split().freeze()),
        })
    }

    /// Gives the app's connection back once the whole body has been read: to the pool when
    /// it ended exactly where its framing said (more bytes mean the two sides disagree).
    fn settle(&mut self) {
        let read_whole = match self.framing {
            Framing::Empty => true,
            Framing::Length(_) => self.ubuf.len() as u64 >= self.left,
            Framing::Chunked => self.chunks == Chunked::Done,
            Framing::Close => false,
        };
        if !read_whole {
            return;
        }
        if let Some(app) = self.app.take() {
            let exact = match self.framing {
                Framing::Length(_) => self.ubuf.len() as u64 == self.left,
                _ => self.ubuf.is_empty(),
            };
            if self.reusable && exact {
                self.shared.upstream.put_plain(app, Instant::now());
            }
        }
    }

    /// Reads more of the body from the app; `Ok(false)` at its end of stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(app) = &self.app else {
            return Poll::Ready(Ok(false));
        };
        loop {
            if self.ubuf.capacity() - self.ubuf.len() < READ_ROOM / 4 {
                self.ubuf.reserve(READ_ROOM);
            }
            match app.try_read_buf(&mut self.ubuf) {
                Ok(n) => return Poll::Ready(Ok(n > 0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(app.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Logs a body cut short and ends the stream with an error (the client gets a reset).
    fn broken(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        tracing::warn!(client = %self.client, why, "resetting the stream: the app's response body was cut short or malformed");
        self.app = None;
        self.ended = true;
        Poll::Ready(Some(Err(why.into())))
    }
}

/// Adds one checked trailer line (`name: value`) to the trailers passed on.
fn add_trailer(trailers: &mut Option<HeaderMap>, line: &[u8]) {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return;
    };
    let name = HeaderName::from_bytes(&line[..colon]);
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
    if let (Ok(name), Ok(value)) = (name, value) {
        trailers
            .get_or_insert_with(HeaderMap::new)
            .append(name, value);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl HttpBody for AppBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            match this.take() {
                Err(why) => return this.broken(why),
                Ok(Next::Data(data)) => {
                    this.settle();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Next::Done) => {
                    this.settle();
                    if let Some(trailers) = this.trailers.take() {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Ok(Next::More) => match ready!(this.poll_read(cx)) {
                    Ok(true) => {}
                    Ok(false) if this.framing == Framing::Close => {
                        this.app = None;
                        this.ended = true;
                        return Poll::Ready(None);
                    }
                    Ok(false) | Err(_) => {
                        return this.broken("the app closed the connection mid-response")
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.framing {
            Framing::Empty => true,
            Framing::Length(_) => self.left == 0,
            _ => self.ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(_) => SizeHint::with_exact(self.left),
            _ => SizeHint::default(),
        }
    }
}
