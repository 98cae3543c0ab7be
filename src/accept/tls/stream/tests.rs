//! The stream against tokio-rustls's client over an in-memory pipe: what goes in comes out,
//! whatever the sizes, through a key update, to a clean close; an idle stream holds no buffer.

use std::future::Future;
use std::io::IoSlice;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::client::TlsStream as ClientStream;
use tokio_rustls::TlsConnector;

use super::TlsStream;

type Server = TlsStream<DuplexStream>;

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    configs_with(rustls::DEFAULT_VERSIONS, rustls::DEFAULT_VERSIONS)
}

fn configs_with(
    server_versions: &[&'static rustls::SupportedProtocolVersion],
    client_versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = CertificateDer::from(made.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(server_versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(client_versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(server), Arc::new(client))
}

/// A finished handshake over a pipe of `pipe` bytes; the server's stream, the name it heard,
/// and the client's stream.
async fn pair(pipe: usize) -> (Server, Option<String>, ClientStream<DuplexStream>) {
    pair_with(pipe, configs()).await
}

async fn pair_with(
    pipe: usize,
    (server, client): (Arc<ServerConfig>, Arc<ClientConfig>),
) -> (Server, Option<String>, ClientStream<DuplexStream>) {
    let (server_io, client_io) = tokio::io::duplex(pipe);
    let name = ServerName::try_from("localhost").unwrap();
    let connect = TlsConnector::from(client).connect(name, client_io);
    let (accepted, connected) = tokio::join!(TlsStream::accept(server_io, server), connect);
    let (server, sni) = accepted.unwrap();
    (server, sni, connected.unwrap())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Polls `f` once: whether it finished.
fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
    std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn the_handshake_names_what_the_client_asked_for() {
    let (server, sni, _client) = pair(64 * 1024).await;
    assert_eq!(sni.as_deref(), Some("localhost"));
    assert_eq!(server.connection().alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(server.connection().protocol_version().is_some());
}

#[tokio::test]
async fn an_idle_stream_lets_its_buffers_go() {
    let (mut server, _, mut client) = pair(64 * 1024).await;
    client.write_all(b"hello").await.unwrap();
    client.flush().await.unwrap();
    let mut got = [0u8; 16];
    let n = server.read(&mut got).await.unwrap();
    assert_eq!(&got[..n], b"hello");
    server.write_all(&pattern(40_000)).await.unwrap();
    server.flush().await.unwrap();
    let mut echoed = vec![0u8; 40_000];
    client.read_exact(&mut echoed).await.unwrap();
    assert!(server.outgoing.capacity() > 0, "the write used the buffer");
    // Nothing more comes: the read waits, and while it waits nothing is held.
    assert!(poll_once(server.read(&mut got)).is_pending());
    assert_eq!(server.incoming.capacity(), 0);
    assert_eq!(server.plain.capacity(), 0);
    assert_eq!(server.outgoing.capacity(), 0);
    // And it still works afterwards.
    client.write_all(b"again").await.unwrap();
    client.flush().await.unwrap();
    let n = server.read(&mut got).await.unwrap();
    assert_eq!(&got[..n], b"again");
}

#[tokio::test]
async fn records_larger_than_the_readers_buffer_come_out_whole() {
    let (mut server, _, mut client) = pair(8 * 1024).await;
    let sent = pattern(100_000);
    let write = async {
        client.write_all(&sent).await.unwrap();
        client.flush().await.unwrap();
        client
    };
    let read = async {
        let mut got = Vec::new();
        let mut small = [0u8; 7];
        while got.len() < sent.len() {
            let n = server.read(&mut small).await.unwrap();
            assert!(n > 0, "ended after {} bytes", got.len());
            got.extend_from_slice(&small[..n]);
        }
        got
    };
    let (_client, got) = tokio::join!(write, read);
    assert!(got == sent, "the bytes differ");
}

#[tokio::test]
async fn writes_larger_than_a_record_arrive_whole_and_in_order() {
    let (mut server, _, mut client) = pair(8 * 1024).await;
    let sent = pattern(1 << 20);
    let write = async {
        server.write_all(&sent).await.unwrap();
        server.flush().await.unwrap();
        server
    };
    let read = async {
        let mut got = vec![0u8; sent.len()];
        client.read_exact(&mut got).await.unwrap();
        got
    };
    let (_server, got) = tokio::join!(write, read);
    assert!(got == sent, "the bytes differ");
}

#[tokio::test]
async fn a_key_update_from_the_client_keeps_both_ways_going() {
    let (mut server, _, mut client) = pair(64 * 1024).await;
    client.get_mut().1.refresh_traffic_keys().unwrap();
    client.write_all(b"after the update").await.unwrap();
    client.flush().await.unwrap();
    let mut got = [0u8; 32];
    let n = server.read(&mut got).await.unwrap();
    assert_eq!(&got[..n], b"after the update");
    server.write_all(b"answer").await.unwrap();
    server.flush().await.unwrap();
    let n = client.read(&mut got).await.unwrap();
    assert_eq!(&got[..n], b"answer");
}

#[tokio::test]
async fn close_notify_ends_each_side_cleanly() {
    let (mut server, _, mut client) = pair(64 * 1024).await;
    client.write_all(b"last").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last");
    server.write_all(b"bye").await.unwrap();
    server.shutdown().await.unwrap();
    // tokio-rustls's client reports an end without close_notify as an error: this is clean.
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");
}

#[tokio::test]
async fn bytes_that_are_not_records_are_an_error() {
    let (mut server, _, client) = pair(64 * 1024).await;
    let (mut raw, _) = client.into_inner();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut got = [0u8; 16];
    let e = server.read(&mut got).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    // The stream stays failed without asking rustls again.
    assert!(server.read(&mut got).await.is_err());
}

#[tokio::test]
async fn a_refused_handshake_tells_the_client_why() {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let (server, client) = configs_with(&[&rustls::version::TLS13], &[&rustls::version::TLS12]);
    let name = ServerName::try_from("localhost").unwrap();
    let connect = TlsConnector::from(client).connect(name, client_io);
    let (accepted, connected) = tokio::join!(TlsStream::accept(server_io, server), connect);
    let refused = accepted.err().expect("no version in common");
    assert!(refused.to_string().contains("incompatible"), "{refused}");
    // The client hears the alert, not just the end of the stream.
    let e = connected.expect_err("the client is refused");
    let tls = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            tls,
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::ProtocolVersion
            ))
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_head_and_body_written_together_go_as_one_record() {
    // TLS 1.2: nothing follows the handshake unasked, so the pipe holds only what is written.
    let tls12 = &[&rustls::version::TLS12];
    let (mut server, _, client) = pair_with(64 * 1024, configs_with(tls12, tls12)).await;
    let (head, body) = (
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"[..],
        &b"ok"[..],
    );
    let n = server
        .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
        .await
        .unwrap();
    assert_eq!(n, head.len() + body.len());
    server.flush().await.unwrap();
    let (mut raw, _) = client.into_inner();
    let mut header = [0u8; 5];
    raw.read_exact(&mut header).await.unwrap();
    assert_eq!(header[0], 23, "an application data record");
    let mut record = vec![0u8; u16::from_be_bytes([header[3], header[4]]) as usize];
    raw.read_exact(&mut record).await.unwrap();
    assert!(
        poll_once(raw.read(&mut header)).is_pending(),
        "a second record"
    );
}

#[tokio::test]
async fn small_and_large_pieces_of_one_write_arrive_in_order() {
    let (mut server, _, mut client) = pair(8 * 1024).await;
    let (a, big, c, d) = (pattern(9), pattern(20_000), pattern(3000), pattern(2000));
    let write = async {
        let bufs = [
            IoSlice::new(&a),
            IoSlice::new(&big),
            IoSlice::new(&c),
            IoSlice::new(&d),
        ];
        let n = server.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, a.len() + big.len() + c.len() + d.len());
        server.flush().await.unwrap();
        server
    };
    let read = async {
        let mut got = vec![0u8; a.len() + big.len() + c.len() + d.len()];
        client.read_exact(&mut got).await.unwrap();
        got
    };
    let (_server, got) = tokio::join!(write, read);
    assert!(got == [a.clone(), big.clone(), c.clone(), d.clone()].concat());
}
