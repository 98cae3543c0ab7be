//! File descriptors as a container runtime hands them out: the proxy binary started with a soft
//! `RLIMIT_NOFILE` of 1024 (set in the child before exec) must still hold more WebSockets than
//! 1024 descriptors allow, and with a hard limit too low for `MAX_CONNECTIONS` it serves fewer
//! at once and lets the rest wait instead of failing.

#![cfg(unix)]

mod common;

use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use common::child::ProxyProcess;
use common::*;

/// Starts the binary in front of `app` with `RLIMIT_NOFILE` set to `soft` (and `hard`, if
/// given) before exec.
fn proxy_with_limit(app: &App, max: usize, soft: u64, hard: Option<u64>) -> ProxyProcess {
    ProxyProcess::spawn_with(
        &[
            ("DESTINATION_HOSTNAME", "127.0.0.1".into()),
            ("DESTINATION_PORT", app.addr.port().to_string()),
            ("MAX_CONNECTIONS", max.to_string()),
            ("RUST_LOG", "debug".into()),
        ],
        move |cmd| {
            // SAFETY: getrlimit and setrlimit are async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    lim.rlim_cur = soft as libc::rlim_t;
                    if let Some(h) = hard {
                        lim.rlim_max = h as libc::rlim_t;
                    }
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    )
}

/// This test process holds both ends it makes (client and app sockets): it needs its own
/// limit raised, and a hard limit that allows it.
fn raise_own_limit(needed: u64) {
    let limit = elb_ws_proxy::descriptors::raise().expect("RLIMIT_NOFILE readable");
    assert!(
        limit.soft >= needed,
        "this test needs a hard RLIMIT_NOFILE of at least {needed} (ulimit -Hn), found {}",
        limit.soft
    );
}

/// A WebSocket through the proxy that has had its hello and one echo.
async fn open_ws(
    addr: std::net::SocketAddr,
    i: usize,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let client = format!("10.1.{}.{}", i / 250, i % 250 + 1);
    let mut ws = websocket(addr, &v1(&client, 443), "/ws").await;
    let hello = within("hello", ws.next()).await.unwrap().unwrap();
    assert_eq!(
        hello.into_text().unwrap().as_str(),
        format!("x-forwarded-for: {client}")
    );
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_limit_of_1024_still_holds_700_websockets() {
    raise_own_limit(4096);
    let app = start_app().await;
    let mut proxy = proxy_with_limit(&app, 1000, 1024, None);
    // 700 tunnels are 1400 of the proxy's descriptors: only there because it raised its limit.
    let mut open = Vec::new();
    for i in 0..700 {
        open.push(open_ws(proxy.tls, i).await);
    }
    for (i, ws) in open.iter_mut().enumerate().step_by(50) {
        ws.send(Message::text(format!("still here {i}")))
            .await
            .unwrap();
        let back = within("echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(
            back.into_text().unwrap().as_str(),
            format!("still here {i}")
        );
    }
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid())).unwrap_or_default();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files"));
    if let Some(line) = open_files {
        assert!(!line.contains(" 1024 "), "soft limit not raised: {line}");
    }
    drop(open);
    assert_eq!(proxy.terminate().code(), Some(0));
    let out = proxy.output();
    assert!(out.contains("raised the soft RLIMIT_NOFILE"), "{out}");
    assert!(!out.contains("WARN"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_limit_too_low_lowers_the_cap_and_excess_clients_wait() {
    raise_own_limit(1024);
    let app = start_app().await;
    // 300 descriptors: (300 - 128 reserved) / 2 = 86 connections at once.
    let mut proxy = proxy_with_limit(&app, 10_000, 300, Some(300));
    let warning = proxy.wait_for_line(|l| l.contains("cannot hold MAX_CONNECTIONS"));
    assert!(
        warning.contains("max_connections=10000")
            && warning.contains("descriptors=300")
            && warning.contains("serving=86"),
        "{warning}"
    );
    let done = Arc::new(AtomicUsize::new(0));
    let (tx, mut served) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..100 {
        let (tls, done, tx) = (proxy.tls, done.clone(), tx.clone());
        tokio::spawn(async move {
            let ws = open_ws(tls, i).await;
            done.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(ws);
        });
    }
    let mut first = Vec::new();
    for _ in 0..86 {
        first.push(within("the first 86", served.recv()).await.unwrap());
    }
    // The other 14 wait in the accept queue: not refused, not failed, not yet served.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), served.recv())
            .await
            .is_err(),
        "a connection beyond the cap was served"
    );
    assert_eq!(done.load(Ordering::SeqCst), 86);
    // As tunnels close, the waiting clients are served.
    for ws in first.drain(..14) {
        drop(ws);
    }
    for _ in 0..14 {
        within("the waiting 14", served.recv()).await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 100);
    drop((first, served));
    assert_eq!(proxy.terminate().code(), Some(0));
    let out = proxy.output();
    assert!(!out.contains("out of file descriptors"), "{out}");
}
