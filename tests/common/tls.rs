//! TLS peers: a test CA that issues server and client certificates (rcgen), PEM files for the
//! proxy, and rustls clients that write the PROXY header in the clear first, as an NLB does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::within;

/// A certificate authority for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl Issued {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, &self.cert).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        (cert, key)
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names`.
    pub fn server(&self, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A server certificate for `names` that expired in 2001.
    pub fn expired_server(&self, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.issue(params)
    }

    /// A client certificate with common name `cn` and a URI SAN (a SPIFFE id, say).
    pub fn client(&self, cn: &str, uri: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// How a test client sets up TLS.
pub struct ClientTls<'a> {
    /// The CA it trusts.
    pub ca: &'a Ca,
    /// SNI; `None` sends none (the proxy is then reached by address).
    pub sni: Option<&'a str>,
    /// ALPN protocols offered, in order.
    pub alpn: &'a [&'a [u8]],
    /// A client certificate to present.
    pub identity: Option<&'a Issued>,
}

impl ClientTls<'_> {
    fn config_for(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca.pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match self.identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let chain = CertificateDer::pem_slice_iter(id.cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_slice(id.key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// Connects to `addr`, writes `header` in the clear, then does the handshake.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        header: &[u8],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        self.connect_with(addr, header, rustls::DEFAULT_VERSIONS)
            .await
    }

    /// As [`ClientTls::connect`], offering only `versions`.
    pub async fn connect_with(
        &self,
        addr: SocketAddr,
        header: &[u8],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(header).await?;
        let mut config = self.config_for(versions);
        config.enable_sni = self.sni.is_some();
        // A client without SNI still needs a name to check the certificate against.
        let name = ServerName::try_from(self.sni.unwrap_or("default.test").to_owned()).unwrap();
        let connector = TlsConnector::from(Arc::new(config));
        within("TLS handshake", connector.connect(name, tcp)).await
    }
}

/// The DNS names of the certificate the server presented on `tls`.
pub fn peer_names(tls: &TlsStream<TcpStream>) -> Vec<String> {
    let (_, conn) = tls.get_ref();
    let leaf = &conn.peer_certificates().expect("a server certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("SANs");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// A proxy configuration for `app` whose default certificate is `default` (for
/// `default.test`), written into `dir`.
pub fn tls_config(app: SocketAddr, dir: &super::TempDir, default: &Issued) -> elb_ws_proxy::Config {
    let mut config = super::config_for(app);
    let (cert, key) = default.write(dir.path(), "default");
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    config.tls.mode = elb_ws_proxy::config::TlsMode::Auto;
    config
}
