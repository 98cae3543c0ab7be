//! WebSockets over HTTP/2 (RFC 8441): the extended CONNECT a browser sends on an h2
//! connection is turned into the HTTP/1.1 handshake the app expects, and on the app's `101`
//! the stream is joined to the app's connection like any tunnel.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use crate::conn::shared::Shared;
use crate::conn::state::ConnCtx;
use crate::http::body::Body;
use crate::http::{rules, websocket};
use crate::proxy::hyper_client::{self, Route};
use crate::proxy::tunnel;

/// RFC 8441: the extended CONNECT becomes the HTTP/1.1 handshake the app expects; on its
/// `101` the client gets `200` and the stream is joined to the app's connection.
pub(crate) async fn forward(
    shared: &Arc<Shared>,
    sctx: &Arc<ConnCtx>,
    route: Route<'_>,
    rules: &rules::RequestRules,
    authority: &str,
    mut req: Request<Incoming>,
) -> Response<Body> {
    *req.method_mut() = Method::GET;
    let headers = req.headers_mut();
    if let Ok(host) = HeaderValue::from_str(authority) {
        headers.insert(header::HOST, host);
    }
    headers.insert(header::SEC_WEBSOCKET_KEY, websocket::key());
    let resp = hyper_client::forward_upgrade(route, rules, req).await;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    parts.status = StatusCode::OK;
    for name in [
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_ACCEPT,
    ] {
        parts.headers.remove(name);
    }
    if let Some(pending) = sctx.take_upgrade() {
        // The client's side is an HTTP/2 stream, never a socket of its own.
        tunnel::start::<TcpStream>(shared, sctx.forwarding.client, pending, ());
    }
    Response::from_parts(parts, body)
}
