//! HTTP/2 under attack, written frame by frame: rapid reset (CVE-2023-44487), a CONTINUATION
//! flood, PING and SETTINGS floods, a header list over the limit, too many concurrent streams,
//! a client that never reads. Each gets the answer the
//! protocol defines (GOAWAY with its code, or a refused stream), a warning says why, and a
//! well-behaved client on another connection is served meanwhile.

mod common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// A GET for `/` on `a.example`, HPACK-encoded without indexing or Huffman.
fn get_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x87, 0x84]; // :method GET, :scheme https, :path /
    b.push(0x01); // :authority, literal value
    b.push(9);
    b.extend_from_slice(b"a.example");
    b
}

/// Opens a raw HTTP/2 connection after a PROXY header.
async fn raw(proxy: std::net::SocketAddr, client: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut hello = v1(client, 443);
    hello.extend_from_slice(PREFACE);
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    s
}

/// Reads frames until GOAWAY or the end of the connection; the GOAWAY's error code.
async fn goaway_code(s: &mut TcpStream) -> Option<u32> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        // Frames already buffered first.
        let mut at = 0;
        while buf.len() >= at + 9 {
            let len = (usize::from(buf[at]) << 16)
                | (usize::from(buf[at + 1]) << 8)
                | usize::from(buf[at + 2]);
            if buf.len() < at + 9 + len {
                break;
            }
            if buf[at + 3] == GOAWAY {
                let p = &buf[at + 9..at + 9 + len];
                return Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
            at += 9 + len;
        }
        buf.drain(..at);
        match within("frames", s.read(&mut chunk)).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A client on another connection is served while the attack goes on.
async fn others_are_served(proxy: &Running) {
    let mut c = h2_client(proxy.tls, &v1("198.51.100.200", 443)).await;
    let req = http::Request::get("https://a.example/fine")
        .body(http_body_util::BodyExt::boxed(http_body_util::Empty::new()))
        .unwrap();
    let resp = within("a good client", c.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
}

const ENHANCE_YOUR_CALM: u32 = 0xb;
const REFUSED_STREAM: u32 = 0x7;

#[tokio::test]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let (_guard, logs) = capture_logs();
    let mut s = raw(proxy.tls, "198.51.100.201").await;
    let mut burst = Vec::new();
    for i in 0..1000u32 {
        let id = 1 + 2 * i;
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &get_block()));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
    }
    // The server may close before it has read everything.
    let _ = s.write_all(&burst).await;
    assert_eq!(goaway_code(&mut s).await, Some(ENHANCE_YOUR_CALM));
    others_are_served(&proxy).await;
    let text = logs.text();
    assert!(
        text.contains("HTTP/2 connection closed with GOAWAY") && text.contains("ENHANCE_YOUR_CALM"),
        "{text}"
    );
    // Far fewer than the thousand streams reached the app.
    assert!(app.connections.load(std::sync::atomic::Ordering::SeqCst) < 100);
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.max_header_bytes = 16 * 1024;
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();
    let mut s = raw(proxy.tls, "198.51.100.202").await;
    let mut flood = frame(HEADERS, 0, 1, &get_block());
    // Endless CONTINUATION frames, each a literal header of 1 KiB, never END_HEADERS.
    let mut literal = vec![0x00, 0x03];
    literal.extend_from_slice(b"x-a");
    literal.extend_from_slice(&[0x7f, 0x81, 0x07]); // length 1024 (7-bit prefix, 127 + 897)
    literal.extend_from_slice(&[b'v'; 1024]);
    for _ in 0..2000 {
        flood.extend(frame(CONTINUATION, 0, 1, &literal));
    }
    let writer = tokio::spawn(async move {
        let _ = s.write_all(&flood).await;
        s
    });
    let mut s = within("flood written or cut", writer).await.unwrap();
    assert_eq!(goaway_code(&mut s).await, Some(ENHANCE_YOUR_CALM));
    others_are_served(&proxy).await;
    // Only the good client's request reached the app.
    assert_eq!(app.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    let text = logs.text();
    assert!(
        text.contains("HTTP/2 connection closed with GOAWAY") && text.contains("ENHANCE_YOUR_CALM"),
        "{text}"
    );
}

/// A GET for `path` on `a.example`.
fn get_path(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87, 0x04, path.len() as u8];
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&[0x01, 9]);
    b.extend_from_slice(b"a.example");
    b
}

/// The next whole frame (header and payload), reading more into `buf` as needed.
async fn read_frame<R>(r: &mut R, buf: &mut Vec<u8>) -> Vec<u8>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut chunk = [0u8; 16384];
    loop {
        if buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() >= 9 + len {
                return buf.drain(..9 + len).collect();
            }
        }
        let n = within("frames", r.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "connection closed before the frame came");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads frames until one of `kind` on `stream`; its first four payload bytes.
