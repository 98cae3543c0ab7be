//! The test app: an HTTP/1.1 or h2c server that reports what it received, with routes for
//! bodies, trailers, streams, WebSockets and the browser test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A running test app; it counts the TCP connections it accepted and those still open.
pub struct App {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Connections not yet closed (by either side).
    pub open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start_app() -> App {
    start_app_on(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

pub async fn start_app_on(listener: TcpListener) -> App {
    serve_app(listener, AppSpeaks::Http1).await
}

/// What the test app speaks.
#[derive(Clone, Copy, PartialEq)]
enum AppSpeaks {
    /// HTTP/1.1, with upgrades.
    Http1,
    /// h2c, without extended CONNECT.
    H2c,
    /// h2c with extended CONNECT (RFC 8441): WebSockets over HTTP/2.
    H2cWithWebSockets,
}

/// The test app on `listener`.
async fn serve_app(listener: TcpListener, speaks: AppSpeaks) -> App {
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (counter, still_open) = (connections.clone(), open.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            still_open.fetch_add(1, Ordering::SeqCst);
            let guard = Arc::new(OpenGuard(still_open.clone()));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| app(req, peer, guard.clone()));
                let io = TokioIo::new(stream);
                if speaks != AppSpeaks::Http1 {
                    let exec = hyper_util::rt::TokioExecutor::new();
                    let mut h2 = hyper::server::conn::http2::Builder::new(exec);
                    if speaks == AppSpeaks::H2cWithWebSockets {
                        h2.enable_connect_protocol();
                    }
                    let _ = h2.serve_connection(io, svc).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .with_upgrades()
                        .await;
                }
            });
        }
    });
    App {
        addr,
        connections,
        open,
        task,
    }
}

/// An h2c app (HTTP/2 with prior knowledge), answering with the same routes.
pub async fn start_h2_app() -> App {
    serve_app(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        AppSpeaks::H2c,
    )
    .await
}

/// An h2c app that also takes WebSockets over HTTP/2 (RFC 8441) on `/ws`.
pub async fn start_h2_websocket_app() -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_app(listener, AppSpeaks::H2cWithWebSockets).await
}

/// Held by an app connection and by the task that serves its upgraded stream; the last one
/// to go marks the connection closed.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

type AppBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> AppBody {
    Full::new(s.into()).boxed()
}

/// Routes of the test app. Everything not listed echoes the request.
async fn app(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    guard: Arc<OpenGuard>,
) -> Result<Response<AppBody>, Infallible> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(Response::new(full("slow")))
        }
        "/big" => {
            let n: usize = req
                .uri()
                .query()
                .and_then(|q| q.parse().ok())
                .unwrap_or(1 << 20);
            Ok(Response::new(full(vec![b'x'; n])))
        }
        "/trailers" => {
            // A body and then trailers, as gRPC answers.
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("x-trailer", "yes".parse().unwrap());
            let frames = futures_util::stream::iter([
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"ok"))),
                Ok(Frame::trailers(trailers)),
            ]);
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
            // Announced, as RFC 9110 6.6.2 asks, so an HTTP/1.1 client can be sent them.
            resp.headers_mut()
                .insert("trailer", "grpc-status, x-trailer".parse().unwrap());
            Ok(resp)
        }
        "/echo-trailers" => {
            // The request body's length and its trailers, as the app received them.
            let collected = req.into_body().collect().await;
            let Ok(collected) = collected else {
                return Ok(Response::new(full("body error")));
            };
            let mut text = String::new();
            for (name, value) in collected.trailers().into_iter().flatten() {
                text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            text.push_str(&format!("body-length: {}\n", collected.to_bytes().len()));
            Ok(Response::new(full(text)))
        }
        "/echo-body" => {
            // The request body back as it arrives: both directions stream at once.
            let body = req.into_body().map_err(|_| unreachable!()).boxed();
            let _ = &guard;
            Ok(Response::new(body))
        }
        "/stream" => {
            // N bytes in 64 KiB slices of one shared buffer: the app itself holds no body.
            static CHUNK: [u8; 65536] = [b'z'; 65536];
            let total: usize = req
                .uri()
                .query()
                .and_then(|q| q.parse().ok())
                .unwrap_or(1 << 20);
            let frames = futures_util::stream::unfold(total, |left| async move {
                (left > 0).then(|| {
                    let n = left.min(CHUNK.len());
                    (
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(&CHUNK[..n]))),
                        left - n,
                    )
                })
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
            resp.headers_mut().insert("content-length", total.into());
            Ok(resp)
        }
        "/sse" => {
            // The first event now, the second only much later: a buffering proxy would hold both.
            let stream = futures_util::stream::unfold(0, |i| async move {
                match i {
                    0 => Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"data: first\n\n"))),
                        1,
                    )),
                    1 => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Some((Ok(Frame::data(Bytes::from_static(b"data: second\n\n"))), 2))
                    }
                    _ => None,
                }
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            Ok(resp)
        }
        "/upload" => {
            let mut total = 0usize;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => total += f.data_ref().map_or(0, |d| d.len()),
                    Err(_) => return Ok(Response::new(full("body error"))),
                }
            }
            Ok(Response::new(full(format!("received {total}"))))
        }
        "/sets-request-id" => {
            // An app that sets a request id of its own: the client gets the proxy's.
            let mut resp = Response::new(full("mine"));
            resp.headers_mut()
                .insert("x-request-id", "made-by-the-app".parse().unwrap());
            Ok(resp)
        }
        "/ws" | "/ws-refuse" | "/raw" => upgrade(&mut req, &path, guard),
        "/browser-page" => {
            let mut resp = Response::new(full(BROWSER_PAGE));
            resp.headers_mut()
                .insert("content-type", "text/html".parse().unwrap());
            Ok(resp)
        }
        "/browser-report" => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let text = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
            BROWSER_REPORTS.lock().unwrap().push(text);
            Ok(Response::new(full("noted")))
        }
        _ => {
            let mut text = format!("{} {}\npeer: {}\n", req.method(), req.uri(), peer);
            for (name, value) in req.headers() {
                text.push_str(&format!(
                    "{}: {}\n",
                    name,
                    value.to_str().unwrap_or("<binary>")
                ));
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            text.push_str(&format!("body-length: {}\n", body.len()));
            Ok(Response::new(full(text)))
        }
    }
}

