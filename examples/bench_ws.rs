//! WebSocket load for the benchmark.
//!   bench_ws hold ADDR N        open N connections, report when all are open, wait for a line on
//!                               stdin, then check every one still echoes
//!   bench_ws echo ADDR CONNS SECONDS SIZE
//!                               each connection sends SIZE-byte messages and waits for the echo,
//!                               for SECONDS; prints messages/s and MB/s
//!
//! With `BENCH_WS_TLS=FILE` (a PEM certificate to trust, issued for `bench.test`) every
//! connection is TLS after the plain TCP connect, as a client of a proxy that ends TLS.

use std::time::{Duration, Instant};

use std::sync::{Arc, OnceLock};

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// The TLS client every connection uses, when `BENCH_WS_TLS` names a certificate to trust.
fn tls() -> Option<&'static TlsConnector> {
    static TLS: OnceLock<Option<TlsConnector>> = OnceLock::new();
    TLS.get_or_init(|| {
        let file = std::env::var("BENCH_WS_TLS").ok()?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&file).expect("BENCH_WS_TLS") {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("a CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(TlsConnector::from(Arc::new(config)))
    })
    .as_ref()
}

async fn open(addr: &str) -> Result<Ws, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let stream: Box<dyn Io> = match tls() {
        None => Box::new(stream),
        Some(tls) => {
            let name = ServerName::try_from("bench.test").expect("a DNS name");
            Box::new(tls.connect(name, stream).await.map_err(|e| e.to_string())?)
        }
    };
    let (ws, _) = tokio_tungstenite::client_async("ws://bench/ws", stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn echo_once(ws: &mut Ws, msg: Message) -> Result<(), String> {
    ws.send(msg).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(_))) => Ok(()),
        other => Err(format!("no echo: {other:?}")),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("hold") => {
            let (addr, n): (String, usize) = (args[1].clone(), args[2].parse().unwrap());
            let mut sockets = Vec::with_capacity(n);
            // Open in waves so the accept queues never overflow.
            for wave in (0..n).collect::<Vec<_>>().chunks(250) {
                let opened = futures_util::future::join_all(wave.iter().map(|_| open(&addr))).await;
                for ws in opened {
                    sockets.push(ws.expect("open"));
                }
            }
            println!("open {}", sockets.len());
            let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
                .await;
            let mut ok = 0;
            for ws in sockets.iter_mut() {
                if echo_once(ws, Message::text("still there?")).await.is_ok() {
                    ok += 1;
                }
            }
            println!("verified {ok}");
            std::process::exit(if ok == n { 0 } else { 1 });
        }
        Some("echo") => {
            let addr = args[1].clone();
            let conns: usize = args[2].parse().unwrap();
            let secs: u64 = args[3].parse().unwrap();
            let size: usize = args[4].parse().unwrap();
            let payload = bytes::Bytes::from(vec![b'm'; size]);
            let deadline = Instant::now() + Duration::from_secs(secs);
            let started = Instant::now();
            let counts = futures_util::future::join_all((0..conns).map(|_| {
                let (addr, payload) = (addr.clone(), payload.clone());
                async move {
                    let mut ws = open(&addr).await.expect("open");
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        echo_once(&mut ws, Message::binary(payload.clone()))
                            .await
                            .expect("echo");
                        n += 1;
                    }
                    n
                }
            }))
            .await;
            let total: u64 = counts.iter().sum();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "messages_per_s {:.0} mb_per_s {:.1}",
                total as f64 / secs,
                (total * size as u64) as f64 / secs / 1e6
            );
        }
        _ => {
            eprintln!("usage: bench_ws hold ADDR N | bench_ws echo ADDR CONNS SECONDS SIZE");
            std::process::exit(2);
        }
    }
}
