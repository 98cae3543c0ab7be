//! HTTP/2 clients: after the PROXY header, a connection that starts with the HTTP/2 preface (an
//! NLB TLS listener forwarding a client that negotiated h2) is served by hyper's HTTP/2 server.
//! Each stream is held to the rules every HTTP/1.1 request is: the same checks, forwarding
//! headers, `/ping`, redirect, timeouts, limits, access line and metrics. Streams reach the app
//! over pooled HTTP/1.1 or over h2c (`DESTINATION_PROTOCOL`); WebSockets arrive as extended
//! CONNECT (RFC 8441) and go to the app as an HTTP/1.1 upgrade.
//!
//! What bounds a connection: `H2_MAX_STREAMS` concurrent streams, fixed flow-control windows
//! (so a client that never reads holds at most a window per stream, and only until
//! `SEND_TIMEOUT`), `MAX_HEADER_BYTES` for the header list, h2's limits on reset streams
//! (rapid reset) and CONTINUATION frames, and [`crate::h2::guard`]'s on PING and SETTINGS floods; a
//! client that trips one gets GOAWAY and a warning.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::{Body as HttpBody, Incoming};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::accept::detect::Prefixed;
use crate::config::{Config, DestinationProtocol};
use crate::conn::send_timeout::{self, StallWatch, Stalls};
use crate::conn::shared::Shared;
use crate::conn::shutdown::Watch;
use crate::conn::state::{ConnCtx, Port};
use crate::h1::request_head::log_refusal;
use crate::h2::body::StreamBody;
use crate::h2::guard::{Guarded, Verdict, CONTROL_FRAMES_PER_SECOND};
use crate::h2::streams::{Inbox, Streams};
use crate::h2::websocket;
use crate::http::body::{self, Body};
use crate::http::error::ErrorChain;
use crate::http::health;
use crate::http::redirect;
use crate::http::rules;
use crate::http::rules::BodyLength;
use crate::http::Protocol;
use crate::proxy::h2_to_h1;
use crate::proxy::h2_to_h1::AppBody;
use crate::proxy::h2c;
use crate::proxy::hyper_client::{self, Route};
use crate::telemetry::request::Answered;

/// Flow-control window per stream: what a client that never reads can make the proxy hold.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Flow-control window per connection, shared by its streams.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Bytes buffered for sending per stream before the app is read no further.
const SEND_BUFFER: usize = 256 * 1024;
/// Streams a client may open and reset before the server has seen them (CVE-2023-44487).
const PENDING_RESETS: usize = 20;
/// After a GOAWAY for an expired clock, how long a client has to let the connection go (the
/// graceful GOAWAY waits for a PING round trip that a silent client never makes).
const GOAWAY_GRACE: Duration = Duration::from_secs(2);
/// Streams the proxy may reset for a client's errors before it sends GOAWAY.
const LOCAL_ERROR_RESETS: usize = 256;

/// hyper's HTTP/2 server settings for one connection, whose streams `exec` takes.
fn builder(config: &Config, exec: Inbox) -> http2::Builder<Inbox> {
    let mut b = http2::Builder::new(exec);
    b.timer(TokioTimer::new())
        .max_concurrent_streams(config.h2_max_streams)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .adaptive_window(false)
        .max_send_buf_size(SEND_BUFFER)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(PENDING_RESETS)
        .max_local_error_reset_streams(LOCAL_ERROR_RESETS);
    // Chrome uses WebSockets over HTTP/2 wherever this is advertised, so only then.
    if config.upgrade_protocols.iter().any(|p| p == "websocket") {
        b.enable_connect_protocol();
    }
    b
}

