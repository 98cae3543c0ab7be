//! Clients that write PROXY headers by hand, and readers of what comes back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use super::*;

/// An HTTP/2 client (prior knowledge) on a connection that starts with `header`.
pub async fn h2_client(
    addr: SocketAddr,
    header: &[u8],
) -> hyper::client::conn::http2::SendRequest<http_body_util::combinators::BoxBody<Bytes, Infallible>>
{
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(header).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// A WebSocket over HTTP/2 on `c`: an RFC 8441 extended CONNECT to `/ws`, answered `200`; the
/// stream to talk on.
pub async fn h2_websocket(
    c: &mut hyper::client::conn::http2::SendRequest<
        http_body_util::combinators::BoxBody<Bytes, Infallible>,
    >,
) -> hyper::upgrade::Upgraded {
    let mut r = Request::builder()
        .method(hyper::Method::CONNECT)
        .uri("https://chat.example/ws")
        .header("sec-websocket-version", "13")
        .body(BodyExt::boxed(StreamBody::new(
            futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>(),
        )))
        .unwrap();
    r.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = within("extended CONNECT", c.send_request(r)).await.unwrap();
    assert_eq!(resp.status(), 200);
    within("upgrade", hyper::upgrade::on(&mut resp))
        .await
        .unwrap()
}

pub fn v1(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 10.0.0.1 40000 {port}\r\n").into_bytes()
}

/// A v2 `PROXY` header for an IPv4 client, with an AWS-style TLV.
pub fn v2(client: [u8; 4], client_port: u16, dest_port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    h.push(0x11);
    let tlv = [0xEA, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e'];
    h.extend_from_slice(&((12 + tlv.len()) as u16).to_be_bytes());
    h.extend_from_slice(&client);
    h.extend_from_slice(&[10, 0, 0, 1]);
    h.extend_from_slice(&client_port.to_be_bytes());
    h.extend_from_slice(&dest_port.to_be_bytes());
    h.extend_from_slice(&tlv);
    h
}

pub const V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// Writes `bytes` in one go and reads until the peer closes (or `WAIT` passes).
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_all(&mut s).await
}

pub async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = within("reading until close", s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A request with `Connection: close`, so the proxy closes after answering.
pub fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n{extra}\r\n")
        .into_bytes()
}

/// What one response on a keep-alive connection was: its status, whether it said
/// `Connection: close`, and the whole text.
pub struct KeepAliveResponse {
    pub status: u16,
    pub close: bool,
    pub text: String,
}

/// Reads one response with a `Content-Length` body off a keep-alive connection into `got`
/// (cleared first), waiting at most 10 s; an error says how it fell short.
pub async fn read_keepalive_response(
    s: &mut TcpStream,
    got: &mut Vec<u8>,
) -> Result<KeepAliveResponse, String> {
    got.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no content-length: {head}"))?;
            if got.len() >= end + 4 + length {
                return Ok(KeepAliveResponse {
                    status: head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
                    close: head.contains("connection: close"),
                    text: String::from_utf8_lossy(got).into_owned(),
                });
            }
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut chunk))
            .await
            .map_err(|_| "no response within 10 s".to_owned())?
            .map_err(|e| format!("read error: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {} bytes of a response", got.len()));
        }
        got.extend_from_slice(&chunk[..n]);
    }
}

/// Header `name` (lower-case) as the echo app reported it.
pub fn echoed<'a>(response: &'a str, name: &str) -> Vec<&'a str> {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .collect()
}

pub fn status(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A hyper client connection over a socket that has already sent `header`.
pub async fn client_with_header(
    addr: SocketAddr,
    header: &[u8],
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(header).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn request(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "example.com")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The app's answer body as text.
pub async fn text(resp: Response<Incoming>) -> String {
    let body = within("body", resp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Parses the echo body into a header map (last value wins).
pub fn echo_headers(body: &str) -> HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Opens a WebSocket through the proxy, PROXY header first.
pub async fn websocket(addr: SocketAddr, header: &[u8], path: &str) -> WebSocketStream<TcpStream> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(header).await.unwrap();
    let url = format!("ws://example.com{path}");
    let (ws, resp) = within(
        "websocket handshake",
        tokio_tungstenite::client_async(url, s),
    )
    .await
    .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}
