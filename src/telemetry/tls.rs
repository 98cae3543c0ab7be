//! The TLS listener's metrics: handshakes by result, each certificate's expiry, and whether
//! its files on disk could last be used.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::accept::tls::Failure;

type Labels = Vec<(&'static str, String)>;

/// The TLS metrics, registered with the rest.
pub(crate) struct TlsMetrics {
    handshakes: Family<Labels, Counter>,
    expiry: Family<Labels, Gauge>,
    reload_failed: Family<Labels, Gauge>,
}

impl TlsMetrics {
    pub(crate) fn register(registry: &mut Registry) -> TlsMetrics {
        let handshakes = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on LISTEN_ON_TLS, by result: ok or why they failed",
            handshakes.clone(),
        );
        for result in Failure::LABELS.into_iter().chain(["ok"]) {
            drop(handshakes.get_or_create(&vec![("result", result.to_owned())]));
        }
        let expiry = Family::<Labels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When each certificate in service expires (Unix time)",
            expiry.clone(),
        );
        let reload_failed = Family::<Labels, Gauge>::default();
        registry.register(
            "tls_certificate_reload_failed",
            "1 while a certificate's files changed but cannot be used (the old pair stays in service)",
            reload_failed.clone(),
        );
        TlsMetrics {
            handshakes,
            expiry,
            reload_failed,
        }
    }

    /// One handshake that completed (`None`) or failed.
    pub(crate) fn handshake(&self, failure: Option<&Failure>) {
        let result = failure.map_or("ok", Failure::label);
        self.handshakes
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// Certificate `name` is in service until `not_after`.
    pub(crate) fn certificate(&self, name: &str, not_after: i64) {
        let labels = vec![("name", name.to_owned())];
        self.expiry.get_or_create(&labels).set(not_after);
        self.reload_failed.get_or_create(&labels).set(0);
    }

    /// Certificate `name`'s new files could not be used.
    pub(crate) fn reload_failed(&self, name: &str) {
        let labels = vec![("name", name.to_owned())];
        self.reload_failed.get_or_create(&labels).set(1);
    }
}
