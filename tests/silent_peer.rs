//! A peer that vanishes without a FIN, as behind an NLB that forgot an idle flow: nftables drops
//! every packet to and from one loopback address in the middle of a WebSocket, and TCP
//! keepalive must close the tunnel on both sides within its bound, releasing the app's
//! connection (or the client's) and the tunnel's metrics and slot.
//!
//! Needs root and `nft` (the rules live in a table of their own, removed afterwards), so
//! `cargo test` lists it as ignored; `.ci/run` runs it.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpSocket};

use common::*;

/// An nftables table that drops all traffic to and from `addr`; removed when dropped.
struct Blackhole(String);

impl Blackhole {
    fn new(addr: &str) -> Blackhole {
        let table = format!(
            "elb_ws_proxy_test_{}_{}",
            std::process::id(),
            addr.replace('.', "_")
        );
        let script = format!(
            "table inet {table} {{\n\
               chain input {{ type filter hook input priority -10; policy accept; ip saddr {addr} drop; ip daddr {addr} drop; }}\n\
               chain output {{ type filter hook output priority -10; policy accept; ip saddr {addr} drop; ip daddr {addr} drop; }}\n\
             }}\n"
        );
        let out = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(script.as_bytes())?;
                child.wait_with_output()
            })
            .expect("nft must be installed for this test (apt-get install nftables)");
        assert!(out.status.success(), "nft failed (this test needs root)");
        Blackhole(table)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .status();
    }
}

const KEEPALIVE: Duration = Duration::from_secs(2);

/// Waits up to `limit` for `done`, polling.
async fn within_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

fn tunnels_open(proxy: &Running) -> bool {
    proxy
        .proxy_metrics
        .render()
        .contains("elb_ws_proxy_websocket_tunnels_open 1\n")
}

#[tokio::test]
#[ignore = "needs root and nft; .ci/run runs it with --ignored"]
async fn a_client_that_vanishes_without_a_fin_is_dropped_on_both_sides() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.tcp_keepalive = Some(KEEPALIVE);
    let proxy = start_proxy(config).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.77:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(proxy.tls).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, &v1("192.0.2.90", 443))
        .await
        .unwrap();
    let (mut ws, _) = within(
        "handshake",
        tokio_tungstenite::client_async("ws://example.com/ws", s),
    )
    .await
    .unwrap();
    within("hello", ws.next()).await.unwrap().unwrap();
    assert!(tunnels_open(&proxy));
    assert_eq!(app.open.load(Ordering::SeqCst), 1);

    let _gone = Blackhole::new("127.0.0.77");
    let bound = elb_ws_proxy::sockets::dead_after(KEEPALIVE) + Duration::from_secs(4);
    let took = within_for(bound, "tunnel closed", || !tunnels_open(&proxy)).await;
    assert!(
        took >= KEEPALIVE,
        "closed after {took:?}: before any probe was due"
    );
    // The app's side of the tunnel is closed too, so the app lets its connection go.
    within_for(Duration::from_secs(5), "app connection released", || {
        app.open.load(Ordering::SeqCst) == 0
    })
    .await;
    let m = proxy.proxy_metrics.render();
    assert!(m.contains("elb_ws_proxy_connections_open 0\n"), "{m}");
}

#[tokio::test]
#[ignore = "needs root and nft; .ci/run runs it with --ignored"]
async fn an_app_that_vanishes_without_a_fin_is_dropped_on_both_sides() {
    let app = start_app_on(TcpListener::bind("127.0.0.78:0").await.unwrap()).await;
    let mut config = config_for(app.addr);
    config.tcp_keepalive = Some(KEEPALIVE);
    let proxy = start_proxy(config).await;
    let mut ws = websocket(proxy.tls, &v1("192.0.2.91", 443), "/ws").await;
    within("hello", ws.next()).await.unwrap().unwrap();
    assert!(tunnels_open(&proxy));

    let _gone = Blackhole::new("127.0.0.78");
    let bound = elb_ws_proxy::sockets::dead_after(KEEPALIVE) + Duration::from_secs(4);
    let took = within_for(bound, "tunnel closed", || !tunnels_open(&proxy)).await;
    assert!(
        took >= KEEPALIVE,
        "closed after {took:?}: before any probe was due"
    );
    // The client is told: its stream ends.
    let end = within("client side closed", ws.next()).await;
    assert!(matches!(end, None | Some(Err(_))), "{end:?}");
}
