//! A real browser through a real balancer: Chromium loads a page through HAProxy playing an
//! NLB TLS listener (ALPN `h2,http/1.1`, `send-proxy-v2`), then opens a WebSocket. Chrome puts
//! a WebSocket on its existing HTTP/2 connection when the server advertises
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441), which the proxy does; this shows that what is
//! advertised works in the browser that uses it.
//!
//! Needs `haproxy`, `openssl` and `chromium`, so `cargo test` lists it as ignored, by name;
//! `.ci/run` installs them and runs it with `cargo test -- --ignored`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::haproxy::{certificate, Haproxy};
use common::*;

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
    let url = format!("https://localhost:{}/browser-page", elb.addr.port());
    let _browser = chromium(&url, &dir);
    // A browser's start is slower than any network wait: up to 30 s for the report.
    let report = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(r) = browser_reports().into_iter().next() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no report from the browser; proxy log:\n{}", logs.text()));
    // The app's greeting names the browser's address, from HAProxy's PROXY v2 header; then
    // the echo of what the page sent.
    assert_eq!(report, "x-forwarded-for: 127.0.0.1|hello from the browser");
    // The WebSocket came as an extended CONNECT on the page's HTTP/2 connection.
    let text = logs.text();
    let on_h2 = |method: &str, path: &str| {
        text.lines().any(|l| {
            l.contains("protocol=\"h2\"")
                && l.contains(&format!("method={method}"))
                && l.contains(&format!("path=\"{path}\""))
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
