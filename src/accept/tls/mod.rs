//! TLS ended by the proxy itself, behind an NLB TCP listener (passthrough) or a TLS target
//! group: after the PROXY header, a connection on `LISTEN_ON_TLS` whose first byte starts a
//! handshake record is terminated here, and what ALPN chose is served on the plaintext.
//!
//! rustls with the ring provider: TLS 1.2 and 1.3 only, rustls's own safe cipher suites,
//! session tickets from keys that rotate, certificates chosen by SNI ([`certs::Store`]) and,
//! with a CA bundle, client certificates checked (mutual TLS).

pub(crate) mod certs;
mod client_cert;
mod hello;
mod outgoing;
mod stream;

pub(crate) use stream::TlsStream;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::accept::detect::Silence;
use crate::config::{ClientAuth, TlsMode, TlsSettings, TlsVersion};
use crate::http::clocks::{Clocks, Expiry, Phase};
use crate::http::forwarding::TlsFacts;

use certs::{Pair, Store};

/// The first byte of a TLS handshake record (RFC 8446 §5.1).
const HANDSHAKE_RECORD: u8 = 0x16;

/// Bytes of TLS records a connection may hold unsent: an idle connection holds none, a client
/// that stops reading holds at most this much before the proxy stops writing to it.
const SEND_BUFFER: usize = 64 * 1024;

/// The TLS listener's configuration, certificates and policy.
pub(crate) struct Terminator {
    config: Arc<ServerConfig>,
    store: Arc<Store>,
    provider: Arc<CryptoProvider>,
    mode: TlsMode,
}

/// A start-up problem with the TLS settings: names the variable and, where there is one, the
/// file.
#[derive(Debug)]
pub(crate) struct StartError {
    pub(crate) variable: &'static str,
    pub(crate) why: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.why)
    }
}

impl From<StartError> for io::Error {
    fn from(e: StartError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
    }
}

fn start_error(variable: &'static str, why: impl fmt::Display) -> StartError {
    StartError {
        variable,
        why: why.to_string(),
    }
}

impl Terminator {
    /// Reads every certificate and builds the TLS configuration; `None` when `TLS_MODE` is off.
    pub(crate) fn new(settings: &TlsSettings) -> Result<Option<Terminator>, StartError> {
        if settings.mode == TlsMode::Off {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pairs = load_pairs(settings, &provider)?;
        for pair in &pairs {
            if pair.source == certs::Source::SelfSigned {
                tracing::info!(sha256 = %pair.fingerprint(), "made a self-signed certificate (TLS_SELF_SIGNED)");
            }
        }
        let store = Arc::new(Store::new(pairs));
        let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
            TlsVersion::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| start_error("TLS_MIN_VERSION", e))?;
        let builder = match &settings.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(file) => {
                let roots = client_roots(file)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                let verifier = match settings.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier.build().map_err(|e| {
                    start_error("TLS_CLIENT_CA_FILE", format!("{}: {e}", file.display()))
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(store.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| start_error("TLS_MODE", e))?;
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        Ok(Some(Terminator {
            config: Arc::new(config),
            store,
            provider,
            mode: settings.mode,
        }))
    }

    /// `auto` or `required`.
    pub(crate) fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The certificates in service.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Re-reads the certificates whose files changed (see [`Store::reload`]).
    pub(crate) fn reload(&self) -> certs::Reloaded {
        self.store.reload(&self.provider)
    }

    /// Completes the handshake within `REQUEST_HEADER_TIMEOUT` of its first byte.
    pub(crate) async fn handshake<IO>(
        &self,
        io: IO,
        clocks: &mut Clocks,
    ) -> Result<(TlsStream<IO>, TlsFacts), Failure>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let started = Phase::Head {
            started: tokio::time::Instant::now(),
        };
        let accept = TlsStream::accept(io, self.config.clone());
        let (tls, sni) = match clocks.until(started, accept).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => return Err(Failure::of(&e)),
            Ok(Ok(done)) => done,
        };
        let conn = tls.connection();
        let facts = TlsFacts {
            sni,
            version: conn
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("unknown"),
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown"),
            alpn: match conn.alpn_protocol() {
                Some(b"h2") => Some("h2"),
                Some(b"http/1.1") => Some("http/1.1"),
                _ => None,
            },
            client: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| client_cert::describe(leaf.as_ref())),
        };
        Ok((tls, facts))
    }
}

