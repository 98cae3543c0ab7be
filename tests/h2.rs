//! HTTP/2 clients after a PROXY header, as an NLB TLS listener with ALPN forwards them: every
//! HTTP/1.1 guarantee per stream, to an HTTP/1.1 app and to an h2c app, and the bad inputs.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use elb_ws_proxy::config::DestinationProtocol;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

use common::*;

type B = BoxBody<Bytes, Infallible>;

fn req(method: Method, uri: &str, body: &'static [u8]) -> Request<B> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::from_static(body)).boxed())
        .unwrap()
}

async fn collect(resp: Response<Incoming>) -> (StatusCode, String, Option<http::HeaderMap>) {
    let status = resp.status();
    let collected = within("body", resp.into_body().collect()).await.unwrap();
    let trailers = collected.trailers().cloned();
    let text = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    (status, text, trailers)
}

fn line<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .collect()
}

/// Forwarding, Host and bodies through each destination protocol to the matching app.
async fn forwards_like_http1(dest: DestinationProtocol, app: &App, h2_app: bool) {
    let mut config = config_for(app.addr);
    config.destination_protocol = dest;
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();
    let mut c = h2_client(proxy.tls, &v1("203.0.113.50", 443)).await;
    let mut r = req(Method::GET, "https://shop.example:8443/a?b=1", b"");
    for spoof in [
        "x-forwarded-for",
        "x-real-ip",
        "x-amzn-vpce-id",
        "forwarded",
    ] {
        r.headers_mut().insert(spoof, "1.2.3.4".parse().unwrap());
    }
    let (status, text, _) = collect(c.send_request(r).await.unwrap()).await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("1.2.3.4"), "{text}");
    assert_eq!(line(&text, "x-forwarded-for"), ["203.0.113.50"], "{text}");
    assert_eq!(line(&text, "x-forwarded-proto"), ["https"], "{text}");
    assert_eq!(line(&text, "x-forwarded-port"), ["443"], "{text}");
    if h2_app {
        assert!(
            text.starts_with("GET http://shop.example:8443/a?b=1\n"),
            "{text}"
        );
        assert!(line(&text, "host").is_empty(), "{text}");
    } else {
        assert!(text.starts_with("GET /a?b=1\n"), "{text}");
        assert_eq!(line(&text, "host"), ["shop.example:8443"], "{text}");
    }
    // A body that streams in frames, with no Content-Length, arrives whole.
    let frames = futures_util::stream::iter(
        (0..64).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[b'q'; 16384])))),
    );
    let upload = Request::post("https://shop.example/up")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap();
    let (status, text, _) = collect(c.send_request(upload).await.unwrap()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(line(&text, "body-length"), ["1048576"], "{text}");
    // A large download streams back.
    let (status, text, _) = collect(
        c.send_request(req(Method::GET, "https://shop.example/stream?3000000", b""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, text.len()), (StatusCode::OK, 3_000_000));
    assert_eq!(
        proxy.metric("elb_ws_proxy_requests_total{protocol=\"h2\",class=\"2xx\"}"),
        3.0
    );
    let text = logs.text();
    let access: Vec<&str> = text.lines().filter(|l| l.contains(" access:")).collect();
    assert_eq!(access.len(), 3, "{text}");
    assert!(
        access
            .iter()
            .all(|l| l.contains("network.protocol.version=\"2\"")),
        "{text}"
    );
}

#[tokio::test]
async fn h2_clients_reach_an_http1_app_with_every_forwarding_rule() {
    let app = start_app().await;
    forwards_like_http1(DestinationProtocol::Http1, &app, false).await;
}

#[tokio::test]
async fn h2_clients_reach_an_h2c_app_with_every_forwarding_rule() {
    let app = start_h2_app().await;
    forwards_like_http1(DestinationProtocol::H2c, &app, true).await;
}

#[tokio::test]
async fn trailers_and_bidirectional_streams_pass_through_h2c() {
    let app = start_h2_app().await;
    let mut config = config_for(app.addr);
    config.destination_protocol = DestinationProtocol::H2c;
    let proxy = start_proxy(config).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.51", 443)).await;
    let mut r = req(Method::POST, "https://grpc.example/trailers", b"x");
    r.headers_mut().insert("te", "trailers".parse().unwrap());
    let (status, text, trailers) = collect(c.send_request(r).await.unwrap()).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "ok"));
    let trailers = trailers.expect("trailers passed on");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-trailer"], "yes");
    // Both directions at once: each message comes back before the next is sent.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Frame<Bytes>>();
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (Ok::<_, Infallible>(f), rx))
    });
    let r = Request::post("https://grpc.example/echo-body")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap();
    let resp = within("echo head", c.send_request(r)).await.unwrap();
    let mut body = resp.into_body();
    for i in 0..5 {
        let msg = format!("message {i}");
        tx.send(Frame::data(Bytes::from(msg.clone()))).unwrap();
        let frame = within("echo", body.frame()).await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), msg.as_bytes());
    }
}

