//! Settings and bad input: every limit and timeout, spoofing, ambiguous framing, a failing
//! app, floods. Each case gets a defined answer and the proxy keeps serving everyone else.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use elb_ws_proxy::config::ProxyProtocol;

use common::*;

async fn still_serving(tls: std::net::SocketAddr) {
    let resp = exchange(tls, &[v1("192.0.2.99", 443), get("/", "")].concat()).await;
    assert_eq!(status(&resp), 200, "the proxy still serves others: {resp}");
}

#[tokio::test]
async fn proxy_protocol_optional_and_off() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.proxy_protocol = ProxyProtocol::Optional;
    let proxy = start_proxy(config.clone()).await;
    let without = exchange(proxy.tls, &get("/", "")).await;
    assert_eq!(
        echoed(&without, "x-forwarded-for"),
        ["127.0.0.1"],
        "{without}"
    );
    let with = exchange(proxy.tls, &[v1("203.0.113.1", 443), get("/", "")].concat()).await;
    assert_eq!(echoed(&with, "x-forwarded-for"), ["203.0.113.1"]);

    config.proxy_protocol = ProxyProtocol::Off;
    let proxy = start_proxy(config).await;
    let plain = exchange(proxy.tls, &get("/", "")).await;
    assert_eq!(echoed(&plain, "x-forwarded-for"), ["127.0.0.1"]);
    // With headers off, a header is just a malformed request line.
    let header = exchange(proxy.tls, &[v1("203.0.113.1", 443), get("/", "")].concat()).await;
    assert_eq!(status(&header), 400, "{header}");
}

#[tokio::test]
async fn untrusted_peers_cannot_claim_an_address() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let proxy = start_proxy(config.clone()).await;
    assert_eq!(
        exchange(proxy.tls, &[v1("203.0.113.2", 443), get("/", "")].concat()).await,
        ""
    );
    assert_eq!(
        exchange(
            proxy.tls,
            &[v2([203, 0, 113, 2], 1, 443), get("/", "")].concat()
        )
        .await,
        ""
    );
    config.proxy_protocol = ProxyProtocol::Optional;
    let optional = start_proxy(config.clone()).await;
    assert_eq!(
        exchange(
            optional.tls,
            &[v1("203.0.113.2", 443), get("/", "")].concat()
        )
        .await,
        ""
    );
    let bare = exchange(optional.tls, &get("/", "")).await;
    assert_eq!(
        echoed(&bare, "x-forwarded-for"),
        ["127.0.0.1"],
        "no header: the socket's own address"
    );
    assert_eq!(app.connections.load(Ordering::SeqCst), 1);
    config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    let trusted = start_proxy(config).await;
    let ok = exchange(
        trusted.tls,
        &[v1("203.0.113.2", 443), get("/", "")].concat(),
    )
    .await;
    assert_eq!(echoed(&ok, "x-forwarded-for"), ["203.0.113.2"]);
}

#[tokio::test]
async fn slow_request_headers_are_cut_but_idle_keepalive_is_not() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.request_header_timeout = Duration::from_millis(300);
    config.keepalive_timeout = Duration::from_millis(1500);
    let proxy = start_proxy(config).await;

    // Slow-loris: a request head that never finishes is closed at REQUEST_HEADER_TIMEOUT.
    let mut s = TcpStream::connect(proxy.tls).await.unwrap();
    s.write_all(&v1("192.0.2.20", 443)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let started = Instant::now();
    let rest = read_all(&mut s).await;
    assert!(rest.is_empty() || status(&rest) == 408, "{rest}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1400),
        "{took:?}"
    );

    // An idle keep-alive connection outlives REQUEST_HEADER_TIMEOUT (the ELB reuses it) ...
    let mut s = TcpStream::connect(proxy.tls).await.unwrap();
    s.write_all(&v1("192.0.2.21", 443)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(request("/one")).await.unwrap();
    text(resp).await;
    // Time passing is what is tested here: twice REQUEST_HEADER_TIMEOUT, half KEEPALIVE_TIMEOUT.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let resp = within("second request", sender.send_request(request("/two")))
        .await
        .expect("still open");
    assert!(text(resp).await.starts_with("GET /two"));
    // ... and is closed by the proxy at KEEPALIVE_TIMEOUT after its last response.
    let idle_from = Instant::now();
    within("closed after KEEPALIVE_TIMEOUT", conn)
        .await
        .unwrap()
        .unwrap();
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(1300) && idle < Duration::from_millis(3000),
        "{idle:?}"
    );
}

