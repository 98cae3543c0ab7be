//! Behind a Network Load Balancer: the stand-in in `common::nlb` writes what an NLB writes, and
//! each test shows what the client got, what the app received, what was counted and logged.

mod common;

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use common::nlb::{self, Flow};
use common::*;

const ID: &str = "vpce-08d2bf15fac5001c9";

#[test]
fn the_stand_ins_crc32c_matches_the_standard_check_value() {
    assert_eq!(nlb::crc32c(b"123456789"), 0xE306_9283);
}

async fn answer(flow: &mut Flow) -> String {
    read_all(&mut flow.stream).await
}

#[tokio::test]
async fn the_header_clock_starts_at_its_first_byte() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.proxy_header_timeout = Duration::from_millis(300);
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();

    // A pooled or preconnected client speaks long after connecting: the NLB's header comes
    // with its first request, and is served. (Time passing is what is tested.)
    let mut late = Flow::open(proxy.tls, "198.51.100.7:50000", None).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    late.send(&get("/late", "")).await;
    let resp = answer(&mut late).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(echoed(&resp, "x-forwarded-for"), ["198.51.100.7"]);

    // A header that starts and stalls is still cut at PROXY_HEADER_TIMEOUT.
    let header = nlb::v2_header(Some("198.51.100.8:50000".parse().unwrap()), 443, &[]);
    let mut stalled = tokio::net::TcpStream::connect(proxy.tls).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &header[..10])
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    within("stalled header cut", stalled.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        proxy.metric("elb_ws_proxy_connections_refused_total{reason=\"proxy_header_timeout\"}"),
        1.0
    );
    assert!(
        logs.text()
            .contains("PROXY protocol header did not arrive in time"),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed_quietly_at_keepalive_timeout() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.proxy_header_timeout = Duration::from_millis(200);
    config.keepalive_timeout = Duration::from_millis(700);
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();
    let mut idle = tokio::net::TcpStream::connect(proxy.tls).await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    within("idle closed", idle.read_to_end(&mut rest))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "closed after {took:?}, not at KEEPALIVE_TIMEOUT"
    );
    assert_eq!(
        proxy.metric("elb_ws_proxy_connections_refused_total{reason=\"idle_before_header\"}"),
        1.0
    );
    let text = logs.text();
    assert!(!text.contains("WARN"), "{text}");
    assert!(text.contains("DEBUG") && text.contains("nothing sent within KEEPALIVE_TIMEOUT"));
}

#[tokio::test]
async fn health_checks_and_probes_make_no_noise() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let (_guard, logs) = capture_logs();
    for _ in 0..20 {
        nlb::probe(proxy.tls).await;
        nlb::probe(proxy.plain).await;
    }
    for _ in 0..5 {
        let resp = nlb::health_check(proxy.tls).await;
        assert_eq!(status(&resp), 200, "{resp}");
        // A LOCAL connection that then sends nothing and closes.
        let mut s = tokio::net::TcpStream::connect(proxy.tls).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, &nlb::v2_header(None, 0, &[]))
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut s).await.unwrap();
        assert_eq!(read_all(&mut s).await, "");
    }
    eventually("every probe counted", || {
        let m = proxy.proxy_metrics.render();
        async move {
            m.contains("elb_ws_proxy_connections_refused_total{reason=\"empty\"} 40\n")
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        proxy.metric("elb_ws_proxy_health_checks_total{status=\"200\"}"),
        5.0
    );
    // A real request still gets its access line; a bad header still warns.
    let mut flow = Flow::open(proxy.tls, "198.51.100.9:50000", None).await;
    flow.send(&get("/real", "")).await;
    assert_eq!(status(&answer(&mut flow).await), 200);
    exchange(proxy.tls, b"PROXY TCP9 nonsense\r\n").await;
    let text = logs.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("malformed PROXY v1 header"), "{text}");
    let access: Vec<&str> = text.lines().filter(|l| l.contains(" access:")).collect();
    assert_eq!(access.len(), 1, "{text}");
    assert!(access[0].contains("url.path=\"/real\""), "{}", access[0]);
}

