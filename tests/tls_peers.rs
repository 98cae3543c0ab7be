//! TLS at the proxy with real outside peers: HAProxy playing an NLB TCP listener (passthrough,
//! `send-proxy-v2`) and a TLS target group (re-encrypting, `ssl verify none`), curl over
//! HTTP/1.1 and HTTP/2, `openssl s_client` for SNI, versions and mutual TLS, and sslyze, a
//! TLS scanner no one here wrote.
//!
//! They need `haproxy`, `curl`, `openssl` and `sslyze` (PyPI), so `cargo test` lists them as
//! ignored, by name; `.ci/run` installs them and runs them with `cargo test -- --ignored`.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use elb_ws_proxy::config::TlsMode;

use common::haproxy::{certificate, Haproxy};
use common::tls::{Ca, Issued};
use common::*;

/// A proxy ending TLS with a certificate for `default.test` and `a.example` from `ca`, and,
/// with `clients`, mutual TLS against that CA.
async fn proxy_with_tls(dir: &TempDir, ca: &Ca, clients: Option<&Ca>) -> (App, Running) {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    let (cert, key) = ca
        .server(&["default.test", "a.example"])
        .write(dir.path(), "server");
    config.tls.mode = TlsMode::Auto;
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    if let Some(clients) = clients {
        let file = dir.path().join("clients.pem");
        std::fs::write(&file, clients.pem()).unwrap();
        config.tls.client_ca_file = Some(file);
    }
    let proxy = start_proxy(config).await;
    (app, proxy)
}