#[tokio::test]
async fn connect_timeout_gives_502() {
    // A listener that never accepts, with its queue filled: further SYNs go unanswered.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let mut config = config_for(addr);
    config.connect_timeout = Duration::from_millis(300);
    let proxy = start_proxy(config).await;
    let started = Instant::now();
    let resp = exchange(proxy.tls, &[v1("192.0.2.22", 443), get("/", "")].concat()).await;
    assert_eq!(status(&resp), 502, "{resp}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(proxy
        .proxy_metrics
        .render()
        .contains("elb_ws_proxy_upstream_errors_total{kind=\"connect\"} 1"));
    drop(full);
}

#[tokio::test]
async fn websocket_idle_timeout_closes_only_idle_tunnels() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.websocket_idle_timeout = Some(Duration::from_millis(400));
    let proxy = start_proxy(config).await;
    let mut idle = websocket(proxy.tls, &v1("192.0.2.23", 443), "/ws").await;
    let mut busy = websocket(proxy.tls, &v1("192.0.2.24", 443), "/ws").await;
    within("hello", idle.next()).await.unwrap().unwrap();
    within("hello", busy.next()).await.unwrap().unwrap();
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        busy.send(Message::text(format!("{i}"))).await.unwrap();
        within("echo", busy.next()).await.unwrap().unwrap();
    }
    let end = within("idle closed", idle.next()).await;
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_instead_of_failing() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.max_connections = 2;
    let proxy = start_proxy(config).await;
    let mut a = client_with_header(proxy.tls, &v1("192.0.2.25", 443)).await;
    let _b = client_with_header(proxy.tls, &v1("192.0.2.26", 443)).await;
    text(a.send_request(request("/")).await.unwrap()).await;
    let (tls, third_req) = (proxy.tls, [v1("192.0.2.27", 443), get("/", "")].concat());
    let mut third = tokio::spawn(async move { exchange(tls, &third_req).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(400), &mut third)
            .await
            .is_err(),
        "the third connection waits while two are open"
    );
    drop(a);
    let resp = within("third served", third).await.unwrap();
    assert_eq!(status(&resp), 200, "{resp}");
}

#[tokio::test]
async fn header_and_body_limits() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.max_header_bytes = 16 * 1024;
    config.max_body_bytes = Some(1000);
    let proxy = start_proxy(config).await;
    let big_header = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
    let resp = exchange(
        proxy.tls,
        &[v1("192.0.2.28", 443), get("/", &big_header)].concat(),
    )
    .await;
    assert_eq!(status(&resp), 431, "{resp}");
    let post = |body: &str, framing: &str| {
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{framing}\r\n{body}")
            .into_bytes()
    };
    let resp = exchange(
        proxy.tls,
        &[
            v1("192.0.2.28", 443),
            post(&"b".repeat(2000), "Content-Length: 2000\r\n"),
        ]
        .concat(),
    )
    .await;
    assert_eq!(status(&resp), 413, "{resp}");
    let chunked = format!(
        "3e8\r\n{}\r\n3e8\r\n{}\r\n0\r\n\r\n",
        "c".repeat(1000),
        "c".repeat(1000)
    );
    let resp = exchange(
        proxy.tls,
        &[
            v1("192.0.2.28", 443),
            post(&chunked, "Transfer-Encoding: chunked\r\n"),
        ]
        .concat(),
    )
    .await;
    assert_eq!(status(&resp), 413, "{resp}");
    let small = exchange(
        proxy.tls,
        &[
            v1("192.0.2.28", 443),
            post(&"d".repeat(900), "Content-Length: 900\r\n"),
        ]
        .concat(),
    )
    .await;
    assert!(small.ends_with("received 900"), "{small}");
}