/// The default certificate first, then those of `TLS_CERT_DIR` by name.
fn load_pairs(settings: &TlsSettings, provider: &CryptoProvider) -> Result<Vec<Pair>, StartError> {
    let mut pairs = Vec::new();
    if let (Some(cert), Some(key)) = (&settings.cert_file, &settings.key_file) {
        let pair = Pair::load("default", cert, key, provider).map_err(|e| {
            let variable = if e.file == *key {
                "TLS_KEY_FILE"
            } else {
                "TLS_CERT_FILE"
            };
            start_error(variable, e)
        })?;
        pairs.push(pair);
    } else if settings.self_signed {
        pairs.push(Pair::self_signed(provider).map_err(|e| start_error("TLS_SELF_SIGNED", e))?);
    }
    if let Some(dir) = &settings.cert_dir {
        let found = certs::in_dir(dir).map_err(|e| start_error("TLS_CERT_DIR", e))?;
        if found.is_empty() {
            let why = format!(
                "{}: no NAME.crt + NAME.key or NAME/tls.crt + NAME/tls.key",
                dir.display()
            );
            return Err(start_error("TLS_CERT_DIR", why));
        }
        for (name, cert, key) in found {
            let pair = Pair::load(&name, &cert, &key, provider)
                .map_err(|e| start_error("TLS_CERT_DIR", e))?;
            pairs.push(pair);
        }
    }
    Ok(pairs)
}

/// The CAs that sign client certificates.
fn client_roots(file: &Path) -> Result<Arc<RootCertStore>, StartError> {
    let fail =
        |why: String| start_error("TLS_CLIENT_CA_FILE", format!("{}: {why}", file.display()));
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file).map_err(|e| fail(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| fail(e.to_string()))?;
        roots.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("no PEM certificate in the file".into()));
    }
    Ok(Arc::new(roots))
}

/// Whether the connection starts a TLS handshake: reads its first byte if none has come yet,
/// by the keep-alive clock (an NLB sends the PROXY header with the client's first bytes).
pub(crate) async fn starts_handshake<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    clocks: &mut Clocks,
) -> Result<bool, Silence> {
    if buf.is_empty() {
        let idle = Phase::Idle {
            since: tokio::time::Instant::now(),
        };
        match clocks.until(idle, io.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) | Err(Expiry::KeepAlive) => return Err(Silence::Idle),
            Err(Expiry::RequestHeader) => return Err(Silence::Stalled),
        }
    }
    Ok(buf.first() == Some(&HANDSHAKE_RECORD))
}

/// Why a handshake failed: the `result` label of `tls_handshakes_total` and a `debug` line.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Not done within `REQUEST_HEADER_TIMEOUT` of its first byte.
    Timeout,
    /// The client went away during it (scanners and probes do).
    Closed,
    /// Records or messages that are not TLS, or not in order.
    Malformed(String),
    /// No version, cipher suite or signature scheme in common.
    Incompatible(String),
    /// No client certificate, or one the CA bundle did not sign.
    ClientCertificate(String),
    /// The client sent an alert (it did not accept the proxy's certificate, say).
    Alert(String),
    Other(String),
}

impl Failure {
    fn of(e: &io::Error) -> Failure {
        use rustls::Error as E;
        if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::ConnectionReset {
            return Failure::Closed;
        }
        let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
            return Failure::Other(e.to_string());
        };
        let why = tls.to_string();
        match tls {
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::DecryptError
            | E::PeerMisbehaved(_) => Failure::Malformed(why),
            E::PeerIncompatible(_) | E::NoApplicationProtocol => Failure::Incompatible(why),
            E::NoCertificatesPresented | E::InvalidCertificate(_) => {
                Failure::ClientCertificate(why)
            }
            E::AlertReceived(_) => Failure::Alert(why),
            _ => Failure::Other(why),
        }
    }

    /// The `result` label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
            Failure::Malformed(_) => "malformed",
            Failure::Incompatible(_) => "incompatible",
            Failure::ClientCertificate(_) => "client_certificate",
            Failure::Alert(_) => "alert",
            Failure::Other(_) => "error",
        }
    }

    /// Every label, for the metric's series.
    pub(crate) const LABELS: [&'static str; 7] = [
        "timeout",
        "closed",
        "malformed",
        "incompatible",
        "client_certificate",
        "alert",
        "error",
    ];
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout => f.write_str("handshake not done within REQUEST_HEADER_TIMEOUT"),
            Failure::Closed => f.write_str("closed during the handshake"),
            Failure::Malformed(why)
            | Failure::Incompatible(why)
            | Failure::ClientCertificate(why)
            | Failure::Alert(why)
            | Failure::Other(why) => f.write_str(why),
        }
    }
}
