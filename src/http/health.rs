//! The `/ping` health check the balancer polls, answered by the proxy itself.
//!
//! Exactly the path `/ping` (any query), GET or HEAD, on both ports. While draining it answers
//! 503 (unless `SHUTDOWN_PING_STATUS=200`) so the balancer takes the instance out before the
//! listeners close.

use http::{header, Response, StatusCode};

use crate::http::body::{self, Body};

/// `200 ok`, or `503 draining` when the instance is leaving and says so.
pub(crate) fn answer(failing: bool) -> Response<Body> {
    if failing {
        body::text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        let mut resp = body::text(StatusCode::OK, "ok");
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        resp
    }
}

/// The PROXY v2 header with the `LOCAL` command: "this connection is the sender's own".
pub const V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// `elb-ws-proxy healthcheck`: asks `/ping` on the local TLS-origin port and succeeds on `200`.
/// It sends a v2 `LOCAL` header (unless PROXY headers are off), which every mode accepts.
pub async fn probe(addr: std::net::SocketAddr, send_header: bool) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let mut request = Vec::with_capacity(96);
        if send_header {
            request.extend_from_slice(V2_LOCAL);
        }
        request.extend_from_slice(
            b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        let mut answer = Vec::with_capacity(256);
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        let status_line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
        if status_line.starts_with(b"HTTP/1.1 200 ") {
            Ok(())
        } else if answer.is_empty() {
            Err("connection closed without an answer".to_owned())
        } else {
            Err(format!(
                "answered {:?}",
                String::from_utf8_lossy(status_line)
            ))
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), attempt)
        .await
        .map_err(|_| "no answer within 3 s".to_owned())?
}
