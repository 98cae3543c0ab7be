//! Requests to an h2c app (`DESTINATION_PROTOCOL=h2c`, or `auto` for HTTP/2 clients), from a
//! client speaking either protocol: the same rules decide what is dropped and added, the head
//! becomes an HTTP/2 one (`:authority` from the checked host, `te: trailers` kept for gRPC),
//! and bodies and trailers stream both ways. An HTTP/1.1 client gets the answer framed by the
//! HTTP/1.1 response rules, and its WebSocket upgrade becomes an RFC 8441 extended CONNECT.

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{request, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Empty, Full, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Incoming};

use crate::conn::state::PendingUpgrade;
use crate::http::body::{self, Body};
use crate::http::error::{caused_by, ErrorChain, UpstreamError, NO_RESPONSE_HEADERS};
use crate::http::rules::{self, RequestRules};
use crate::http::{websocket, Protocol};
use crate::proxy::hyper_client::{self, keep_only, Route};
use crate::upstream::h2c::{H2Body, H2Upstream, Refused};

/// Forwards one request to the h2c app for a client speaking `client`; every failure becomes
/// a response.
pub(crate) async fn forward(
    route: Route<'_>,
    h2: &H2Upstream,
    rules: &RequestRules,
    authority: &str,
    req: Request<Incoming>,
    client: Protocol,
) -> Response<Body> {
    let (mut parts, incoming) = req.into_parts();
    let limit = route.config.max_body_bytes.unwrap_or(u64::MAX);
    if incoming.size_hint().lower() > limit {
        return route.too_large(limit);
    }
    if let Err(why) = prepare_head(&mut parts, &route, rules, authority) {
        return body::text(http::StatusCode::BAD_REQUEST, why);
    }
    // A bodiless idempotent request can be sent again if the app refuses it (GOAWAY).
    let again = (rules.idempotent && incoming.is_end_stream()).then(|| {
        let mut copy = Request::new(Empty::new().map_err(Into::into).boxed());
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts.uri.clone();
        *copy.version_mut() = Version::HTTP_2;
        *copy.headers_mut() = parts.headers.clone();
        copy
    });
    let limited = Limited::new(incoming, usize::try_from(limit).unwrap_or(usize::MAX));
    let counted = route.received.cloned();
    let limited = limited.map_frame(move |frame| {
        if let Some(counted) = &counted {
            counted.add(&frame);
        }
        frame
    });
    let req = Request::from_parts(parts, limited.boxed() as H2Body);
    let sent = h2.send(route.upstream, req, again);
    match tokio::time::timeout(route.upstream.response_timeout, sent).await {
        Ok(Ok(resp)) if client == Protocol::H2 => resp.map(Either::Left),
        Ok(Ok(resp)) => match hyper_client::finish(resp, rules) {
            Ok(resp) => resp,
            Err(why) => route.fail(UpstreamError::Reset, &why),
        },
        Ok(Err((_, e))) if caused_by::<LengthLimitError>(&*e) => route.too_large(limit),
        Ok(Err((kind, e))) => route.fail(kind, &ErrorChain(&*e)),
        Err(_) => route.fail(UpstreamError::Timeout, &NO_RESPONSE_HEADERS),
    }
}

/// An HTTP/1.1 client's honoured upgrade, sent to the app as an extended CONNECT (RFC 8441).
/// On the app's `200` the client gets `101` (with the `Sec-WebSocket-Accept` its key calls
/// for) and the two are left with the connection to join; any other answer is passed on.
pub(crate) async fn forward_upgrade(
    route: Route<'_>,
    h2: &H2Upstream,
    rules: &RequestRules,
    authority: &str,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let Some(protocol) = rules.upgrade.clone() else {
        return forward(route, h2, rules, authority, req, Protocol::Http1).await;
    };
    let on_client = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    let accept = (parts.headers)
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| websocket::accept(key.as_bytes()));
    if let Err(why) = prepare_head(&mut parts, &route, rules, authority) {
        return body::text(http::StatusCode::BAD_REQUEST, why);
    }
    // RFC 8441 §5: the key and its accept value are not used over HTTP/2.
    parts.headers.remove(header::SEC_WEBSOCKET_KEY);
    parts.method = Method::CONNECT;
    (parts.extensions).insert(hyper::ext::Protocol::from(protocol.as_str()));
    let req = Request::from_parts(parts, Empty::new().map_err(Into::into).boxed() as H2Body);
    let sent = h2.connect(route.upstream, req);
    let mut resp = match tokio::time::timeout(route.upstream.response_timeout, sent).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(Refused::Disabled)) => return route.fail(UpstreamError::Reset, &CONNECT_DISABLED),
        Ok(Err(Refused::Failed((kind, e)))) => return route.fail(kind, &ErrorChain(&*e)),
        Err(_) => return route.fail(UpstreamError::Timeout, &NO_RESPONSE_HEADERS),
    };
    if resp.status() != StatusCode::OK {
        return match hyper_client::finish(resp, rules) {
            Ok(resp) => resp,
            Err(why) => route.fail(UpstreamError::Reset, &why),
        };
    }
    let on_upstream = hyper::upgrade::on(&mut resp);
    route.ctx.set_upgrade(PendingUpgrade {
        client: on_client,
        upstream: on_upstream,
    });
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::SWITCHING_PROTOCOLS;
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    keep_only(headers, |name| {
        !rules::is_hop_by_hop(name) && !name.eq_ignore_ascii_case("content-length")
    });
    if let Ok(value) = HeaderValue::from_str(&protocol) {
        headers.insert(header::UPGRADE, value);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(accept) = accept {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    Response::from_parts(parts, Either::Right(Full::default()))
}

/// Why an HTTP/1.1 upgrade to an h2c app failed when the app does not take extended CONNECT.
const CONNECT_DISABLED: &str = "the h2c app does not accept WebSockets over HTTP/2 (no \
    SETTINGS_ENABLE_CONNECT_PROTOCOL); enable it in the app, or set DESTINATION_PROTOCOL=auto \
    so that HTTP/1.1 clients reach the app over HTTP/1.1";

/// The head the app gets: the client's, less what the rules drop and less `Host` (it becomes
/// `:authority`), plus the forwarding headers; `te: trailers` stays when the client sent it.
fn prepare_head(
    parts: &mut request::Parts,
    route: &Route<'_>,
    rules: &RequestRules,
    authority: &str,
) -> Result<(), &'static str> {
    let from = &route.ctx.forwarding;
    let trailers = parts
        .headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    keep_only(&mut parts.headers, |name| {
        rules.forwards(name, from, route.ids) && !name.eq_ignore_ascii_case("host")
    });
    for (name, value) in rules::proxy_headers(from, route.ids) {
        parts.headers.insert(name.clone(), value.clone());
    }
    if trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority: Authority = authority.parse().map_err(|_| "invalid host\n")?;
    parts.uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| "invalid request target\n")?;
    parts.version = Version::HTTP_2;
    Ok(())
}
