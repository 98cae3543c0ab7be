//! The certificates the TLS listener serves: read from PEM files (or made at start-up), chosen
//! by SNI against each certificate's SANs, and swapped for new ones when their files change.
//!
//! A file's identity is its metadata after following links (device, inode, length, mtime), so
//! Kubernetes' atomic swap of the `..data` link counts as a change even when the paths the
//! proxy was given stay the same.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where a certificate comes from, and the names it is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// `TLS_CERT_FILE` and `TLS_KEY_FILE`.
    Files { cert: PathBuf, key: PathBuf },
    /// Made at start-up (`TLS_SELF_SIGNED`).
    SelfSigned,
}

/// One certificate in service.
#[derive(Debug)]
pub(crate) struct Pair {
    /// The name it is reported under: `default`, or its name in `TLS_CERT_DIR`.
    pub(crate) name: String,
    pub(crate) source: Source,
    /// The DNS names it serves (its SANs, `*.` wildcards included), lower-case.
    pub(crate) names: Vec<String>,
    /// When it expires, in seconds since the epoch.
    pub(crate) not_after: i64,
    pub(crate) key: Arc<CertifiedKey>,
    /// The files' identities when they were read.
    seen: Option<Stamp>,
}

/// Why a pair could not be read; names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadError {
    pub(crate) file: PathBuf,
    pub(crate) why: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.why)
    }
}

fn error(file: &Path, why: impl std::fmt::Display) -> LoadError {
    LoadError {
        file: file.to_owned(),
        why: why.to_string(),
    }
}

impl Pair {
    /// Reads a certificate chain and its key; refuses a key that does not match the leaf, and
    /// a leaf that has expired.
    pub(crate) fn load(
        name: &str,
        cert: &Path,
        key: &Path,
        provider: &CryptoProvider,
    ) -> Result<Pair, LoadError> {
        let seen = Stamp::of(&[cert, key]);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| error(cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| error(cert, e))?;
        if chain.is_empty() {
            return Err(error(cert, "no PEM certificate in the file"));
        }
        let der = PrivateKeyDer::from_pem_file(key).map_err(|e| error(key, e))?;
        let certified = CertifiedKey::from_der(chain, der, provider)
            .map_err(|e| error(key, format!("{e} (the key must be the certificate's)")))?;
        let source = Source::Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        let mut pair = Pair::from_key(name, source, certified).map_err(|why| error(cert, why))?;
        pair.seen = seen;
        if pair.not_after < now() {
            return Err(error(cert, "the certificate has expired"));
        }
        Ok(pair)
    }

    /// A certificate for `elb-ws-proxy` and `localhost`, made now: a TLS target group does not
    /// check it, so only its fingerprint (logged) identifies it.
    pub(crate) fn self_signed(provider: &CryptoProvider) -> Result<Pair, String> {
        let names = vec!["elb-ws-proxy".to_owned(), "localhost".to_owned()];
        let made = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
        let chain = vec![made.cert.der().clone()];
        let der = PrivateKeyDer::try_from(made.signing_key.serialize_der())?;
        let certified = CertifiedKey::from_der(chain, der, provider).map_err(|e| e.to_string())?;
        Pair::from_key("default", Source::SelfSigned, certified)
    }

    fn from_key(name: &str, source: Source, key: CertifiedKey) -> Result<Pair, String> {
        let leaf = key.end_entity_cert().map_err(|e| e.to_string())?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for general in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = general {
                    names.push(dns.to_ascii_lowercase());
                }
            }
        }
        Ok(Pair {
            name: name.to_owned(),
            source,
            names,
            not_after: parsed.validity().not_after.timestamp(),
            key: Arc::new(key),
            seen: None,
        })
    }

    /// The SHA-256 fingerprint of the leaf, as `openssl x509 -fingerprint -sha256` prints it.
    pub(crate) fn fingerprint(&self) -> String {
        let leaf = self
            .key
            .end_entity_cert()
            .map(|c| c.as_ref())
            .unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, leaf);
        let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        hex.join(":")
    }

    /// Whether it serves `host` (RFC 6125: a `*.` wildcard stands for exactly one label).
    fn serves(&self, host: &str) -> bool {
        self.names.iter().any(|name| match name.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => name == host,
        })
    }
}

/// The files' identities, to tell when they have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<(u64, u64, u64, i64, i64)>);

