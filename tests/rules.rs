//! Each HTTP rule, table-driven, through both HTTP/1.1 paths: the lean path (the request is
//! the first on its connection) and hyper (a request with a body goes first, which hands the
//! connection to hyper for the rest of its life). Each row shows what the client got and what
//! the app received: nothing, for a refusal.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// What the app received: one entry per request, its head (lower-cased) and body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// The response the app sends for a path under `/r/`; anything else gets `200 ok`.
fn scripted(path: &str) -> &'static [u8] {
    match path {
        "/r/te-and-cl" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "/r/names-framing" => b"HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nContent-Length: 5\r\n\r\nhello",
        "/r/cl-equal" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "/r/cl-differ" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "/r/switch" => b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
        "/r/gzip-chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "/r/size-junk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n5 zz\r\nhello\r\n0\r\n\r\n",
        "/r/trailer-junk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nnot a field\r\n\r\n",
        "/r/no-content" => b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "/r/not-modified" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "/r/head-chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "/r/head-length" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        "/r/chunked-twice" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "/r/http10" => b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        "/r/announced-trailer" => b"HTTP/1.1 200 OK\r\nTrailer: x-sum\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-sum: 7\r\n\r\n",
        "/r/dated" => b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    }
}

/// An app speaking raw HTTP/1.1 that records each request and answers from [`scripted`].
async fn recording_app() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some((head, body)) = read_request(&mut s, &mut buf).await {
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    record.lock().unwrap().push((head, body));
                    if s.write_all(scripted(&path)).await.is_err() || path == "/r/switch" {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Reads more of the app's socket into `buf`; `None` once it closed.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).await.ok()?;
    (n > 0).then(|| buf.extend_from_slice(&chunk[..n]))
}

/// Reads one request (head, then a Content-Length or chunked body, decoded).
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end);
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(s, buf).await?;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
            while buf.len() < line_end + 2 + size + 2 {
                fill(s, buf).await?;
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Some((head, body));
            }
        }
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < length {
        fill(s, buf).await?;
    }
    body.extend(buf.drain(..length));
    Some((head, body))
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Lean,
    Hyper,
}

/// A request with a body first: the lean path hands the connection to hyper.
const TO_HYPER: &str = "POST /warm-up HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx";

/// Sends `request` on `path` and returns the last response the client got (the one to
/// `request`) and what the app received for it (not the warm-up).
async fn through(path: Path, request: &str) -> (String, Vec<(String, Vec<u8>)>) {
    let (app, seen) = recording_app().await;
    let proxy = start_proxy(config_for(app)).await;
    let mut bytes = v1("192.0.2.77", 443);
    if let Path::Hyper = path {
        bytes.extend_from_slice(TO_HYPER.as_bytes());
    }
    bytes.extend_from_slice(request.as_bytes());
    let all = exchange(proxy.tls, &bytes).await;
    let last = match path {
        Path::Lean => all.clone(),
        // The warm-up's answer comes first: `200` with body `ok`.
        Path::Hyper => all
            .strip_prefix("HTTP/1.1 200 OK\r\n")
            .and_then(|rest| rest.split_once("\r\n\r\nok"))
            .map(|(_, after)| after.to_owned())
            .unwrap_or_else(|| panic!("no warm-up answer first: {all:?}")),
    };
    let received = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(head, _)| !head.starts_with("post /warm-up"))
        .cloned()
        .collect();
    (last, received)
}

