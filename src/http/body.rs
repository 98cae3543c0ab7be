//! The body types: the response body (the app's, streamed, or a short answer of the proxy's
//! own) and the client's request body on its way to the app.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

/// Either the app's body, passed through as it streams, or a small body the proxy wrote.
pub type Body = Either<Incoming, Full<Bytes>>;

/// No body at all.
pub(crate) fn empty() -> Body {
    Either::Right(Full::new(Bytes::new()))
}

/// A small answer of the proxy's own.
pub fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    with_type(status, text, "text/plain; charset=utf-8")
}

/// A small HTML answer, for the redirect page browsers may show.
pub fn html(status: StatusCode, html: &'static str) -> Response<Body> {
    with_type(status, html, "text/html")
}

fn with_type(status: StatusCode, body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A request body's bytes, counted as they go to the app and read by the access line when
/// the response ends. Shared, since the body goes to the app's connection task.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyBytes(Arc<AtomicU64>);

impl BodyBytes {
    /// Counts `frame` if it is data.
    pub(crate) fn add(&self, frame: &Frame<Bytes>) {
        if let Some(data) = frame.data_ref() {
            self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The client's body on its way to the app: its first frame was read before the request was
/// sent, so a body malformed from its first byte is answered `400` without reaching the app.
pub(crate) struct RequestBody {
    pub(crate) first: Option<Frame<Bytes>>,
    pub(crate) rest: Limited<Incoming>,
    /// Where its bytes are counted for the access line.
    pub(crate) counted: Option<BodyBytes>,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match this.first.take() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut this.rest).poll_frame(cx),
        };
        if let (Poll::Ready(Some(Ok(f))), Some(counted)) = (&frame, &this.counted) {
            counted.add(f);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let first = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map_or(0, |d| d.len() as u64);
        // Upper first: `set_lower` asserts it does not exceed the current upper bound.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint.set_lower(rest.lower().saturating_add(first));
        hint
    }
}