#[tokio::test]
async fn ambiguous_framing_never_reaches_the_app() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let h = v1("192.0.2.29", 443);
    for bad in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    ] {
        let resp = exchange(proxy.tls, &[h.clone(), bad.as_bytes().to_vec()].concat()).await;
        assert_eq!(status(&resp), 400, "{bad:?} -> {resp}");
    }
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        0,
        "nothing reached the app"
    );
    // Content-Length with Transfer-Encoding: the chunks frame the body and Content-Length is
    // not passed on (RFC 9112 §6.3), on both paths (tests/rules.rs runs the same case).
    let both = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let resp = exchange(proxy.tls, &[h, both.as_bytes().to_vec()].concat()).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(echoed(&resp, "content-length").is_empty(), "{resp}");
    assert_eq!(echoed(&resp, "transfer-encoding"), ["chunked"], "{resp}");
    assert_eq!(echoed(&resp, "body-length"), ["5"], "{resp}");
}

/// A hand-written app that misbehaves after reading a request.
async fn broken_app(mode: &'static str) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                match mode {
                    "truncate" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten!!")
                            .await;
                    }
                    "reset" => {
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    }
                    _ => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_app_that_dies_mid_response_closes_the_client_promptly() {
    let addr = broken_app("truncate").await;
    let proxy = start_proxy(config_for(addr)).await;
    let started = Instant::now();
    let resp = exchange(proxy.tls, &[v1("192.0.2.30", 443), get("/", "")].concat()).await;
    assert!(
        resp.starts_with("HTTP/1.1 200") && !resp.contains(&"x".repeat(100)),
        "{resp}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed promptly"
    );
    let resp = exchange(proxy.tls, &[v1("192.0.2.30", 443), get("/", "")].concat()).await;
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "next request gets a fresh connection: {resp}"
    );

    let reset = broken_app("reset").await;
    let proxy = start_proxy(config_for(reset)).await;
    let resp = exchange(proxy.tls, &[v1("192.0.2.31", 443), get("/", "")].concat()).await;
    assert_eq!(status(&resp), 502, "{resp}");
    assert!(proxy
        .proxy_metrics
        .render()
        .contains("elb_ws_proxy_upstream_errors_total{kind=\"reset\"} 1"));
}

/// An app that accepts one WebSocket, says hello, and then dies when told: its socket is reset
/// (`"reset"`, a crash with data unread) or closed without a close frame (`"close"`, a process
/// that exits).
async fn mortal_websocket_app(how: &'static str) -> (SocketAddr, oneshot::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (kill, killed) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
        ws.send(Message::text("hello")).await.unwrap();
        let _ = killed.await;
        let s = ws.into_inner();
        if how == "reset" {
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(s);
    });
    (addr, kill)
}

#[tokio::test]
async fn an_app_dying_under_a_websocket_closes_the_client() {
    for how in ["close", "reset"] {
        let (app, kill) = mortal_websocket_app(how).await;
        let proxy = start_proxy(config_for(app)).await;
        let mut ws = websocket(proxy.tls, &v1("192.0.2.32", 443), "/ws").await;
        within("hello", ws.next()).await.unwrap().unwrap();
        assert!(proxy
            .proxy_metrics
            .render()
            .contains("elb_ws_proxy_websocket_tunnels_open 1\n"));
        kill.send(()).unwrap();
        // The client sees the stream end (no close frame ever came from the app) ...
        let end = within(how, ws.next()).await;
        assert!(
            matches!(end, None | Some(Err(_))),
            "{how}: the client's side ends, got {end:?}"
        );
        // ... and the proxy lets go of the tunnel: at once after a reset; after a FIN, once the
        // client has closed its side too (it may still send, a half-closed tunnel carries it).
        if how == "close" {
            drop(ws);
        }
        eventually("the tunnel is released", || {
            let m = proxy.proxy_metrics.render();
            async move {
                m.contains("elb_ws_proxy_websocket_tunnels_open 0\n")
                    .then_some(())
            }
        })
        .await;
    }
}

