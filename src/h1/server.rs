//! hyper's HTTP/1.1 server for what the lean path hands over (requests with a body, upgrades,
//! HTTP/1.0, `Expect`, absolute-form targets, and what follows them), every byte it reads
//! passing the head gate; and the service that routes each request it reads.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection sits idle, which
//! would close it long before the balancer's 60 s idle timeout, so the connection's own
//! [`Clocks`] run here instead.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{DestinationProtocol, Port};
use crate::conn::self_wake::SelfWake;
use crate::conn::shared::Shared;
use crate::conn::shutdown::Watch;
use crate::conn::state::{ConnCtx, PendingUpgrade, Tracked};
use crate::h1::head_gate::HeadGate;
use crate::http::body::{self, BodyBytes};
use crate::http::clocks::{Clocks, Expiry};
use crate::http::rules::{BodyLength, Ids};
use crate::http::{health, redirect, rules, Protocol};
use crate::proxy::h2c;
use crate::proxy::hyper_client::{self, Route};
use crate::telemetry::request::Answered;

/// Serves the connection until it closes; `Ok` with the upgrade the app accepted, if any, for
/// the tunnel; `Err` with why it was cut (a clock, the drain's deadline).
pub(crate) async fn serve<S>(
    shared: &Arc<Shared>,
    ctx: &Arc<ConnCtx>,
    io: HeadGate<S>,
    clocks: &mut Clocks,
    hard_stop: &mut Watch<'_>,
) -> Result<Option<PendingUpgrade>, &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let (shared, ctx) = (shared.clone(), ctx.clone());
        service_fn(move |req| handle(shared.clone(), ctx.clone(), req))
    };
    // Boxed so that its state is freed when it ends, not kept for a tunnel's whole life.
    let mut conn = Box::pin(
        shared
            .http
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades(),
    );
    let mut stop = Watch::new(&shared.drain.stop_accepting);
    let mut graceful = false;
    let ended = SelfWake::new(poll_fn(|cx| {
        if hard_stop.poll_set(cx) {
            return Poll::Ready(Err("shutdown deadline (SHUTDOWN_TIMEOUT) reached"));
        }
        if !graceful && stop.poll_set(cx) {
            conn.as_mut().graceful_shutdown();
            graceful = true;
        }
        // The upstream side first (a response may have arrived), then the client side,
        // then the upstream side again to send what the client side just handed it.
        ctx.upstream.poll(cx, &shared.upstream, ctx.busy());
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            if let Err(e) = result {
                tracing::debug!(client = %ctx.forwarding.client, error = %e, "connection ended with an error");
            }
            return Poll::Ready(Ok(()));
        }
        ctx.upstream.poll(cx, &shared.upstream, ctx.busy());
        clocks.poll_expired(cx, ctx.phase()).map(|expiry| {
            Err(match expiry {
                Expiry::RequestHeader => {
                    tracing::warn!(client = %ctx.forwarding.client, "request headers not received within REQUEST_HEADER_TIMEOUT; closing");
                    "request header timeout"
                }
                Expiry::KeepAlive => "keep-alive idle timeout",
            })
        })
    }))
    .await;
    drop(conn);
    ctx.upstream.release(&shared.upstream);
    shared.metrics.client_bytes(
        ctx.bytes_read.load(Ordering::Relaxed),
        ctx.bytes_written.load(Ordering::Relaxed),
    );
    ended.map(|()| ctx.take_upgrade())
}

/// Routes one request hyper read: health check, redirect, upgrade or forward; then counts it,
/// gives the client its request id, and leaves its access line to the end of its body.
async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<Tracked>, Infallible> {
    ctx.request_started();
    // What the head gate decided for this request, in the order hyper reads them.
    let (judged, ids) = ctx.next_rules();
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let header = |name| req.headers().get(name).cloned();
    let (host, user_agent) = (header(header::HOST), header(header::USER_AGENT));
    let received = (judged.as_ref())
        .filter(|r| r.body != BodyLength::None)
        .map(|_| BodyBytes::default());
    let mut upstream = false;
    let resp = if rules::is_ping(method.as_str(), uri.path()) {
        health::answer(shared.drain.ping_fails())
    } else if ctx.health_only {
        shared.metrics.refused_header_less_request();
        tracing::warn!(client = %ctx.forwarding.client, path = uri.path(), "request without a PROXY header refused (only /ping is answered)");
        hyper_client::closing(body::text(
            StatusCode::BAD_REQUEST,
            "a PROXY protocol header is required\n",
        ))
    } else if ctx.port == Port::Plain {
        redirect::answer(&req)
    } else if let Some(rules) = judged {
        upstream = true;
        let asked = Asked {
            rules: &rules,
            ids: &ids,
            received: received.as_ref(),
        };
        forward(&shared, &ctx, asked, req).await
    } else {
        // Cannot happen: every head hyper reads passed the gate first.
        tracing::error!(client = %ctx.forwarding.client, "a request reached hyper without the head gate's rules");
        hyper_client::closing(body::text(StatusCode::BAD_REQUEST, "bad request\n"))
    };
    // From SIGTERM on, each response ends its connection and says so (the lean path does the
    // same): the client's next request goes to another target, never into a closing socket.
    let mut resp = if shared.drain.is_draining() && resp.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        hyper_client::closing(resp)
    } else {
        resp
    };
    ids.stamp(resp.headers_mut());
    fn text(v: &Option<header::HeaderValue>) -> Option<&str> {
        v.as_ref().and_then(|v| v.to_str().ok())
    }
    let pending = Answered {
        from: &ctx.forwarding,
        protocol: Protocol::Http1,
        method: method.as_str(),
        path: uri.path(),
        host: text(&host),
        user_agent: text(&user_agent),
        ids: &ids,
        status: resp.status(),
        elapsed: started.elapsed(),
        upstream,
    }
    .pending(
        &shared.metrics,
        shared.config.log_health_checks,
        started,
        received,
    );
    Ok(resp.map(|inner| Tracked {
        inner,
        ctx,
        pending,
    }))
}

/// What the head gate decided about a request hyper forwards.
struct Asked<'a> {
    rules: &'a rules::RequestRules,
    ids: &'a Ids,
    /// Counts its body, when it has one.
    received: Option<&'a BodyBytes>,
}

/// Sends a judged request to the app as `DESTINATION_PROTOCOL` says.
fn forward<'a>(
    shared: &'a Shared,
    ctx: &'a ConnCtx,
    asked: Asked<'a>,
    req: Request<Incoming>,
) -> impl Future<Output = Response<body::Body>> + 'a {
    let rules = asked.rules;
    let route = Route {
        upstream: &shared.upstream,
        metrics: &shared.metrics,
        config: &shared.config,
        ctx,
        ids: asked.ids,
        received: asked.received,
    };
    async move {
        if shared.config.destination_protocol == DestinationProtocol::H2c {
            let h2 = &shared.h2_upstream;
            let authority = (req.headers().get(header::HOST))
                .and_then(|h| h.to_str().ok())
                .unwrap_or(&shared.upstream.authority)
                .to_owned();
            return if rules.upgrade.is_some() {
                h2c::forward_upgrade(route, h2, rules, &authority, req).await
            } else {
                h2c::forward(route, h2, rules, &authority, req, Protocol::Http1).await
            };
        }
        if rules.upgrade.is_some() {
            hyper_client::forward_upgrade(route, rules, req).await
        } else {
            hyper_client::forward(route, rules, req).await
        }
    }
}
