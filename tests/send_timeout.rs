//! `SEND_TIMEOUT` on every HTTP/1.1 path and tunnel: a client that stops reading is cut off
//! once nothing could be sent to it for the limit, with a warning that names it; the app's
//! connection is closed and other clients are served. A client that reads with pauses shorter
//! than the limit gets everything. (HTTP/2 clients: `tests/h2_floods.rs`.)

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::*;

const LIMIT: Duration = Duration::from_secs(1);
/// A download far larger than every socket buffer between the proxy and the client.
const BIG: usize = 64 << 20;

/// The app, and the proxy in front of it with a SEND_TIMEOUT of [`LIMIT`], its logs captured.
async fn start() -> (App, Running, tracing::subscriber::DefaultGuard, Logs) {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.send_timeout = Some(LIMIT);
    let proxy = start_proxy(config).await;
    let (guard, logs) = capture_logs();
    (app, proxy, guard, logs)
}

/// Connects with a small receive buffer, so the proxy's writes block soon after the client
/// stops reading.
async fn connect_small(addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A masked WebSocket binary frame of 64 KiB (mask key zero, so the payload is as written).
fn ws_frame() -> Vec<u8> {
    let mut f = vec![0x82, 0xff];
    f.extend_from_slice(&(65536u64).to_be_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&[b'w'; 65536]);
    f
}

/// Waits for the warning about `client`, with `protocol`, and for the app's connections to
/// close; then shows another client is served.
async fn cut_off(proxy: &Running, app: &App, logs: &Logs, client: &str, protocol: &str) {
    let line = eventually("the SEND_TIMEOUT warning", || {
        let text = logs.text();
        let line = text
            .lines()
            .find(|l| l.contains("WARN") && l.contains("SEND_TIMEOUT") && l.contains(client))
            .map(str::to_owned);
        async move { line }
    })
    .await;
    assert!(line.contains(&format!("protocol=\"{protocol}\"")), "{line}");
    eventually("the app's connections closed", || {
        let open = app.open.load(Ordering::SeqCst);
        async move { (open == 0).then_some(()) }
    })
    .await;
    let other = exchange(
        proxy.tls,
        &[v1("198.51.100.99", 443), get("/fine", "")].concat(),
    )
    .await;
    assert_eq!(status(&other), 200, "{other}");
}

/// Reads what the proxy had sent before closing, to the end: less than the whole download.
async fn closed_short(mut s: TcpStream) {
    let mut total = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match within("the end of the connection", s.read(&mut chunk)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(total < BIG, "read {total} bytes");
}

#[tokio::test]
async fn a_client_that_stops_reading_a_response_is_cut_off_on_both_http1_paths() {
    // The lean path takes a plain GET; a request with a body goes through hyper.
    let cases = [
        (
            "198.51.100.31",
            format!("GET /stream?{BIG} HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        (
            "198.51.100.32",
            format!("POST /stream?{BIG} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"),
        ),
    ];
    for (client, request) in cases {
        let (app, proxy, _guard, logs) = start().await;
        let mut s = connect_small(proxy.tls).await;
        s.write_all(&[v1(client, 443), request.into_bytes()].concat())
            .await
            .unwrap();
        cut_off(&proxy, &app, &logs, client, "http1").await;
        closed_short(s).await;
    }
}

#[tokio::test]
async fn a_websocket_client_that_stops_reading_is_cut_off() {
    let (app, proxy, _guard, logs) = start().await;
    let client = "198.51.100.33";
    let s = connect_small(proxy.tls).await;
    let (mut read, mut write) = s.into_split();
    let handshake = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    write
        .write_all(&[v1(client, 443), handshake.as_bytes().to_vec()].concat())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    within("101", read.read_exact(&mut head)).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    // Messages the app echoes, sent until the tunnel is cut; none of the echoes is read.
    let writer = tokio::spawn(async move {
        let frame = ws_frame();
        while write.write_all(&frame).await.is_ok() {}
    });
    cut_off(&proxy, &app, &logs, client, "tunnel").await;
    within("the writer sees the end", writer).await.unwrap();
    assert!(logs.text().contains("tunnel ended"), "{}", logs.text());
    assert_eq!(proxy.metric("elb_ws_proxy_websocket_tunnels_open"), 0.0);
}

#[tokio::test]
async fn a_websocket_over_h2_client_that_stops_reading_is_cut_off() {
    let (app, proxy, _guard, logs) = start().await;
    let client = "198.51.100.34";
    let mut c = h2_client(proxy.tls, &v1(client, 443)).await;
    let upgraded = h2_websocket(&mut c).await;
    let (_read, mut write) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
    let writer = tokio::spawn(async move {
        let frame = ws_frame();
        while write.write_all(&frame).await.is_ok() {}
    });
    cut_off(&proxy, &app, &logs, client, "tunnel").await;
    writer.abort();
    assert_eq!(proxy.metric("elb_ws_proxy_websocket_tunnels_open"), 0.0);
}

#[tokio::test]
async fn a_client_that_reads_slowly_is_not_cut_off() {
    let (_app, proxy, _guard, logs) = start().await;
    let size = 16usize << 20;
    let mut s = connect_small(proxy.tls).await;
    let request = format!("GET /stream?{size} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    s.write_all(&[v1("198.51.100.35", 443), request.into_bytes()].concat())
        .await
        .unwrap();
    let started = Instant::now();
    let (mut total, mut pause_at) = (0usize, 0usize);
    let mut chunk = vec![0u8; 1 << 16];
    // A pause shorter than SEND_TIMEOUT after every 4 MiB: the proxy's writes wait each time.
    loop {
        let n = within("the download", s.read(&mut chunk)).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
        if total >= pause_at {
            tokio::time::sleep(Duration::from_millis(700)).await;
            pause_at += 4 << 20;
        }
    }
    assert!(total > size, "read {total} bytes");
    assert!(started.elapsed() > 2 * LIMIT);
    let text = logs.text();
    assert!(!text.contains("SEND_TIMEOUT"), "{text}");
}
