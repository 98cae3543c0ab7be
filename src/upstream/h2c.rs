//! The app over cleartext HTTP/2 with prior knowledge (`DESTINATION_PROTOCOL=h2c`, or `auto`
//! for HTTP/2 clients): what gRPC needs (trailers, long-lived streams both ways). Requests are
//! multiplexed on one connection, opened (and the app's name resolved) when there is none or
//! the app has closed or sent GOAWAY on it.

use std::sync::Mutex;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::http::error::{ErrorChain, UpstreamError};
use crate::upstream::Upstream;

/// The request body sent to an h2c app: the client's, whichever protocol it came in.
pub(crate) type H2Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Why a request got no response: the kind (for `502`/`504`) and the error itself.
pub(crate) type Failed = (UpstreamError, Box<dyn std::error::Error + Send + Sync>);

/// The shared connection to an h2c app.
#[derive(Default)]
pub(crate) struct H2Upstream {
    conn: Mutex<Option<SendRequest<H2Body>>>,
}

impl H2Upstream {
    /// The open connection, if it can still take requests.
    fn current(&self) -> Option<SendRequest<H2Body>> {
        let slot = self.conn.lock().ok()?;
        slot.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// A new connection, which becomes the shared one.
    async fn open(&self, up: &Upstream) -> Result<SendRequest<H2Body>, Failed> {
        let stream = up
            .connect()
            .await
            .map_err(|e| (UpstreamError::Connect, e.into()))?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| (UpstreamError::Connect, e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %ErrorChain(&e), "h2c upstream connection closed");
            }
        });
        if let Ok(mut slot) = self.conn.lock() {
            *slot = Some(sender.clone());
        }
        Ok(sender)
    }

    /// Sends `req`; `again`, a copy of a bodiless idempotent request, is sent once more on a
    /// fresh connection if the app refused or dropped the first attempt (GOAWAY, reset).
    pub(crate) async fn send(
        &self,
        up: &Upstream,
        req: Request<H2Body>,
        again: Option<Request<H2Body>>,
    ) -> Result<Response<Incoming>, Failed> {
        let mut sender = match self.current() {
            Some(s) => s,
            None => self.open(up).await?,
        };
        let first = match sender.ready().await {
            Ok(()) => sender.send_request(req).await,
            Err(e) => Err(e),
        };
        let e = match first {
            Ok(resp) => return Ok(resp),
            Err(e) => e,
        };
        let Some(req) = again else {
            return Err((UpstreamError::Reset, e.into()));
        };
        tracing::debug!(error = %ErrorChain(&e), "h2c request refused; sending it on a new connection");
        let mut sender = self.open(up).await?;
        sender
            .ready()
            .await
            .map_err(|e| (UpstreamError::Reset, e.into()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| (UpstreamError::Reset, e.into()))
    }
}
