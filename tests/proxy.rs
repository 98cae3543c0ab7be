//! The 0.1 behaviours over real sockets: PROXY headers, redirect, `/ping`, forwarding,
//! streaming, keep-alive reuse, upstream failures, WebSockets and drain.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use common::*;

#[tokio::test]
async fn v1_header_sets_forwarding_headers_and_keeps_host() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let req = [
        v1("203.0.113.7", 443),
        get("/hello?x=1", "Host-Extra: 1\r\n"),
    ]
    .concat();
    let resp = exchange(proxy.tls, &req).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(echoed(&resp, "x-forwarded-for"), ["203.0.113.7"]);
    assert_eq!(echoed(&resp, "x-forwarded-proto"), ["https"]);
    assert_eq!(echoed(&resp, "x-forwarded-port"), ["443"]);
    assert_eq!(echoed(&resp, "host"), ["example.com"]);
    assert!(resp.contains("\r\n\r\nGET /hello?x=1\n"), "{resp}");
}

#[tokio::test]
async fn v1_tcp6_unknown_and_v2_proxy_and_local() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let cases: Vec<(Vec<u8>, &str, Option<&str>)> = vec![
        (
            b"PROXY TCP6 2001:db8::7 2001:db8::1 5000 444\r\n".to_vec(),
            "2001:db8::7",
            Some("444"),
        ),
        (b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1", None),
        (
            v2([198, 51, 100, 9], 8080, 443),
            "198.51.100.9",
            Some("443"),
        ),
        (V2_LOCAL.to_vec(), "127.0.0.1", None),
    ];
    for (header, client, port) in cases {
        let resp = exchange(proxy.tls, &[header, get("/", "")].concat()).await;
        assert_eq!(status(&resp), 200, "{resp}");
        assert_eq!(echoed(&resp, "x-forwarded-for"), [client]);
        assert_eq!(
            echoed(&resp, "x-forwarded-port"),
            port.into_iter().collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn header_and_request_split_across_many_writes() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let all = [v1("192.0.2.1", 443), get("/split", "")].concat();
    let mut s = TcpStream::connect(proxy.tls).await.unwrap();
    s.set_nodelay(true).unwrap();
    for chunk in all.chunks(7) {
        s.write_all(chunk).await.unwrap();
        // Pacing, so the pieces arrive as separate segments.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let resp = read_all(&mut s).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(echoed(&resp, "x-forwarded-for"), ["192.0.2.1"]);
}

#[tokio::test]
async fn missing_malformed_and_late_headers_are_closed_without_an_answer() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.proxy_header_timeout = Duration::from_millis(300);
    let proxy = start_proxy(config).await;
    for bad in [
        get("/", ""),
        [
            b"PROXY TCP4 1.2.3.999 10.0.0.1 1 2\r\n".to_vec(),
            get("/", ""),
        ]
        .concat(),
        [b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2\n".to_vec(), get("/", "")].concat(),
        [
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c".to_vec(),
            vec![0; 12],
            get("/", ""),
        ]
        .concat(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
    ] {
        assert_eq!(
            exchange(proxy.tls, &bad).await,
            "",
            "{:?}",
            String::from_utf8_lossy(&bad)
        );
        assert_eq!(exchange(proxy.plain, &bad).await, "");
    }
    // A header that starts but never finishes is cut at PROXY_HEADER_TIMEOUT.
    let started = Instant::now();
    assert_eq!(exchange(proxy.tls, b"PROXY TCP4 1.2.3.4").await, "");
    assert!(started.elapsed() >= Duration::from_millis(250) && started.elapsed() < WAIT);
    assert_eq!(
        app.connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the app"
    );
    // And everyone else is still served.
    let ok = exchange(proxy.tls, &[v1("192.0.2.2", 443), get("/", "")].concat()).await;
    assert_eq!(status(&ok), 200);
}

#[tokio::test]
async fn ping_without_header_is_answered_but_nothing_else() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    for addr in [proxy.tls, proxy.plain] {
        let resp = exchange(addr, &get("/ping", "")).await;
        assert_eq!(status(&resp), 200, "{resp}");
        assert!(resp.ends_with("\r\n\r\nok"), "{resp}");
        let head = exchange(addr, b"HEAD /ping?elb=1 HTTP/1.0\r\n\r\n").await;
        assert_eq!(status(&head), 200, "{head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    }
    // A header-less connection that opened with /ping cannot then reach the app.
    let keepalive = "GET /ping HTTP/1.1\r\nHost: x\r\n\r\nGET /secret HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = exchange(proxy.tls, keepalive.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp}");
    assert_eq!(app.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn ping_is_exactly_the_path() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let h = v1("192.0.2.3", 443);
    let ping = exchange(proxy.tls, &[h.clone(), get("/ping?from=elb", "")].concat()).await;
    assert_eq!(status(&ping), 200);
    assert!(ping.contains("content-type: text/plain"), "{ping}");
    assert!(ping.ends_with("ok"));
    for path in ["/pingpong", "/ping/x"] {
        let resp = exchange(proxy.tls, &[h.clone(), get(path, "")].concat()).await;
        assert!(
            resp.contains(&format!("GET {path}\n")),
            "{path} goes to the app: {resp}"
        );
    }
    let post = exchange(
        proxy.tls,
        &[
            h,
            b"POST /ping HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
                .to_vec(),
        ]
        .concat(),
    )
    .await;
    assert!(post.contains("POST /ping\n"), "{post}");
}

#[tokio::test]
async fn plain_port_redirects_to_https() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let h = v1("192.0.2.4", 80);
    let resp = exchange(
        proxy.plain,
        &[
            h.clone(),
            b"GET /a//b%2F?q=1&r HTTP/1.1\r\nHost: WWW.Example.COM:81\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(status(&resp), 301, "{resp}");
    assert!(
        resp.contains("location: https://www.example.com/a//b%2F?q=1&r\r\n"),
        "{resp}"
    );
    let v6 = exchange(
        proxy.plain,
        &[
            h.clone(),
            b"GET / HTTP/1.1\r\nHost: [2001:DB8::1]:81\r\nConnection: close\r\n\r\n".to_vec(),
        ]
        .concat(),
    )
    .await;
    assert!(v6.contains("location: https://[2001:db8::1]/\r\n"), "{v6}");
    let no_host = exchange(
        proxy.plain,
        &[h.clone(), b"GET / HTTP/1.0\r\n\r\n".to_vec()].concat(),
    )
    .await;
    assert_eq!(status(&no_host), 400, "{no_host}");
    let ping = exchange(proxy.plain, &[h, get("/ping", "")].concat()).await;
    assert_eq!(status(&ping), 200);
    assert_eq!(app.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn target_passes_byte_for_byte_and_spoofed_headers_are_replaced() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let extra = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Port: 1\r\n\
                 Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Custom: kept\r\n";
    let resp = exchange(
        proxy.tls,
        &[v1("192.0.2.5", 443), get("/a//b/%2e%2E/c;p?x=%20&y", extra)].concat(),
    )
    .await;
    assert!(
        resp.contains("\r\n\r\nGET /a//b/%2e%2E/c;p?x=%20&y\n"),
        "{resp}"
    );
    assert_eq!(echoed(&resp, "x-forwarded-for"), ["192.0.2.5"]);
    assert_eq!(echoed(&resp, "x-forwarded-proto"), ["https"]);
    assert_eq!(echoed(&resp, "x-forwarded-port"), ["443"]);
    assert!(echoed(&resp, "x-forwarded-host").is_empty());
    assert!(echoed(&resp, "forwarded").is_empty());
    assert!(echoed(&resp, "x-real-ip").is_empty());
    assert_eq!(echoed(&resp, "x-custom"), ["kept"]);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let req = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
               TE: trailers\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-End: 1\r\n\r\n";
    let resp = exchange(
        proxy.tls,
        &[v1("192.0.2.6", 443), req.as_bytes().to_vec()].concat(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    for gone in ["x-hop", "keep-alive", "te", "proxy-connection", "upgrade"] {
        assert!(echoed(&resp, gone).is_empty(), "{gone} passed: {resp}");
    }
    assert_eq!(echoed(&resp, "x-end"), ["1"]);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let mut sender = client_with_header(proxy.tls, &v1("192.0.2.7", 443)).await;
    // 20 MiB upload, sent chunked: the nginx image refused anything over 1 MiB.
    let chunks = (0..320).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(
            vec![7u8; 64 * 1024],
        )))
    });
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let (mut tx, conn) = {
        let mut s = TcpStream::connect(proxy.tls).await.unwrap();
        s.write_all(&v1("192.0.2.7", 443)).await.unwrap();
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap()
    };
    tokio::spawn(conn);
    let up = hyper::Request::post("/upload")
        .header("host", "a")
        .body(body)
        .unwrap();
    let resp = within("upload", tx.send_request(up)).await.unwrap();
    assert_eq!(text(resp).await, format!("received {}", 320 * 64 * 1024));
    let resp = within("download", sender.send_request(request("/big?33554432")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await.len(), 32 << 20);
}

#[tokio::test]
async fn server_sent_events_are_not_held_back() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let mut s = TcpStream::connect(proxy.tls).await.unwrap();
    s.write_all(&[v1("192.0.2.8", 443), get("/sse", "")].concat())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let first = tokio::time::timeout(Duration::from_secs(2), async {
        while !String::from_utf8_lossy(&got).contains("data: first") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
    });
    first
        .await
        .expect("the first event arrives while the app still holds the second");
    assert!(!String::from_utf8_lossy(&got).contains("second"));
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    // Ten client connections, one request each, one after the other (as the ELB does).
    for i in 0..10 {
        let resp = exchange(
            proxy.tls,
            &[v1(&format!("192.0.2.{i}"), 443), get("/", "")].concat(),
        )
        .await;
        assert_eq!(status(&resp), 200);
        assert_eq!(
            echoed(&resp, "x-forwarded-for"),
            [format!("192.0.2.{i}").as_str()]
        );
    }
    let opened = app.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        opened, 1,
        "the app saw {opened} connections for 10 sequential requests"
    );
}

#[tokio::test]
async fn dead_app_gives_502_and_recovery_needs_no_restart() {
    // Reserve a port, then free it: nothing listens there until the app starts.
    let spot = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = spot.local_addr().unwrap();
    drop(spot);
    let proxy = start_proxy(config_for(addr)).await;
    let resp = exchange(proxy.tls, &[v1("192.0.2.9", 443), get("/", "")].concat()).await;
    assert_eq!(status(&resp), 502, "{resp}");
    let app = start_app_on(tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    let resp = exchange(proxy.tls, &[v1("192.0.2.9", 443), get("/", "")].concat()).await;
    assert_eq!(status(&resp), 200, "{resp}");
    drop(app);
}

#[tokio::test]
async fn app_name_that_resolves_late_is_survived() {
    // The resolver the upstream uses is injected: the name resolves to nothing until `known`
    // is set, as a compose app's name does until its container starts.
    let app = start_app().await;
    let known = Arc::new(AtomicBool::new(false));
    let (flag, addr) = (known.clone(), app.addr);
    let resolver: elb_ws_proxy::Resolver = Arc::new(move |host: String, port: u16| {
        let resolves = flag.load(Ordering::SeqCst);
        Box::pin(async move {
            assert_eq!((host.as_str(), port), ("app.internal", addr.port()));
            if resolves {
                Ok(vec![addr])
            } else {
                Err(std::io::Error::other("app.internal: name not known"))
            }
        })
    });
    let mut config = config_for(app.addr);
    config.destination_hostname = "app.internal".into();
    let proxy = start_proxy_with_resolver(config, resolver).await;
    let req = [v1("192.0.2.10", 443), get("/", "")].concat();
    assert_eq!(
        status(&exchange(proxy.tls, &req).await),
        502,
        "does not resolve yet"
    );
    known.store(true, Ordering::SeqCst);
    let resp = exchange(proxy.tls, &req).await;
    assert_eq!(status(&resp), 200, "{resp}");
}

#[tokio::test]
async fn slow_app_gives_504() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.response_timeout = Duration::from_millis(300);
    let proxy = start_proxy(config).await;
    let resp = exchange(
        proxy.tls,
        &[v1("192.0.2.11", 443), get("/slow", "")].concat(),
    )
    .await;
    assert_eq!(status(&resp), 504, "{resp}");
}

#[tokio::test]
async fn websocket_echo_with_real_client_address() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let mut ws = websocket(proxy.tls, &v2([198, 51, 100, 20], 1234, 443), "/ws").await;
    let hello = within("hello", ws.next()).await.unwrap().unwrap();
    assert_eq!(
        hello.into_text().unwrap().as_str(),
        "x-forwarded-for: 198.51.100.20"
    );
    for i in 0..50 {
        ws.send(Message::text(format!("message {i}")))
            .await
            .unwrap();
        let back = within("echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("message {i}"));
    }
    let big = vec![42u8; 3 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let back = within("big echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(back.into_data().as_ref(), big.as_slice());
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn refused_upgrade_passes_back_as_an_ordinary_response() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let req = "GET /ws-refuse HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
               Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut s = TcpStream::connect(proxy.tls).await.unwrap();
    s.write_all(&[v1("192.0.2.12", 443), req.as_bytes().to_vec()].concat())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within("refusal", s.read(&mut buf)).await.unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert_eq!(status(&resp), 403, "{resp}");
    assert!(resp.contains("no websockets here"), "{resp}");
}

#[tokio::test]
async fn tunnel_passes_half_close_both_ways() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    // `echo` is not a default UPGRADE_PROTOCOLS entry: listed, it is honoured.
    config.upgrade_protocols = vec!["websocket".into(), "echo".into()];
    let proxy = start_proxy(config).await;
    let mut s = TcpStream::connect(proxy.tls).await.unwrap();
    let req = "GET /raw HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n";
    // The first tunnel bytes ride in the same write as the upgrade request.
    s.write_all(
        &[
            v1("192.0.2.13", 443),
            req.as_bytes().to_vec(),
            b"early".to_vec(),
        ]
        .concat(),
    )
    .await
    .unwrap();
    s.write_all(b"-and-later").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("early-and-later") {
        let n = within("echo", s.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 101"));
    s.shutdown().await.unwrap();
    let rest = read_all(&mut s).await;
    assert_eq!(
        rest, "bye after 15 bytes",
        "the app saw our FIN and could still answer"
    );
}

#[tokio::test]
async fn drain_finishes_in_flight_work_and_exits() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let tls = proxy.tls;
    let slow_req = [v1("192.0.2.14", 443), get("/slow", "")].concat();
    let slow = tokio::spawn(async move { exchange(tls, &slow_req).await });
    let mut ws = websocket(tls, &v1("192.0.2.15", 443), "/ws").await;
    within("hello", ws.next()).await.unwrap().unwrap();
    let reached = app.connections.clone();
    eventually("the slow request and the WebSocket reach the app", || {
        let n = reached.load(Ordering::SeqCst);
        async move { (n >= 2).then_some(()) }
    })
    .await;
    let started = Instant::now();
    let stopping = tokio::spawn(proxy.stop());
    eventually("no longer accepting", || async {
        TcpStream::connect(tls).await.is_err().then_some(())
    })
    .await;
    ws.send(Message::text("still here")).await.unwrap();
    let back = within("echo during drain", ws.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "still here");
    let resp = within("in-flight request", slow).await.unwrap();
    assert_eq!(
        status(&resp),
        200,
        "the in-flight request completed: {resp}"
    );
    ws.close(None).await.unwrap();
    drop(ws);
    within("exit", stopping).await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exited once the work was done"
    );
}

#[tokio::test]
async fn drain_cuts_websockets_at_the_shutdown_timeout() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.shutdown_timeout = Duration::from_millis(500);
    let proxy = start_proxy(config).await;
    let mut ws = websocket(proxy.tls, &v1("192.0.2.16", 443), "/ws").await;
    within("hello", ws.next()).await.unwrap().unwrap();
    let started = Instant::now();
    within("exit", proxy.stop()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(450));
    let end = within("closed", ws.next()).await;
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "tunnel closed: {end:?}"
    );
}
