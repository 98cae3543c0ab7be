//! One HTTP/2 stream, served in its connection's task: `/ping`, the plain port's redirect, or
//! the app by `DESTINATION_PROTOCOL`, each checked by the same rules as an HTTP/1.1 request;
//! then its record.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::{Body as HttpBody, Incoming};

use crate::config::DestinationProtocol;
use crate::config::Port;
use crate::conn::shared::Shared;
use crate::conn::state::ConnCtx;
use crate::h1::request_head::log_refusal;
use crate::h2::body::StreamBody;
use crate::h2::websocket;
use crate::http::body::{self, Body, BodyBytes};
use crate::http::health;
use crate::http::redirect;
use crate::http::rules;
use crate::http::rules::{BodyLength, Ids};
use crate::http::Protocol;
use crate::proxy::h2_to_h1;
use crate::proxy::h2_to_h1::AppBody;
use crate::proxy::h2c;
use crate::proxy::hyper_client::{self, Route};
use crate::telemetry::request::Answered;

/// Serves one stream: `/ping`, the plain port's redirect, or the app; then counts it, gives
/// the client its request id, and leaves its access line to the end of its body.
pub(crate) async fn stream(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    // Ends the stream's accounting however it ends, a reset before the answer included.
    mut out: StreamBody,
    req: Request<Incoming>,
) -> Result<Response<StreamBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    // Shared views (reference counts, not copies), kept past the request's move to the app
    // for the access line, which copies what it keeps.
    let uri = req.uri().clone();
    let path = uri.path();
    let fields = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()));
    let ids = shared.limits.ids.judge(fields);
    let header = |name| req.headers().get(name).cloned();
    let (host_header, user_agent) = (header(header::HOST), header(header::USER_AGENT));
    let received = (!req.body().is_end_stream()).then(BodyBytes::default);
    let ping = rules::is_ping(method.as_str(), path);
    let mut upstream = false;
    let resp = if ping {
        health::answer(shared.drain.ping_fails()).map(Either::Left)
    } else if ctx.port == Port::Plain {
        redirect::answer(&req).map(Either::Left)
    } else {
        upstream = true;
        let asked = (&ids, received.as_ref());
        to_app(&shared, &ctx, req, asked, &mut out.driven).await
    };
    // The app's answers on the body-less path were built for HTTP/2 (`h2_to_h1::client_head`).
    let mut resp = match resp.body() {
        Either::Left(_) => for_h2(resp),
        Either::Right(_) => resp,
    };
    ids.stamp(resp.headers_mut());
    let host = uri.authority().map(|a| a.as_str()).or(text(&host_header));
    let pending = Answered {
        from: &ctx.forwarding,
        protocol: Protocol::H2,
        method: method.as_str(),
        path,
        host,
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
    Ok(resp.map(|body| {
        out.set(body, pending);
        out
    }))
}

/// A header's value as text, when it is.
fn text(value: &Option<HeaderValue>) -> Option<&str> {
    value.as_ref().and_then(|v| v.to_str().ok())
}

/// Checks the stream by the rules and forwards it as `DESTINATION_PROTOCOL` says.
async fn to_app(
    shared: &Arc<Shared>,
    ctx: &Arc<ConnCtx>,
    mut req: Request<Incoming>,
    (ids, received): (&Ids, Option<&BodyBytes>),
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
        let from = (&ctx.forwarding, ids);
        return match h2_to_h1::forward(shared, from, rules, authority, &req).await {
            Ok(resp) => resp.map(Either::Right),
            Err(answer) => answer.map(Either::Left),
        };
    }
    // The futures of the paths below are boxed: inline, they would make every stream's future
    // several times larger, and hyper moves it each time it hands a stream on, for the few
    // that take them (`bench/NOTES.md`).
    // Each stream drives its own upstream link: streams run in tasks of their own.
    let sctx = Arc::new(ConnCtx::new(ctx.forwarding.clone(), ctx.port, false));
    let route = Route {
        upstream: &shared.upstream,
        metrics: &shared.metrics,
        config,
        ctx: &sctx,
        ids,
        received,
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