/// Runs a command (bounded by `timeout`) off the runtime's threads.
async fn run(program: &str, args: Vec<String>, stdin: &'static [u8]) -> Output {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("timeout")
            .arg("60")
            .arg(&program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

async fn curl(extra: &[&str], url: String) -> String {
    let mut a = args(&["-sS", "--max-time", "10", "--interface", "127.0.0.2"]);
    a.extend(args(extra));
    a.push(url);
    let out = run("curl", a, b"").await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
#[ignore = "needs haproxy and curl on PATH; .ci/run installs them and runs it with --ignored"]
async fn haproxy_tcp_passthrough_with_curl_over_http1_and_http2() {
    let dir = TempDir::new("tls-peers-passthrough");
    let ca = Ca::new("test CA");
    let (_app, proxy) = proxy_with_tls(&dir, &ca, None).await;
    let nlb = Haproxy::start(proxy.tls, "", "send-proxy-v2").await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let resolve = format!("default.test:{}:127.0.0.1", nlb.addr.port());
    let url = format!("https://default.test:{}/x", nlb.addr.port());
    let cafile = ca_file.display().to_string();
    for version in ["--http1.1", "--http2"] {
        let text = curl(
            &[
                "--cacert",
                &cafile,
                "--resolve",
                &resolve,
                version,
                "-w",
                "\nhttp_version=%{http_version}",
            ],
            url.clone(),
        )
        .await;
        assert!(
            text.contains("x-forwarded-for: 127.0.0.2"),
            "{version}: {text}"
        );
        assert!(
            text.contains("x-forwarded-proto: https"),
            "{version}: {text}"
        );
        let expected = if version == "--http2" {
            "http_version=2"
        } else {
            "http_version=1.1"
        };
        assert!(text.ends_with(expected), "{version}: {text}");
    }
    assert_eq!(
        proxy.metric("elb_ws_proxy_tls_handshakes_total{result=\"ok\"}"),
        2.0
    );
}

#[tokio::test]
#[ignore = "needs haproxy, openssl and curl on PATH; .ci/run installs them and runs it with --ignored"]
async fn haproxy_as_a_tls_target_group_reencrypts_without_checking() {
    let dir = TempDir::new("tls-peers-target-group");
    let ca = Ca::new("test CA");
    let (_app, proxy) = proxy_with_tls(&dir, &ca, None).await;
    let listener_pem = certificate(&dir);
    let pem = listener_pem.display();
    // The NLB's TLS listener ends the client's TLS and opens a new TLS connection to the
    // target, PROXY v2 first, without checking its certificate; ALPN as the listener agreed.
    for (alpn, curl_version, expected) in [
        ("http/1.1", "--http1.1", "http_version=1.1"),
        ("h2", "--http2", "http_version=2"),
    ] {
        let nlb = Haproxy::start(
            proxy.tls,
            &format!("ssl crt {pem} alpn {alpn}"),
            &format!("ssl verify none send-proxy-v2 alpn {alpn}"),
        )
        .await;
        let url = format!("https://127.0.0.1:{}/y", nlb.addr.port());
        let text = curl(
            &["-k", curl_version, "-w", "\nhttp_version=%{http_version}"],
            url,
        )
        .await;
        assert!(
            text.contains("x-forwarded-for: 127.0.0.2"),
            "{alpn}: {text}"
        );
        assert!(text.ends_with(expected), "{alpn}: {text}");
    }
}

/// `openssl s_client` through the NLB stand-in; returns what it printed.
async fn s_client(elb: SocketAddr, extra: &[&str]) -> (bool, String) {
    // `-ign_eof`: read the answer to the end rather than stop when the request is sent.
    let mut a = args(&[
        "s_client",
        "-connect",
        &elb.to_string(),
        "-brief",
        "-ign_eof",
    ]);
    a.extend(args(extra));
    let out = run(
        "openssl",
        a,
        b"GET /s HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
#[ignore = "needs haproxy and openssl on PATH; .ci/run installs them and runs it with --ignored"]
async fn openssl_s_client_sni_versions_and_mutual_tls() {
    let dir = TempDir::new("tls-peers-openssl");
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let (_app, proxy) = proxy_with_tls(&dir, &ca, Some(&clients)).await;
    let nlb = Haproxy::start(proxy.tls, "", "send-proxy-v2").await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let identity: Issued = clients.client("orders", "spiffe://example.org/orders");
    let (cert, key) = identity.write(dir.path(), "client");
    let (cert, key, ca_file) = (
        cert.display().to_string(),
        key.display().to_string(),
        ca_file.display().to_string(),
    );
    let base = [
        "-servername",
        "a.example",
        "-CAfile",
        &ca_file,
        "-verify_return_error",
        "-cert",
        &cert,
        "-key",
        &key,
    ];
    let (ok, text) = s_client(nlb.addr, &base).await;
    assert!(ok, "{text}");
    assert!(text.contains("Protocol version: TLSv1.3"), "{text}");
    assert!(text.contains("Verification: OK"), "{text}");
    assert!(text.contains("x-forwarded-client-cert: Hash="), "{text}");
    assert!(
        text.contains("Subject=\"CN=orders\";URI=spiffe://example.org/orders"),
        "{text}"
    );
    let (ok, text) = s_client(nlb.addr, &[&base[..], &["-tls1_2"]].concat()).await;
    assert!(ok && text.contains("Protocol version: TLSv1.2"), "{text}");
    // Nothing older than TLS 1.2 is offered.
    let (ok, text) = s_client(nlb.addr, &[&base[..], &["-tls1_1"]].concat()).await;
    assert!(!ok && !text.contains("HTTP/1.1 200"), "{text}");
    let incompatible = "elb_ws_proxy_tls_handshakes_total{result=\"incompatible\"}";
    eventually("the TLS 1.1 handshake counted", || async {
        (proxy.metric(incompatible) == 1.0).then_some(())
    })
    .await;
    // No client certificate: refused (TLS_CLIENT_AUTH defaults to required).
    let (_, text) = s_client(nlb.addr, &base[..5]).await;
    assert!(
        text.contains("CONNECTION ESTABLISHED") || text.contains("alert"),
        "{text}"
    );
    assert!(!text.contains("HTTP/1.1 200"), "{text}");
    // The proxy may count the failure just after the client has gone.
    let series = "elb_ws_proxy_tls_handshakes_total{result=\"client_certificate\"}";
    eventually("the refused handshake counted", || async {
        (proxy.metric(series) == 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs haproxy and python3 with sslyze (PyPI); .ci/run installs them and runs it with --ignored"]
async fn sslyze_finds_no_weak_protocol_or_cipher() {
    let dir = TempDir::new("tls-peers-sslyze");
    let ca = Ca::new("test CA");
    let (_app, proxy) = proxy_with_tls(&dir, &ca, None).await;
    let nlb = Haproxy::start(proxy.tls, "", "send-proxy-v2").await;
    let report = dir.path().join("sslyze.json");
    let target = format!("127.0.0.1:{}", nlb.addr.port());
    let a = args(&[
        "-m",
        "sslyze",
        "--sslv2",
        "--sslv3",
        "--tlsv1",
        "--tlsv1_1",
        "--tlsv1_2",
        "--tlsv1_3",
        "--reneg",
        "--heartbleed",
        "--robot",
        "--json_out",
    ]);
    let out = run(
        "python3",
        [a, vec![report.display().to_string(), target]].concat(),
        b"",
    )
    .await;
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        report.exists(),
        "sslyze wrote no report: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let result = &json["server_scan_results"][0]["scan_result"];
    let accepted = |scan: &str| {
        result[scan]["result"]["accepted_cipher_suites"]
            .as_array()
            .map_or(0, Vec::len)
    };
    for old in [
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        assert_eq!(accepted(old), 0, "{old} accepted: {printed}");
    }
    assert!(
        accepted("tls_1_2_cipher_suites") > 0 && accepted("tls_1_3_cipher_suites") > 0,
        "{printed}"
    );
    for suite in result["tls_1_2_cipher_suites"]["result"]["accepted_cipher_suites"]
        .as_array()
        .unwrap()
    {
        let name = suite["cipher_suite"]["name"].as_str().unwrap();
        assert!(
            name.contains("ECDHE") && (name.contains("GCM") || name.contains("CHACHA20")),
            "weak suite {name}"
        );
    }
    let reneg = &result["session_renegotiation"]["result"];
    assert_eq!(
        reneg["is_vulnerable_to_client_renegotiation_dos"], false,
        "{reneg}"
    );
    assert_eq!(
        result["heartbleed"]["result"]["is_vulnerable_to_heartbleed"],
        false
    );
    let robot = result["robot"]["result"]["robot_result"]
        .as_str()
        .unwrap_or_default();
    assert!(robot.starts_with("NOT_VULNERABLE"), "{robot}");
}
