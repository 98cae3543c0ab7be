//! TLS ended by the proxy, behind an NLB TCP listener or TLS target group: the PROXY header in
//! the clear, then a handshake; ALPN, SNI, rotation, mutual TLS and bad handshakes.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use elb_ws_proxy::config::{ClientAuth, TlsMode};
use elb_ws_proxy::Config;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use common::tls::{peer_names, tls_config, Ca, ClientTls, Issued};
use common::*;

/// The test app, a directory, a CA, and a configuration whose default certificate (for
/// `default.test`) that CA signed.
async fn tls_setup(name: &str) -> (App, TempDir, Ca, Config) {
    let app = start_app().await;
    let dir = TempDir::new(name);
    let ca = Ca::new("test CA");
    let config = tls_config(app.addr, &dir, &ca.server(&["default.test"]));
    (app, dir, ca, config)
}

fn client<'a>(ca: &'a Ca, sni: Option<&'a str>, alpn: &'a [&'a [u8]]) -> ClientTls<'a> {
    ClientTls {
        ca,
        sni,
        alpn,
        identity: None,
    }
}

/// Sends one `Connection: close` GET on `s` and reads the whole answer.
async fn get_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
    extra: &str,
) -> String {
    s.write_all(&get(path, extra)).await.unwrap();
    let mut out = Vec::new();
    let ended = within("response", s.read_to_end(&mut out)).await;
    // An answer ends with the TLS close_notify, so that the client can tell it from a cut.
    if !out.is_empty() {
        ended.expect("the answer ends cleanly");
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A GET over a fresh TLS connection (SNI `default.test`, ALPN `http/1.1`) after `header`.
async fn get_tls(ca: &Ca, addr: std::net::SocketAddr, header: &[u8], path: &str) -> String {
    let tls = client(ca, Some("default.test"), &[b"http/1.1"]);
    let mut s = tls.connect(addr, header).await.unwrap();
    get_over(&mut s, path, "").await
}

#[tokio::test]
async fn alpn_chooses_the_protocol_and_cleartext_still_passes_in_auto() {
    let (_guard, logs) = capture_logs();
    let (_app, _dir, ca, config) = tls_setup("tls-alpn").await;
    let proxy = start_proxy(config).await;
    let header = v1("203.0.113.70", 443);
    // HTTP/1.1 chosen by ALPN.
    let mut s = client(&ca, Some("default.test"), &[b"http/1.1"])
        .connect(proxy.tls, &header)
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let resp = get_over(&mut s, "/a", "X-Forwarded-Client-Cert: Hash=forged\r\n").await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(echoed(&resp, "x-forwarded-for"), ["203.0.113.70"]);
    assert_eq!(echoed(&resp, "x-forwarded-proto"), ["https"]);
    assert!(
        echoed(&resp, "x-forwarded-client-cert").is_empty(),
        "a client's copy is removed: {resp}"
    );
    // h2 chosen by ALPN.
    let s = client(&ca, Some("default.test"), &[b"h2", b"http/1.1"])
        .connect(proxy.tls, &header)
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://default.test/b")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = within("h2 response", h2.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("x-forwarded-proto: https"));
    // No ALPN: the decrypted bytes say HTTP/1.1.
    let mut s = client(&ca, Some("default.test"), &[])
        .connect(proxy.tls, &header)
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    assert_eq!(status(&get_over(&mut s, "/c", "").await), 200);
    // Cleartext on the same port, as from a balancer that ended TLS itself.
    let resp = exchange(proxy.tls, &[header.clone(), get("/d", "")].concat()).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(
        proxy.metric("elb_ws_proxy_tls_handshakes_total{result=\"ok\"}"),
        3.0
    );
    let text = logs.text();
    let access: Vec<&str> = text.lines().filter(|l| l.contains(" access:")).collect();
    assert_eq!(access.len(), 4, "{text}");
    assert!(
        access[0].contains("tls.protocol.version=\"TLSv1_3\"")
            && access[0].contains("tls.server.name=\"default.test\"")
            && access[0].contains("tls.next_protocol=\"http/1.1\""),
        "{}",
        access[0]
    );
    assert!(
        access[1].contains("network.protocol.version=\"2\"")
            && access[1].contains("tls.next_protocol=\"h2\""),
        "{}",
        access[1]
    );
    assert!(
        !access[3].contains(" tls."),
        "cleartext has no TLS fields: {}",
        access[3]
    );
}

#[tokio::test]
async fn required_refuses_cleartext_but_a_headerless_ping_passes() {
    let (app, _dir, ca, mut config) = tls_setup("tls-required").await;
    config.tls.mode = TlsMode::Required;
    let proxy = start_proxy(config).await;
    let resp = exchange(
        proxy.tls,
        &[v1("203.0.113.71", 443), get("/x", "")].concat(),
    )
    .await;
    assert_eq!(resp, "", "closed without an answer");
    assert_eq!(
        proxy.metric("elb_ws_proxy_connections_refused_total{reason=\"tls_required\"}"),
        1.0
    );
    assert_eq!(app.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    let ping = exchange(
        proxy.tls,
        b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&ping), 200, "{ping}");
    let header = v1("203.0.113.71", 443);
    assert_eq!(status(&get_tls(&ca, proxy.tls, &header, "/y").await), 200);
}

#[tokio::test]
async fn sni_picks_the_certificate_by_its_names_wildcards_included() {
    let (_app, dir, ca, mut config) = tls_setup("tls-sni").await;
    let more = dir.path().join("more");
    std::fs::create_dir(&more).unwrap();
    ca.server(&["a.example"]).write(&more, "a");
    // A Kubernetes TLS secret as mounted: NAME/tls.crt and NAME/tls.key.
    let secret = more.join("b");
    std::fs::create_dir(&secret).unwrap();
    let b = ca.server(&["*.b.example"]);
    std::fs::write(secret.join("tls.crt"), &b.cert).unwrap();
    std::fs::write(secret.join("tls.key"), &b.key).unwrap();
    config.tls.cert_dir = Some(more);
    let proxy = start_proxy(config).await;
    let header = v1("203.0.113.72", 443);
    // (SNI, the names of the certificate served)
    let table: [(Option<&str>, &str); 5] = [
        (Some("a.example"), "a.example"),
        (Some("A.Example"), "a.example"),
        (Some("x.b.example"), "*.b.example"),
        (Some("default.test"), "default.test"),
        (None, "default.test"),
    ];
    for (sni, served) in table {
        let s = client(&ca, sni, &[b"http/1.1"])
            .connect(proxy.tls, &header)
            .await
            .unwrap();
        assert_eq!(peer_names(&s), [served], "{sni:?}");
    }
    // A name no certificate has gets the default, which the client then rejects.
    let other = client(&ca, Some("other.example"), &[])
        .connect(proxy.tls, &header)
        .await;
    assert!(other.is_err());
}

/// A Kubernetes-style mount: `dir/tls.crt` -> `..data/tls.crt`, `..data` -> `..vN`.
fn mount(dir: &std::path::Path, version: &str, pair: &Issued) {
    let versioned = dir.join(version);
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("tls.crt"), &pair.cert).unwrap();
    std::fs::write(versioned.join("tls.key"), &pair.key).unwrap();
    // The atomic swap: a new link renamed over `..data`.
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = dir.join(file);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(PathBuf::from("..data").join(file), &link).unwrap();
        }
    }
}

