//! HTTP/2 streams without a body to an HTTP/1.1 app, which the proxy speaks itself: every
//! way the app can frame a response (length, chunked, until close), a response cut short or
//! malformed, split cookies, and the app's connection reused between streams. The app here
//! is a scripted HTTP/1.1 server, so each framing is exactly what the test says.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// Response bodies of `/big`: larger than any one read, so it streams.
const BIG: usize = 300_000;

/// A scripted HTTP/1.1 app: the heads it received and the connections it accepted.
struct Scripted {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<usize>>,
}

fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| b'a' + (i % 26) as u8).collect()
}

async fn scripted_app() -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let (h, c) = (heads.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            *c.lock().unwrap() += 1;
            tokio::spawn(serve(s, h.clone()));
        }
    });
    Scripted {
        addr,
        heads,
        connections,
    }
}

/// Answers each request on the connection by its path; some answers end the connection.
async fn serve(mut s: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        // A request body (only ever length-framed here) is read and dropped.
        let length: usize = (head.lines())
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        heads.lock().unwrap().push(head);
        let answer: Vec<u8> = match path.as_str() {
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                           5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\nKeep-Alive: 5\r\n\r\n"
                .to_vec(),
            "/big" => {
                let mut a =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
                a.extend(big_body());
                a
            }
            "/close" => b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end".to_vec(),
            "/cut" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec(),
            "/badchunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            "/nocontent" => b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n".to_vec(),
            _ => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\nok".to_vec()
            }
        };
        // Written in two pieces, so the body does not always arrive with the head.
        let (a, b) = answer.split_at(answer.len().min(60));
        if s.write_all(a).await.is_err() || s.write_all(b).await.is_err() {
            return;
        }
        if ["/close", "/cut"].contains(&path.as_str()) {
            return;
        }
    }
}

type B = BoxBody<Bytes, Infallible>;

fn get(path: &str) -> Request<B> {
    Request::get(format!("https://shop.example{path}"))
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

/// The status, body and headers of one stream, or the stream's error.
async fn fetch(
    c: &mut hyper::client::conn::http2::SendRequest<B>,
    req: Request<B>,
) -> Result<(StatusCode, Vec<u8>, http::HeaderMap), String> {
    let resp = within("response", c.send_request(req))
        .await
        .map_err(|e| e.to_string())?;
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = within("body", resp.into_body().collect())
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes().to_vec(), headers))
}

#[tokio::test]
async fn every_response_framing_reaches_the_h2_client_as_data() {
    let app = scripted_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.70", 443)).await;

    let (status, body, headers) = fetch(&mut c, get("/chunked")).await.unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"hello world"[..])
    );
    assert!(headers.get("transfer-encoding").is_none());

    let (status, body, headers) = fetch(&mut c, get("/big")).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body == big_body(),
        "the {BIG}-byte body arrived changed ({} bytes)",
        body.len()
    );
    assert_eq!(headers["content-length"], BIG.to_string().as_str());

    let (status, body, headers) = fetch(&mut c, get("/nocontent")).await.unwrap();
    assert_eq!((status.as_u16(), body.len()), (204, 0));
    assert_eq!(headers["x-a"], "1");

    let (_, body, headers) = fetch(&mut c, get("/x")).await.unwrap();
    assert_eq!(body, b"ok");
    assert!(
        headers.get("keep-alive").is_none(),
        "hop-by-hop header passed on"
    );

    // Chunked, length and empty bodies ended where their framing said: one connection.
    assert_eq!(*app.connections.lock().unwrap(), 1);

    let (_, body, _) = fetch(&mut c, get("/close")).await.unwrap();
    assert_eq!(body, b"until the end");
    let (_, body, _) = fetch(&mut c, get("/x")).await.unwrap();
    assert_eq!(body, b"ok");
    assert_eq!(
        *app.connections.lock().unwrap(),
        2,
        "a closed connection was reused"
    );
}

/// A chunked response's trailers reach the HTTP/2 client on both HTTP/1.1 paths (a bodiless
/// stream spoken by the proxy, one with a body through hyper's client), less the fields that
/// describe one hop.
#[tokio::test]
async fn chunked_trailers_reach_the_h2_client_on_both_paths() {
    let app = scripted_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.71", 443)).await;
    let with_body = Request::post("https://shop.example/chunked")
        .body(Full::new(Bytes::from_static(b"form=1")).boxed())
        .unwrap();
    for (path, req) in [("bodiless", get("/chunked")), ("with a body", with_body)] {
        let resp = within("response", c.send_request(req)).await.unwrap();
        let collected = within("body", resp.into_body().collect()).await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        assert_eq!(collected.to_bytes(), "hello world", "{path}");
        assert_eq!(
            trailers.get("x-trailer").map(|v| v.as_bytes()),
            Some(&b"1"[..]),
            "{path}"
        );
        assert!(trailers.get("keep-alive").is_none(), "{path}: {trailers:?}");
    }
}

#[tokio::test]
async fn a_response_cut_short_or_malformed_resets_only_its_stream() {
    let app = scripted_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let (_guard, logs) = capture_logs();
    let mut c = h2_client(proxy.tls, &v1("203.0.113.71", 443)).await;
    for path in ["/cut", "/badchunk"] {
        let outcome = fetch(&mut c, get(path)).await;
        assert!(
            outcome.is_err(),
            "{path}: a broken body came through whole: {outcome:?}"
        );
        // The same client connection and proxy carry on.
        let (status, body, _) = fetch(&mut c, get("/x")).await.unwrap();
        assert_eq!(
            (status.as_u16(), body.as_slice()),
            (200, &b"ok"[..]),
            "after {path}"
        );
    }
    let text = logs.text();
    assert!(
        text.contains("the app closed the connection mid-response"),
        "{text}"
    );
    assert!(text.contains("invalid chunk size"), "{text}");
}

#[tokio::test]
async fn split_cookies_and_the_authority_reach_the_app_as_http1_headers() {
    let app = scripted_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let mut c = h2_client(proxy.tls, &v1("203.0.113.72", 443)).await;
    let mut r = get("/x?q=1");
    for cookie in ["a=1", "b=2", "c=3"] {
        r.headers_mut().append("cookie", cookie.parse().unwrap());
    }
    r.headers_mut()
        .insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
    fetch(&mut c, r).await.unwrap();
    let head = app.heads.lock().unwrap().pop().unwrap();
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines[0], "GET /x?q=1 HTTP/1.1");
    let named = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.split_once(": "))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    };
    assert_eq!(named("host"), ["shop.example"]);
    assert_eq!(named("cookie"), ["a=1; b=2; c=3"]);
    assert_eq!(named("x-forwarded-for"), ["203.0.113.72"]);
    assert_eq!(named("x-forwarded-proto"), ["https"]);
}
