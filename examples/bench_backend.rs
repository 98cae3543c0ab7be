//! The benchmark's app: a fixed small response at `/`, 1 MiB at `/1m`, any size streamed at
//! `/download?BYTES`, an upload sink at `/upload`, a WebSocket echo at `/ws`, and the request's
//! headers at `/headers` (scripts/container-smoke.sh runs it as the app container).
//! Usage: `bench_backend 127.0.0.1:9000`

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

type Body = BoxBody<Bytes, Infallible>;

const SMALL: &[u8] = b"hello, world\n";
const CHUNK: usize = 64 * 1024;

fn full(b: Bytes) -> Body {
    Full::new(b).boxed()
}

async fn serve(
    mut req: Request<Incoming>,
    one_mib: Bytes,
    chunk: Bytes,
) -> Result<Response<Body>, Infallible> {
    match req.uri().path() {
        "/" => Ok(Response::new(full(Bytes::from_static(SMALL)))),
        "/1m" => Ok(Response::new(full(one_mib))),
        "/headers" => {
            let text: String = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("<binary>")))
                .collect();
            Ok(Response::new(full(Bytes::from(text))))
        }
        "/download" => {
            let total: u64 = req
                .uri()
                .query()
                .and_then(|q| q.parse().ok())
                .unwrap_or(1 << 30);
            let frames = futures_util::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    (left > 0).then(|| {
                        let n = left.min(CHUNK as u64) as usize;
                        (
                            Ok::<_, Infallible>(Frame::data(chunk.slice(..n))),
                            left - n as u64,
                        )
                    })
                }
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
            resp.headers_mut().insert("content-length", total.into());
            Ok(resp)
        }
        "/upload" => {
            let mut total = 0u64;
            let mut body = req.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                total += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Ok(Response::new(full(Bytes::from(format!("{total}\n")))))
        }
        "/ws" => {
            let key = req
                .headers()
                .get("sec-websocket-key")
                .map(|k| derive_accept_key(k.as_bytes()));
            let Some(key) = key else {
                let mut r = Response::new(full(Bytes::from_static(b"websocket only\n")));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return Ok(r);
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                let (mut tx, mut rx) = ws.split();
                while let Some(Ok(msg)) = rx.next().await {
                    if (msg.is_text() || msg.is_binary()) && tx.send(msg).await.is_err() {
                        break;
                    }
                }
            });
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            r.headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            r.headers_mut()
                .insert("sec-websocket-accept", key.parse().unwrap());
            Ok(r)
        }
        _ => {
            let mut r = Response::new(full(Bytes::from_static(b"not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            Ok(r)
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let one_mib = Bytes::from(vec![b'x'; 1 << 20]);
    let chunk = Bytes::from(vec![b'y'; CHUNK]);
    eprintln!("bench backend on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (one_mib, chunk) = (one_mib.clone(), chunk.clone());
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req| serve(req, one_mib.clone(), chunk.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}
