//! End to end with a real load balancer in front: HAProxy in TCP mode with `send-proxy` and
//! `send-proxy-v2`, as a Classic ELB and an NLB do. Clients connect from 127.0.0.2, so the
//! address the app sees can only have come from the PROXY header (the proxy's peer is HAProxy
//! on 127.0.0.1). curl is used as an outside HTTP client.
//!
//! These need `haproxy` and `curl`, so `cargo test` lists them as ignored, by name; `.ci/run`
//! installs both and runs them with `cargo test -- --ignored`.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use common::haproxy::{certificate, Haproxy};
use common::*;

async fn haproxy(backend: SocketAddr, send_proxy: &str) -> Haproxy {
    Haproxy::start(backend, "", send_proxy).await
}

/// `send-proxy-v2` with TLVs HAProxy knows how to add (a CRC32C over the header and a unique
/// id), which the proxy must skip.
const V2_WITH_TLVS: &str = "send-proxy-v2 proxy-v2-options crc32c,unique-id";

/// Runs curl (at most 10 s) and returns what it printed; fails the test if curl failed.
async fn curl(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(&args)
            .output()
    })
    .await
    .unwrap()
    .expect("curl must be installed");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {}{printed}",
        String::from_utf8_lossy(&out.stderr)
    );
    printed
}

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

async fn through_balancer(send_proxy: &str) {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let elb = haproxy(proxy.tls, send_proxy).await;

    let mut s = connect_from("127.0.0.2", elb.addr).await;
    s.write_all(&get("/through-elb", "")).await.unwrap();
    let resp = read_all(&mut s).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(echoed(&resp, "x-forwarded-for"), ["127.0.0.2"], "{resp}");
    assert_eq!(
        echoed(&resp, "x-forwarded-port"),
        [elb.addr.port().to_string().as_str()]
    );
    assert!(
        resp.contains(&format!("peer: {}", "127.0.0.1")),
        "the app's peer is the proxy"
    );

    let s = connect_from("127.0.0.2", elb.addr).await;
    let (mut ws, _) = within(
        "ws handshake",
        tokio_tungstenite::client_async("ws://example.com/ws", s),
    )
    .await
    .unwrap();
    let hello = within("hello", ws.next()).await.unwrap().unwrap();
    assert_eq!(
        hello.into_text().unwrap().as_str(),
        "x-forwarded-for: 127.0.0.2"
    );
    ws.send(Message::text("through the balancer"))
        .await
        .unwrap();
    let back = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "through the balancer");
    ws.close(None).await.unwrap();

    // curl, an outside client, through the same chain.
    let url = format!("http://{}/curl?q=1", elb.addr);
    let body = curl(&["--interface", "127.0.0.3", &url]).await;
    assert!(body.starts_with("GET /curl?q=1\n"), "{body}");
    assert!(body.contains("x-forwarded-for: 127.0.0.3\n"), "{body}");
    assert!(body.contains("user-agent: curl/"), "{body}");
}

#[tokio::test]
#[ignore = "needs haproxy and curl on PATH; .ci/run installs them and runs it with --ignored"]
async fn haproxy_send_proxy_v1() {
    through_balancer("send-proxy").await;
}

#[tokio::test]
#[ignore = "needs haproxy and curl on PATH; .ci/run installs them and runs it with --ignored"]
async fn haproxy_send_proxy_v2() {
    through_balancer("send-proxy-v2").await;
}

#[tokio::test]
#[ignore = "needs haproxy and curl on PATH; .ci/run installs them and runs it with --ignored"]
async fn haproxy_send_proxy_v2_with_tlvs() {
    through_balancer(V2_WITH_TLVS).await;
}

#[tokio::test]
#[ignore = "needs haproxy and curl on PATH; .ci/run installs them and runs it with --ignored"]
async fn haproxy_in_front_of_the_plain_port_redirects() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let elb = haproxy(proxy.plain, "send-proxy").await;
    let url = format!("http://{}/some/path?x=1", elb.addr);
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "Host: Shop.Example.com:80",
        &url,
    ])
    .await;
    assert_eq!(out, "301 https://shop.example.com/some/path?x=1");
}

/// HAProxy as an NLB TLS listener with ALPN (`h2,http/1.1`) and `send-proxy-v2` in front of
/// the proxy: curl negotiates h2, the proxy gets cleartext HTTP/2 after the PROXY header, and
/// an HTTP/1.1 client on the same listener still works.
#[tokio::test]
#[ignore = "needs haproxy, curl and openssl on PATH; .ci/run installs them and runs it with --ignored"]
async fn haproxy_tls_listener_with_alpn_h2_and_curl() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let dir = TempDir::new("tls");
    let pem = certificate(&dir);
    let bind = format!("ssl crt {} alpn h2,http/1.1", pem.display());
    let elb = Haproxy::start(proxy.tls, &bind, "send-proxy-v2").await;
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let url = format!("https://localhost:{}/over-tls?v={version}", elb.addr.port());
        let resolve = format!("localhost:{}:127.0.0.1", elb.addr.port());
        let body = curl(&[
            "-k",
            flag,
            "--interface",
            "127.0.0.4",
            "--resolve",
            &resolve,
            "-w",
            "\nversion=%{http_version}",
            &url,
        ])
        .await;
        assert!(body.ends_with(&format!("version={version}")), "{body}");
        assert!(
            body.starts_with(&format!("GET /over-tls?v={version}\n")),
            "{body}"
        );
        assert!(body.contains("x-forwarded-for: 127.0.0.4\n"), "{body}");
        assert!(
            body.contains(&format!("host: localhost:{}\n", elb.addr.port())),
            "{body}"
        );
    }
    let m = proxy.proxy_metrics.render();
    assert!(
        m.contains("elb_ws_proxy_requests_total{protocol=\"h2\",class=\"2xx\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("elb_ws_proxy_requests_total{protocol=\"http1\",class=\"2xx\"} 1\n"),
        "{m}"
    );
}
