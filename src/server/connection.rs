//! One client connection from accept to close: the PROXY header, the lean path, hyper behind
//! the head gate, the request and keep-alive clocks, the drain, and, after a `101`, the tunnel.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection sits idle, which
//! would close it long before the balancer's 60 s idle timeout. So this task keeps two
//! clocks itself: a short one from the first byte of a request head until its last, and the
//! long keep-alive one while nothing is in flight.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::accept::detect::{self, Detected, Prefixed, Silence};
use crate::accept::proxy_header::read_origin;
use crate::config::{Config, DestinationProtocol};
use crate::conn::shared::Shared;
use crate::conn::shutdown::Watch;
use crate::conn::state::{ConnCtx, Expiry, Port, Tracked};
use crate::h1::head_gate::HeadGate;
use crate::h1::lean::{self, Env, Outcome};
use crate::h2;
use crate::http::body;
use crate::http::forwarding::Forwarding;
use crate::http::health;
use crate::http::redirect;
use crate::http::rules;
use crate::http::Protocol;
use crate::proxy::h2c;
use crate::proxy::hyper_client::{self, Route};
use crate::proxy::tunnel;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::request::Answered;

/// Runs one accepted connection to its end. Never panics on anything the peer sends.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    port: Port,
    permit: OwnedSemaphorePermit,
) {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    shared.metrics.accepted(port == Port::Tls);
    let open = OpenGuard {
        metrics: shared.metrics.clone(),
        _permit: permit,
    };
    let origin = match read_origin(&mut stream, peer, &shared.config).await {
        Ok(origin) => origin,
        Err(refusal) => {
            shared.metrics.refused(&refusal);
            if refusal.quiet() {
                tracing::debug!(%peer, reason = %refusal, "connection closed before a header");
            } else {
                tracing::warn!(%peer, reason = %refusal, "connection refused");
            }
            return;
        }
    };
    let forwarding = Forwarding::new(
        origin.client,
        origin.destination_port,
        shared.config.vpc_endpoint_header.clone(),
        origin.vpce.as_deref(),
    );
    let ctx = Arc::new(ConnCtx::new(forwarding, port, origin.health_only));
    let mut buf = BytesMut::from(origin.leftover);
    if !origin.health_only {
        let config = &shared.config;
        let (idle, head) = (config.keepalive_timeout, config.request_header_timeout);
        match detect::read_until_known(&mut stream, &mut buf, idle, head).await {
            Ok(Detected::Http1) => {}
            Ok(Detected::H2) => {
                let io = Prefixed::new(buf.freeze(), stream);
                h2::server::serve(shared.clone(), ctx, io).await;
                drop(open);
                return;
            }
            Err(Silence::Idle) => {
                tracing::debug!(client = %ctx.forwarding.client, "closing connection: no request");
                return;
            }
            Err(Silence::Stalled) => {
                tracing::warn!(client = %ctx.forwarding.client, "request did not arrive within REQUEST_HEADER_TIMEOUT; closing");
                return;
            }
        }
    }
    let mut hard_stop = Watch::new(&shared.drain.hard_stop);
    // The lean path speaks HTTP/1.1 to the app; with h2c every request goes through hyper.
    let lean = shared.config.destination_protocol != DestinationProtocol::H2c;
    let (stream, leftover) = if port == Port::Tls && !origin.health_only && lean {
        let mut counts = lean::Counts::default();
        let env = Env {
            upstream: &shared.upstream,
            metrics: &shared.metrics,
            config: &shared.config,
            drain: &shared.drain,
            limits: &shared.limits,
        };
        let outcome = tokio::select! {
            biased;
            _ = &mut hard_stop => Outcome::Closed("shutdown deadline (SHUTDOWN_TIMEOUT) reached"),
            outcome = lean::serve(&env, &ctx, stream, buf, &mut counts) => outcome,
        };
        ctx.bytes_read.fetch_add(counts.read, Ordering::Relaxed);
        ctx.bytes_written
            .fetch_add(counts.written, Ordering::Relaxed);
        match outcome {
            Outcome::Handoff(stream, buf) => (stream, buf),
            Outcome::Closed(why) => {
                shared.metrics.client_bytes(counts.read, counts.written);
                tracing::debug!(client = %ctx.forwarding.client, why, "closing connection");
                return;
            }
        }
    } else {
        (stream, buf)
    };
    let io = HeadGate::new(
        stream,
        leftover,
        ctx.clone(),
        shared.metrics.clone(),
        shared.limits.clone(),
        shared.config.send_timeout,
    );
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
    let ended = {
        let config = &shared.config;
        let mut stop = Watch::new(&shared.drain.stop_accepting);
        let mut sleep = pin!(tokio::time::sleep(config.keepalive_timeout));
        let mut graceful = false;
        poll_fn(|cx| {
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
            poll_deadline(cx, &ctx, config, sleep.as_mut())
        })
        .await
    };
    drop(conn);
    drop(hard_stop);
    ctx.upstream.release(&shared.upstream);
    shared.metrics.client_bytes(
        ctx.bytes_read.load(Ordering::Relaxed),
        ctx.bytes_written.load(Ordering::Relaxed),
    );
    if let Err(why) = ended {
        tracing::debug!(client = %ctx.forwarding.client, why, "closing connection");
        return;
    }
    if let Some(pending) = ctx.take_upgrade() {
        // The tunnel holds the connection's slot until it ends.
        tunnel::start::<HeadGate>(&shared, ctx.forwarding.client, pending, open);
    }
}