/// Serves one HTTP/2 client connection to its end; `io` replays the bytes already read.
pub(crate) async fn serve(shared: Arc<Shared>, ctx: Arc<ConnCtx>, io: Prefixed<TcpStream>) {
    shared.metrics.h2_connection(1);
    let _open = Gauge(&shared);
    let started = Arc::new(AtomicBool::new(false));
    let stalls = Arc::new(Stalls::default());
    let svc = {
        let (shared, ctx, started) = (shared.clone(), ctx.clone(), started.clone());
        let stalls = stalls.clone();
        service_fn(move |req| {
            started.store(true, Ordering::Relaxed);
            let out = StreamBody::open(shared.clone(), ctx.clone(), stalls.clone());
            stream(shared.clone(), ctx.clone(), out, req)
        })
    };
    let config = &shared.config;
    let mut stall = StallWatch::new(config.send_timeout, stalls);
    let mut streams = Streams::default();
    let h2 = builder(config, streams.executor());
    let verdict = Arc::new(Verdict::default());
    let io = TokioIo::new(Guarded::new(io, verdict.clone()));
    let mut conn = pin!(h2.serve_connection(io, svc));
    let mut stop = Watch::new(&shared.drain.stop_accepting);
    let mut hard_stop = Watch::new(&shared.drain.hard_stop);
    // REQUEST_HEADER_TIMEOUT: for the first stream's headers; KEEPALIVE_TIMEOUT: while no
    // stream is open.
    let first = tokio::time::Instant::now() + config.request_header_timeout;
    let mut sleep = pin!(tokio::time::sleep_until(first));
    let mut graceful = false;
    let mut expired = false;
    let mut cut = false;
    let client = ctx.forwarding.client;
    let ended = poll_fn(|cx| {
        if hard_stop.poll_set(cx) {
            return Poll::Ready(Ok(()));
        }
        if !graceful && stop.poll_set(cx) {
            // GOAWAY with the last stream id; open streams finish within SHUTDOWN_TIMEOUT.
            conn.as_mut().graceful_shutdown();
            graceful = true;
        }
        streams.poll_running(cx);
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        streams.poll(cx);
        if !cut {
            let why = if let Some(kind) = verdict.flood() {
                Some(format!("{kind} flood, more than {CONTROL_FRAMES_PER_SECOND} in a second"))
            } else if let Poll::Ready(limit) = stall.poll(cx) {
                verdict.stalled();
                Some(send_timeout::why(limit))
            } else {
                None
            };
            if let Some(why) = why {
                // The guard has the GOAWAY ready; h2's next write sends it.
                tracing::warn!(%client, reason = "ENHANCE_YOUR_CALM", "HTTP/2 connection closed with GOAWAY: {why}");
                cut = true;
                conn.as_mut().graceful_shutdown();
                (graceful, expired) = (true, true);
                sleep.as_mut().reset(tokio::time::Instant::now() + GOAWAY_GRACE);
                cx.waker().wake_by_ref();
            }
        }
        if expired {
            // The GOAWAY's grace is over: close whatever the client still holds open.
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
        } else if !graceful {
            let deadline = if !started.load(Ordering::Relaxed) {
                Some(first)
            } else {
                ctx.deadline(config.request_header_timeout, config.keepalive_timeout)
                    .map(|(at, _)| at)
            };
            if let Some(at) = deadline {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    if !started.load(Ordering::Relaxed) {
                        tracing::warn!(%client, "no HTTP/2 request within REQUEST_HEADER_TIMEOUT; closing");
                    }
                    conn.as_mut().graceful_shutdown();
                    graceful = true;
                    expired = true;
                    sleep.as_mut().reset(tokio::time::Instant::now() + GOAWAY_GRACE);
                    cx.waker().wake_by_ref();
                }
            }
        }
        Poll::Pending
    })
    .await;
    match ended {
        Err(e) if !cut => report(client, &e),
        _ => {}
    }
}

/// Says why a connection ended with an error: a warning when the proxy sent GOAWAY for the
/// client's misbehaviour (a flood, an oversized header list, a protocol error), `debug` when
/// the client simply went away.
fn report(client: std::net::SocketAddr, e: &hyper::Error) {
    let h2 = crate::http::error::causes(e).find_map(|c| c.downcast_ref::<h2::Error>());
    match h2 {
        Some(h2) if h2.is_go_away() && !h2.is_remote() => {
            let reason = h2.reason().map(|r| format!("{r:?}")).unwrap_or_default();
            tracing::warn!(%client, reason, error = %ErrorChain(e), "HTTP/2 connection closed with GOAWAY");
        }
        _ => tracing::debug!(%client, error = %ErrorChain(e), "HTTP/2 connection ended"),
    }
}

/// Counts a connection as open until dropped.
struct Gauge<'a>(&'a Shared);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.metrics.h2_connection(-1);
    }
}