#[tokio::test]
async fn floods_of_garbage_and_half_open_sockets_leave_others_served() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.proxy_header_timeout = Duration::from_millis(500);
    config.keepalive_timeout = Duration::from_millis(800);
    let proxy = start_proxy(config).await;
    // Connections that send nothing are idle, not slow: closed at KEEPALIVE_TIMEOUT ...
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(proxy.tls).await.unwrap());
    }
    // ... and those that stall inside the header are cut at PROXY_HEADER_TIMEOUT.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(proxy.tls).await.unwrap();
        s.write_all(b"PROXY TCP4 192.0.2.").await.unwrap();
        stalled.push(s);
    }
    let garbage: Vec<_> = (0..300u32)
        .map(|i| {
            let tls = proxy.tls;
            tokio::spawn(async move {
                let junk: Vec<u8> = (0..200u32).map(|j| (i * 31 + j * 7) as u8).collect();
                exchange(tls, &junk).await
            })
        })
        .collect();
    still_serving(proxy.tls).await;
    for g in garbage {
        let out = within("garbage closed", g).await.unwrap();
        assert!(out.is_empty() || status(&out) == 400, "{out}");
    }
    let mut buf = [0u8; 1];
    for s in stalled.iter_mut().chain(idle.iter_mut()) {
        assert_eq!(within("closed", s.read(&mut buf)).await.unwrap_or(0), 0);
    }
    still_serving(proxy.tls).await;
    let m = proxy.proxy_metrics.render();
    for (reason, n) in [("idle_before_header", 200), ("proxy_header_timeout", 50)] {
        let series = format!("elb_ws_proxy_connections_refused_total{{reason=\"{reason}\"}} {n}\n");
        assert!(m.contains(&series), "{series} in\n{m}");
    }
}

#[tokio::test]
async fn clients_that_never_read_do_not_stop_others() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let before = rss_kib();
    let mut stuck = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(proxy.tls).await.unwrap();
        s.write_all(
            &[
                v1(&format!("192.0.2.{}", 100 + i), 443),
                get("/stream?67108864", ""),
            ]
            .concat(),
        )
        .await
        .unwrap();
        stuck.push(s);
    }
    let served = app.connections.clone();
    eventually("all 20 downloads reach the app", || {
        let n = served.load(Ordering::SeqCst);
        async move { (n >= 20).then_some(()) }
    })
    .await;
    still_serving(proxy.tls).await;
    // Backpressure, not buffering: 20 × 64 MiB would be 1.25 GiB if the proxy held the bodies.
    // (Other tests share this process, hence the loose bound.)
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 200 * 1024,
        "memory grew by {grown} KiB with 20 stalled 64 MiB downloads"
    );
}

#[tokio::test]
async fn shutdown_delay_fails_health_checks_first_and_keeps_serving() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.shutdown_delay = Duration::from_millis(1500);
    let mut proxy = start_proxy(config).await;
    let tls = proxy.tls;
    let slow_req = [v1("192.0.2.40", 443), get("/slow", "")].concat();
    let slow = tokio::spawn(async move { exchange(tls, &slow_req).await });
    let reached = app.connections.clone();
    eventually("the slow request reaches the app", || {
        let n = reached.load(Ordering::SeqCst);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let started = Instant::now();
    proxy.signal();
    let ping = [v1("192.0.2.41", 443), get("/ping", "")].concat();
    eventually("/ping fails once draining", || async {
        (status(&exchange(tls, &ping).await) == 503).then_some(())
    })
    .await;
    still_serving(tls).await;
    let resp = within("in-flight", slow).await.unwrap();
    assert_eq!(status(&resp), 200);
    within("exit", proxy.stop()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "served through the delay"
    );
}

#[tokio::test]
async fn an_app_closing_idle_keepalive_connections_causes_no_502() {
    // Like a Node app with a short keepAliveTimeout: each connection answers one request with
    // keep-alive, then the app closes it a moment later without saying so.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = l.local_addr().unwrap();
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counter, closer) = (opened.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let closer = closer.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if s.read(&mut buf).await.unwrap_or(0) > 0 {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                drop(s);
                closer.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let proxy = start_proxy(config_for(app)).await;
    for i in 0..3 {
        let resp = exchange(proxy.tls, &[v1("192.0.2.70", 443), get("/", "")].concat()).await;
        assert_eq!(status(&resp), 200, "request {i}: {resp}");
        // The app closes the now idle, pooled connection; the next request must not hit it.
        let closed = closed.clone();
        eventually("the app closed its connection", || {
            let n = closed.load(Ordering::SeqCst);
            async move { (n > i).then_some(()) }
        })
        .await;
    }
    assert_eq!(
        opened.load(Ordering::SeqCst),
        3,
        "each request needed a new connection"
    );
    let metrics = proxy.proxy_metrics.render();
    assert!(
        metrics.contains("elb_ws_proxy_upstream_errors_total{kind=\"reset\"} 0"),
        "{metrics}"
    );
}
