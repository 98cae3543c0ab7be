//! The certificate watcher: every `TLS_RELOAD_INTERVAL` it re-reads the certificates whose
//! files changed, keeps the old pair where a new one is broken, exports each one's expiry, and
//! warns once a day about those that expire within 14 days.

use std::sync::Arc;
use std::time::Duration;

use crate::accept::tls::certs::now;
use crate::accept::tls::Terminator;
use crate::conn::shared::Shared;

/// How long before its expiry a certificate is warned about.
const EXPIRY_WARNING: i64 = 14 * 24 * 3600;
/// How often that warning is repeated.
const WARN_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Exports what is in service at start-up, then watches the files until the task is dropped.
pub(crate) async fn watch(shared: Arc<Shared>, tls: Arc<Terminator>) {
    let metrics = &shared.metrics.tls;
    let mut last_warned: Option<tokio::time::Instant> = None;
    let mut every = tokio::time::interval(shared.config.tls.reload_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let reloaded = tls.reload();
        for name in &reloaded.renewed {
            tracing::info!(certificate = %name, "certificate files changed; new connections get the new certificate");
        }
        for (name, e) in &reloaded.failed {
            metrics.reload_failed(name);
            tracing::warn!(certificate = %name, error = %e, "certificate files changed but cannot be used; the old certificate stays in service");
        }
        let pairs = tls.store().pairs();
        for pair in pairs.iter() {
            if reloaded.failed.iter().all(|(name, _)| *name != pair.name) {
                metrics.certificate(&pair.name, pair.not_after);
            }
        }
        if last_warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            let soon: Vec<_> = pairs
                .iter()
                .filter(|p| p.not_after - now() < EXPIRY_WARNING)
                .collect();
            for pair in &soon {
                let days = (pair.not_after - now()) / (24 * 3600);
                tracing::warn!(certificate = %pair.name, days, "certificate expires within 14 days");
            }
            if !soon.is_empty() {
                last_warned = Some(tokio::time::Instant::now());
            }
        }
    }
}
