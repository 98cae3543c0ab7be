//! The listener that serves `GET /metrics` (no PROXY header there), as hard as the others: a
//! cap on open connections, a time limit for a request's headers and for idle keep-alive, and
//! a back-off when accepting fails instead of a spin.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::conn::shutdown::Drain;
use crate::telemetry::metrics::Metrics;

/// Open scrape connections at most; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;
/// Time for a scrape request's headers to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A scrape connection idle (or stuck) longer than this is closed.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after a failed accept (out of descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `/metrics` on `listener` until the drain's hard stop.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, drain: Drain) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = drain.hard_stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.hard_stop.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
            std::future::ready(Ok::<_, std::convert::Infallible>(answer(&metrics, &req)))
        });
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        let hard_stop = drain.hard_stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = conn => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                _ = hard_stop.cancelled() => {}
            }
        });
    }
}

/// `200` with the exposition for `GET` (or `HEAD`) `/metrics`, `405` for other methods there,
/// `404` for anything else.
fn answer<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    let method = req.method();
    if req.uri().path() == "/metrics" && method != Method::GET && method != Method::HEAD {
        let mut r = Response::new(Full::new(Bytes::from_static(b"use GET\n")));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else if req.uri().path() == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found; try /metrics\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    }
}