async fn next_frame(s: &mut TcpStream, buf: &mut Vec<u8>, kind: u8, stream: u32) -> u32 {
    loop {
        let f = read_frame(s, buf).await;
        let id = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
        if f[3] == kind && id == stream {
            return u32::from_be_bytes([f[9], f[10], f[11], f[12]]);
        }
    }
}

#[tokio::test]
async fn streams_beyond_h2_max_streams_are_refused_and_the_rest_served() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.h2_max_streams = 2;
    let proxy = start_proxy(config).await;
    let mut s = raw(proxy.tls, "198.51.100.203").await;
    let mut buf = Vec::new();
    // The server's SETTINGS first, so the limit has been announced.
    next_frame(&mut s, &mut buf, SETTINGS, 0).await;
    let mut three = Vec::new();
    for id in [1u32, 3, 5] {
        three.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &get_path("/slow"),
        ));
    }
    s.write_all(&three).await.unwrap();
    assert_eq!(
        next_frame(&mut s, &mut buf, RST_STREAM, 5).await,
        REFUSED_STREAM
    );
    others_are_served(&proxy).await;
    // The two within the limit are answered (HEADERS with :status 200 is index 8 = 0x88).
    for id in [1u32, 3] {
        next_frame(&mut s, &mut buf, HEADERS, id).await;
    }
}

const PING: u8 = 0x6;

/// Reads frames until GOAWAY, then to the end of the connection, which must follow: the
/// GOAWAY's last stream id, error code and debug data.
async fn goaway_then_end<R>(r: &mut R, mut buf: Vec<u8>) -> (u32, u32, Vec<u8>)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let frame = loop {
        let f = read_frame(r, &mut buf).await;
        if f[3] == GOAWAY {
            break f;
        }
    };
    let mut chunk = [0u8; 16384];
    while within("the end after GOAWAY", r.read(&mut chunk))
        .await
        .unwrap()
        > 0
    {}
    let p = &frame[9..];
    let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
    let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    (last, code, p[8..].to_vec())
}

/// Control frames the server must answer (SETTINGS needs an ACK, PING a PONG), sent far
/// faster than any client needs, with or without reading the answers: GOAWAY
/// `ENHANCE_YOUR_CALM` naming the last stream the client opened, a warning, then the end of
/// the connection; memory stays bounded and other clients are served.
async fn control_flood(kind: u8, reads_answers: bool) {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let (_guard, logs) = capture_logs();
    let before = rss_kib();
    let mut s = raw(proxy.tls, "198.51.100.204").await;
    // One real request first, answered, so the GOAWAY has a last stream to name.
    s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &get_block()))
        .await
        .unwrap();
    let mut buf = Vec::new();
    next_frame(&mut s, &mut buf, HEADERS, 1).await;
    let one = match kind {
        PING => frame(PING, 0, 0, &[7; 8]),
        _ => frame(SETTINGS, 0, 0, &[0x00, 0x03, 0x00, 0x00, 0x00, 0x64]),
    };
    let burst: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 20_000)
        .collect();
    let (mut rd, mut wr) = s.into_split();
    let (last, code, debug) = if reads_answers {
        let reader = tokio::spawn(async move { goaway_then_end(&mut rd, buf).await });
        within("the flood is written", wr.write_all(&burst))
            .await
            .unwrap();
        within("the GOAWAY", reader).await.unwrap()
    } else {
        // Not a byte read until the whole flood is written.
        within("the flood is written", wr.write_all(&burst))
            .await
            .unwrap();
        goaway_then_end(&mut rd, buf).await
    };
    assert_eq!(code, ENHANCE_YOUR_CALM);
    assert_eq!(
        last, 1,
        "the GOAWAY names the last stream the client opened"
    );
    let name = if kind == PING { "PING" } else { "SETTINGS" };
    assert_eq!(debug, format!("{name} flood").as_bytes());
    let warned = format!("{name} flood");
    eventually("the flood's warning", || {
        let text = logs.text();
        let found = text.contains("HTTP/2 connection closed with GOAWAY") && text.contains(&warned);
        async move { found.then_some(()) }
    })
    .await;
    others_are_served(&proxy).await;
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "memory grew by {grown} KiB");
}

#[tokio::test]
async fn a_ping_flood_that_never_reads_gets_goaway() {
    control_flood(PING, false).await;
}

#[tokio::test]
async fn a_ping_flood_that_reads_its_answers_gets_goaway() {
    control_flood(PING, true).await;
}

#[tokio::test]
async fn a_settings_flood_gets_goaway() {
    control_flood(SETTINGS, false).await;
}

