//! The lean HTTP/1.1 path against an app that speaks raw bytes: chunked bodies split anywhere,
//! informational responses, bodies delimited by close, HEAD, pipelining, a connection that
//! moves to hyper midway when a request carries a body, and response heads it refuses.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// An app that answers each request by its path with fixed bytes, written in small pieces.
/// `/echo...` answers with the request head it received, and reads a `Content-Length` body.
struct RawApp {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

fn scripted(path: &str, head: &str) -> (Vec<u8>, bool) {
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nX-App: 1\r\n\
              Connection: keep-alive, X-Secret\r\nX-Secret: s\r\n\r\n\
              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec(),
            false,
        ),
        "/early" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
            false,
        ),
        "/eof" => (b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec(), true),
        "/head" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec(),
            false,
        ),
        "/conflict" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".to_vec(),
            false,
        ),
        "/gzip-framed" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx".to_vec(),
            false,
        ),
        "/switch" => (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n".to_vec(),
            false,
        ),
        "/bad-chunk" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n".to_vec(),
            false,
        ),
        _ => (
            format!(
                "HTTP/1.1 200 Fine\r\nContent-Length: {}\r\n\r\n{head}",
                head.len()
            )
            .into_bytes(),
            false,
        ),
    }
}

async fn start_raw_app() -> RawApp {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                    let body_len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + body_len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + body_len);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let (answer, close) = scripted(&path, &head);
                    for piece in answer.chunks(7) {
                        if s.write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    RawApp { addr, connections }
}

/// Reads from `s` until `buf` ends with `end`.
async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, end: &[u8]) -> String {
    within("a whole response", async {
        while !buf.ends_with(end) {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    String::from_utf8(std::mem::take(buf)).unwrap()
}

#[tokio::test]
async fn chunked_informational_and_head_responses_keep_one_connection_each_side() {
    let app = start_raw_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let mut s = TcpStream::connect(proxy.tls).await.unwrap();
    s.write_all(&v1("192.0.2.60", 443)).await.unwrap();
    let mut buf = Vec::new();

    s.write_all(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let resp = read_until(&mut s, &mut buf, b"0\r\nX-Trailer: t\r\n\r\n").await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    assert!(lower.contains("x-app: 1"), "{head}");
    for gone in ["x-secret", "content-length", "connection"] {
        assert!(!lower.contains(gone), "{gone} passed: {head}");
    }
    assert_eq!(
        body,
        "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    );

    s.write_all(b"GET /early HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let resp = read_until(&mut s, &mut buf, b"\r\n\r\nok").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(!resp.contains("103"), "{resp}");

    s.write_all(b"HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let resp = read_until(&mut s, &mut buf, b"\r\n\r\n").await;
    assert!(resp.to_ascii_lowercase().contains("content-length: 1000"));

    s.write_all(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let rest = read_all(&mut s).await;
    assert!(rest.starts_with("HTTP/1.1 200 Fine\r\n"), "{rest}");
    assert!(rest.contains("GET /echo HTTP/1.1\r\n"), "{rest}");
    assert!(rest.contains("x-forwarded-for: 192.0.2.60\r\n"), "{rest}");
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        1,
        "one app connection"
    );
}

#[tokio::test]
async fn pipelined_requests_and_a_body_midway_are_answered_in_order() {
    let app = start_raw_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let mut s = TcpStream::connect(proxy.tls).await.unwrap();
    let mut bytes = v1("192.0.2.61", 443);
    bytes.extend_from_slice(
        b"GET /echo-1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo-2 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /echo-3 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz\
          GET /echo-4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    s.write_all(&bytes).await.unwrap();
    let all = read_all(&mut s).await;
    let order: Vec<usize> = (1..=4)
        .map(|i| {
            all.find(&format!("/echo-{i} HTTP/1.1"))
                .unwrap_or_else(|| panic!("no answer to {i}: {all}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{all}");
    assert_eq!(all.matches("HTTP/1.1 200 Fine").count(), 4, "{all}");
}

#[tokio::test]
async fn a_body_delimited_by_close_closes_the_client_connection_after_it() {
    let app = start_raw_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    // No `Connection: close` from the client: the proxy closes because the body ends so.
    let resp = exchange(
        proxy.tls,
        &[
            v1("192.0.2.62", 443),
            b"GET /eof HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ]
        .concat(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    assert!(resp.ends_with("\r\n\r\nuntil close"), "{resp}");
}

#[tokio::test]
async fn a_malformed_chunked_response_closes_only_that_client() {
    let app = start_raw_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let resp = exchange(
        proxy.tls,
        &[
            v1("192.0.2.63", 443),
            b"GET /bad-chunk HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ]
        .concat(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        !resp.contains("zz"),
        "the bad framing was not passed on: {resp}"
    );
    let resp = exchange(
        proxy.tls,
        &[v1("192.0.2.64", 443), get("/echo", "")].concat(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
}

#[tokio::test]
async fn response_heads_the_proxy_cannot_frame_get_502_and_others_are_served() {
    let app = start_raw_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    for (i, path) in ["/conflict", "/gzip-framed", "/switch"].iter().enumerate() {
        let client = format!("192.0.2.{}", 70 + i);
        let resp = exchange(proxy.tls, &[v1(&client, 443), get(path, "")].concat()).await;
        assert_eq!(status(&resp), 502, "{path}: {resp}");
        assert!(
            resp.ends_with("the app is not reachable\n"),
            "{path}: {resp}"
        );
    }
    let resp = exchange(
        proxy.tls,
        &[v1("192.0.2.79", 443), get("/echo", "")].concat(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(proxy
        .proxy_metrics
        .render()
        .contains("elb_ws_proxy_upstream_errors_total{kind=\"reset\"} 3"));
}
