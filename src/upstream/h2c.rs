//! The app over cleartext HTTP/2 with prior knowledge (`DESTINATION_PROTOCOL=h2c`, or `auto`
//! for HTTP/2 clients): what gRPC needs (trailers, long-lived streams both ways). Requests are
//! multiplexed on one connection, opened (and the app's name resolved) when there is none or
//! the app has closed or sent GOAWAY on it.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// Why an extended CONNECT got no answer from the app.
pub(crate) enum Refused {
    /// The app does not accept extended CONNECT (no `SETTINGS_ENABLE_CONNECT_PROTOCOL`).
    Disabled,
    Failed(Failed),
}

/// The shared connection to an h2c app.
#[derive(Default)]
pub(crate) struct H2Upstream {
    conn: Mutex<Option<Link>>,
}

/// One connection to the app: the handle to send on, and whether the app's SETTINGS allow
/// extended CONNECT, which hyper tells only the connection's task.
#[derive(Clone)]
struct Link {
    sender: SendRequest<H2Body>,
    connect_enabled: Arc<AtomicBool>,
}

impl H2Upstream {
    /// The open connection, if it can still take requests.
    fn current(&self) -> Option<Link> {
        let slot = self.conn.lock().ok()?;
        slot.as_ref().filter(|l| !l.sender.is_closed()).cloned()
    }

    /// A new connection, which becomes the shared one.
    async fn open(&self, up: &Upstream) -> Result<Link, Failed> {
        let stream = up
            .connect()
            .await
            .map_err(|e| (UpstreamError::Connect, e.into()))?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| (UpstreamError::Connect, e.into()))?;
        let connect_enabled = Arc::new(AtomicBool::new(false));
        let flag = connect_enabled.clone();
        let mut conn = conn;
        tokio::spawn(async move {
            let ended = poll_fn(|cx| {
                let polled = Pin::new(&mut conn).poll(cx);
                let enabled = conn.is_extended_connect_protocol_enabled();
                flag.store(enabled, Ordering::Relaxed);
                polled
            });
            if let Err(e) = ended.await {
                tracing::debug!(error = %ErrorChain(&e), "h2c upstream connection closed");
            }
        });
        let link = Link {
            sender,
            connect_enabled,
        };
        if let Ok(mut slot) = self.conn.lock() {
            *slot = Some(link.clone());
        }
        Ok(link)
    }

    /// Sends an extended CONNECT (RFC 8441) and returns the app's answer. `Refused::Disabled`
    /// when the app has not allowed extended CONNECT in its SETTINGS: the request is not sent
    /// once that is known, and a refusal of it is read as that once the SETTINGS have come.
    pub(crate) async fn connect(
        &self,
        up: &Upstream,
        req: Request<H2Body>,
    ) -> Result<Response<Incoming>, Refused> {
        let (mut link, fresh) = match self.current() {
            Some(l) => (l, false),
            None => (self.open(up).await.map_err(Refused::Failed)?, true),
        };
        let enabled = |link: &Link| link.connect_enabled.load(Ordering::Relaxed);
        // The app's SETTINGS may still be on their way on a connection just opened.
        if !fresh && !enabled(&link) {
            return Err(Refused::Disabled);
        }
        let sent = match link.sender.ready().await {
            Ok(()) => link.sender.send_request(req).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(resp) => Ok(resp),
            // A refusal comes after the app's SETTINGS, so the flag is settled by now.
            Err(_) if !enabled(&link) => Err(Refused::Disabled),
            Err(e) => Err(Refused::Failed((UpstreamError::Reset, e.into()))),
        }
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
            Some(l) => l.sender,
            None => self.open(up).await?.sender,
        };
        let asked = Instant::now();
        let first = match sender.ready().await {
            Ok(()) => sender.send_request(req).await,
            Err(e) => Err(e),
        };
        let e = match first {
            Ok(resp) => {
                up.timing.answered(asked.elapsed());
                return Ok(resp);
            }
            Err(e) => e,
        };
        let Some(req) = again else {
            return Err((UpstreamError::Reset, e.into()));
        };
        tracing::debug!(error = %ErrorChain(&e), "h2c request refused; sending it on a new connection");
        let mut sender = self.open(up).await?.sender;
        let asked = Instant::now();
        sender
            .ready()
            .await
            .map_err(|e| (UpstreamError::Reset, e.into()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| (UpstreamError::Reset, e.into()))?;
        up.timing.answered(asked.elapsed());
        Ok(resp)
    }
}
