//! WebSockets over HTTP/2 (RFC 8441): the extended CONNECT a browser sends on an h2
//! connection is turned into the HTTP/1.1 handshake the app expects, and on the app's `101`
//! the stream is joined to the app's connection like any tunnel.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use crate::conn::shared::Shared;
use crate::conn::state::ConnCtx;
use crate::http::body::Body;
use crate::http::rules;
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
    headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
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

/// A fresh `Sec-WebSocket-Key`: 16 bytes that need only be unpredictable enough to tell
/// handshakes apart (RFC 6455 §4.1), in base64.
fn websocket_key() -> HeaderValue {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    for (i, half) in bytes.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        h.write_u128(Instant::now().elapsed().as_nanos());
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    HeaderValue::from_str(&out).expect("base64 is a valid header value")
}
