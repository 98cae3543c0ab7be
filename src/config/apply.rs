//! Parsing each variable's value: the rules a value must follow and the message that names
//! the variable when it does not. Defaults go through the same parsers (see [`SETTINGS`]).

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::tls::RawTls;
use super::{
    Config, ConfigError, DestinationProtocol, LogFormat, PingWhileDraining, ProxyProtocol,
};
#[cfg(doc)]
use crate::config::settings::SETTINGS;
use crate::config::settings::{
    default_of, parse_app_header, parse_cidrs, parse_duration, parse_endpoint_header,
    parse_endpoints, parse_protocols, parse_size,
};

/// The raw variables as `envy` collects them; all strings, parsed below.
#[derive(Deserialize, Default)]
pub(super) struct RawEnv {
    pub(super) listen_on: Option<String>,
    pub(super) listen_on_tls: Option<String>,
    pub(super) destination_hostname: Option<String>,
    pub(super) destination_port: Option<String>,
    pub(super) listen_address: Option<String>,
    pub(super) proxy_protocol: Option<String>,
    pub(super) trusted_proxies: Option<String>,
    pub(super) proxy_header_timeout: Option<String>,
    pub(super) request_header_timeout: Option<String>,
    pub(super) keepalive_timeout: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) response_timeout: Option<String>,
    pub(super) websocket_idle_timeout: Option<String>,
    pub(super) send_timeout: Option<String>,
    pub(super) max_connections: Option<String>,
    pub(super) max_header_bytes: Option<String>,
    pub(super) max_body_bytes: Option<String>,
    pub(super) upgrade_protocols: Option<String>,
    pub(super) destination_protocol: Option<String>,
    pub(super) h2_max_streams: Option<String>,
    pub(super) shutdown_delay: Option<String>,
    pub(super) shutdown_timeout: Option<String>,
    pub(super) shutdown_ping_status: Option<String>,
    pub(super) metrics_listen: Option<String>,
    pub(super) log_format: Option<String>,
    pub(super) log_health_checks: Option<String>,
    pub(super) rust_log: Option<String>,
    pub(super) tcp_keepalive: Option<String>,
    pub(super) vpc_endpoint_header: Option<String>,
    pub(super) allowed_vpc_endpoints: Option<String>,
    pub(super) request_id_header: Option<String>,
    pub(super) amzn_trace_id: Option<String>,
    pub(super) tls_mode: Option<String>,
    pub(super) tls_cert_file: Option<String>,
    pub(super) tls_key_file: Option<String>,
    pub(super) tls_cert_dir: Option<String>,
    pub(super) tls_self_signed: Option<String>,
    pub(super) tls_min_version: Option<String>,
    pub(super) tls_client_ca_file: Option<String>,
    pub(super) tls_client_auth: Option<String>,
    pub(super) client_cert_header: Option<String>,
    pub(super) tls_reload_interval: Option<String>,
}