/// A client that pings the way gRPC keepalives and BDP probes do, waiting for each answer,
/// hundreds of times, is served as ever.
#[tokio::test]
async fn pings_that_wait_for_their_answers_are_not_a_flood() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let (_guard, logs) = capture_logs();
    let mut s = raw(proxy.tls, "198.51.100.205").await;
    let mut buf = Vec::new();
    for i in 0..500u32 {
        let payload = [i.to_be_bytes(), i.to_be_bytes()].concat();
        s.write_all(&frame(PING, 0, 0, &payload)).await.unwrap();
        loop {
            let got = next_frame(&mut s, &mut buf, PING, 0).await;
            if got == i {
                break;
            }
        }
    }
    s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &get_block()))
        .await
        .unwrap();
    next_frame(&mut s, &mut buf, HEADERS, 1).await;
    assert!(!logs.text().contains("flood"), "{}", logs.text());
}

#[tokio::test]
async fn an_h2_client_that_never_reads_holds_no_more_than_its_windows() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    let before = rss_kib();
    // Ten connections, each with ten 64 MiB downloads it never reads.
    let mut held = Vec::new();
    for c in 0..10u32 {
        let mut s = raw(proxy.tls, &format!("198.51.100.{}", 210 + c)).await;
        let mut streams = Vec::new();
        for i in 0..10u32 {
            streams.extend(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1 + 2 * i,
                &get_path("/stream?67108864"),
            ));
        }
        s.write_all(&streams).await.unwrap();
        held.push(s);
    }
    eventually("every download reached the app", || {
        let n = app.connections.load(std::sync::atomic::Ordering::SeqCst);
        async move { (n >= 100).then_some(()) }
    })
    .await;
    others_are_served(&proxy).await;
    // 100 × 64 MiB would be 6.4 GiB; the windows allow 1 MiB per connection plus send buffers.
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 200 * 1024, "memory grew by {grown} KiB");
}

#[tokio::test]
async fn an_h2_client_that_stops_reading_gets_goaway_after_send_timeout() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.send_timeout = Some(std::time::Duration::from_secs(1));
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();
    let mut s = raw(proxy.tls, "198.51.100.221").await;
    // A 64 MiB download, and no WINDOW_UPDATE: the client takes the first 64 KiB its
    // windows allow and nothing more.
    let get = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &get_path("/stream?67108864"),
    );
    s.write_all(&get).await.unwrap();
    eventually("the SEND_TIMEOUT warning", || {
        let text = logs.text();
        async move { text.contains("SEND_TIMEOUT").then_some(()) }
    })
    .await;
    let text = logs.text();
    assert!(
        text.contains("HTTP/2 connection closed with GOAWAY")
            && text.contains("ENHANCE_YOUR_CALM")
            && text.contains("198.51.100.221"),
        "{text}"
    );
    // What was sent before it, the GOAWAY naming stream 1 and why, then the end.
    let (last, code, debug) = goaway_then_end(&mut s, Vec::new()).await;
    assert_eq!((last, code), (1, ENHANCE_YOUR_CALM));
    assert_eq!(debug, b"SEND_TIMEOUT");
    eventually("the app's connection closed", || {
        let open = app.open.load(std::sync::atomic::Ordering::SeqCst);
        async move { (open == 0).then_some(()) }
    })
    .await;
    others_are_served(&proxy).await;
}

#[tokio::test]
async fn an_h2_client_that_reads_slowly_is_not_cut_off() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.send_timeout = Some(std::time::Duration::from_secs(1));
    let proxy = start_proxy(config).await;
    let (_guard, logs) = capture_logs();
    // Windows of 64 KiB, so the proxy waits on the client's reading between pauses.
    let mut tcp = TcpStream::connect(proxy.tls).await.unwrap();
    tcp.write_all(&v1("198.51.100.222", 443)).await.unwrap();
    let (mut c, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65535)
            .initial_connection_window_size(65535)
            .adaptive_window(false)
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://a.example/stream?1048576")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = within("response headers", c.send_request(req))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let (mut got, mut pause_at) = (0usize, 0usize);
    let started = std::time::Instant::now();
    // A pause shorter than SEND_TIMEOUT after every 256 KiB; the whole download takes several
    // times it.
    while let Some(frame) = within("body", http_body_util::BodyExt::frame(&mut body)).await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len());
        if got >= pause_at {
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            pause_at += 256 * 1024;
        }
    }
    assert_eq!(got, 1 << 20);
    assert!(started.elapsed() > std::time::Duration::from_secs(2));
    assert!(!logs.text().contains("SEND_TIMEOUT"), "{}", logs.text());
}
