//! Request ids and trace context, table-driven through every path a request can take: the
//! lean HTTP/1.1 path, hyper's (a request with a body), HTTP/2 to an HTTP/1.1 app with and
//! without a body, HTTP/1.1 and HTTP/2 clients to an h2c app, and TLS the proxy ended. Each
//! row shows what the app received and what the client got back; then the proxy's own
//! answers, and the access line.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use elb_ws_proxy::config::DestinationProtocol;
use elb_ws_proxy::Config;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::tls::{tls_config, Ca, ClientTls};
use common::*;

const ROOT: &str = "Root=1-67891233-abcdef012345678912345678";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Lean,
    Hyper,
    H2ToHttp1,
    H2WithBodyToHttp1,
    Http1ToH2c,
    H2ToH2c,
    Tls,
}

const PATHS: [Path; 7] = [
    Path::Lean,
    Path::Hyper,
    Path::H2ToHttp1,
    Path::H2WithBodyToHttp1,
    Path::Http1ToH2c,
    Path::H2ToH2c,
    Path::Tls,
];

/// A response: its status, its headers (names lower-cased, in order) and its body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    /// Every value of the header `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        let found = self.headers.iter().filter(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str()).collect()
    }

    /// What the echo app received, header by header; every value of a repeated one.
    fn received(&self) -> HashMap<String, Vec<String>> {
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in self.body.lines().filter_map(|l| l.split_once(": ")) {
            seen.entry(name.to_owned())
                .or_default()
                .push(value.to_owned());
        }
        seen
    }
}

/// Parses a whole HTTP/1.1 response.
fn parse(raw: &str) -> Answer {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("0");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Answer {
        status: status.parse().unwrap_or(0),
        headers,
        body: body.to_owned(),
    }
}

/// A proxy in front of an app that speaks what `path` needs; on TLS, a client for it too.
async fn proxy_for(path: Path) -> (Running, App, Option<(Ca, TempDir)>) {
    let h2c = matches!(path, Path::Http1ToH2c | Path::H2ToH2c);
    let app = if h2c {
        start_h2_app().await
    } else {
        start_app().await
    };
    let mut config: Config = config_for(app.addr);
    let mut ca = None;
    if path == Path::Tls {
        let authority = Ca::new("ids CA");
        let dir = TempDir::new("ids-tls");
        config = tls_config(app.addr, &dir, &authority.server(&["default.test"]));
        ca = Some((authority, dir));
    }
    if h2c {
        config.destination_protocol = DestinationProtocol::H2c;
    }
    (start_proxy(config).await, app, ca)
}

/// Sends `GET target` (a `POST` with a body where the path needs one) with `headers` on
/// `path` and returns the answer.
async fn send(path: Path, target: &str, headers: &[(&str, &str)]) -> Answer {
    let (proxy, _app, ca) = proxy_for(path).await;
    let header = v1("192.0.2.41", 443);
    match path {
        Path::H2ToHttp1 | Path::H2WithBodyToHttp1 | Path::H2ToH2c => {
            let body = (path == Path::H2WithBodyToHttp1).then_some("hi");
            h2_send(proxy.tls, &header, target, headers, body).await
        }
        _ => {
            let mut head = String::new();
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            let request = if path == Path::Hyper {
                format!("POST {target} HTTP/1.1\r\nHost: example.com\r\n{head}Content-Length: 2\r\nConnection: close\r\n\r\nhi")
            } else {
                format!(
                    "GET {target} HTTP/1.1\r\nHost: example.com\r\n{head}Connection: close\r\n\r\n"
                )
            };
            match ca {
                None => {
                    let mut bytes = header;
                    bytes.extend_from_slice(request.as_bytes());
                    parse(&exchange(proxy.tls, &bytes).await)
                }
                Some((ca, _dir)) => {
                    let client = ClientTls {
                        ca: &ca,
                        sni: Some("default.test"),
                        alpn: &[b"http/1.1"],
                        identity: None,
                    };
                    let mut s = client.connect(proxy.tls, &header).await.unwrap();
                    s.write_all(request.as_bytes()).await.unwrap();
                    let mut out = Vec::new();
                    let _ = within("TLS answer", s.read_to_end(&mut out)).await;
                    parse(&String::from_utf8_lossy(&out))
                }
            }
        }
    }
}