#[tokio::test]
async fn a_symlink_swap_rotates_the_certificate_and_a_broken_one_keeps_the_old() {
    let (_guard, logs) = capture_logs();
    let app = start_app().await;
    let dir = TempDir::new("tls-rotate");
    let ca = Ca::new("test CA");
    mount(dir.path(), "..v1", &ca.server(&["default.test", "v1.test"]));
    let mut config = config_for(app.addr);
    config.tls.mode = TlsMode::Auto;
    config.tls.cert_file = Some(dir.path().join("tls.crt"));
    config.tls.key_file = Some(dir.path().join("tls.key"));
    config.tls.reload_interval = Duration::from_millis(100);
    let proxy = start_proxy(config).await;
    let header = v1("203.0.113.73", 443);
    let tls = client(&ca, Some("default.test"), &[b"http/1.1"]);
    let mut open = tls.connect(proxy.tls, &header).await.unwrap();
    assert!(peer_names(&open).contains(&"v1.test".to_owned()));
    open.write_all(b"GET /before HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    within("first answer", open.read_exact(&mut first))
        .await
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    mount(dir.path(), "..v2", &ca.server(&["default.test", "v2.test"]));
    eventually("the new certificate is served", || async {
        let s = tls.connect(proxy.tls, &header).await.ok()?;
        peer_names(&s).contains(&"v2.test".to_owned()).then_some(())
    })
    .await;
    // The connection opened before the swap goes on with its session.
    let resp = get_over(&mut open, "/after", "").await;
    assert!(resp.contains("GET /after"), "{resp}");
    // A key that is not the certificate's: the old pair stays, with a warning and a metric.
    let broken = Issued {
        cert: ca.server(&["default.test", "v3.test"]).cert,
        key: ca.server(&["x"]).key,
    };
    mount(dir.path(), "..v3", &broken);
    eventually("the reload failure is reported", || async {
        (proxy.metric("elb_ws_proxy_tls_certificate_reload_failed{name=\"default\"}") == 1.0)
            .then_some(())
    })
    .await;
    let s = tls.connect(proxy.tls, &header).await.unwrap();
    assert!(peer_names(&s).contains(&"v2.test".to_owned()));
    assert!(logs
        .text()
        .contains("cannot be used; the old certificate stays in service"));
    assert!(
        proxy.metric("elb_ws_proxy_tls_certificate_expiry_timestamp_seconds{name=\"default\"}")
            > 4e9
    );
}

#[tokio::test]
async fn mutual_tls_required_and_optional_and_the_header_is_the_proxys_alone() {
    let app = start_app().await;
    let dir = TempDir::new("tls-mtls");
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let ca_file = dir.path().join("clients.pem");
    std::fs::write(&ca_file, clients.pem()).unwrap();
    let identity = clients.client("payments", "spiffe://example.org/payments");
    let stranger = Ca::new("other CA").client("stranger", "spiffe://other/x");
    let header = v1("203.0.113.74", 443);
    for auth in [ClientAuth::Required, ClientAuth::Optional] {
        let mut config = tls_config(app.addr, &dir, &ca.server(&["default.test"]));
        config.tls.client_ca_file = Some(ca_file.clone());
        config.tls.client_auth = auth;
        let proxy = start_proxy(config).await;
        let mut with = ClientTls {
            ca: &ca,
            sni: Some("default.test"),
            alpn: &[b"http/1.1"],
            identity: Some(&identity),
        };
        let mut s = with.connect(proxy.tls, &header).await.unwrap();
        let resp = get_over(&mut s, "/m", "X-Forwarded-Client-Cert: Hash=forged\r\n").await;
        let xfcc = echoed(&resp, "x-forwarded-client-cert");
        assert_eq!(xfcc.len(), 1, "{resp}");
        assert!(
            xfcc[0].starts_with("Hash=") && xfcc[0].len() > 70,
            "{}",
            xfcc[0]
        );
        assert!(
            xfcc[0].contains(";Subject=\"CN=payments\";URI=spiffe://example.org/payments"),
            "{}",
            xfcc[0]
        );
        // A certificate from another CA never gets through.
        with.identity = Some(&stranger);
        let refused = async {
            let mut s = with.connect(proxy.tls, &header).await?;
            s.write_all(&get("/m", "")).await?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        assert!(refused.await.map_or(true, |out| out.is_empty()), "{auth:?}");
        // No certificate: refused when required, served without the header when optional.
        let mut without = client(&ca, Some("default.test"), &[b"http/1.1"]);
        without.identity = None;
        let served = async {
            let mut s = without.connect(proxy.tls, &header).await?;
            Ok::<_, std::io::Error>(
                get_over(&mut s, "/m", "X-Forwarded-Client-Cert: Hash=forged\r\n").await,
            )
        };
        match (auth, served.await) {
            (ClientAuth::Required, Ok(resp)) => assert_eq!(resp, "", "{resp}"),
            (ClientAuth::Required, Err(_)) => {}
            (ClientAuth::Optional, Ok(resp)) => {
                assert_eq!(status(&resp), 200, "{resp}");
                assert!(
                    echoed(&resp, "x-forwarded-client-cert").is_empty(),
                    "{resp}"
                );
            }
            (ClientAuth::Optional, Err(e)) => {
                panic!("optional refused a client without a certificate: {e}")
            }
        }
        assert!(
            proxy.metric("elb_ws_proxy_tls_handshakes_total{result=\"client_certificate\"}") >= 1.0
        );
    }
}

#[tokio::test]
async fn bad_handshakes_are_closed_and_counted_and_others_are_served() {
    let (_app, _dir, ca, mut config) = tls_setup("tls-bad").await;
    config.request_header_timeout = Duration::from_millis(300);
    let proxy = start_proxy(config).await;
    let header = v1("203.0.113.75", 443);
    // A handshake record with garbage in it.
    let garbage = exchange(
        proxy.tls,
        &[header.clone(), b"\x16\x03\x01\x00\x05hello".to_vec()].concat(),
    )
    .await;
    assert!(!garbage.contains("HTTP/"), "{garbage:?}");
    assert_eq!(
        proxy.metric("elb_ws_proxy_tls_handshakes_total{result=\"malformed\"}"),
        1.0
    );
    // A handshake that stalls after its first byte.
    let started = std::time::Instant::now();
    let stalled = exchange(
        proxy.tls,
        &[header.clone(), b"\x16\x03\x01".to_vec()].concat(),
    )
    .await;
    assert!(stalled.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        proxy.metric("elb_ws_proxy_tls_handshakes_total{result=\"timeout\"}"),
        1.0
    );
    // None of it affects a good client.
    assert_eq!(status(&get_tls(&ca, proxy.tls, &header, "/ok").await), 200);
}

#[tokio::test]
async fn tls_min_version_refuses_older_clients() {
    let (_app, _dir, ca, mut config) = tls_setup("tls-version").await;
    config.tls.min_version = elb_ws_proxy::config::TlsVersion::V13;
    let proxy = start_proxy(config).await;
    let header = v1("203.0.113.77", 443);
    let tls12 = ClientTls {
        ca: &ca,
        sni: Some("default.test"),
        alpn: &[],
        identity: None,
    };
    assert!(tls12
        .connect_with(proxy.tls, &header, &[&rustls::version::TLS12])
        .await
        .is_err());
    assert_eq!(
        proxy.metric("elb_ws_proxy_tls_handshakes_total{result=\"incompatible\"}"),
        1.0
    );
    let s = tls12
        .connect_with(proxy.tls, &header, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn grpc_over_tls_reaches_an_h2c_app_with_its_trailers() {
    let app = start_h2_app().await;
    let dir = TempDir::new("tls-grpc");
    let ca = Ca::new("test CA");
    let mut config = tls_config(app.addr, &dir, &ca.server(&["default.test"]));
    config.destination_protocol = elb_ws_proxy::config::DestinationProtocol::H2c;
    let proxy = start_proxy(config).await;
    let s = client(&ca, Some("default.test"), &[b"h2"])
        .connect(proxy.tls, &v1("203.0.113.78", 443))
        .await
        .unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // As a gRPC client sends a unary call: POST, te: trailers, a body; the status in trailers.
    let req = http::Request::post("https://default.test/trailers")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\0\0\0\0\0",
        )))
        .unwrap();
    let resp = within("gRPC response", h2.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = within("body", resp.into_body().collect()).await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers over TLS");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), "ok");
}

#[tokio::test]
async fn a_websocket_over_tls_both_ways() {
    let (_app, _dir, ca, config) = tls_setup("tls-ws").await;
    let proxy = start_proxy(config).await;
    let s = client(&ca, Some("default.test"), &[b"http/1.1"])
        .connect(proxy.tls, &v1("203.0.113.76", 443))
        .await
        .unwrap();
    let (mut ws, resp) = within(
        "websocket handshake",
        tokio_tungstenite::client_async("wss://default.test/ws", s),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    let greeting = within("greeting", ws.next()).await.unwrap().unwrap();
    assert_eq!(greeting, Message::text("x-forwarded-for: 203.0.113.76"));
    for i in 0..3 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(
            within("echo", ws.next()).await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }
    assert_eq!(proxy.metric("elb_ws_proxy_websocket_tunnels_open"), 1.0);
    ws.close(None).await.unwrap();
    while within("close", ws.next()).await.is_some() {}
    drop(ws);
    eventually("the tunnel closed", || async {
        (proxy.metric("elb_ws_proxy_websocket_tunnels_open") == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn start_up_names_the_variable_and_the_file() {
    let dir = TempDir::new("tls-start");
    let ca = Ca::new("test CA");
    let app: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let good = ca.server(&["default.test"]);
    let expired = ca.expired_server(&["default.test"]);
    let (cert, key) = good.write(dir.path(), "good");
    let (old_cert, old_key) = expired.write(dir.path(), "expired");
    let other_key = ca.server(&["x"]).write(dir.path(), "other").1;
    let missing = dir.path().join("missing.crt");
    // (cert, key, variable named, file named, why)
    let table = [
        (
            missing.clone(),
            key.clone(),
            "TLS_CERT_FILE",
            missing.clone(),
            "No such file",
        ),
        (
            cert.clone(),
            other_key.clone(),
            "TLS_KEY_FILE",
            other_key.clone(),
            "the key must be the certificate's",
        ),
        (
            old_cert.clone(),
            old_key.clone(),
            "TLS_CERT_FILE",
            old_cert.clone(),
            "expired",
        ),
    ];
    for (cert, key, variable, file, why) in table {
        let mut config = config_for(app);
        config.tls.mode = TlsMode::Auto;
        config.tls.cert_file = Some(cert);
        config.tls.key_file = Some(key);
        let e = elb_ws_proxy::Proxy::bind(config)
            .await
            .err()
            .expect("start-up refused");
        let text = e.to_string();
        assert!(text.starts_with(variable), "{text}");
        assert!(
            text.contains(&file.display().to_string()) && text.contains(why),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_tls_client_that_stops_reading_is_cut_off_and_others_are_served() {
    let (app, _dir, ca, mut config) = tls_setup("tls-send-timeout").await;
    config.send_timeout = Some(Duration::from_millis(500));
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();
    let header = v1("203.0.113.79", 443);
    // A download far larger than the socket buffers, asked for and never read.
    let mut s = client(&ca, Some("default.test"), &[b"http/1.1"])
        .connect(proxy.tls, &header)
        .await
        .unwrap();
    s.write_all(&get(&format!("/big?{}", 64 << 20), ""))
        .await
        .unwrap();
    let line = eventually("the SEND_TIMEOUT warning", || {
        let text = logs.text();
        let line = (text.lines())
            .find(|l| {
                l.contains("WARN") && l.contains("SEND_TIMEOUT") && l.contains("203.0.113.79")
            })
            .map(str::to_owned);
        async move { line }
    })
    .await;
    assert!(line.contains("protocol=\"http1\""), "{line}");
    eventually("the app's connection closed", || async {
        (app.open.load(std::sync::atomic::Ordering::SeqCst) == 0).then_some(())
    })
    .await;
    // What the proxy had sent arrives, then the end: far less than the download.
    let mut total = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    while let Ok(n) = within("the end of the connection", s.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total < 64 << 20, "{total}");
    assert_eq!(
        status(&get_tls(&ca, proxy.tls, &header, "/fine").await),
        200
    );
}