#[tokio::test]
async fn auto_sends_each_client_over_its_own_protocol() {
    let h2_app = start_h2_app().await;
    let mut config = config_for(h2_app.addr);
    config.destination_protocol = DestinationProtocol::Auto;
    let proxy = start_proxy(config).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.52", 443)).await;
    let (status, text, _) = collect(
        c.send_request(req(Method::GET, "https://a.example/x", b""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("GET http://a.example/x\n"), "{text}");
    // An HTTP/1.1 client goes over HTTP/1.1, which an h2c-only app cannot answer: 502.
    let resp = exchange(
        proxy.tls,
        &[v1("203.0.113.52", 443), get("/x", "")].concat(),
    )
    .await;
    assert_eq!(common::status(&resp), 502, "{resp}");
}

#[tokio::test]
async fn ping_redirect_and_bad_requests_get_the_http1_answers() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.max_body_bytes = Some(1000);
    let proxy = start_proxy(config).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.53", 443)).await;
    let (status, text, _) = collect(
        c.send_request(req(Method::GET, "https://a.example/ping", b""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "ok"));
    let mut plain = h2_client(proxy.plain, &v1("203.0.113.53", 80)).await;
    let resp = plain
        .send_request(req(Method::GET, "https://Shop.Example:80/p?q=1", b""))
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://shop.example/p?q=1");
    // Refused by the rules, nothing reaches the app.
    let before = app.connections.load(Ordering::SeqCst);
    let mut differ = req(Method::GET, "https://a.example/x", b"");
    differ
        .headers_mut()
        .insert("host", "b.example".parse().unwrap());
    let connect = Request::builder()
        .method(Method::CONNECT)
        .uri("a.example:443")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    for (r, expected) in [(differ, 400), (connect, 405)] {
        let (status, text, _) = collect(c.send_request(r).await.unwrap()).await;
        assert_eq!(status.as_u16(), expected, "{text}");
    }
    let big = req(Method::POST, "https://a.example/x", &[b'b'; 5000]);
    let (status, _, _) = collect(c.send_request(big).await.unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(app.connections.load(Ordering::SeqCst), before);
    // A header list over MAX_HEADER_BYTES gets 431 from the codec; the connection lives on.
    let mut huge = req(Method::GET, "https://a.example/x", b"");
    huge.headers_mut()
        .insert("x-big", "v".repeat(70_000).parse().unwrap());
    let refused = c.send_request(huge).await.unwrap();
    assert_eq!(refused.status(), 431);
    let (status, _, _) = collect(
        c.send_request(req(Method::GET, "https://a.example/after", b""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_dead_or_slow_app_gives_502_and_504_per_stream() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.response_timeout = Duration::from_millis(300);
    let proxy = start_proxy(config).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.54", 443)).await;
    let (status, _, _) = collect(
        c.send_request(req(Method::GET, "https://a.example/slow", b""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 504);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = start_proxy(config_for(dead)).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.54", 443)).await;
    let (status, _, _) = collect(
        c.send_request(req(Method::GET, "https://a.example/x", b""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502);
}

#[tokio::test]
async fn websockets_over_h2_reach_an_http1_app() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.55", 443)).await;
    let upgraded = h2_websocket(&mut c).await;
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    let hello = within("hello", ws.next()).await.unwrap().unwrap();
    assert_eq!(
        hello.into_text().unwrap().as_str(),
        "x-forwarded-for: 203.0.113.55"
    );
    ws.send(Message::text("over h2")).await.unwrap();
    let back = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "over h2");
    assert_eq!(proxy.metric("elb_ws_proxy_websocket_tunnels_open"), 1.0);
}

#[tokio::test]
async fn drain_sends_goaway_and_lets_open_streams_finish() {
    let app = start_app().await;
    let mut proxy = start_proxy(config_for(app.addr)).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.56", 443)).await;
    let slow = c.send_request(req(Method::GET, "https://a.example/slow", b""));
    let slow = tokio::spawn(async move { collect(slow.await.unwrap()).await });
    let reached = app.connections.clone();
    eventually("the slow request reaches the app", || {
        let n = reached.load(Ordering::SeqCst);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    // One connection and one stream open while the slow request is in flight.
    assert_eq!(proxy.metric("elb_ws_proxy_h2_connections_open"), 1.0);
    assert_eq!(proxy.metric("elb_ws_proxy_h2_streams_open"), 1.0);
    proxy.signal();
    let (status, text, _) = within("in-flight stream", slow).await.unwrap();
    assert_eq!(status, 200, "{text}");
    // After GOAWAY the connection takes no new stream.
    let after = c
        .send_request(req(Method::GET, "https://a.example/x", b""))
        .await;
    assert!(after.is_err(), "{:?}", after.map(|r| r.status()));
    let metrics = proxy.proxy_metrics.clone();
    within("exit", proxy.stop()).await.unwrap();
    let m = metrics.render();
    assert!(m.contains("elb_ws_proxy_h2_connections_open 0\n"), "{m}");
    assert!(m.contains("elb_ws_proxy_h2_streams_open 0\n"), "{m}");
}

/// A scripted h2c app: `serve` gets each accepted connection with its number (from 1); the
/// counter says how many were accepted.
async fn scripted_h2_app<F, Fut>(serve: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize, h2::server::Connection<tokio::net::TcpStream, Bytes>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if let Ok(conn) = h2::server::handshake(s).await {
                tokio::spawn(serve(n, conn));
            }
        }
    });
    (addr, conns)
}

/// Answers a stream with the number of the connection it came on.
fn answer(respond: &mut h2::server::SendResponse<Bytes>, n: usize) {
    let mut body = respond
        .send_response(http::Response::new(()), false)
        .unwrap();
    body.send_data(Bytes::from(format!("connection {n}")), true)
        .unwrap();
}

/// An h2c app that refuses the second stream on every connection (RST_STREAM REFUSED_STREAM,
/// as a server going away does) and answers the others with the connection's number.
async fn refusing_h2_app() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    scripted_h2_app(|n, mut conn| async move {
        let mut streams = 0;
        while let Some(Ok((_req, mut respond))) = conn.accept().await {
            streams += 1;
            if streams == 2 {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
            } else {
                answer(&mut respond, n);
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_refused_idempotent_request_is_sent_once_more_on_a_new_h2c_connection() {
    let (app, conns) = refusing_h2_app().await;
    let mut config = config_for(app);
    config.destination_protocol = DestinationProtocol::H2c;
    let proxy = start_proxy(config).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.57", 443)).await;
    let get = || req(Method::GET, "https://a.example/x", b"");
    let (status, text, _) = collect(c.send_request(get()).await.unwrap()).await;
    assert_eq!((status.as_u16(), text.as_str()), (200, "connection 1"));
    // The second stream on connection 1 is refused; the GET goes again on connection 2.
    let (status, text, _) = collect(c.send_request(get()).await.unwrap()).await;
    assert_eq!((status.as_u16(), text.as_str()), (200, "connection 2"));
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // A POST is not idempotent: refused, it is not sent again.
    let (status, _, _) = collect(
        c.send_request(req(Method::POST, "https://a.example/x", b"body"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status.as_u16(), 502);
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

/// An h2c app that answers one stream per connection and then sends GOAWAY, as an app that
/// restarts or rotates its connections does; the proxy's next request must not be lost.
async fn one_stream_then_goaway_app() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    scripted_h2_app(|n, mut conn| async move {
        if let Some(Ok((_req, mut respond))) = conn.accept().await {
            answer(&mut respond, n);
            conn.graceful_shutdown();
        }
        // Drives the GOAWAY out; a stream that crossed it is dropped unanswered.
        while conn.accept().await.is_some() {}
    })
    .await
}

#[tokio::test]
async fn an_app_that_sends_goaway_loses_no_request() {
    let (app, conns) = one_stream_then_goaway_app().await;
    let mut config = config_for(app);
    config.destination_protocol = DestinationProtocol::H2c;
    let proxy = start_proxy(config).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.58", 443)).await;
    for n in 1..=3 {
        let get = req(Method::GET, "https://a.example/x", b"");
        let (status, text, _) = collect(c.send_request(get).await.unwrap()).await;
        assert_eq!(
            (status.as_u16(), text.as_str()),
            (200, format!("connection {n}").as_str())
        );
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_h2_clocks_first_headers_then_idle() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.request_header_timeout = Duration::from_millis(300);
    config.keepalive_timeout = Duration::from_millis(700);
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();
    // A preface and nothing else: GOAWAY at REQUEST_HEADER_TIMEOUT, with a warning.
    let mut s = tokio::net::TcpStream::connect(proxy.tls).await.unwrap();
    let mut hello = v1("203.0.113.58", 443);
    hello.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0");
    tokio::io::AsyncWriteExt::write_all(&mut s, &hello)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    within(
        "closed",
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    // GOAWAY at 300 ms, then the 2 s grace a client that never answers the PING runs out.
    assert!(
        took >= Duration::from_millis(2200) && took < Duration::from_millis(4000),
        "{took:?}"
    );
    let mut kinds = Vec::new();
    let mut at = 0;
    while at + 9 <= rest.len() {
        let len = (usize::from(rest[at]) << 16)
            | (usize::from(rest[at + 1]) << 8)
            | usize::from(rest[at + 2]);
        kinds.push(rest[at + 3]);
        at += 9 + len;
    }
    assert!(kinds.contains(&0x7), "a GOAWAY frame was sent: {kinds:?}");
    assert!(logs
        .text()
        .contains("no HTTP/2 request within REQUEST_HEADER_TIMEOUT"));
    // After a request, a connection with no open stream lasts KEEPALIVE_TIMEOUT.
    let mut tcp = tokio::net::TcpStream::connect(proxy.tls).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &v1("203.0.113.58", 443))
        .await
        .unwrap();
    let (mut c, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let (status, _, _) = collect(
        c.send_request(req(Method::GET, "https://a.example/x", b""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let idle_from = std::time::Instant::now();
    within("idle connection closed", conn)
        .await
        .unwrap()
        .unwrap();
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(600) && idle < Duration::from_millis(2500),
        "{idle:?}"
    );
}