impl Stamp {
    fn of(files: &[&Path]) -> Option<Stamp> {
        let ids = files.iter().map(|f| {
            let m = fs::metadata(f).ok()?;
            Some((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
        });
        ids.collect::<Option<Vec<_>>>().map(Stamp)
    }
}

/// Seconds since the epoch now.
pub(crate) fn now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since.as_secs() as i64
}

/// The certificates of a `TLS_CERT_DIR`: `NAME.crt` + `NAME.key`, or `NAME/tls.crt` +
/// `NAME/tls.key` (a mounted Kubernetes TLS secret), by name.
pub(crate) fn in_dir(dir: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>, LoadError> {
    let entries = fs::read_dir(dir).map_err(|e| error(dir, e))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        // Kubernetes' own entries (`..data`, `..2024_…`) are the targets of the links.
        if file_name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            let (cert, key) = (path.join("tls.crt"), path.join("tls.key"));
            if cert.is_file() && key.is_file() {
                found.push((file_name, cert, key));
            }
        } else if let Some(name) = file_name.strip_suffix(".crt") {
            let key = dir.join(format!("{name}.key"));
            if !key.is_file() {
                return Err(error(&key, "missing: every NAME.crt needs its NAME.key"));
            }
            found.push((name.to_owned(), path, key));
        }
    }
    found.sort();
    Ok(found)
}

/// The certificates in service, swapped whole when one changes; the TLS handshakes read it.
#[derive(Debug)]
pub(crate) struct Store {
    pairs: RwLock<Arc<Vec<Arc<Pair>>>>,
}

impl Store {
    /// `pairs[0]` is the default.
    pub(crate) fn new(pairs: Vec<Pair>) -> Store {
        Store {
            pairs: RwLock::new(Arc::new(pairs.into_iter().map(Arc::new).collect())),
        }
    }

    /// The certificates in service now.
    pub(crate) fn pairs(&self) -> Arc<Vec<Arc<Pair>>> {
        self.pairs.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Re-reads the pairs whose files changed. Each that fails keeps its old pair in service;
    /// returns what was read anew and what failed.
    pub(crate) fn reload(&self, provider: &CryptoProvider) -> Reloaded {
        let current = self.pairs();
        let mut next = Vec::with_capacity(current.len());
        let mut out = Reloaded::default();
        for pair in current.iter() {
            let Source::Files { cert, key } = &pair.source else {
                next.push(pair.clone());
                continue;
            };
            if Stamp::of(&[cert, key]) == pair.seen {
                next.push(pair.clone());
                continue;
            }
            match Pair::load(&pair.name, cert, key, provider) {
                Ok(new) => {
                    out.renewed.push(pair.name.clone());
                    next.push(Arc::new(new));
                }
                Err(e) => {
                    out.failed.push((pair.name.clone(), e));
                    next.push(pair.clone());
                }
            }
        }
        if !out.renewed.is_empty() {
            if let Ok(mut slot) = self.pairs.write() {
                *slot = Arc::new(next);
            }
        }
        out
    }
}

/// What a reload did.
#[derive(Debug, Default)]
pub(crate) struct Reloaded {
    /// Names whose new files are in service now.
    pub(crate) renewed: Vec<String>,
    /// Names whose new files could not be used; their old pair stays.
    pub(crate) failed: Vec<(String, LoadError)>,
}

impl ResolvesServerCert for Store {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let pairs = self.pairs();
        let host = hello.server_name().map(str::to_ascii_lowercase);
        let chosen = host
            .and_then(|h| pairs.iter().find(|p| p.serves(&h)))
            .or_else(|| pairs.first())?;
        Some(chosen.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> Pair {
        Pair {
            name: "t".into(),
            source: Source::SelfSigned,
            names: names.iter().map(|s| s.to_string()).collect(),
            not_after: 0,
            key: Pair::self_signed(&rustls::crypto::ring::default_provider())
                .unwrap()
                .key,
            seen: None,
        }
    }

    #[test]
    fn names_and_wildcards_by_rfc_6125() {
        let p = pair(&["a.example", "*.b.example"]);
        // (host, served)
        let table = [
            ("a.example", true),
            ("x.a.example", false),
            ("x.b.example", true),
            ("b.example", false),
            ("x.y.b.example", false),
            (".b.example", false),
            ("other.example", false),
        ];
        for (host, served) in table {
            assert_eq!(p.serves(host), served, "{host}");
        }
    }
}
