//! Requests to an h2c app (`DESTINATION_PROTOCOL=h2c`, or `auto` for HTTP/2 clients), from a
//! client speaking either protocol: the same rules decide what is dropped and added, the head
//! becomes an HTTP/2 one (`:authority` from the checked host, `te: trailers` kept for gRPC),
//! and bodies and trailers stream both ways.

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{request, Request, Response, Version};
use http_body_util::{BodyExt, Either, Empty, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Incoming};

use crate::http::body::{self, Body};
use crate::http::error::{caused_by, ErrorChain, UpstreamError};
use crate::http::rules::RequestRules;
use crate::proxy::hyper_client::{keep_only, Route};
use crate::upstream::h2c::{H2Body, H2Upstream};

/// Forwards one request to the h2c app; every failure becomes a response.
pub(crate) async fn forward(
    route: Route<'_>,
    h2: &H2Upstream,
    rules: &RequestRules,
    authority: &str,
    req: Request<Incoming>,
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
    let req = Request::from_parts(parts, limited.boxed() as H2Body);
    let sent = h2.send(route.upstream, req, again);
    match tokio::time::timeout(route.upstream.response_timeout, sent).await {
        Ok(Ok(resp)) => resp.map(Either::Left),
        Ok(Err((_, e))) if caused_by::<LengthLimitError>(&*e) => route.too_large(limit),
        Ok(Err((kind, e))) => route.fail(kind, &ErrorChain(&*e)),
        Err(_) => route.fail(
            UpstreamError::Timeout,
            &"no response headers within RESPONSE_TIMEOUT",
        ),
    }
}

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
        rules.forwards(name, from) && !name.eq_ignore_ascii_case("host")
    });
    for (name, value) in from.headers() {
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
