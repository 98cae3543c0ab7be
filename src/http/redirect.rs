//! The plain-HTTP port: every request is sent to the same host and target over https, as the
//! nginx image did (`301`, host lower-cased with its port removed, target byte for byte).

use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::http::body::{self, Body};

/// `301` to `https://<host><target>`, or `400` when the request names no usable host.
pub fn answer<B>(req: &Request<B>) -> Response<Body> {
    // HTTP/2 names the host in `:authority`, HTTP/1.1 in `Host`.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .and_then(host_without_port);
    let Some(host) = host else {
        return body::text(StatusCode::BAD_REQUEST, "a Host header is required\n");
    };
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{host}{target}");
    let Ok(location) = HeaderValue::from_str(&location) else {
        return body::text(StatusCode::BAD_REQUEST, "invalid request target\n");
    };
    let mut resp = body::html(StatusCode::MOVED_PERMANENTLY, MOVED);
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

const MOVED: &str = "<html>\r\n<head><title>301 Moved Permanently</title></head>\r\n<body>\r\n<center><h1>301 Moved Permanently</h1></center>\r\n</body>\r\n</html>\r\n";

/// `Example.COM:81` → `example.com`, `[::1]:81` → `[::1]`; `None` if it is not a plausible host.
pub fn host_without_port(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if host.starts_with('[') {
        &host[..=host.find(']')?]
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                ""
            }
        })
    };
    let valid = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        });
    valid.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            host_without_port("Example.COM:81").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host_without_port("example.com").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host_without_port("[2001:DB8::1]:81").as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(
            host_without_port("10.0.0.1:8080").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(host_without_port(""), None);
        assert_eq!(host_without_port("evil.com/path"), None);
        assert_eq!(host_without_port("a b"), None);
        assert_eq!(host_without_port("[::1"), None);
    }
}