impl Config {
    /// Sets every optional setting from `raw`, or from its default in [`SETTINGS`] when unset:
    /// both go through the same parser.
    pub(super) fn apply(&mut self, raw: RawEnv) -> Result<(), ConfigError> {
        let duration = |(name, v): (&'static str, String)| {
            parse_duration(&v).ok_or_else(|| invalid(name, DURATION, v))
        };
        let positive = |(name, v): (&'static str, String)| match duration((name, v.clone()))? {
            d if d.is_zero() => Err(invalid(name, "a duration greater than zero", v)),
            d => Ok(d),
        };
        let (name, v) = value("LISTEN_ADDRESS", raw.listen_address);
        self.listen_address = v
            .trim()
            .parse()
            .map_err(|_| invalid(name, "an IP address such as 0.0.0.0 or ::", v))?;
        let (name, v) = value("PROXY_PROTOCOL", raw.proxy_protocol);
        self.proxy_protocol = match v.trim().to_ascii_lowercase().as_str() {
            "required" => ProxyProtocol::Required,
            "optional" => ProxyProtocol::Optional,
            "off" => ProxyProtocol::Off,
            _ => return Err(invalid(name, "one of required, optional, off", v)),
        };
        let (name, v) = value("TRUSTED_PROXIES", raw.trusted_proxies);
        self.trusted_proxies = if v.trim().eq_ignore_ascii_case("any") {
            Vec::new()
        } else {
            let expected = "comma-separated CIDRs such as 10.0.0.0/8,fd00::/8, or any";
            parse_cidrs(&v).ok_or_else(|| invalid(name, expected, v.clone()))?
        };
        self.proxy_header_timeout =
            positive(value("PROXY_HEADER_TIMEOUT", raw.proxy_header_timeout))?;
        self.request_header_timeout =
            positive(value("REQUEST_HEADER_TIMEOUT", raw.request_header_timeout))?;
        self.keepalive_timeout = positive(value("KEEPALIVE_TIMEOUT", raw.keepalive_timeout))?;
        self.connect_timeout = positive(value("CONNECT_TIMEOUT", raw.connect_timeout))?;
        self.response_timeout = positive(value("RESPONSE_TIMEOUT", raw.response_timeout))?;
        let idle = duration(value("WEBSOCKET_IDLE_TIMEOUT", raw.websocket_idle_timeout))?;
        self.websocket_idle_timeout = (!idle.is_zero()).then_some(idle);
        let send = duration(value("SEND_TIMEOUT", raw.send_timeout))?;
        self.send_timeout = (!send.is_zero()).then_some(send);
        self.shutdown_delay = duration(value("SHUTDOWN_DELAY", raw.shutdown_delay))?;
        self.shutdown_timeout = duration(value("SHUTDOWN_TIMEOUT", raw.shutdown_timeout))?;
        let (name, v) = value("SHUTDOWN_PING_STATUS", raw.shutdown_ping_status);
        self.shutdown_ping_status = match v.trim() {
            "503" => PingWhileDraining::Unavailable,
            "200" => PingWhileDraining::Healthy,
            _ => return Err(invalid(name, "503 or 200", v)),
        };
        let (name, v) = value("MAX_CONNECTIONS", raw.max_connections);
        self.max_connections = match v.trim().parse::<usize>() {
            Ok(n) if (1..=1_000_000).contains(&n) => n,
            _ => return Err(invalid(name, "a whole number from 1 to 1000000", v)),
        };
        let (name, v) = value("MAX_HEADER_BYTES", raw.max_header_bytes);
        self.max_header_bytes = match parse_size(&v) {
            Some(n) if (1024..=1024 * 1024).contains(&n) => n as usize,
            _ => {
                let expected = "a size from 1KiB to 1MiB, such as 64KiB or 16384";
                return Err(invalid(name, expected, v));
            }
        };
        let (name, v) = value("MAX_BODY_BYTES", raw.max_body_bytes);
        let n = parse_size(&v)
            .ok_or_else(|| invalid(name, "a size such as 10MiB, 1GB or 0 for no limit", v))?;
        self.max_body_bytes = (n > 0).then_some(n);
        let (name, v) = value("UPGRADE_PROTOCOLS", raw.upgrade_protocols);
        self.upgrade_protocols = parse_protocols(&v).ok_or_else(|| {
            invalid(
                name,
                "comma-separated protocol names such as websocket (never h2c)",
                v,
            )
        })?;
        let (name, v) = value("DESTINATION_PROTOCOL", raw.destination_protocol);
        self.destination_protocol = match v.trim().to_ascii_lowercase().as_str() {
            "http1" => DestinationProtocol::Http1,
            "h2c" => DestinationProtocol::H2c,
            "auto" => DestinationProtocol::Auto,
            _ => return Err(invalid(name, "one of http1, h2c, auto", v)),
        };
        let (name, v) = value("H2_MAX_STREAMS", raw.h2_max_streams);
        self.h2_max_streams = match v.trim().parse::<u32>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => return Err(invalid(name, "a whole number from 1 to 10000", v)),
        };
        let (name, v) = value("METRICS_LISTEN", raw.metrics_listen);
        self.metrics_listen = if v.trim().eq_ignore_ascii_case("off") {
            None
        } else {
            let addr: SocketAddr = v.trim().parse().map_err(|_| {
                invalid(name, "address:port such as 0.0.0.0:9090, or off", v.clone())
            })?;
            if addr.port() != 0 && [self.listen_on, self.listen_on_tls].contains(&addr.port()) {
                return Err(invalid(
                    name,
                    "a port other than LISTEN_ON and LISTEN_ON_TLS",
                    v,
                ));
            }
            Some(addr)
        };
        let (name, v) = value("LOG_FORMAT", raw.log_format);
        self.log_format = match v.trim().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(invalid(name, "text or json", v)),
        };
        self.log_health_checks = boolean(value("LOG_HEALTH_CHECKS", raw.log_health_checks))?;
        let (name, v) = value("RUST_LOG", raw.rust_log);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(v.trim()) {
            return Err(invalid(
                name,
                &format!("a log level or filter such as warn, debug or elb_ws_proxy=debug ({e})"),
                v,
            ));
        }
        self.log_filter = v.trim().to_owned();
        let keepalive = duration(value("TCP_KEEPALIVE", raw.tcp_keepalive))?;
        self.tcp_keepalive = match keepalive.as_secs() {
            0 if keepalive.is_zero() => None,
            // The kernel counts keepalive time in whole seconds, at most 32767.
            1..=32767 => Some(keepalive),
            _ => {
                let expected = "whole seconds from 1s to 32767s, or 0 for off";
                return Err(invalid("TCP_KEEPALIVE", expected, format!("{keepalive:?}")));
            }
        };
        let (name, v) = value("VPC_ENDPOINT_HEADER", raw.vpc_endpoint_header);
        self.vpc_endpoint_header = parse_endpoint_header(&v).ok_or_else(|| {
            let expected = "a header name such as X-Amzn-Vpce-Id that the proxy does not otherwise set, or empty (off)";
            invalid(name, expected, v.clone())
        })?;
        let (name, v) = value("ALLOWED_VPC_ENDPOINTS", raw.allowed_vpc_endpoints);
        self.allowed_vpc_endpoints = parse_endpoints(&v).ok_or_else(|| {
            let expected =
                "comma-separated VPC endpoint ids such as vpce-0123456789abcdef0, or any";
            invalid(name, expected, v.clone())
        })?;
        let (name, v) = value("REQUEST_ID_HEADER", raw.request_id_header);
        let traced = ["x-amzn-trace-id", "traceparent", "tracestate"];
        let taken = |h: &http::HeaderName| {
            traced.contains(&h.as_str()) || self.vpc_endpoint_header.as_ref() == Some(h)
        };
        self.request_id_header = match parse_app_header(&v) {
            Some(h) if !h.as_ref().is_some_and(taken) => h,
            _ => {
                let expected = "a header name such as X-Request-Id that the proxy does not otherwise set, or empty (off)";
                return Err(invalid(name, expected, v));
            }
        };
        self.amzn_trace_id = boolean(value("AMZN_TRACE_ID", raw.amzn_trace_id))?;
        self.tls = RawTls {
            mode: raw.tls_mode,
            cert_file: raw.tls_cert_file,
            key_file: raw.tls_key_file,
            cert_dir: raw.tls_cert_dir,
            self_signed: raw.tls_self_signed,
            min_version: raw.tls_min_version,
            client_ca_file: raw.tls_client_ca_file,
            client_auth: raw.tls_client_auth,
            client_cert_header: raw.client_cert_header,
            reload_interval: raw.tls_reload_interval,
        }
        .parse()?;
        Ok(())
    }
}

