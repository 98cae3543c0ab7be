//! The TLS settings: whether `LISTEN_ON_TLS` ends TLS itself, where its certificates come from,
//! and how clients are checked. Reading the files is left to start-up, which names the
//! variable and the file when one is wrong.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

use super::apply::{boolean, invalid, value, DURATION};
use super::ConfigError;
use crate::config::settings::{parse_app_header, parse_duration};

/// `TLS_MODE`: what `LISTEN_ON_TLS` does with a connection that starts a TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never ends TLS: every connection is cleartext, as behind a balancer that ends it.
    Off,
    /// Ends TLS for connections that start with a handshake; cleartext ones are served too.
    Auto,
    /// Only TLS: cleartext connections are refused, a header-less `/ping` excepted.
    Required,
}

/// `TLS_MIN_VERSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V12,
    V13,
}

/// `TLS_CLIENT_AUTH`: whether a client must present a certificate the CA bundle signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a certificate is served, without the client-certificate header.
    Optional,
    /// A client without a valid certificate fails the handshake.
    Required,
}

/// The TLS settings, checked against each other.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// `TLS_MODE`, with `auto` turned `off` when no certificate is configured.
    pub mode: TlsMode,
    /// `TLS_CERT_FILE`: the default certificate, its chain after it (PEM).
    pub cert_file: Option<PathBuf>,
    /// `TLS_KEY_FILE`: the default certificate's key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// `TLS_CERT_DIR`: more certificates, chosen by SNI.
    pub cert_dir: Option<PathBuf>,
    /// `TLS_SELF_SIGNED`: make a default certificate at start-up.
    pub self_signed: bool,
    /// `TLS_MIN_VERSION`.
    pub min_version: TlsVersion,
    /// `TLS_CLIENT_CA_FILE`: the CAs that sign client certificates; `None` asks for none.
    pub client_ca_file: Option<PathBuf>,
    /// `TLS_CLIENT_AUTH`; meaningful with a CA file.
    pub client_auth: ClientAuth,
    /// `CLIENT_CERT_HEADER`: the header that carries a verified client certificate to the
    /// app; `None` not sent. A client's own copy is always removed.
    pub client_cert_header: Option<HeaderName>,
    /// `TLS_RELOAD_INTERVAL`: how often the certificate files are looked at for changes.
    pub reload_interval: Duration,
}

impl TlsSettings {
    /// No TLS: the placeholder before the settings are read.
    pub(super) fn off() -> Self {
        TlsSettings {
            mode: TlsMode::Off,
            cert_file: None,
            key_file: None,
            cert_dir: None,
            self_signed: false,
            min_version: TlsVersion::V12,
            client_ca_file: None,
            client_auth: ClientAuth::Required,
            client_cert_header: None,
            reload_interval: Duration::from_secs(5),
        }
    }

    /// Whether any certificate source is configured.
    pub fn has_certificate(&self) -> bool {
        self.cert_file.is_some() || self.cert_dir.is_some() || self.self_signed
    }
}

/// The raw TLS variables.
#[derive(Default)]
pub(super) struct RawTls {
    pub(super) mode: Option<String>,
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) cert_dir: Option<String>,
    pub(super) self_signed: Option<String>,
    pub(super) min_version: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) client_auth: Option<String>,
    pub(super) client_cert_header: Option<String>,
    pub(super) reload_interval: Option<String>,
}

impl RawTls {
    /// Checks the TLS variables against each other.
    pub(super) fn parse(self) -> Result<TlsSettings, ConfigError> {
        let path = |v: Option<String>| v.map(|s| PathBuf::from(s.trim()));
        let (cert_file, key_file) = (path(self.cert_file), path(self.key_file));
        match (&cert_file, &key_file) {
            (Some(_), None) => return Err(missing("TLS_KEY_FILE", "TLS_CERT_FILE")),
            (None, Some(_)) => return Err(missing("TLS_CERT_FILE", "TLS_KEY_FILE")),
            _ => {}
        }
        let self_signed = boolean(value("TLS_SELF_SIGNED", self.self_signed))?;
        if self_signed && cert_file.is_some() {
            let expected = "false when TLS_CERT_FILE gives the default certificate";
            return Err(invalid("TLS_SELF_SIGNED", expected, "true".into()));
        }
        let (name, v) = value("TLS_MIN_VERSION", self.min_version);
        let min_version = match v.trim() {
            "1.2" => TlsVersion::V12,
            "1.3" => TlsVersion::V13,
            _ => return Err(invalid(name, "1.2 or 1.3", v)),
        };
        let client_ca_file = path(self.client_ca_file);
        let asked = self.client_auth.is_some();
        let (name, v) = value("TLS_CLIENT_AUTH", self.client_auth);
        let client_auth = match v.trim().to_ascii_lowercase().as_str() {
            "optional" => ClientAuth::Optional,
            "required" => ClientAuth::Required,
            _ => return Err(invalid(name, "optional or required", v)),
        };
        if asked && client_ca_file.is_none() {
            let expected = "unset unless TLS_CLIENT_CA_FILE names the CAs to check against";
            return Err(invalid(name, expected, v));
        }
        let (name, v) = value("CLIENT_CERT_HEADER", self.client_cert_header);
        let client_cert_header = header_or_off(name, v)?;
        let (name, v) = value("TLS_RELOAD_INTERVAL", self.reload_interval);
        let reload_interval = match parse_duration(&v) {
            Some(d) if !d.is_zero() => d,
            _ => return Err(invalid(name, DURATION, v)),
        };
        let mut settings = TlsSettings {
            mode: TlsMode::Off,
            cert_file,
            key_file,
            cert_dir: path(self.cert_dir),
            self_signed,
            min_version,
            client_ca_file,
            client_auth,
            client_cert_header,
            reload_interval,
        };
        let (name, v) = value("TLS_MODE", self.mode);
        settings.mode = match v.trim().to_ascii_lowercase().as_str() {
            "off" => TlsMode::Off,
            "auto" if settings.has_certificate() => TlsMode::Auto,
            "auto" => TlsMode::Off,
            "required" if settings.has_certificate() => TlsMode::Required,
            "required" => {
                let expected = "auto or off unless TLS_CERT_FILE and TLS_KEY_FILE, TLS_CERT_DIR or TLS_SELF_SIGNED=true give a certificate";
                return Err(invalid(name, expected, v));
            }
            _ => return Err(invalid(name, "one of auto, required, off", v)),
        };
        Ok(settings)
    }
}