/// One HTTP/2 request on a new connection that starts with `header`.
async fn h2_send(
    addr: SocketAddr,
    header: &[u8],
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&'static str>,
) -> Answer {
    let mut c = h2_client(addr, header).await;
    let mut req = hyper::Request::builder()
        .method(if body.is_some() { "POST" } else { "GET" })
        .uri(format!("https://example.com{target}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body = Full::new(Bytes::from_static(body.unwrap_or("").as_bytes()));
    let req = req
        .body(BodyExt::boxed(body.map_err(|e| match e {})))
        .unwrap();
    let resp = within("HTTP/2 response", c.send_request(req))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: text(resp).await,
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A made `X-Amzn-Trace-Id`: `Root=1-<8 hex>-<24 hex>`.
fn is_made_amzn(v: &str) -> bool {
    v.strip_prefix("Root=1-")
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(time, random)| is_hex(time, 8) && is_hex(random, 24))
}

#[tokio::test]
async fn valid_ids_reach_the_app_unchanged_and_the_request_id_comes_back_on_every_path() {
    let amzn = format!("{ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    let sent = [
        ("X-Request-Id", "client-id-7"),
        ("X-Amzn-Trace-Id", amzn.as_str()),
        ("traceparent", PARENT),
        ("tracestate", "vendor=1"),
    ];
    for path in PATHS {
        let answer = send(path, "/ids", &sent).await;
        assert_eq!(answer.status, 200, "{path:?}: {answer:?}");
        let app = answer.received();
        let one = |name: &str| app.get(name).cloned().unwrap_or_default();
        assert_eq!(one("x-request-id"), ["client-id-7"], "{path:?}: {app:?}");
        assert_eq!(
            one("x-amzn-trace-id"),
            std::slice::from_ref(&amzn),
            "{path:?}"
        );
        assert_eq!(one("traceparent"), [PARENT], "{path:?}");
        assert_eq!(one("tracestate"), ["vendor=1"], "{path:?}");
        assert_eq!(answer.all("x-request-id"), ["client-id-7"], "{path:?}");
    }
}

#[tokio::test]
async fn missing_or_invalid_ids_are_made_and_a_bad_traceparent_goes_with_its_tracestate() {
    let long = "x".repeat(129);
    let bad = [
        ("X-Request-Id", long.as_str()),
        ("X-Amzn-Trace-Id", "Root=1-nothex"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        ),
        ("tracestate", "vendor=1"),
    ];
    for path in PATHS {
        for sent in [&bad[..], &[]] {
            let answer = send(path, "/ids", sent).await;
            assert_eq!(answer.status, 200, "{path:?}: {answer:?}");
            let app = answer.received();
            let one = |name: &str| app.get(name).cloned().unwrap_or_default();
            let id = one("x-request-id");
            assert!(id.len() == 1 && is_hex(&id[0], 32), "{path:?}: {app:?}");
            let amzn = one("x-amzn-trace-id");
            assert!(
                amzn.len() == 1 && is_made_amzn(&amzn[0]),
                "{path:?}: {amzn:?}"
            );
            assert!(one("traceparent").is_empty(), "{path:?}: {app:?}");
            assert!(one("tracestate").is_empty(), "{path:?}: {app:?}");
            // The client gets the id the app got.
            assert_eq!(answer.all("x-request-id"), [id[0].as_str()], "{path:?}");
        }
    }
}

#[tokio::test]
async fn the_apps_own_request_id_is_replaced_by_the_requests() {
    for path in PATHS {
        let answer = send(path, "/sets-request-id", &[("X-Request-Id", "r-9")]).await;
        assert_eq!(answer.body, "mine", "{path:?}");
        assert_eq!(answer.all("x-request-id"), ["r-9"], "{path:?}: {answer:?}");
    }
}

#[tokio::test]
async fn ids_are_off_when_their_settings_say_so() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.request_id_header = None;
    config.amzn_trace_id = false;
    let proxy = start_proxy(config).await;
    let mut bytes = v1("192.0.2.41", 443);
    bytes.extend_from_slice(&get(
        "/ids",
        "X-Request-Id: r-1\r\nX-Amzn-Trace-Id: anything\r\n",
    ));
    let answer = parse(&exchange(proxy.tls, &bytes).await);
    assert!(answer.all("x-request-id").is_empty(), "{answer:?}");
    let app = answer.received();
    assert_eq!(app["x-request-id"], ["r-1"]);
    assert_eq!(app["x-amzn-trace-id"], ["anything"]);
}

#[tokio::test]
async fn the_proxys_own_answers_carry_the_request_id() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = dead.local_addr().unwrap();
    drop(dead);
    let proxy = start_proxy(config_for(gone)).await;
    let id = ("X-Request-Id", "own-1");
    let raw = |port: SocketAddr, request: String| async move {
        let mut bytes = v1("192.0.2.41", 443);
        bytes.extend_from_slice(request.as_bytes());
        parse(&exchange(port, &bytes).await)
    };
    let close = "X-Request-Id: own-1\r\nConnection: close\r\n\r\n";
    let cases = [
        ("/ping", raw(proxy.tls, format!("GET /ping HTTP/1.1\r\nHost: a\r\n{close}")).await, 200),
        ("redirect", raw(proxy.plain, format!("GET /x HTTP/1.1\r\nHost: a\r\n{close}")).await, 301),
        ("refusal", raw(proxy.tls, format!("GET /x HTTP/1.1\r\n{close}")).await, 400),
        ("502, lean", raw(proxy.tls, format!("GET /x HTTP/1.1\r\nHost: a\r\n{close}")).await, 502),
        (
            "502, hyper",
            raw(proxy.tls, format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nExpect: 100-continue\r\n{close}")).await,
            502,
        ),
        ("/ping, h2", h2_send(proxy.tls, &v1("192.0.2.41", 443), "/ping", &[id], None).await, 200),
        ("502, h2", h2_send(proxy.tls, &v1("192.0.2.41", 443), "/x", &[id], None).await, 502),
        ("redirect, h2", h2_send(proxy.plain, &v1("192.0.2.41", 80), "/x", &[id], None).await, 301),
    ];
    for (what, answer, status) in cases {
        assert_eq!(answer.status, status, "{what}: {answer:?}");
        assert_eq!(answer.all("x-request-id"), ["own-1"], "{what}: {answer:?}");
    }
    // A head that cannot be read gets an id of its own.
    let answer = raw(proxy.tls, "GET / HTTP/1.1\r\nHost a\r\n\r\n".into()).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let made = answer.all("x-request-id");
    assert!(made.len() == 1 && is_hex(made[0], 32), "{answer:?}");
}

/// The access line, read from the proxy binary's JSON log (a log capture in-process can miss
/// events while other tests' threads register the same callsites).
#[tokio::test]
async fn the_access_line_names_the_ids_the_request_and_its_sizes() {
    let app = start_app().await;
    let mut proxy = child::ProxyProcess::spawn(&[
        ("DESTINATION_HOSTNAME", "127.0.0.1".into()),
        ("DESTINATION_PORT", app.addr.port().to_string()),
        ("LOG_FORMAT", "json".into()),
        // The HTTP/2 client's connection stays open while this thread waits on the child.
        ("SHUTDOWN_TIMEOUT", "1s".into()),
    ]);
    let header = v1("192.0.2.41", 443);
    let ids = |id| {
        format!("X-Request-Id: {id}\r\nX-Amzn-Trace-Id: {ROOT}\r\ntraceparent: {PARENT}\r\nUser-Agent: ids-test/1.0\r\n")
    };
    let lean = get("/ids?q=1", &ids("lean-1"));
    let lean = parse(&exchange(proxy.tls, &[header.clone(), lean].concat()).await);
    let hyper = format!(
        "POST /ids?q=1 HTTP/1.1\r\nHost: example.com\r\n{}Content-Length: 2\r\nConnection: close\r\n\r\nhi",
        ids("hyper-1")
    );
    let hyper = parse(&exchange(proxy.tls, &[header.clone(), hyper.into_bytes()].concat()).await);
    let h2_ids = [
        ("X-Request-Id", "h2-1"),
        ("X-Amzn-Trace-Id", ROOT),
        ("traceparent", PARENT),
        ("User-Agent", "ids-test/1.0"),
    ];
    let h2 = h2_send(proxy.tls, &header, "/ids?q=1", &h2_ids, Some("hi")).await;
    for (id, answer, version, method, received) in [
        ("lean-1", &lean, "1.1", "GET", 0),
        ("hyper-1", &hyper, "1.1", "POST", 2),
        ("h2-1", &h2, "2", "POST", 2),
    ] {
        assert_eq!(answer.status, 200, "{id}: {answer:?}");
        let line = proxy.wait_for_line(|l| l.contains(&format!("\"request_id\":\"{id}\"")));
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        let expected = [
            ("target", serde_json::json!("access")),
            ("client.address", "192.0.2.41".into()),
            ("network.peer.address", "127.0.0.1".into()),
            ("network.protocol.version", version.into()),
            ("http.request.method", method.into()),
            ("url.path", "/ids".into()),
            ("server.address", "example.com".into()),
            ("user_agent.original", "ids-test/1.0".into()),
            ("http.response.status_code", 200.into()),
            (
                "amzn_trace_id",
                "1-67891233-abcdef012345678912345678".into(),
            ),
            ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736".into()),
            ("http.request.body.size", received.into()),
            ("http.response.body.size", answer.body.len().into()),
        ];
        for (field, value) in expected {
            assert_eq!(line[field], value, "{id}: {field} in {line}");
        }
        let (total, app) = (line["duration_us"].as_u64(), line["upstream_us"].as_u64());
        assert!(
            total.is_some() && total >= app && app.is_some(),
            "{id}: {line}"
        );
        assert!(line.get("status").is_none(), "{id}: {line}");
    }
    assert_eq!(proxy.terminate().code(), Some(0));
}
