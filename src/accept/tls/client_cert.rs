//! A verified client certificate as the app is told of it: Envoy's
//! `X-Forwarded-Client-Cert` format, `Hash=<SHA-256 of the DER, hex>;Subject="…";URI=…;DNS=…`.

use http::HeaderValue;
use x509_parser::extensions::GeneralName;

use crate::http::forwarding::ClientCert;

/// The subject and the header value of a leaf certificate (DER).
pub(super) fn describe(der: &[u8]) -> ClientCert {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut value = format!("Hash={hash}");
    let mut subject = String::new();
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
        subject = cert.subject().to_string();
        let quoted = subject.replace('\\', "\\\\").replace('"', "\\\"");
        value.push_str(&format!(";Subject=\"{quoted}\""));
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => value.push_str(&format!(";URI={uri}")),
                    GeneralName::DNSName(dns) => value.push_str(&format!(";DNS={dns}")),
                    _ => {}
                }
            }
        }
    }
    // Names with bytes a header cannot carry lose them rather than the whole value.
    let value = HeaderValue::from_str(&value).unwrap_or_else(|_| {
        let printable: String = value.chars().filter(|c| (' '..='~').contains(c)).collect();
        HeaderValue::from_str(&printable).unwrap_or_else(|_| HeaderValue::from_static(""))
    });
    ClientCert {
        subject,
        header: value,
    }
}