fn missing(variable: &'static str, with: &str) -> ConfigError {
    ConfigError {
        variable,
        expected: format!("a PEM file, given together with {with}"),
        found: None,
    }
}

/// A header name, or `off` (what an empty value becomes).
fn header_or_off(name: &'static str, v: String) -> Result<Option<HeaderName>, ConfigError> {
    parse_app_header(&v).ok_or_else(|| {
        let expected = "a header name such as X-Forwarded-Client-Cert that the proxy does not otherwise set, or empty (off)";
        invalid(name, expected, v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn with(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let base = [
            ("LISTEN_ON", "81"),
            ("LISTEN_ON_TLS", "444"),
            ("DESTINATION_HOSTNAME", "app"),
            ("DESTINATION_PORT", "8080"),
        ];
        let vars = base
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_vars(vars)
    }

    #[test]
    fn settings_that_contradict_each_other_name_the_variable() {
        // (variables, the variable the error names)
        let table: &[(&[(&str, &str)], &str)] = &[
            (&[("TLS_CERT_FILE", "/c.pem")], "TLS_KEY_FILE"),
            (&[("TLS_KEY_FILE", "/k.pem")], "TLS_CERT_FILE"),
            (&[("TLS_MODE", "required")], "TLS_MODE"),
            (&[("TLS_MODE", "sometimes")], "TLS_MODE"),
            (&[("TLS_MIN_VERSION", "1.1")], "TLS_MIN_VERSION"),
            (&[("TLS_SELF_SIGNED", "maybe")], "TLS_SELF_SIGNED"),
            (
                &[
                    ("TLS_SELF_SIGNED", "true"),
                    ("TLS_CERT_FILE", "/c"),
                    ("TLS_KEY_FILE", "/k"),
                ],
                "TLS_SELF_SIGNED",
            ),
            (&[("TLS_CLIENT_AUTH", "optional")], "TLS_CLIENT_AUTH"),
            (
                &[
                    ("TLS_CLIENT_CA_FILE", "/ca"),
                    ("TLS_CLIENT_AUTH", "sometimes"),
                ],
                "TLS_CLIENT_AUTH",
            ),
            (&[("CLIENT_CERT_HEADER", "Host")], "CLIENT_CERT_HEADER"),
            (
                &[("CLIENT_CERT_HEADER", "X-Forwarded-For")],
                "CLIENT_CERT_HEADER",
            ),
            (&[("TLS_RELOAD_INTERVAL", "0")], "TLS_RELOAD_INTERVAL"),
        ];
        for (vars, named) in table {
            let e = with(vars).expect_err(&format!("{vars:?}"));
            assert_eq!(e.variable, *named, "{vars:?}: {e}");
        }
    }

    #[test]
    fn defaults_follow_from_what_is_configured() {
        let none = with(&[]).unwrap().tls;
        assert_eq!(none.mode, TlsMode::Off, "auto without a certificate is off");
        assert_eq!(
            none.client_cert_header.as_ref().map(|h| h.as_str()),
            Some("x-forwarded-client-cert")
        );
        let files = with(&[("TLS_CERT_FILE", "/c"), ("TLS_KEY_FILE", "/k")])
            .unwrap()
            .tls;
        assert_eq!(
            (files.mode, files.min_version),
            (TlsMode::Auto, TlsVersion::V12)
        );
        let strict = with(&[
            ("TLS_SELF_SIGNED", "true"),
            ("TLS_MODE", "required"),
            ("TLS_MIN_VERSION", "1.3"),
        ])
        .unwrap()
        .tls;
        assert_eq!(
            (strict.mode, strict.min_version),
            (TlsMode::Required, TlsVersion::V13)
        );
        let mtls = with(&[("TLS_CERT_DIR", "/certs"), ("TLS_CLIENT_CA_FILE", "/ca")])
            .unwrap()
            .tls;
        assert_eq!(
            (mtls.mode, mtls.client_auth),
            (TlsMode::Auto, ClientAuth::Required)
        );
        let off = with(&[
            ("TLS_CERT_DIR", "/certs"),
            ("TLS_MODE", "off"),
            ("CLIENT_CERT_HEADER", ""),
        ])
        .unwrap()
        .tls;
        assert_eq!((off.mode, off.client_cert_header), (TlsMode::Off, None));
    }
}
