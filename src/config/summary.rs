//! The effective settings as the start-up line and `check` print them: each value as a user
//! writes it, as `key=value` text or, for JSON logs, one object.

use std::time::Duration;

use super::Config;

impl Config {
    /// The effective settings as `key=value` text, logged at start-up and by `check`.
    pub fn summary(&self) -> String {
        let pairs = self
            .settings_list()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"));
        pairs.collect::<Vec<_>>().join(" ")
    }

    /// The effective settings as one JSON object, for the start-up line in JSON logs.
    pub fn summary_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (key, value)) in self.settings_list().into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("\"{key}\":\""));
            for c in value.chars() {
                match c {
                    '"' | '\\' => out.extend(['\\', c]),
                    c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
        out
    }

    /// Each effective setting by name, its value as a user writes it.
    fn settings_list(&self) -> Vec<(&'static str, String)> {
        // Each value as a user writes it (and as README's defaults are written): durations in
        // seconds or milliseconds, sizes in KiB or MiB when whole, and choices by the names
        // the settings take (the variants' names, lower-cased).
        let time = |d: Duration| {
            let ms = d.as_millis();
            match ms {
                _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
                _ => format!("{ms}ms"),
            }
        };
        let size = |n: u64| match n {
            0 => "0".to_owned(),
            _ if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
            _ if n % 1024 == 0 => format!("{}KiB", n >> 10),
            _ => n.to_string(),
        };
        let off = |d: Option<Duration>| d.map_or("0".to_owned(), time);
        let name = |v: &dyn std::fmt::Debug| format!("{v:?}").to_ascii_lowercase();
        let list = |v: &[String]| {
            if v.is_empty() {
                "any".to_owned()
            } else {
                v.join(",")
            }
        };
        vec![
            (
                "app",
                format!("{}:{}", self.destination_hostname, self.destination_port),
            ),
            ("proxy_protocol", name(&self.proxy_protocol)),
            (
                "trusted_proxies",
                list(
                    &self
                        .trusted_proxies
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>(),
                ),
            ),
            ("proxy_header_timeout", time(self.proxy_header_timeout)),
            ("request_header_timeout", time(self.request_header_timeout)),
            ("keepalive_timeout", time(self.keepalive_timeout)),
            ("connect_timeout", time(self.connect_timeout)),
            ("response_timeout", time(self.response_timeout)),
            ("send_timeout", off(self.send_timeout)),
            ("websocket_idle_timeout", off(self.websocket_idle_timeout)),
            ("max_connections", self.max_connections.to_string()),
            ("max_header_bytes", size(self.max_header_bytes as u64)),
            ("max_body_bytes", size(self.max_body_bytes.unwrap_or(0))),
            ("destination_protocol", name(&self.destination_protocol)),
            ("h2_max_streams", self.h2_max_streams.to_string()),
            ("upgrade_protocols", self.upgrade_protocols.join(",")),
            ("shutdown_delay", time(self.shutdown_delay)),
            ("shutdown_timeout", time(self.shutdown_timeout)),
            (
                "shutdown_ping_status",
                self.shutdown_ping_status.status().to_string(),
            ),
            (
                "metrics",
                self.metrics_listen
                    .map_or("off".to_owned(), |a| a.to_string()),
            ),
            ("log_format", name(&self.log_format)),
            ("log_health_checks", self.log_health_checks.to_string()),
            ("rust_log", self.log_filter.clone()),
            ("tcp_keepalive", off(self.tcp_keepalive)),
            (
                "vpc_endpoint_header",
                self.vpc_endpoint_header
                    .as_ref()
                    .map_or(String::new(), |h| h.as_str().to_owned()),
            ),
            ("allowed_vpc_endpoints", list(&self.allowed_vpc_endpoints)),
            (
                "request_id_header",
                self.request_id_header
                    .as_ref()
                    .map_or(String::new(), |h| h.as_str().to_owned()),
            ),
            ("amzn_trace_id", self.amzn_trace_id.to_string()),
            ("tls_mode", name(&self.tls.mode)),
            (
                "tls_client_auth",
                if self.tls.client_ca_file.is_none() {
                    "off".to_owned()
                } else {
                    name(&self.tls.client_auth)
                },
            ),
        ]
    }
}
