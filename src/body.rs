//! The one response body type: the app's streamed body, or a short answer of the proxy's own.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// Either the app's body, passed through as it streams, or a small body the proxy wrote.
pub type Body = Either<Incoming, Full<Bytes>>;

/// A small answer of the proxy's own.
pub fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    with_type(status, text, "text/plain; charset=utf-8")
}

/// A small HTML answer, for the redirect page browsers may show.
pub fn html(status: StatusCode, html: &'static str) -> Response<Body> {
    with_type(status, html, "text/html")
}

fn with_type(status: StatusCode, body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
