//! An HTTP/2 stream's response body as hyper sends it: the stream is counted as open until
//! the body is dropped, the app's HTTP/1.1 connection is driven by it and pooled again after
//! it, trailers are held to the rule for HTTP/2, and each piece h2 has not yet sent on is
//! reported to the connection's `SEND_TIMEOUT` watch.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::conn::send_timeout::Stalls;
use crate::conn::shared::Shared;
use crate::conn::state::ConnCtx;
use crate::http::body::Body;
use crate::http::rules;
use crate::proxy::h2_to_h1::AppBody;
use crate::telemetry::request::Pending;

/// A stream's response body: counted while open, and driving the stream's upstream link when
/// it came from the app over HTTP/1.1; the link goes back to the pool when the body is done.
pub(crate) struct StreamBody {
    /// The client connection, on which the stream is a request in progress until dropped.
    ctx: Arc<ConnCtx>,
    /// The proxy's answer, the app's body through hyper, or the app's body read here.
    body: Either<Body, AppBody>,
    /// The app's connection this body reads from, when it came over pooled HTTP/1.1.
    pub(crate) driven: Option<Arc<ConnCtx>>,
    shared: Arc<Shared>,
    /// The connection's bodies whose last piece h2 still holds.
    stalls: Arc<Stalls>,
    /// Whether this body's last piece is among them.
    handed: bool,
    /// The stream's access line, counting the body as it goes.
    pending: Option<Pending>,
}

impl StreamBody {
    /// An empty body for a stream just opened on `ctx`'s connection, which counts it as open.
    pub(crate) fn open(shared: Arc<Shared>, ctx: Arc<ConnCtx>, stalls: Arc<Stalls>) -> Self {
        ctx.request_started();
        shared.metrics.h2_stream(1);
        StreamBody {
            ctx,
            body: Either::Left(crate::http::body::empty()),
            driven: None,
            shared,
            stalls,
            handed: false,
            pending: None,
        }
    }

    /// Gives the stream its answer's body, and the access line written when it ends.
    pub(crate) fn set(&mut self, body: Either<Body, AppBody>, pending: Option<Pending>) {
        self.body = body;
        self.pending = pending;
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        if let Some(sctx) = &self.driven {
            sctx.upstream.release(&self.shared.upstream);
        }
        if self.handed {
            self.stalls.forget();
        }
        if let Some(pending) = &self.pending {
            pending.finish(&self.ctx.forwarding);
        }
        self.shared.metrics.h2_stream(-1);
        self.ctx.request_finished();
    }
}

impl HttpBody for StreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.handed {
            // h2 asks for more: the last piece went out.
            this.handed = false;
            this.stalls.taken();
        }
        if let Some(sctx) = &this.driven {
            sctx.upstream.poll(cx, &this.shared.upstream, true);
        }
        let mut frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let (Some(Ok(f)), Some(pending)) = (&frame, &mut this.pending) {
            pending.sent(f.data_ref().map_or(0, Bytes::len));
        }
        match frame.as_mut().and_then(|f| f.as_mut().ok()) {
            // The last piece of a body is not counted: the stream ends with it.
            Some(f)
                if f.data_ref().is_some_and(|d| !d.is_empty()) && !this.body.is_end_stream() =>
            {
                this.handed = true;
                this.stalls.handed();
            }
            Some(f) if f.is_trailers() => {
                if let Some(trailers) = f.trailers_mut() {
                    rules::strip_trailers(trailers);
                }
            }
            _ => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
