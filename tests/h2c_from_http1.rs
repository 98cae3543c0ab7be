//! `DESTINATION_PROTOCOL=h2c` with HTTP/1.1 clients: every request reaches an app that speaks
//! only h2c as HTTP/2, and its answers come back framed by the HTTP/1.1 response rules.

mod common;

use elb_ws_proxy::config::DestinationProtocol;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use common::*;

async fn h2c_proxy(app: &App) -> Running {
    let mut config = config_for(app.addr);
    config.destination_protocol = DestinationProtocol::H2c;
    start_proxy(config).await
}

/// The value of header `name` in a raw HTTP/1.1 head, if present.
fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one response from `s`: its head, and the body as `Content-Length` frames it (none for
/// an answer to `HEAD`).
async fn read_sized_response(s: &mut TcpStream, to_head: bool) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = field(&head, "content-length").map_or(0, |v| v.parse().unwrap());
            let want = end + 4 + if to_head { 0 } else { len };
            while buf.len() < want {
                let n = within("body", s.read(&mut chunk)).await.unwrap();
                assert!(n > 0, "closed mid-body: {head}");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..want]).into_owned();
            return (head, body);
        }
        let n = within("head", s.read(&mut chunk)).await.unwrap();
        assert!(
            n > 0,
            "closed before a head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_get_reaches_an_h2c_only_app_as_http2() {
    let app = start_h2_app().await;
    let proxy = h2c_proxy(&app).await;
    let resp = exchange(
        proxy.tls,
        &[
            v1("203.0.113.60", 443),
            get("/x?y=1", "X-Forwarded-For: 6.6.6.6\r\n"),
        ]
        .concat(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    // The app saw an HTTP/2 request: hyper gives its target in absolute form.
    assert!(body.starts_with("GET http://example.com/x?y=1\n"), "{body}");
    assert_eq!(echoed(&resp, "x-forwarded-for"), ["203.0.113.60"], "{resp}");
    assert_eq!(echoed(&resp, "x-forwarded-proto"), ["https"], "{resp}");
    assert!(echoed(&resp, "connection").is_empty(), "{resp}");
    assert!(
        echoed(&resp, "host").is_empty(),
        "Host becomes :authority: {resp}"
    );
    assert_eq!(
        field(head, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(field(head, "date").is_some(), "{head}");
    assert_eq!(app.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_chunked_post_arrives_as_data_frames_with_its_trailers() {
    let app = start_h2_app().await;
    let proxy = h2c_proxy(&app).await;
    let request = "POST /echo-trailers HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\
                   Transfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
                   5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n";
    let resp = exchange(
        proxy.tls,
        &[v1("203.0.113.61", 443), request.as_bytes().to_vec()].concat(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(echoed(&resp, "body-length"), ["11"], "{resp}");
    assert_eq!(echoed(&resp, "x-checksum"), ["abc123"], "{resp}");
}

#[tokio::test]
async fn the_apps_announced_trailers_reach_the_client_in_a_chunked_body() {
    let app = start_h2_app().await;
    let proxy = h2c_proxy(&app).await;
    let resp = exchange(
        proxy.tls,
        &[
            v1("203.0.113.62", 443),
            get("/trailers", "TE: trailers\r\n"),
        ]
        .concat(),
    )
    .await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(field(head, "transfer-encoding"), Some("chunked"), "{head}");
    assert_eq!(
        field(head, "trailer"),
        Some("grpc-status, x-trailer"),
        "{head}"
    );
    assert!(body.starts_with("2\r\nok\r\n0\r\n"), "{body:?}");
    let trailer_section = body.split_once("0\r\n").unwrap().1;
    assert!(trailer_section.contains("grpc-status: 0\r\n"), "{body:?}");
    assert!(trailer_section.contains("x-trailer: yes\r\n"), "{body:?}");
    assert!(trailer_section.ends_with("\r\n\r\n"), "{body:?}");
}

#[tokio::test]
async fn head_gets_the_length_and_no_body_and_the_connection_goes_on() {
    let app = start_h2_app().await;
    let proxy = h2c_proxy(&app).await;
    let mut s = TcpStream::connect(proxy.tls).await.unwrap();
    s.write_all(&v1("203.0.113.63", 443)).await.unwrap();
    s.write_all(b"HEAD /x HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_sized_response(&mut s, true).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.is_empty());
    let length: usize = field(&head, "content-length")
        .expect("HEAD keeps its length")
        .parse()
        .unwrap();
    assert!(length > 0, "{head}");
    // The same connection serves a GET next: no body bytes were left in between.
    s.write_all(b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_sized_response(&mut s, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("GET http://example.com/x\n"), "{body}");
    // The GET's echo is the HEAD's answer plus the method's one letter less: the same route.
    assert_eq!(body.len(), length - 1, "{body}");
}

#[tokio::test]
async fn a_websocket_upgrade_becomes_an_extended_connect_both_ways() {
    let app = start_h2_websocket_app().await;
    let proxy = h2c_proxy(&app).await;
    let mut ws = websocket(proxy.tls, &v1("203.0.113.64", 443), "/ws").await;
    let greeting = within("greeting", ws.next()).await.unwrap().unwrap();
    assert_eq!(greeting, Message::text("x-forwarded-for: 203.0.113.64"));
    for i in 0..3 {
        let msg = format!("message {i}");
        ws.send(Message::text(msg.clone())).await.unwrap();
        let echo = within("echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echo, Message::text(msg));
    }
    assert_eq!(proxy.metric("elb_ws_proxy_websocket_tunnels_open"), 1.0);
    ws.close(None).await.unwrap();
    // The app answers the close and ends its stream; the client then closes its socket.
    while within("close handshake", ws.next()).await.is_some() {}
    drop(ws);
    eventually("the tunnel closed on both sides", || async {
        (proxy.metric("elb_ws_proxy_websocket_tunnels_open") == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_websocket_to_an_app_without_extended_connect_is_502_with_one_warning_naming_auto() {
    let (_guard, logs) = capture_logs();
    let app = start_h2_app().await;
    let proxy = h2c_proxy(&app).await;
    let upgrade = "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    for _ in 0..2 {
        // Twice: once on the connection the request opens, once on the one it finds open.
        let mut s = TcpStream::connect(proxy.tls).await.unwrap();
        s.write_all(&v1("203.0.113.65", 443)).await.unwrap();
        s.write_all(upgrade.as_bytes()).await.unwrap();
        let (head, _) = read_sized_response(&mut s, false).await;
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    }
    let text = logs.text();
    let warnings: Vec<&str> = (text.lines())
        .filter(|l| l.contains("WARN") && l.contains("203.0.113.65"))
        .collect();
    assert_eq!(warnings.len(), 2, "one warning per refused upgrade: {text}");
    assert!(
        warnings
            .iter()
            .all(|l| l.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL")
                && l.contains("DESTINATION_PROTOCOL=auto")),
        "{text}"
    );
}