/// A request head with `Connection: close`, so the proxy closes after answering.
fn req(line: &str, headers: &str) -> String {
    format!("{line}\r\n{headers}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn requests_the_rules_refuse_never_reach_the_app_on_either_path() {
    let cases: &[(&str, String, u16)] = &[
        ("missing Host", req("GET / HTTP/1.1", ""), 400),
        (
            "two equal Hosts",
            req("GET / HTTP/1.1", "Host: a\r\nHost: a\r\n"),
            400,
        ),
        (
            "Host with a path",
            req("GET / HTTP/1.1", "Host: a/b\r\n"),
            400,
        ),
        (
            "Host with a bad port",
            req("GET / HTTP/1.1", "Host: a:80x\r\n"),
            400,
        ),
        (
            "two Content-Length 0",
            req(
                "GET / HTTP/1.1",
                "Host: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n",
            ),
            400,
        ),
        ("a fragment", req("GET /a#b HTTP/1.1", "Host: a\r\n"), 400),
        ("GET *", req("GET * HTTP/1.1", "Host: a\r\n"), 400),
        (
            "absolute-form naming another host",
            req("GET http://other.example/x HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "userinfo in the target",
            req("GET http://u@a/x HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "CONNECT",
            req("CONNECT a:443 HTTP/1.1", "Host: a:443\r\n"),
            405,
        ),
        (
            "CONNECT origin-form",
            req("CONNECT / HTTP/1.1", "Host: a\r\n"),
            405,
        ),
        (
            "TE not ending in chunked",
            req(
                "POST / HTTP/1.1",
                "Host: a\r\nTransfer-Encoding: chunked, gzip\r\n",
            ),
            400,
        ),
        (
            "TE on HTTP/1.0",
            req(
                "POST / HTTP/1.0",
                "Host: a\r\nTransfer-Encoding: chunked\r\n",
            ),
            400,
        ),
    ];
    for path in [Path::Lean, Path::Hyper] {
        for (what, request, expected) in cases {
            let (resp, received) = through(path, request).await;
            assert_eq!(status(&resp), *expected, "{what} on {path:?}: {resp:?}");
            assert!(
                resp.to_ascii_lowercase().contains("\r\ndate: "),
                "{what} on {path:?}: {resp:?}"
            );
            assert!(
                received.is_empty(),
                "{what} on {path:?} reached the app: {received:?}"
            );
        }
    }
}

/// What the app must (and must not) find in the one request it received.
struct Forwarded {
    what: &'static str,
    request: String,
    has: &'static [&'static str],
    lacks: &'static [&'static str],
    body: &'static [u8],
}

#[tokio::test]
async fn requests_reach_the_app_rewritten_the_same_way_on_either_path() {
    let cases = [
        Forwarded {
            what: "Connection naming Host",
            request: req("GET /x HTTP/1.1", "Host: a.example\r\nConnection: host\r\n"),
            has: &["host: a.example"],
            lacks: &[],
            body: b"",
        },
        Forwarded {
            what: "absolute-form naming the Host",
            request: req("GET http://A:8080/x?y HTTP/1.1", "Host: a:8080\r\n"),
            has: &["get /x?y http/1.1", "host: a:8080"],
            lacks: &["http://"],
            body: b"",
        },
        Forwarded {
            what: "look-alike forwarding headers",
            request: req("GET /x HTTP/1.1", "Host: a\r\nX_Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nX_Forwarded_Proto: http\r\n"),
            has: &["x-forwarded-for: 192.0.2.77", "x-forwarded-proto: https"],
            lacks: &["6.6.6.6", "x_forwarded", "x_real_ip"],
            body: b"",
        },
        Forwarded {
            what: "h2c upgrade",
            request: req("GET /x HTTP/1.1", "Host: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n"),
            has: &["get /x http/1.1"],
            lacks: &["upgrade", "http2-settings"],
            body: b"",
        },
        Forwarded {
            what: "a protocol not in UPGRADE_PROTOCOLS",
            request: req("GET /x HTTP/1.1", "Host: a\r\nUpgrade: foo\r\nConnection: upgrade\r\n"),
            has: &["get /x http/1.1"],
            lacks: &["upgrade"],
            body: b"",
        },
        Forwarded {
            what: "Upgrade on HTTP/1.0",
            request: "GET /x HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_owned(),
            has: &["get /x http/1.1"],
            lacks: &["upgrade"],
            body: b"",
        },
        Forwarded {
            what: "chunked GET",
            request: "GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_owned(),
            has: &["transfer-encoding: chunked"],
            lacks: &["content-length"],
            body: b"hello",
        },
        Forwarded {
            what: "chunked DELETE",
            request: "DELETE /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_owned(),
            has: &["delete /x http/1.1", "transfer-encoding: chunked"],
            lacks: &[],
            body: b"abc",
        },
        Forwarded {
            what: "Transfer-Encoding with Content-Length",
            request: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_owned(),
            has: &["transfer-encoding: chunked"],
            lacks: &["content-length"],
            body: b"hello",
        },
    ];
    for path in [Path::Lean, Path::Hyper] {
        for c in &cases {
            let (resp, received) = through(path, &c.request).await;
            assert_eq!(status(&resp), 200, "{} on {path:?}: {resp:?}", c.what);
            let [(head, body)] = received.as_slice() else {
                panic!("{} on {path:?}: the app got {received:?}", c.what);
            };
            for needle in c.has {
                assert!(
                    head.contains(needle),
                    "{} on {path:?}: {needle:?} missing in {head:?}",
                    c.what
                );
            }
            for needle in c.lacks {
                assert!(
                    !head.contains(needle),
                    "{} on {path:?}: {needle:?} present in {head:?}",
                    c.what
                );
            }
            assert_eq!(body.as_slice(), c.body, "{} on {path:?}", c.what);
        }
    }
}

/// An app response: the request's method and path, the client's status, what the client's
/// response must contain, must not contain, and how it ends.
type FramingCase = (
    &'static str,
    u16,
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
);

#[tokio::test]
async fn responses_are_framed_the_same_way_on_either_path() {
    // (request, status, what the client's response must contain, must not contain, ends with)
    let cases: &[FramingCase] = &[
        (
            "GET /r/te-and-cl",
            200,
            &["transfer-encoding: chunked"],
            &["content-length"],
            "hello\r\n0\r\n\r\n",
        ),
        (
            "GET /r/names-framing",
            200,
            &["content-length: 5"],
            &["transfer-encoding"],
            "\r\n\r\nhello",
        ),
        (
            "GET /r/cl-equal",
            200,
            &["content-length: 5"],
            &["content-length: 5\r\ncontent-length"],
            "\r\n\r\nhello",
        ),
        ("GET /r/cl-differ", 502, &[], &["hello"], "\n"),
        ("GET /r/switch", 502, &[], &["101"], "\n"),
        (
            "GET /r/gzip-chunked",
            200,
            &["transfer-encoding: gzip, chunked"],
            &["content-length"],
            "abc\r\n0\r\n\r\n",
        ),
        (
            "GET /r/no-content",
            204,
            &[],
            &["content-length", "transfer-encoding"],
            "\r\n\r\n",
        ),
        (
            "GET /r/not-modified",
            304,
            &[],
            &["content-length", "transfer-encoding"],
            "\r\n\r\n",
        ),
        (
            "HEAD /r/head-chunked",
            200,
            &[],
            &["transfer-encoding", "content-length"],
            "\r\n\r\n",
        ),
        (
            "HEAD /r/head-length",
            200,
            &["content-length: 5"],
            &["transfer-encoding"],
            "\r\n\r\n",
        ),
        ("GET /r/chunked-twice", 502, &[], &["hello"], "\n"),
        (
            "GET /r/http10",
            200,
            &["http/1.1 200 ok\r\n"],
            &[],
            "\r\n\r\nhello",
        ),
        (
            "GET /r/dated",
            200,
            &["\r\ndate: mon, 01 jan 2001 00:00:00 gmt\r\n"],
            &[],
            "\r\n\r\nok",
        ),
    ];
    for path in [Path::Lean, Path::Hyper] {
        for (target, expected, has, lacks, ends) in cases {
            let (resp, _) = through(path, &req(&format!("{target} HTTP/1.1"), "Host: a\r\n")).await;
            let lower = resp.to_ascii_lowercase();
            assert_eq!(status(&resp), *expected, "{target} on {path:?}: {resp:?}");
            // The app's Date, or the proxy's when it sent none or the proxy answered itself.
            assert_eq!(
                lower.matches("\r\ndate: ").count(),
                1,
                "{target} on {path:?}: {resp:?}"
            );
            for needle in *has {
                assert!(
                    lower.contains(needle),
                    "{target} on {path:?}: {needle:?} missing in {resp:?}"
                );
            }
            for needle in *lacks {
                assert!(
                    !lower.contains(needle),
                    "{target} on {path:?}: {needle:?} present in {resp:?}"
                );
            }
            assert!(resp.ends_with(ends), "{target} on {path:?}: {resp:?}");
        }
    }
}

#[tokio::test]
async fn announced_trailers_reach_a_client_that_accepts_them_on_either_path() {
    // `Trailer` is end to end (RFC 9110 6.6.2): it passes, and so do the fields it announces
    // to a client that sent `TE: trailers` (hyper's server sends them to no other).
    for path in [Path::Lean, Path::Hyper] {
        let request = req(
            "GET /r/announced-trailer HTTP/1.1",
            "Host: a\r\nTE: trailers\r\n",
        );
        let (resp, _) = through(path, &request).await;
        let lower = resp.to_ascii_lowercase();
        assert_eq!(status(&resp), 200, "{path:?}: {resp:?}");
        assert!(
            lower.contains("\r\ntrailer: x-sum\r\n"),
            "{path:?}: {resp:?}"
        );
        assert!(
            lower.contains("transfer-encoding: chunked"),
            "{path:?}: {resp:?}"
        );
        assert!(
            resp.ends_with("ok\r\n0\r\nx-sum: 7\r\n\r\n"),
            "{path:?}: {resp:?}"
        );
    }
}

#[tokio::test]
async fn the_proxys_own_answer_to_head_has_no_body_on_either_path() {
    // Nothing listens at the app's address: every request gets the proxy's own 502.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(config_for(dead)).await;
    for path in [Path::Lean, Path::Hyper] {
        let mut bytes = v1("192.0.2.78", 443);
        if let Path::Hyper = path {
            bytes.extend_from_slice(TO_HYPER.as_bytes());
        }
        bytes.extend_from_slice(req("HEAD /x HTTP/1.1", "Host: a\r\n").as_bytes());
        let all = exchange(proxy.tls, &bytes).await;
        let last = all.rsplit("HTTP/1.1 ").next().unwrap();
        assert!(last.starts_with("502 "), "{path:?}: {all:?}");
        assert!(
            last.ends_with("\r\n\r\n"),
            "{path:?}: a body after the head: {all:?}"
        );
    }
}

/// A chunked body that arrives while hyper reads it (after `100 Continue`), its end in the same
/// write as the next head: that head is still judged (refused here: two Hosts) and never reaches
/// the app; the body does, whole.
#[tokio::test]
async fn a_head_after_a_chunked_body_is_judged_too() {
    for (next, statuses, requests) in [
        (
            "GET /after HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            [200, 400],
            1,
        ),
        (
            "GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            [200, 200],
            2,
        ),
    ] {
        let (app, seen) = recording_app().await;
        let proxy = start_proxy(config_for(app)).await;
        let mut s = TcpStream::connect(proxy.tls).await.unwrap();
        let head = "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n";
        s.write_all(&[v1("192.0.2.79", 443), head.as_bytes().to_vec()].concat())
            .await
            .unwrap();
        // hyper asks for the body only once it reads it: from here on the body is read there.
        let mut continued = Vec::new();
        within("100 Continue", async {
            while !continued.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                assert_eq!(
                    s.read(&mut byte).await.unwrap(),
                    1,
                    "closed before 100 Continue"
                );
                continued.push(byte[0]);
            }
        })
        .await;
        assert!(continued.starts_with(b"HTTP/1.1 100 "), "{continued:?}");
        let body = format!("5\r\nhello\r\n10\r\n{}\r\n0\r\n\r\n{next}", "x".repeat(16));
        s.write_all(body.as_bytes()).await.unwrap();
        let all = read_all(&mut s).await;
        let got: Vec<u16> = all
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| status(&all[i..]))
            .collect();
        assert_eq!(got, statuses, "{all:?}");
        let received = seen.lock().unwrap().clone();
        assert_eq!(received.len(), requests, "{received:?}");
        assert_eq!(received[0].1, [b"hello".as_slice(), &[b'x'; 16]].concat());
    }
}

/// A chunked response whose framing breaks after its head went out: junk after a chunk size,
/// a trailer line that is not a header field. On either path the client gets the data before
/// the fault and then the end of the connection, never a last chunk that would make the body
/// look whole, nor the bytes past the fault.
#[tokio::test]
async fn malformed_chunked_responses_are_cut_on_either_path() {
    for path in [Path::Lean, Path::Hyper] {
        for target in ["/r/size-junk", "/r/trailer-junk"] {
            let (resp, received) =
                through(path, &req(&format!("GET {target} HTTP/1.1"), "Host: a\r\n")).await;
            assert_eq!(received.len(), 1, "{target} on {path:?}: {received:?}");
            assert_eq!(status(&resp), 200, "{target} on {path:?}: {resp:?}");
            let (_, body) = resp.split_once("\r\n\r\n").unwrap();
            assert_eq!(body, "3\r\nabc\r\n", "{target} on {path:?}: {resp:?}");
        }
    }
}