/// Polls the connection's clocks; `Ready(Err)` when one ran out.
fn poll_deadline(
    cx: &mut Context<'_>,
    ctx: &ConnCtx,
    config: &Config,
    mut sleep: Pin<&mut tokio::time::Sleep>,
) -> Poll<Result<(), &'static str>> {
    let deadline = || ctx.deadline(config.request_header_timeout, config.keepalive_timeout);
    loop {
        if let Some((at, _)) = deadline() {
            if at != sleep.deadline() {
                sleep.as_mut().reset(at);
            }
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match deadline() {
            // Busy: look again after another keep-alive period.
            None => sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + config.keepalive_timeout),
            Some((at, expiry)) if at <= tokio::time::Instant::now() => {
                return Poll::Ready(Err(match expiry {
                    Expiry::RequestHeader => {
                        tracing::warn!(client = %ctx.forwarding.client, "request headers not received within REQUEST_HEADER_TIMEOUT; closing");
                        "request header timeout"
                    }
                    Expiry::KeepAlive => "keep-alive idle timeout",
                }));
            }
            Some(_) => {}
        }
    }
}

/// Counts the connection as open until it ends (tunnel included), holding its
/// `MAX_CONNECTIONS` slot.
struct OpenGuard {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.metrics.closed();
    }
}

/// Routes one request hyper read: health check, redirect, upgrade or forward; then logs it.
async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<Tracked>, Infallible> {
    ctx.request_started();
    // What the head gate decided for this request, in the order hyper reads them.
    let judged = ctx.next_rules();
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut upstream = false;
    let route = Route {
        upstream: &shared.upstream,
        metrics: &shared.metrics,
        config: &shared.config,
        ctx: &ctx,
    };
    let ping = rules::is_ping(method.as_str(), uri.path());
    let resp = if ping {
        health::answer(shared.drain.is_draining())
    } else if ctx.health_only {
        shared.metrics.refused_header_less_request();
        tracing::warn!(client = %ctx.forwarding.client, path = uri.path(), "request without a PROXY header refused (only /ping is answered)");
        hyper_client::closing(body::text(
            StatusCode::BAD_REQUEST,
            "a PROXY protocol header is required\n",
        ))
    } else if ctx.port == Port::Plain {
        redirect::answer(&req)
    } else {
        let h2c = shared.config.destination_protocol == DestinationProtocol::H2c;
        match judged {
            Some(rules) if h2c => {
                upstream = true;
                let h2 = &shared.h2_upstream;
                let authority = (req.headers().get(header::HOST))
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or(&shared.upstream.authority)
                    .to_owned();
                if rules.upgrade.is_some() {
                    h2c::forward_upgrade(route, h2, &rules, &authority, req).await
                } else {
                    h2c::forward(route, h2, &rules, &authority, req, Protocol::Http1).await
                }
            }
            Some(rules) if rules.upgrade.is_some() => {
                upstream = true;
                hyper_client::forward_upgrade(route, &rules, req).await
            }
            Some(rules) => {
                upstream = true;
                hyper_client::forward(route, &rules, req).await
            }
            None => {
                // Cannot happen: every head hyper reads passed the gate first.
                tracing::error!(client = %ctx.forwarding.client, "a request reached hyper without the head gate's rules");
                let mut resp = body::text(StatusCode::BAD_REQUEST, "bad request\n");
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                resp
            }
        }
    };
    Answered {
        from: &ctx.forwarding,
        protocol: Protocol::Http1,
        method: method.as_str(),
        path: uri.path(),
        status: resp.status(),
        elapsed: started.elapsed(),
        upstream,
    }
    .record(&shared.metrics, shared.config.log_health_checks);
    Ok(resp.map(|inner| Tracked { inner, ctx }))
}