#[tokio::test]
async fn log_health_checks_puts_ping_back_in_the_access_log() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.log_health_checks = true;
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();
    assert_eq!(status(&nlb::health_check(proxy.tls).await), 200);
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains(" access:") && l.contains("/ping")),
        "{text}"
    );
}

#[tokio::test]
async fn the_app_sees_exactly_the_endpoint_id_from_the_tlv() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let (_guard, logs) = capture_logs();
    let spoofs = "X-Amzn-Vpce-Id: vpce-spoofed\r\nx_amzn_vpce_id: vpce-spoofed2\r\n";
    let mut flow = Flow::open(proxy.tls, "198.51.100.10:50000", Some(ID)).await;
    flow.send(&get("/vpce", spoofs)).await;
    let resp = answer(&mut flow).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(echoed(&resp, "x-amzn-vpce-id"), [ID], "{resp}");
    assert!(!resp.contains("spoofed"), "{resp}");
    // The hyper path (a body forces it) says the same.
    let mut flow = Flow::open(proxy.tls, "198.51.100.10:50001", Some(ID)).await;
    let post = format!(
        "POST /vpce HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{spoofs}Content-Length: 2\r\n\r\nhi"
    );
    flow.send(post.as_bytes()).await;
    let resp = answer(&mut flow).await;
    assert_eq!(echoed(&resp, "x-amzn-vpce-id"), [ID], "{resp}");
    assert!(!resp.contains("spoofed"), "{resp}");
    // Without the TLV the app gets no id at all, and still not the client's.
    let mut flow = Flow::open(proxy.tls, "198.51.100.10:50002", None).await;
    flow.send(&get("/no-vpce", spoofs)).await;
    let resp = answer(&mut flow).await;
    assert!(echoed(&resp, "x-amzn-vpce-id").is_empty(), "{resp}");
    assert!(!resp.contains("spoofed"), "{resp}");
    let text = logs.text();
    let with_id = text
        .lines()
        .filter(|l| l.contains(" access:") && l.contains(ID))
        .count();
    assert_eq!(with_id, 2, "{text}");
}

#[tokio::test]
async fn the_endpoint_header_name_is_configurable_or_off() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.vpc_endpoint_header = Some(http::HeaderName::from_static("x-tenant-endpoint"));
    let proxy = start_proxy(config).await;
    let spoofs = "X-Tenant-Endpoint: spoofed\r\nX-Amzn-Vpce-Id: spoofed\r\n";
    let mut flow = Flow::open(proxy.tls, "198.51.100.11:50000", Some(ID)).await;
    flow.send(&get("/custom", spoofs)).await;
    let resp = answer(&mut flow).await;
    assert_eq!(echoed(&resp, "x-tenant-endpoint"), [ID], "{resp}");
    assert!(echoed(&resp, "x-amzn-vpce-id").is_empty(), "{resp}");
    assert!(!resp.contains("spoofed"), "{resp}");

    let mut config = config_for(app.addr);
    config.vpc_endpoint_header = None;
    let proxy = start_proxy(config).await;
    let mut flow = Flow::open(proxy.tls, "198.51.100.11:50001", Some(ID)).await;
    flow.send(&get("/off", spoofs)).await;
    let resp = answer(&mut flow).await;
    assert_eq!(status(&resp), 200);
    // No id is sent and AWS's own header name is still dropped; the other is just a header now.
    assert!(!resp.contains(ID), "{resp}");
    assert!(echoed(&resp, "x-amzn-vpce-id").is_empty(), "{resp}");
    assert_eq!(echoed(&resp, "x-tenant-endpoint"), ["spoofed"], "{resp}");
}

