//! Requests hyper's HTTP/1.1 server reads (those with a body, an upgrade, HTTP/1.0, `Expect`,
//! an absolute-form target, and whatever follows them on the connection), forwarded through
//! hyper's client by the same [`rules`] the lean path applies. Their heads were read and
//! judged by the gate in [`crate::h1::head_gate`] before hyper saw them.

use std::error::Error as StdError;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{request, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Incoming};

use crate::config::Config;
use crate::conn::state::{ConnCtx, PendingUpgrade};
use crate::http::body::{self, Body, BodyBytes, RequestBody};
use crate::http::error::{caused_by, causes, ErrorChain, UpstreamError, NO_RESPONSE_HEADERS};
use crate::http::rules::{self, BodyLength, Ids, RequestRules, ResponseKind};
use crate::proxy::failure;
use crate::telemetry::metrics::Metrics;
use crate::upstream::{Driver, Upstream};

/// What a forwarded request needs besides itself.
pub(crate) struct Route<'a> {
    pub(crate) upstream: &'a Upstream,
    pub(crate) metrics: &'a Metrics,
    pub(crate) config: &'a Config,
    pub(crate) ctx: &'a ConnCtx,
    /// The request's ids, written to the app with the forwarding headers.
    pub(crate) ids: &'a Ids,
    /// Where the request body's bytes are counted for the access line; `None` without a body.
    pub(crate) received: Option<&'a BodyBytes>,
}

impl Route<'_> {
    /// The client's answer for an upstream failure, logged and counted.
    pub(crate) fn fail(&self, kind: UpstreamError, why: &dyn std::fmt::Display) -> Response<Body> {
        let client = self.ctx.forwarding.client;
        failure::response(self.upstream, self.metrics, client, kind, why)
    }

    /// `413` for a body over `MAX_BODY_BYTES`.
    pub(crate) fn too_large(&self, limit: u64) -> Response<Body> {
        too_large(self.ctx.forwarding.client, limit)
    }
}

/// How sending to the app failed: no connection, or a failed exchange on one.
enum Failure {
    Open(UpstreamError, String),
    Send(hyper::Error),
}

/// Forwards one ordinary (non-upgrade) request; every failure becomes a response.
pub(crate) async fn forward(
    route: Route<'_>,
    rules: &RequestRules,
    req: Request<Incoming>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let client = route.ctx.forwarding.client;
    let limit = route.config.max_body_bytes.unwrap_or(u64::MAX);
    if matches!(rules.body, BodyLength::Length(n) if n > limit) {
        return too_large(client, limit);
    }
    prepare_head(&mut parts, &route, rules);
    let mut rest = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let first = if rest.is_end_stream() {
        None
    } else {
        match tokio::time::timeout(route.config.request_header_timeout, rest.frame()).await {
            Err(_) => {
                tracing::warn!(%client, "request body did not start within REQUEST_HEADER_TIMEOUT");
                return closing(body::text(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body did not arrive in time\n",
                ));
            }
            Ok(None) => None,
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(Some(Err(e))) => return bad_body(client, limit, &*e),
        }
    };
    let counted = route.received.cloned();
    let req = Request::from_parts(
        parts,
        RequestBody {
            first,
            rest,
            counted,
        },
    );
    let up = route.upstream;
    let sent = send(up, &route.ctx.upstream, req, rules.idempotent);
    match tokio::time::timeout(up.response_timeout, sent).await {
        Ok(Ok(resp)) => match finish(resp, rules) {
            Ok(resp) => resp,
            Err(why) => {
                route.ctx.upstream.discard();
                route.fail(UpstreamError::Reset, &why)
            }
        },
        Ok(Err(Failure::Open(kind, why))) => route.fail(kind, &why),
        Ok(Err(Failure::Send(e)))
            if caused_by::<LengthLimitError>(&e) || client_body_failed(&e) =>
        {
            bad_body(client, limit, &e)
        }
        Ok(Err(Failure::Send(e))) => route.fail(UpstreamError::Reset, &ErrorChain(&e)),
        Err(_) => route.fail(UpstreamError::Timeout, &NO_RESPONSE_HEADERS),
    }
}

/// Sends on a pooled connection, or a new one; a request a pooled connection could not take
/// goes once more on a new connection when [`rules::retry_on_fresh_connection`] says so.
async fn send(
    up: &Upstream,
    driver: &Driver,
    req: Request<RequestBody>,
    idempotent: bool,
) -> Result<Response<Incoming>, Failure> {
    // A link this connection still holds goes back first: the pool is LIFO, so it is the one
    // picked again if it is free.
    driver.release(up);
    let pooled = poll_fn(|cx| Poll::Ready(up.checkout(cx))).await;
    let reused = pooled.is_some();
    let link = match pooled {
        Some(link) => link,
        None => up.open().await.map_err(|(k, why)| Failure::Open(k, why))?,
    };
    let asked = Instant::now();
    match driver.send_on(link, req).await {
        Ok(resp) => {
            up.timing.answered(asked.elapsed());
            Ok(resp)
        }
        Err(mut e) => match e.take_message() {
            // hyper gives the request back only if none of it was written.
            Some(req) if rules::retry_on_fresh_connection(reused, true, idempotent) => {
                tracing::debug!(error = %ErrorChain(e.error()), "pooled upstream connection was closed; sending on a new one");
                let link = up.open().await.map_err(|(k, why)| Failure::Open(k, why))?;
                let asked = Instant::now();
                let resp = driver.send_on(link, req).await;
                let resp = resp.map_err(|e| Failure::Send(e.into_error()))?;
                up.timing.answered(asked.elapsed());
                Ok(resp)
            }
            _ => Err(Failure::Send(e.into_error())),
        },
    }
}

