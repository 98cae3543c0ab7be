//! A rolling restart behind a balancer, as users run one: HAProxy plays the NLB (TCP,
//! PROXY v2, `/ping` health checks) over two proxy processes, keep-alive clients send requests
//! as fast as they can, and WebSockets stay open (reconnecting when closed, as browsers do).
//! Each proxy in turn gets SIGTERM (`SHUTDOWN_DELAY=3s`, `SHUTDOWN_TIMEOUT=8s`), exits, and is
//! started again on its port. No request may fail, no WebSocket may close before the delay
//! ends, and the WebSockets of the stopped proxy must close spread over at least a third of
//! the timeout.
//!
//! Needs `haproxy`, so `cargo test` lists it as ignored, by name; `.ci/run` installs it and
//! runs it on its own, printing the figures.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use common::child::ProxyProcess;
use common::haproxy::Haproxy;
use common::*;

const DELAY: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(8);
const CLIENTS: usize = 16;
const WEBSOCKETS: usize = 20;

/// A free port on 127.0.0.1 for a proxy to bind again after each restart.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn proxy_on(port: u16, app: SocketAddr) -> ProxyProcess {
    ProxyProcess::spawn(&[
        ("LISTEN_ON_TLS", port.to_string()),
        ("DESTINATION_HOSTNAME", app.ip().to_string()),
        ("DESTINATION_PORT", app.port().to_string()),
        ("SHUTDOWN_DELAY", format!("{}s", DELAY.as_secs())),
        ("SHUTDOWN_TIMEOUT", format!("{}s", TIMEOUT.as_secs())),
        // The start-up line (which names the ports) and the drain, without access lines.
        ("RUST_LOG", "warn,elb_ws_proxy::server=info".to_owned()),
    ])
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: Mutex<Vec<String>>,
    /// When each WebSocket was closed by the proxy side.
    ws_closed: Mutex<Vec<Instant>>,
}

/// A keep-alive client, as wrk is: requests back to back, a new connection when told to
/// close, and any request without its whole response is a failure (no retries).
async fn client(elb: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let request = b"GET /load HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let mut got = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut s = match TcpStream::connect(elb).await {
            Ok(s) => s,
            Err(e) => {
                tally.failed.lock().unwrap().push(format!("connect: {e}"));
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = s.write_all(request).await {
                tally.failed.lock().unwrap().push(format!("write: {e}"));
                break;
            }
            match read_keepalive_response(&mut s, &mut got).await {
                Ok(r) if r.status == 200 => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                    if r.close {
                        break;
                    }
                }
                Ok(r) => {
                    tally
                        .failed
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status));
                    break;
                }
                Err(e) => {
                    tally.failed.lock().unwrap().push(e);
                    break;
                }
            }
        }
    }
}

/// A WebSocket that talks every 100 ms and reconnects when the proxy closes it.
async fn websocket_user(elb: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(s) = TcpStream::connect(elb).await else {
            continue;
        };
        let url = format!("ws://{elb}/ws");
        let Ok((mut ws, _)) = tokio_tungstenite::client_async(url, s).await else {
            tally
                .failed
                .lock()
                .unwrap()
                .push("WebSocket handshake failed".into());
            continue;
        };
        let _hello = ws.next().await;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let echoed = async {
                ws.send(Message::text("tick")).await.ok()?;
                ws.next().await?.ok()
            };
            match tokio::time::timeout(Duration::from_secs(5), echoed).await {
                Ok(Some(Message::Text(_))) => {}
                _ => {
                    tally.ws_closed.lock().unwrap().push(Instant::now());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits (bounded) until HAProxy reports `server` as `status`.
async fn until_status(elb: &Haproxy, server: &str, status: &str) {
    eventually(&format!("HAProxy reports {server} {status}"), || {
        let now = elb.server_status(server);
        async move { now.is_some_and(|s| s.starts_with(status)).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy on PATH; .ci/run installs it and runs it on its own with the figures"]
async fn rolling_restart_behind_haproxy_loses_no_request_and_spreads_websocket_closes() {
    let app = start_app().await;
    let ports = [free_port(), free_port()];
    let mut proxies = [proxy_on(ports[0], app.addr), proxy_on(ports[1], app.addr)];
    let backend = format!(
        "  balance roundrobin\n  option httpchk GET /ping\n  http-check expect status 200\n\
         \x20 retries 3\n  option redispatch\n\
         \x20 default-server send-proxy-v2 check inter 200ms fall 2 rise 2\n\
         \x20 server a 127.0.0.1:{}\n  server b 127.0.0.1:{}\n",
        ports[0], ports[1]
    );
    let elb = Haproxy::with_backend("", &backend);
    until_status(&elb, "a", "UP").await;
    until_status(&elb, "b", "UP").await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut load = Vec::new();
    for _ in 0..WEBSOCKETS {
        load.push(tokio::spawn(websocket_user(
            elb.addr,
            stop.clone(),
            tally.clone(),
        )));
    }
    for _ in 0..CLIENTS {
        load.push(tokio::spawn(client(elb.addr, stop.clone(), tally.clone())));
    }
    eventually("the load is flowing", || {
        let ok = tally.ok.load(Ordering::Relaxed);
        async move { (ok > 200).then_some(()) }
    })
    .await;

    let mut signalled = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        signalled.push(Instant::now());
        let mut proxy = std::mem::replace(&mut proxies[i], proxy_on(0, app.addr));
        sigterm(proxy.pid());
        // Bounded by the drain's own limits, plus a margin.
        let limit = DELAY + TIMEOUT + Duration::from_secs(5);
        let status = tokio::task::spawn_blocking(move || proxy.wait_exit(limit))
            .await
            .unwrap();
        assert!(status.success(), "{name} exited with {status}");
        until_status(&elb, name, "DOWN").await;
        proxies[i] = proxy_on(ports[i], app.addr);
        until_status(&elb, name, "UP").await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        within("the load stops", task).await.unwrap();
    }

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.lock().unwrap().clone();
    let closed = tally.ws_closed.lock().unwrap().clone();
    let mut report = format!(
        "rolling restart: {} failed of {} requests; ",
        failed.len(),
        ok + failed.len() as u64
    );
    for (i, t) in signalled.iter().enumerate() {
        let end = signalled.get(i + 1).copied();
        let mine: Vec<Duration> = closed
            .iter()
            .filter(|c| **c >= *t && end.is_none_or(|e| **c < e))
            .map(|c| *c - *t)
            .collect();
        let first = mine.iter().min().copied().unwrap_or_default();
        let last = mine.iter().max().copied().unwrap_or_default();
        report.push_str(&format!(
            "proxy {}: {} WebSockets closed from {:.1} s to {:.1} s after SIGTERM, spread over {:.1} s; ",
            i + 1,
            mine.len(),
            first.as_secs_f64(),
            last.as_secs_f64(),
            (last - first).as_secs_f64()
        ));
        assert!(mine.len() >= 3, "{report}");
        assert!(
            first >= DELAY,
            "a WebSocket closed before SHUTDOWN_DELAY ended: {report}"
        );
        assert!(
            last - first >= TIMEOUT / 3,
            "closes spread over less than a third of SHUTDOWN_TIMEOUT: {report}"
        );
    }
    println!("{report}");
    assert!(failed.is_empty(), "{report}\n{failed:?}");
    assert!(ok > 1000, "{report}");
}