/// A page for a browser: it opens a WebSocket to `/ws` on its own origin, sends one message,
/// and posts what came back (the app's greeting, then the echo) to `/browser-report`, after
/// the page's port, so that each test finds its own browser's report.
const BROWSER_PAGE: &str = r#"<!doctype html><title>ws</title><script>
const seen = [];
const report = (text) => fetch("/browser-report", { method: "POST", body: text });
const ws = new WebSocket("wss://" + location.host + "/ws");
ws.onmessage = (e) => {
  seen.push(e.data);
  if (seen.length === 1) ws.send("hello from the browser");
  else { report(location.port + "|" + seen.join("|")); ws.close(); }
};
ws.onerror = () => report(location.port + "|websocket error");
</script>"#;

/// What browsers posted to `/browser-report`, in order.
static BROWSER_REPORTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The reports browsers have posted so far.
pub fn browser_reports() -> Vec<String> {
    BROWSER_REPORTS.lock().unwrap().clone()
}

fn upgrade(
    req: &mut Request<Incoming>,
    path: &str,
    guard: Arc<OpenGuard>,
) -> Result<Response<AppBody>, Infallible> {
    if path == "/ws-refuse" {
        let mut r = Response::new(full("no websockets here"));
        *r.status_mut() = StatusCode::FORBIDDEN;
        return Ok(r);
    }
    let xff = req
        .headers()
        .get("x-forwarded-for")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut *req);
    let mut resp = Response::new(full(""));
    // An extended CONNECT (RFC 8441) is accepted with 200 and none of HTTP/1.1's fields.
    let over_h2 = req.method() == hyper::Method::CONNECT;
    if over_h2 {
        tokio::spawn(serve_websocket(on_upgrade, xff, guard));
        return Ok(resp);
    }
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    if path == "/raw" {
        resp.headers_mut()
            .insert("upgrade", "echo".parse().unwrap());
        tokio::spawn(async move {
            let _guard = guard;
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut io = TokioIo::new(upgraded);
            let mut all = Vec::new();
            // Echo until the client half-closes, then prove the other direction still works.
            let mut buf = [0u8; 4096];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        all.extend_from_slice(&buf[..n]);
                        let _ = io.write_all(&buf[..n]).await;
                    }
                }
            }
            let _ = io
                .write_all(format!("bye after {} bytes", all.len()).as_bytes())
                .await;
            let _ = io.shutdown().await;
        });
        return Ok(resp);
    }
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    resp.headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    resp.headers_mut()
        .insert("sec-websocket-accept", key.parse().unwrap());
    tokio::spawn(serve_websocket(on_upgrade, xff, guard));
    Ok(resp)
}

/// The app's side of a WebSocket: a greeting that names the client address it was given,
/// then an echo of every message until the client closes.
async fn serve_websocket(
    on_upgrade: hyper::upgrade::OnUpgrade,
    xff: String,
    guard: Arc<OpenGuard>,
) {
    let _guard = guard;
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let _ = ws
        .send(Message::text(format!("x-forwarded-for: {xff}")))
        .await;
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_text() || msg.is_binary() {
            if ws.send(msg).await.is_err() {
                break;
            }
        } else if msg.is_close() {
            break;
        }
    }
}