/// The head the app gets: the client's, less what the rules drop, plus the forwarding headers
/// and the proxy's own framing and upgrade headers; an absolute-form target becomes origin-form.
fn prepare_head(parts: &mut request::Parts, route: &Route<'_>, rules: &RequestRules) {
    let (from, ids) = (&route.ctx.forwarding, route.ids);
    let headers = &mut parts.headers;
    keep_only(headers, |name| rules.forwards(name, from, ids));
    for (name, value) in rules::proxy_headers(from, ids) {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in rules.hop_headers() {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    if parts.uri.scheme().is_some() || parts.uri.path_and_query().is_none() {
        let path = parts.uri.path_and_query().cloned();
        parts.uri = Uri::from(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
    }
    parts.version = Version::HTTP_11;
}

/// The app's response as the client gets it, or why it cannot be passed on (`502`).
pub(crate) fn finish(
    resp: Response<Incoming>,
    rules: &RequestRules,
) -> Result<Response<Body>, &'static str> {
    let (mut parts, body) = resp.into_parts();
    let fields = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()));
    let http11 = parts.version == Version::HTTP_11;
    let ResponseKind::Final(r) =
        rules::check_response(parts.status.as_u16(), http11, rules, fields)?
    else {
        return Err("an informational or switching response where a final one was due");
    };
    // The proxy speaks its own version to the client (RFC 9110 §6.2), whatever the app's.
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    keep_only(headers, |name| r.forwards(name));
    if let Some(n) = r.content_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Some(te) = r.transfer_encoding {
        if let Ok(value) = HeaderValue::from_maybe_shared(te) {
            headers.insert(header::TRANSFER_ENCODING, value);
        }
    }
    Ok(Response::from_parts(parts, Either::Left(body)))
}

/// Sends an honoured upgrade to the app on a connection of its own. On `101` the pending
/// sockets are left with the connection, which joins them once hyper lets go of the client.
pub(crate) async fn forward_upgrade(
    route: Route<'_>,
    rules: &RequestRules,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let on_client = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    prepare_head(&mut parts, &route, rules);
    let up = route.upstream;
    let stream = match up.connect().await {
        Ok(s) => s,
        Err(e) => return route.fail(UpstreamError::Connect, &e),
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(pair) => pair,
        Err(e) => return route.fail(UpstreamError::Connect, &ErrorChain(&e)),
    };
    tokio::spawn(conn.with_upgrades());
    let sent = sender.send_request(Request::from_parts(parts, body));
    let mut resp = match tokio::time::timeout(up.response_timeout, sent).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return route.fail(UpstreamError::Reset, &ErrorChain(&e)),
        Err(_) => {
            let why = NO_RESPONSE_HEADERS;
            return route.fail(UpstreamError::Timeout, &why);
        }
    };
    let fields = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()));
    let http11 = resp.version() == Version::HTTP_11;
    match rules::check_response(resp.status().as_u16(), http11, rules, fields) {
        Ok(ResponseKind::Switching) => {}
        // Refused: an ordinary answer, after which the client connection closes (the gate has
        // let the rest of the stream through as tunnel bytes).
        Ok(ResponseKind::Final(_)) => {
            return match finish(resp, rules) {
                Ok(resp) => closing(resp),
                Err(why) => route.fail(UpstreamError::Reset, &why),
            }
        }
        Ok(ResponseKind::Informational) => {
            let why = "an informational response to an upgrade";
            return route.fail(UpstreamError::Reset, &why);
        }
        Err(why) => return route.fail(UpstreamError::Reset, &why),
    }
    let accepted = resp.headers().get(header::UPGRADE).cloned();
    route.ctx.set_upgrade(PendingUpgrade {
        client: on_client,
        upstream: hyper::upgrade::on(&mut resp),
    });
    let (mut parts, _) = resp.into_parts();
    keep_only(&mut parts.headers, |name| !rules::is_hop_by_hop(name));
    if let Some(protocol) = accepted {
        parts.headers.insert(header::UPGRADE, protocol);
    }
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
}

/// Removes every header `keep` says no to; allocates only when there is one.
pub(crate) fn keep_only(headers: &mut HeaderMap, keep: impl Fn(&str) -> bool) {
    if headers.keys().all(|k| keep(k.as_str())) {
        return;
    }
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|k| !keep(k.as_str()))
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
}

/// The answer when the client's own body is too large (`413`) or malformed (`400`).
fn bad_body(
    client: std::net::SocketAddr,
    limit: u64,
    e: &(dyn StdError + 'static),
) -> Response<Body> {
    if caused_by::<LengthLimitError>(e) {
        return too_large(client, limit);
    }
    tracing::warn!(%client, error = %ErrorChain(e), "malformed request body");
    closing(body::text(
        StatusCode::BAD_REQUEST,
        "malformed request body\n",
    ))
}

/// `413`, closing the connection: the rest of the body is not worth reading.
fn too_large(client: std::net::SocketAddr, limit: u64) -> Response<Body> {
    tracing::warn!(%client, limit, "request body larger than MAX_BODY_BYTES");
    closing(body::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body too large\n",
    ))
}

/// Asks hyper to close the client connection after this answer.
pub(crate) fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Whether sending failed because the client's body stream failed (not the app).
fn client_body_failed(e: &(dyn StdError + 'static)) -> bool {
    causes(e).any(|err| {
        err.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
    })
}
