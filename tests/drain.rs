//! A rolling restart as the proxy sees it: SIGTERM, then `SHUTDOWN_DELAY` while clients are
//! moved elsewhere, then `SHUTDOWN_TIMEOUT` while tunnels close one by one. Each phase on real
//! sockets: what a keep-alive client reads on each HTTP/1.1 path, what an HTTP/2 client gets,
//! what `/ping` answers, when WebSockets close, and what a second signal does.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use elb_ws_proxy::config::PingWhileDraining;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use common::*;

/// A keep-alive GET.
fn keepalive_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: a.example\r\n\r\n").into_bytes()
}

/// Reads one response off a keep-alive connection; its text.
async fn one_response(s: &mut TcpStream) -> String {
    read_keepalive_response(s, &mut Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text
}

/// Whether `s` is closed by the proxy (EOF, or a reset) within the bound.
async fn closed_by_proxy(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(within("close", s.read(&mut b)).await, Ok(0) | Err(_))
}

#[tokio::test]
async fn from_sigterm_every_http1_response_closes_its_connection_on_both_paths() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.shutdown_delay = Duration::from_secs(30);
    let mut proxy = start_proxy(config).await;
    // A body-less GET takes the lean path; a POST with a body goes through hyper.
    let lean = keepalive_get("/lean");
    let hyper = b"POST /hyper HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi".to_vec();
    let mut conns = Vec::new();
    for (i, request) in [&lean, &hyper].into_iter().enumerate() {
        let mut s = TcpStream::connect(proxy.tls).await.unwrap();
        s.write_all(&[v1(&format!("192.0.2.{}", 80 + i), 443), request.clone()].concat())
            .await
            .unwrap();
        let before = one_response(&mut s).await;
        assert_eq!(status(&before), 200, "{before}");
        assert!(
            !before.to_ascii_lowercase().contains("connection: close"),
            "{before}"
        );
        conns.push(s);
    }
    proxy.signal();
    eventually("the drain has begun", || async {
        let ping = exchange(
            proxy.tls,
            &[v1("192.0.2.90", 443), get("/ping", "")].concat(),
        )
        .await;
        (status(&ping) == 503).then_some(())
    })
    .await;
    // Keep-alive connections open before SIGTERM stay open until their next request; its
    // response is served in full, says `Connection: close`, and the connection then closes.
    for (s, request) in conns.iter_mut().zip([&lean, &hyper]) {
        s.write_all(request).await.unwrap();
        let after = one_response(s).await;
        assert_eq!(status(&after), 200, "{after}");
        assert!(
            after.to_ascii_lowercase().contains("connection: close"),
            "{after}"
        );
        assert!(closed_by_proxy(s).await);
    }
    // New connections are still served during the delay, and told to go.
    let fresh = exchange(proxy.tls, &[v1("192.0.2.91", 443), lean.clone()].concat()).await;
    assert_eq!(status(&fresh), 200, "{fresh}");
    assert!(fresh.to_ascii_lowercase().contains("connection: close"));
    // The app's connections were reused or closed by the pool: none of it shows to clients.
    assert!(app.connections.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_keepalive_connection_idle_through_the_delay_is_closed_when_accepting_stops() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.shutdown_delay = Duration::from_millis(400);
    let mut proxy = start_proxy(config).await;
    let mut s = TcpStream::connect(proxy.tls).await.unwrap();
    s.write_all(&[v1("192.0.2.92", 443), keepalive_get("/")].concat())
        .await
        .unwrap();
    assert_eq!(status(&one_response(&mut s).await), 200);
    let signalled = Instant::now();
    proxy.signal();
    assert!(closed_by_proxy(&mut s).await);
    assert!(
        signalled.elapsed() >= Duration::from_millis(350),
        "closed before SHUTDOWN_DELAY ended: {:?}",
        signalled.elapsed()
    );
}

/// A GET for the HTTP/2 client.
fn h2_get(
    path: &str,
) -> hyper::Request<http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>> {
    use http_body_util::BodyExt;
    hyper::Request::builder()
        .uri(format!("https://a.example{path}"))
        .body(http_body_util::Empty::new().boxed())
        .unwrap()
}

#[tokio::test]
async fn from_sigterm_http2_connections_get_goaway_while_new_ones_are_served() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.shutdown_delay = Duration::from_secs(30);
    let mut proxy = start_proxy(config).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.60", 443)).await;
    let first = c.send_request(h2_get("/before")).await.unwrap();
    assert_eq!(first.status(), 200);
    proxy.signal();
    // GOAWAY: the client's connection takes no new stream, and closes.
    eventually("GOAWAY reached the client", || {
        let closed = c.is_closed();
        async move { closed.then_some(()) }
    })
    .await;
    // The proxy is still serving, over a new connection.
    let mut fresh = h2_client(proxy.tls, &v1("203.0.113.61", 443)).await;
    let resp = fresh.send_request(h2_get("/after")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn shutdown_ping_status_200_keeps_the_target_healthy_while_draining() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.shutdown_delay = Duration::from_secs(30);
    config.shutdown_ping_status = PingWhileDraining::Healthy;
    let mut proxy = start_proxy(config).await;
    proxy.signal();
    // The drain has begun once responses say `Connection: close`; /ping still answers 200.
    eventually("the drain has begun", || async {
        let r = exchange(proxy.tls, &[v1("192.0.2.93", 443), get("/x", "")].concat()).await;
        r.to_ascii_lowercase()
            .contains("connection: close")
            .then_some(())
    })
    .await;
    let ping = exchange(
        proxy.tls,
        &[v1("192.0.2.94", 443), get("/ping", "")].concat(),
    )
    .await;
    assert_eq!(status(&ping), 200, "{ping}");
}

#[tokio::test]
async fn tunnels_close_one_by_one_over_the_shutdown_timeout() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.shutdown_delay = Duration::from_millis(300);
    config.shutdown_timeout = Duration::from_secs(3);
    let proxy = start_proxy(config).await;
    let mut closes = Vec::new();
    for i in 0..6 {
        let mut ws = websocket(proxy.tls, &v1(&format!("192.0.2.{}", 100 + i), 443), "/ws").await;
        within("hello", ws.next()).await.unwrap().unwrap();
        closes.push(tokio::spawn(async move {
            // Each WebSocket keeps talking until the proxy ends it; when did that happen?
            loop {
                if ws.send(Message::text("ping")).await.is_err() {
                    return Instant::now();
                }
                match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                    Ok(Some(Ok(_))) => {}
                    _ => return Instant::now(),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let signalled = Instant::now();
    let stopping = tokio::spawn(proxy.stop());
    let mut at = Vec::new();
    for c in closes {
        at.push(within("a tunnel closes", c).await.unwrap() - signalled);
    }
    within("exit", stopping).await.unwrap().unwrap();
    at.sort();
    let (first, last) = (at[0], at[at.len() - 1]);
    assert!(
        first >= Duration::from_millis(300),
        "a tunnel closed during SHUTDOWN_DELAY: {at:?}"
    );
    assert!(
        last - first >= Duration::from_secs(1),
        "closes spread over less than a third of SHUTDOWN_TIMEOUT: {at:?}"
    );
    assert!(
        last < Duration::from_millis(300 + 3000),
        "a tunnel lasted to the deadline: {at:?}"
    );
}

#[tokio::test]
async fn a_second_signal_ends_the_drain_at_once() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.shutdown_delay = Duration::from_secs(20);
    config.shutdown_timeout = Duration::from_secs(20);
    let mut proxy = start_proxy(config).await;
    let mut ws = websocket(proxy.tls, &v1("192.0.2.110", 443), "/ws").await;
    within("hello", ws.next()).await.unwrap().unwrap();
    let started = Instant::now();
    proxy.signal();
    eventually("the drain has begun", || async {
        let ping = exchange(
            proxy.tls,
            &[v1("192.0.2.111", 443), get("/ping", "")].concat(),
        )
        .await;
        (status(&ping) == 503).then_some(())
    })
    .await;
    proxy.signal();
    within("exit", proxy.stop()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let end = within("closed", ws.next()).await;
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "tunnel closed: {end:?}"
    );
}