#[tokio::test]
async fn the_allow_list_lets_the_listed_endpoint_through_and_refuses_others() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.allowed_vpc_endpoints = vec![ID.to_owned()];
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();
    let mut ok = Flow::open(proxy.tls, "198.51.100.12:50000", Some(ID)).await;
    ok.send(&get("/allowed", "")).await;
    assert_eq!(status(&answer(&mut ok).await), 200);
    let before = app.connections.load(std::sync::atomic::Ordering::SeqCst);
    for vpce in [Some("vpce-0000000000000000a"), None] {
        let mut flow = Flow::open(proxy.tls, "198.51.100.13:50000", vpce).await;
        flow.send(&get("/refused", "")).await;
        assert_eq!(answer(&mut flow).await, "", "closed without an answer");
    }
    assert_eq!(
        app.connections.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "nothing forwarded"
    );
    assert_eq!(
        proxy.metric("elb_ws_proxy_connections_refused_total{reason=\"vpc_endpoint_not_allowed\"}"),
        2.0
    );
    let text = logs.text();
    assert!(
        text.contains("VPC endpoint vpce-0000000000000000a is not in ALLOWED_VPC_ENDPOINTS"),
        "{text}"
    );
    assert!(text.contains("no VPC endpoint id in the header"), "{text}");
    // Health checks still pass: LOCAL, and a header-less /ping.
    assert_eq!(status(&nlb::health_check(proxy.tls).await), 200);
    let ping = exchange(
        proxy.tls,
        b"GET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&ping), 200, "{ping}");
}

/// The proxy's own sockets, found among this process's descriptors by their addresses:
/// `(accepted from the client, connected to the app)`.
#[cfg(target_os = "linux")]
fn proxy_sockets(client: std::net::SocketAddr, app: std::net::SocketAddr) -> (i32, i32) {
    let mut accepted = None;
    let mut to_app = None;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: only read from while this loop holds it; at worst it closed meanwhile and
        // the calls below fail.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let Ok(peer) = socket2::SockRef::from(&borrowed).peer_addr() else {
            continue;
        };
        if peer.as_socket() == Some(client) {
            accepted = Some(fd);
        } else if peer.as_socket() == Some(app) {
            to_app = Some(fd);
        }
    }
    (
        accepted.expect("the proxy's client socket"),
        to_app.expect("the proxy's app socket"),
    )
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn keepalive_is_set_on_both_sockets_of_a_tunnel() {
    use futures_util::StreamExt;
    for setting in [Some(Duration::from_secs(7)), None] {
        // An app of its own each time, so no socket of the other round can match.
        let app = start_app().await;
        let mut config = config_for(app.addr);
        config.tcp_keepalive = setting;
        let proxy = start_proxy(config).await;
        let mut ws = websocket(proxy.tls, &v1("192.0.2.80", 443), "/ws").await;
        within("hello", ws.next()).await.unwrap().unwrap();
        let client = ws.get_ref().local_addr().unwrap();
        let (accepted, to_app) = proxy_sockets(client, app.addr);
        for (side, fd) in [("client", accepted), ("app", to_app)] {
            // SAFETY: the tunnel, and so both of the proxy's sockets, stay open meanwhile.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let sock = socket2::SockRef::from(&fd);
            assert_eq!(sock.keepalive().unwrap(), setting.is_some(), "{side}");
            assert!(sock.tcp_nodelay().unwrap(), "{side}");
            if let Some(idle) = setting {
                assert_eq!(sock.tcp_keepalive_time().unwrap(), idle, "{side}");
                assert_eq!(
                    sock.tcp_keepalive_interval().unwrap(),
                    Duration::from_secs(1),
                    "{side}"
                );
                assert_eq!(sock.tcp_keepalive_retries().unwrap(), 6, "{side}");
                assert_eq!(
                    sock.tcp_user_timeout().unwrap(),
                    Some(Duration::from_secs(13)),
                    "{side}"
                );
            }
        }
        // The test's own client socket has none: what was read is the proxy's doing.
        assert!(!socket2::SockRef::from(ws.get_ref()).keepalive().unwrap());
    }
}