/// The variable's value, or its default from [`SETTINGS`] when unset.
pub(super) fn value(name: &'static str, v: Option<String>) -> (&'static str, String) {
    (name, v.unwrap_or_else(|| default_of(name).to_owned()))
}

/// `true`/`yes`/`1`/`on` or `false`/`no`/`0`/`off`, any case.
pub(super) fn boolean((name, v): (&'static str, String)) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(invalid(name, "true or false", v)),
    }
}

pub(super) const PORT: &str = "a TCP port number from 1 to 65535";
pub(super) const LISTEN_PORT: &str = "a TCP port number from 1 to 65535 (0: any free port)";
pub(super) const HOST: &str = "a host name or IP address, such as app or 10.0.0.5";
pub(super) const DURATION: &str = "a duration such as 500ms, 5s, 2m, 1h or a number of seconds";

pub(super) fn invalid(variable: &'static str, expected: &str, found: String) -> ConfigError {
    ConfigError {
        variable,
        expected: expected.to_owned(),
        found: Some(found),
    }
}

pub(super) fn required(
    variable: &'static str,
    v: Option<String>,
    expected: &str,
) -> Result<String, ConfigError> {
    v.ok_or_else(|| ConfigError {
        variable,
        expected: expected.to_owned(),
        found: None,
    })
}

/// A port to listen on: `0` asks the system for a free one, which the start-up line reports
/// (the test suite runs the binary that way).
pub(super) fn listen_port(variable: &'static str, v: String) -> Result<u16, ConfigError> {
    match v.trim().parse::<u16>() {
        Ok(p) => Ok(p),
        _ => Err(invalid(variable, LISTEN_PORT, v)),
    }
}

pub(super) fn port(variable: &'static str, v: String) -> Result<u16, ConfigError> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(invalid(variable, PORT, v)),
    }
}

/// Accepts DNS names and IP literals; rejects URLs and host:port, the usual copy-paste mistakes.
pub(super) fn hostname(variable: &'static str, v: String) -> Result<String, ConfigError> {
    let h = v.trim();
    if h.parse::<IpAddr>().is_ok() {
        return Ok(h.to_owned());
    }
    let ok = h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
        });
    if ok {
        Ok(h.to_owned())
    } else {
        Err(invalid(
            variable,
            &format!("{HOST} (no scheme, no port)"),
            v,
        ))
    }
}