/// Serves one stream: `/ping`, the plain port's redirect, or the app; then its access line.
async fn stream(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    // Ends the stream's accounting however it ends, a reset before the answer included.
    mut out: StreamBody,
    req: Request<Incoming>,
) -> Result<Response<StreamBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let ping = rules::is_ping(method.as_str(), &path);
    let mut upstream = false;
    let resp = if ping {
        health::answer(shared.drain.is_draining()).map(Either::Left)
    } else if ctx.port == Port::Plain {
        redirect::answer(&req).map(Either::Left)
    } else {
        upstream = true;
        to_app(&shared, &ctx, req, &mut out.driven).await
    };
    // The app's answers on the body-less path were built for HTTP/2 (`h2_to_h1::client_head`).
    let resp = match resp.body() {
        Either::Left(_) => for_h2(resp),
        Either::Right(_) => resp,
    };
    Answered {
        from: &ctx.forwarding,
        protocol: Protocol::H2,
        method: method.as_str(),
        path: &path,
        status: resp.status(),
        elapsed: started.elapsed(),
        upstream,
    }
    .record(&shared.metrics, shared.config.log_health_checks);
    Ok(resp.map(|body| {
        out.set(body);
        out
    }))
}

/// Checks the stream by the rules and forwards it as `DESTINATION_PROTOCOL` says.
async fn to_app(
    shared: &Arc<Shared>,
    ctx: &Arc<ConnCtx>,
    mut req: Request<Incoming>,
    driven: &mut Option<Arc<ConnCtx>>,
) -> Response<Either<Body, AppBody>> {
    let config = &shared.config;
    let protocol = req.extensions().get::<hyper::ext::Protocol>();
    let fields = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()));
    let checked = rules::check_h2_request(
        req.method().as_str(),
        req.uri(),
        protocol.map(|p| p.as_str()),
        fields,
        req.body().is_end_stream(),
        &config.upgrade_protocols,
    );
    let checked = match checked {
        Ok(c) => c,
        Err(refusal) => {
            log_refusal(&ctx.forwarding, &refusal);
            return body::text(refusal.status, refusal.reason).map(Either::Left);
        }
    };
    let (rules, authority) = (&checked.rules, checked.authority.as_str());
    let http1 = config.destination_protocol == DestinationProtocol::Http1;
    if http1 && rules.upgrade.is_none() && rules.body == BodyLength::None {
        return match h2_to_h1::forward(shared, &ctx.forwarding, rules, authority, &req).await {
            Ok(resp) => resp.map(Either::Right),
            Err(answer) => answer.map(Either::Left),
        };
    }
    // The futures of the paths below are boxed: inline, they made every stream's future 9 KB
    // rather than 2.7 KB, copied each time hyper hands a stream on, for the few that take them.
    // Each stream drives its own upstream link: streams run in tasks of their own.
    let sctx = Arc::new(ConnCtx::new(ctx.forwarding.clone(), ctx.port, false));
    let route = Route {
        upstream: &shared.upstream,
        metrics: &shared.metrics,
        config,
        ctx: &sctx,
    };
    if rules.upgrade.is_some() {
        let resp = Box::pin(websocket::forward(
            shared, &sctx, route, rules, authority, req,
        ))
        .await;
        return resp.map(Either::Left);
    }
    if !http1 {
        let resp = Box::pin(h2c::forward(
            route,
            &shared.h2_upstream,
            rules,
            authority,
            req,
            Protocol::H2,
        ))
        .await;
        return resp.map(Either::Left);
    }
    let headers = req.headers_mut();
    if let Ok(host) = HeaderValue::from_str(authority) {
        headers.insert(header::HOST, host);
    }
    let fields = headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
    if let Some(joined) = rules::joined_cookies(fields) {
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
            headers.insert(header::COOKIE, value);
        }
    }
    let resp = Box::pin(drive(
        shared,
        &sctx,
        hyper_client::forward(route, rules, req),
    ))
    .await;
    *driven = Some(sctx);
    resp.map(Either::Left)
}

/// Runs `fut` while moving the stream's upstream link along, as a connection task does.
async fn drive<F: Future>(shared: &Shared, sctx: &ConnCtx, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        sctx.upstream.poll(cx, &shared.upstream, true);
        let out = fut.as_mut().poll(cx);
        sctx.upstream.poll(cx, &shared.upstream, true);
        out
    })
    .await
}

/// Removes what HTTP/2 forbids from an answer built for HTTP/1.1 (`Connection`, framing).
fn for_h2<B>(mut resp: Response<B>) -> Response<B> {
    let headers = resp.headers_mut();
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    resp
}
