//! A real browser through a real balancer: Chromium loads a page through HAProxy playing an
//! NLB TLS listener (ALPN `h2,http/1.1`, `send-proxy-v2`), then opens a WebSocket. Chrome puts
//! a WebSocket on its existing HTTP/2 connection when the server advertises
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441), which the proxy does; this shows that what is
//! advertised works in the browser that uses it. A second test takes HAProxy out of TLS: it
//! plays an NLB TCP listener (passthrough) and the proxy ends TLS itself, so the browser's
//! HTTP/2 and its WebSocket run over the proxy's own TLS.
//!
//! Needs `haproxy`, `openssl` and `chromium`, so `cargo test` lists it as ignored, by name;
//! `.ci/run` installs them and runs it with `cargo test -- --ignored`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::haproxy::{certificate, Haproxy};
use common::tls::Ca;
use common::*;
use elb_ws_proxy::config::TlsMode;

/// A browser process, killed when the test ends however it ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Headless Chromium on `url`, with a fresh profile in `dir`, trusting the test's certificate
/// and reaching for nothing but the page (no background traffic, no QUIC).
fn chromium(url: &str, dir: &TempDir) -> Browser {
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--ignore-certificate-errors",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "chromium must be installed for this test (apt-get install chromium; .ci/run does it)",
        );
    Browser(child)
}

/// Waits (up to 30 s: a browser's start is slower than any network wait) for the report of
/// the page served on `port`, and returns what follows the port.
async fn report_from(port: u16, logs: &Logs) -> String {
    let prefix = format!("{port}|");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let reports = browser_reports();
            if let Some(r) = reports.iter().find_map(|r| r.strip_prefix(&prefix)) {
                return r.to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no report from the browser; proxy log:\n{}", logs.text()))
}

/// Opens the test page in Chromium through the balancer at `elb`, and asserts what the page
/// reports (the app's greeting naming the browser's address from HAProxy's PROXY v2 header,
/// then the echo of what it sent) and that the page and its WebSocket came over HTTP/2.
async fn browse(elb: std::net::SocketAddr, dir: &TempDir, proxy: &Running, logs: &Logs) {
    let url = format!("https://localhost:{}/browser-page", elb.port());
    let _browser = chromium(&url, dir);
    assert_eq!(
        report_from(elb.port(), logs).await,
        "x-forwarded-for: 127.0.0.1|hello from the browser"
    );
    assert_page_and_websocket_on_h2(proxy, logs);
}

/// Asserts that the page and its WebSocket (an extended CONNECT) came over HTTP/2 and that
/// the proxy holds the browser's one HTTP/2 connection.
fn assert_page_and_websocket_on_h2(proxy: &Running, logs: &Logs) {
    let text = logs.text();
    let on_h2 = |method: &str, path: &str| {
        text.lines().any(|l| {
            l.contains("network.protocol.version=\"2\"")
                && l.contains(&format!("http.request.method={method}"))
                && l.contains(&format!("url.path=\"{path}\""))
        })
    };
    assert!(on_h2("GET", "/browser-page"), "{text}");
    assert!(on_h2("CONNECT", "/ws"), "{text}");
    assert_eq!(
        proxy.metric("elb_ws_proxy_h2_connections_open"),
        1.0,
        "{text}"
    );
}

#[tokio::test]
#[ignore = "needs haproxy, openssl and chromium on PATH; .ci/run installs them and runs it with --ignored"]
async fn chromium_opens_a_websocket_over_http2_through_the_proxy() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let (_guard, logs) = capture_logs();
    let dir = TempDir::new("browser");
    let pem = certificate(&dir);
    let bind = format!("ssl crt {} alpn h2,http/1.1", pem.display());
    let elb = Haproxy::start(proxy.tls, &bind, "send-proxy-v2").await;
    browse(elb.addr, &dir, &proxy, &logs).await;
}

#[tokio::test]
#[ignore = "needs haproxy and chromium on PATH; .ci/run installs them and runs it with --ignored"]
async fn chromium_opens_a_websocket_over_the_proxys_own_tls() {
    let app = start_app().await;
    let dir = TempDir::new("browser-tls");
    let ca = Ca::new("browser CA");
    let mut config = config_for(app.addr);
    let (cert, key) = ca.server(&["localhost"]).write(dir.path(), "server");
    config.tls.mode = TlsMode::Required;
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();
    // HAProxy as an NLB TCP listener: it passes the browser's TLS through untouched.
    let elb = Haproxy::start(proxy.tls, "", "send-proxy-v2").await;
    browse(elb.addr, &dir, &proxy, &logs).await;
    let text = logs.text();
    // The proxy ended the browser's TLS itself: its access lines name the version and ALPN.
    assert!(
        text.lines().any(|l| l.contains("url.path=\"/ws\"")
            && l.contains("tls.protocol.version=")
            && l.contains("tls.next_protocol=")),
        "{text}"
    );
    assert!(
        proxy.metric("elb_ws_proxy_tls_handshakes_total{result=\"ok\"}") >= 1.0,
        "{text}"
    );
}
