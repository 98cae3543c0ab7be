//! Test peers: an app that reports what it received, the proxy started in-process on port 0,
//! and clients that write PROXY headers by hand. Every wait here is bounded.
#![allow(dead_code)]

use std::collections::HashMap;
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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use elb_ws_proxy::{Config, Proxy};

pub mod child;
pub mod haproxy;
pub mod nlb;

/// Log lines written while a [`capture_logs`] guard is alive on this thread (the in-process
/// proxy's tasks run here under `#[tokio::test]`'s single-threaded runtime).
#[derive(Clone, Default)]
pub struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line at `debug` and above until the guard drops.
pub fn capture_logs() -> (tracing::subscriber::DefaultGuard, Logs) {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    (tracing::subscriber::set_default(subscriber), logs)
}

/// A directory under the system's temp dir, removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("elb-ws-proxy-{what}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Upper bound for any single network wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The value of one series in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
}

/// This process's resident memory in KiB (tests that bound what the proxy holds).
pub fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4
}

/// Polls `check` until it yields a value, at most `WAIT`: for state that another task or
/// process changes and that has no event to wait on (a metric, a counter, a log line).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

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

/// An HTTP/2 client (prior knowledge) on a connection that starts with `header`.
pub async fn h2_client(
    addr: SocketAddr,
    header: &[u8],
) -> hyper::client::conn::http2::SendRequest<http_body_util::combinators::BoxBody<Bytes, Infallible>>
{
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(header).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// A WebSocket over HTTP/2 on `c`: an RFC 8441 extended CONNECT to `/ws`, answered `200`; the
/// stream to talk on.
pub async fn h2_websocket(
    c: &mut hyper::client::conn::http2::SendRequest<
        http_body_util::combinators::BoxBody<Bytes, Infallible>,
    >,
) -> hyper::upgrade::Upgraded {
    let mut r = Request::builder()
        .method(hyper::Method::CONNECT)
        .uri("https://chat.example/ws")
        .header("sec-websocket-version", "13")
        .body(BodyExt::boxed(StreamBody::new(
            futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>(),
        )))
        .unwrap();
    r.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = within("extended CONNECT", c.send_request(r)).await.unwrap();
    assert_eq!(resp.status(), 200);
    within("upgrade", hyper::upgrade::on(&mut resp))
        .await
        .unwrap()
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
/// and posts what came back (the app's greeting, then the echo) to `/browser-report`.
const BROWSER_PAGE: &str = r#"<!doctype html><title>ws</title><script>
const seen = [];
const report = (text) => fetch("/browser-report", { method: "POST", body: text });
const ws = new WebSocket("wss://" + location.host + "/ws");
ws.onmessage = (e) => {
  seen.push(e.data);
  if (seen.length === 1) ws.send("hello from the browser");
  else { report(seen.join("|")); ws.close(); }
};
ws.onerror = () => report("websocket error");
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

/// A proxy running in-process, with a handle to shut it down.
pub struct Running {
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub proxy_metrics: Arc<elb_ws_proxy::metrics::Metrics>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// One series of the running proxy's metrics.
    pub fn metric(&self, series: &str) -> f64 {
        metric(&self.proxy_metrics.render(), series)
    }

    /// Sends the shutdown signal (as SIGTERM would).
    pub fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals and waits for `serve` to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.signal();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(40), task)
            .await
            .expect("proxy did not stop")
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The configuration every test starts from: listeners on port 0, pointing at `app`.
pub fn config_for(app: SocketAddr) -> Config {
    let mut c = Config::new(0, 0, &app.ip().to_string(), app.port());
    c.listen_address = "127.0.0.1".parse().unwrap();
    c
}

pub async fn start_proxy(config: Config) -> Running {
    start_proxy_with_resolver(config, elb_ws_proxy::system_resolver()).await
}

/// As [`start_proxy`], looking the app's name up with `resolver`.
pub async fn start_proxy_with_resolver(
    config: Config,
    resolver: elb_ws_proxy::Resolver,
) -> Running {
    let proxy = Proxy::bind_with_resolver(config, resolver)
        .await
        .expect("proxy binds");
    let (plain, tls, metrics) = (proxy.plain_addr(), proxy.tls_addr(), proxy.metrics_addr());
    let proxy_metrics = proxy.metrics();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        plain,
        tls,
        metrics,
        proxy_metrics,
        stop: Some(stop),
        task: Some(task),
    }
}

pub fn v1(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 10.0.0.1 40000 {port}\r\n").into_bytes()
}

/// A v2 `PROXY` header for an IPv4 client, with an AWS-style TLV.
pub fn v2(client: [u8; 4], client_port: u16, dest_port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    h.push(0x11);
    let tlv = [0xEA, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e'];
    h.extend_from_slice(&((12 + tlv.len()) as u16).to_be_bytes());
    h.extend_from_slice(&client);
    h.extend_from_slice(&[10, 0, 0, 1]);
    h.extend_from_slice(&client_port.to_be_bytes());
    h.extend_from_slice(&dest_port.to_be_bytes());
    h.extend_from_slice(&tlv);
    h
}

pub const V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// Writes `bytes` in one go and reads until the peer closes (or `WAIT` passes).
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_all(&mut s).await
}

pub async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = within("reading until close", s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A request with `Connection: close`, so the proxy closes after answering.
pub fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n{extra}\r\n")
        .into_bytes()
}

/// Header `name` (lower-case) as the echo app reported it.
pub fn echoed<'a>(response: &'a str, name: &str) -> Vec<&'a str> {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .collect()
}

pub fn status(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A hyper client connection over a socket that has already sent `header`.
pub async fn client_with_header(
    addr: SocketAddr,
    header: &[u8],
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(header).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn request(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "example.com")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The app's answer body as text.
pub async fn text(resp: Response<Incoming>) -> String {
    let body = within("body", resp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Parses the echo body into a header map (last value wins).
pub fn echo_headers(body: &str) -> HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Opens a WebSocket through the proxy, PROXY header first.
pub async fn websocket(addr: SocketAddr, header: &[u8], path: &str) -> WebSocketStream<TcpStream> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(header).await.unwrap();
    let url = format!("ws://example.com{path}");
    let (ws, resp) = within(
        "websocket handshake",
        tokio_tungstenite::client_async(url, s),
    )
    .await
    .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// Sends `SIGTERM` to process `pid`, as `docker stop` does.
pub fn sigterm(pid: u32) {
    // SAFETY: kill(2) with a pid this test spawned and a valid signal number.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, SIGTERM): {}",
        std::io::Error::last_os_error()
    );
}
