//! Settings, read from environment variables and validated before any socket is bound.
//!
//! `envy` collects the variables; every value is then parsed here by hand so that a bad one
//! produces a single line naming the variable and what was expected, instead of a serde error.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

mod apply;
pub mod settings;
mod summary;
mod tls;

pub use tls::{ClientAuth, TlsMode, TlsSettings, TlsVersion};

pub use crate::config::settings::{
    leftover_overrides, parse_duration, parse_size, Setting, REQUIRED, SETTINGS,
};
use apply::{hostname, invalid, listen_port, port, required, RawEnv, HOST, PORT};

/// Whether connections must, may or must not begin with a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Required,
    Optional,
    Off,
}

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// `LISTEN_ON`: redirect to https.
    Plain,
    /// `LISTEN_ON_TLS`: forward to the app.
    Tls,
}

/// How requests reach the app (`DESTINATION_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationProtocol {
    /// Every request over pooled HTTP/1.1 connections.
    Http1,
    /// Every request over cleartext HTTP/2 with prior knowledge.
    H2c,
    /// HTTP/2 clients over h2c, HTTP/1.1 clients over HTTP/1.1.
    Auto,
}

/// What `/ping` answers once a shutdown has begun (`SHUTDOWN_PING_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingWhileDraining {
    /// `503`: the balancer's health check fails and it takes the target out.
    Unavailable,
    /// `200`: healthy until the orchestrator deregisters the target; an NLB resets a target's
    /// connections when it turns unhealthy unless told otherwise.
    Healthy,
}

impl PingWhileDraining {
    /// The status `/ping` answers with, as `SHUTDOWN_PING_STATUS` is written.
    pub fn status(self) -> u16 {
        match self {
            PingWhileDraining::Unavailable => 503,
            PingWhileDraining::Healthy => 200,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration. Tests build it with [`Config::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// `LISTEN_ADDRESS`: the address both listeners bind.
    pub listen_address: IpAddr,
    /// `LISTEN_ON`: the plain-HTTP port (redirects to https).
    pub listen_on: u16,
    /// `LISTEN_ON_TLS`: the port whose requests are forwarded to the app.
    pub listen_on_tls: u16,
    /// `DESTINATION_HOSTNAME`: the app's name, resolved on every new upstream connection.
    pub destination_hostname: String,
    /// `DESTINATION_PORT`: the app's port.
    pub destination_port: u16,
    /// `PROXY_PROTOCOL`: whether a PROXY header must, may or must not come first.
    pub proxy_protocol: ProxyProtocol,
    /// `TRUSTED_PROXIES`: who may send a PROXY header; empty trusts everyone.
    pub trusted_proxies: Vec<IpNet>,
    /// `PROXY_HEADER_TIMEOUT`: time for the PROXY header.
    pub proxy_header_timeout: Duration,
    /// `REQUEST_HEADER_TIMEOUT`: time for a request head once it has started.
    pub request_header_timeout: Duration,
    /// `KEEPALIVE_TIMEOUT`: an idle client connection closes after this.
    pub keepalive_timeout: Duration,
    /// `CONNECT_TIMEOUT`: time to connect to the app (then `502`).
    pub connect_timeout: Duration,
    /// `RESPONSE_TIMEOUT`: time for the app's response headers (then `504`).
    pub response_timeout: Duration,
    /// `SEND_TIMEOUT`: a client that takes none of the bytes waiting for it for this long is
    /// disconnected; `None` never.
    pub send_timeout: Option<Duration>,
    /// `WEBSOCKET_IDLE_TIMEOUT`: an idle tunnel closes after this; `None` never.
    pub websocket_idle_timeout: Option<Duration>,
    /// `MAX_CONNECTIONS`: open client connections at most.
    pub max_connections: usize,
    /// `MAX_HEADER_BYTES`: larger request heads get `431`.
    pub max_header_bytes: usize,
    /// `MAX_BODY_BYTES`: larger request bodies get `413`; `None` is no limit.
    pub max_body_bytes: Option<u64>,
    /// `DESTINATION_PROTOCOL`: HTTP/1.1, h2c, or each client's own.
    pub destination_protocol: DestinationProtocol,
    /// `H2_MAX_STREAMS`: concurrent streams per HTTP/2 client connection.
    pub h2_max_streams: u32,
    /// `UPGRADE_PROTOCOLS`: the `Upgrade` protocols honoured, lower-case.
    pub upgrade_protocols: Vec<String>,
    /// `SHUTDOWN_DELAY`: after SIGTERM, serve on while `/ping` answers `503`.
    pub shutdown_delay: Duration,
    /// `SHUTDOWN_TIMEOUT`: then let in-flight work finish for at most this.
    pub shutdown_timeout: Duration,
    /// `SHUTDOWN_PING_STATUS`: what `/ping` answers from SIGTERM on.
    pub shutdown_ping_status: PingWhileDraining,
    /// `METRICS_LISTEN`: where `/metrics` is served; `None` is off.
    pub metrics_listen: Option<SocketAddr>,
    /// `LOG_FORMAT`: text or JSON lines.
    pub log_format: LogFormat,
    /// `LOG_HEALTH_CHECKS`: `/ping` requests get access lines too.
    pub log_health_checks: bool,
    /// `RUST_LOG`: the log filter, checked at start-up like any other setting.
    pub log_filter: String,
    /// `TCP_KEEPALIVE`: idle time before keepalive probes on client and app sockets; `None` off.
    pub tcp_keepalive: Option<Duration>,
    /// `VPC_ENDPOINT_HEADER`: the header carrying the PrivateLink endpoint id; `None` not sent.
    pub vpc_endpoint_header: Option<http::HeaderName>,
    /// `ALLOWED_VPC_ENDPOINTS`: endpoint ids a connection must come through; empty allows all.
    pub allowed_vpc_endpoints: Vec<String>,
    /// `REQUEST_ID_HEADER`: the header carrying each request's id; `None` is off.
    pub request_id_header: Option<http::HeaderName>,
    /// `AMZN_TRACE_ID`: the app gets an `X-Amzn-Trace-Id`.
    pub amzn_trace_id: bool,
    /// The `TLS_*` settings and `CLIENT_CERT_HEADER`.
    pub tls: TlsSettings,
}

/// A setting that is missing or malformed: names the variable, what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub expected: String,
    pub found: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.found {
            None => write!(
                f,
                "{} is not set: expected {}",
                self.variable, self.expected
            ),
            Some(v) => write!(
                f,
                "{}={:?} is invalid: expected {}",
                self.variable, v, self.expected
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// A configuration with every optional setting at its documented default
    /// ([`SETTINGS`]). Tests use it with port 0 and adjust fields.
    pub fn new(
        listen_on: u16,
        listen_on_tls: u16,
        destination_hostname: &str,
        destination_port: u16,
    ) -> Self {
        let mut c = Config {
            listen_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen_on,
            listen_on_tls,
            destination_hostname: destination_hostname.to_owned(),
            destination_port,
            proxy_protocol: ProxyProtocol::Required,
            trusted_proxies: Vec::new(),
            proxy_header_timeout: Duration::ZERO,
            request_header_timeout: Duration::ZERO,
            keepalive_timeout: Duration::ZERO,
            connect_timeout: Duration::ZERO,
            response_timeout: Duration::ZERO,
            send_timeout: None,
            websocket_idle_timeout: None,
            max_connections: 0,
            max_header_bytes: 0,
            max_body_bytes: None,
            upgrade_protocols: Vec::new(),
            destination_protocol: DestinationProtocol::Http1,
            h2_max_streams: 0,
            shutdown_delay: Duration::ZERO,
            shutdown_timeout: Duration::ZERO,
            shutdown_ping_status: PingWhileDraining::Unavailable,
            metrics_listen: None,
            log_format: LogFormat::Text,
            log_health_checks: false,
            log_filter: String::new(),
            tcp_keepalive: None,
            vpc_endpoint_header: None,
            allowed_vpc_endpoints: Vec::new(),
            request_id_header: None,
            amzn_trace_id: false,
            tls: TlsSettings::off(),
        };
        c.apply(RawEnv::default())
            .expect("every default in SETTINGS is a valid value");
        c
    }

    /// Reads and validates the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads and validates the given variables (the environment, or a test's list).
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(
        vars: I,
    ) -> Result<Self, ConfigError> {
        // Empty values count as unset, as they do for most container tooling, except where
        // empty is documented to mean "off".
        let vars = vars.into_iter().filter_map(|(k, v)| match v.trim() {
            "" if [
                "VPC_ENDPOINT_HEADER",
                "CLIENT_CERT_HEADER",
                "REQUEST_ID_HEADER",
            ]
            .contains(&k.as_str()) =>
            {
                Some((k, "off".to_owned()))
            }
            "" => None,
            _ => Some((k, v)),
        });
        let raw: RawEnv = envy::from_iter(vars).map_err(|e| ConfigError {
            variable: "environment",
            expected: "string values".into(),
            found: Some(e.to_string()),
        })?;
        let listen_on = listen_port(
            "LISTEN_ON",
            required("LISTEN_ON", raw.listen_on.clone(), PORT)?,
        )?;
        let tls = required("LISTEN_ON_TLS", raw.listen_on_tls.clone(), PORT)?;
        let listen_on_tls = listen_port("LISTEN_ON_TLS", tls)?;
        let host = required(
            "DESTINATION_HOSTNAME",
            raw.destination_hostname.clone(),
            HOST,
        )?;
        let destination_hostname = hostname("DESTINATION_HOSTNAME", host)?;
        let dest = required("DESTINATION_PORT", raw.destination_port.clone(), PORT)?;
        let destination_port = port("DESTINATION_PORT", dest)?;
        if listen_on == listen_on_tls && listen_on != 0 {
            return Err(invalid(
                "LISTEN_ON_TLS",
                "a port different from LISTEN_ON",
                listen_on_tls.to_string(),
            ));
        }
        let mut c = Config::new(
            listen_on,
            listen_on_tls,
            &destination_hostname,
            destination_port,
        );
        c.apply(raw)?;
        Ok(c)
    }

    /// Whether a peer may send a PROXY header (an empty list trusts everyone).
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.is_empty()
            || self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BASE: &[(&str, &str)] = &[
        ("LISTEN_ON", "81"),
        ("LISTEN_ON_TLS", "444"),
        ("DESTINATION_HOSTNAME", "backend"),
        ("DESTINATION_PORT", "8080"),
    ];

    fn with(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut v = vars(BASE);
        for (k, val) in extra {
            v.retain(|(name, _)| name != k);
            v.push((k.to_string(), val.to_string()));
        }
        Config::from_vars(v)
    }

    #[test]
    fn the_seed_four_variables_are_enough() {
        let c = with(&[]).unwrap();
        assert_eq!(
            (c.listen_on, c.listen_on_tls, c.destination_port),
            (81, 444, 8080)
        );
        assert_eq!(c.destination_hostname, "backend");
        assert_eq!(c.proxy_protocol, ProxyProtocol::Required);
        assert_eq!(c.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(c.max_body_bytes, None);
        assert_eq!(c.upgrade_protocols, ["websocket"]);
    }

    #[test]
    fn each_missing_required_variable_is_named() {
        for name in [
            "LISTEN_ON",
            "LISTEN_ON_TLS",
            "DESTINATION_HOSTNAME",
            "DESTINATION_PORT",
        ] {
            let mut v = vars(BASE);
            v.retain(|(k, _)| k != name);
            let err = Config::from_vars(v).unwrap_err();
            assert_eq!(err.variable, name);
            assert!(
                err.to_string().starts_with(&format!("{name} is not set")),
                "{err}"
            );
        }
    }

    #[test]
    fn malformed_values_name_the_variable_and_the_expectation() {
        let cases: &[(&str, &str)] = &[
            ("LISTEN_ON", "http"),
            ("DESTINATION_PORT", "0"),
            ("LISTEN_ON_TLS", "70000"),
            ("LISTEN_ON_TLS", "81"),
            ("DESTINATION_HOSTNAME", "http://app"),
            ("DESTINATION_HOSTNAME", "app:8080"),
            ("DESTINATION_PORT", "-1"),
            ("LISTEN_ADDRESS", "localhost"),
            ("PROXY_PROTOCOL", "yes"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("PROXY_HEADER_TIMEOUT", "5 seconds"),
            ("KEEPALIVE_TIMEOUT", "0"),
            ("SEND_TIMEOUT", "1 minute"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_HEADER_BYTES", "10"),
            ("MAX_BODY_BYTES", "lots"),
            ("METRICS_LISTEN", "9090"),
            ("LOG_FORMAT", "xml"),
            ("UPGRADE_PROTOCOLS", "websocket, h2c"),
            ("UPGRADE_PROTOCOLS", "h2c/1"),
            ("UPGRADE_PROTOCOLS", "web socket"),
            ("UPGRADE_PROTOCOLS", ","),
            ("DESTINATION_PROTOCOL", "h2"),
            ("H2_MAX_STREAMS", "0"),
            ("TCP_KEEPALIVE", "1.5s"),
            ("TCP_KEEPALIVE", "40000s"),
            ("VPC_ENDPOINT_HEADER", "X-Forwarded-For"),
            ("VPC_ENDPOINT_HEADER", "bad header"),
            ("ALLOWED_VPC_ENDPOINTS", "vpce-ABC"),
            ("LOG_HEALTH_CHECKS", "maybe"),
            ("RUST_LOG", "bogus==="),
            ("SHUTDOWN_PING_STATUS", "204"),
            ("REQUEST_ID_HEADER", "X-Forwarded-For"),
            ("REQUEST_ID_HEADER", "traceparent"),
            ("REQUEST_ID_HEADER", "X-Amzn-Vpce-Id"),
            ("REQUEST_ID_HEADER", "bad header"),
            ("AMZN_TRACE_ID", "sometimes"),
        ];
        for (name, value) in cases {
            let err = with(&[(name, value)]).unwrap_err();
            assert_eq!(&err.variable, name, "{name}={value}: {err}");
            let line = err.to_string();
            assert!(line.contains(name) && line.contains("expected"), "{line}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn optional_settings_parse() {
        let c = with(&[
            ("LISTEN_ADDRESS", "::"),
            ("PROXY_PROTOCOL", "Optional"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8,192.168.1.7"),
            ("REQUEST_HEADER_TIMEOUT", "500ms"),
            ("RESPONSE_TIMEOUT", "2m"),
            ("WEBSOCKET_IDLE_TIMEOUT", "1h"),
            ("SEND_TIMEOUT", "0"),
            ("SHUTDOWN_DELAY", "7"),
            ("MAX_HEADER_BYTES", "16KiB"),
            ("MAX_BODY_BYTES", "10MB"),
            ("METRICS_LISTEN", "127.0.0.1:9090"),
            ("LOG_FORMAT", "json"),
            ("UPGRADE_PROTOCOLS", "WebSocket, echo/2"),
        ])
        .unwrap();
        assert_eq!(c.upgrade_protocols, ["websocket", "echo/2"]);
        assert_eq!(c.listen_address, "::".parse::<IpAddr>().unwrap());
        assert_eq!(c.proxy_protocol, ProxyProtocol::Optional);
        assert_eq!(c.trusted_proxies.len(), 3);
        assert!(c.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(c.is_trusted("192.168.1.7".parse().unwrap()));
        assert!(!c.is_trusted("192.168.1.8".parse().unwrap()));
        assert_eq!(c.request_header_timeout, Duration::from_millis(500));
        assert_eq!(c.response_timeout, Duration::from_secs(120));
        assert_eq!(c.websocket_idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(c.send_timeout, None, "0 means never");
        assert_eq!(c.shutdown_delay, Duration::from_secs(7));
        assert_eq!(c.max_header_bytes, 16 * 1024);
        assert_eq!(c.max_body_bytes, Some(10_000_000));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn nlb_and_http2_settings_parse_with_their_defaults() {
        let d = with(&[]).unwrap();
        assert_eq!(d.tcp_keepalive, Some(Duration::from_secs(60)));
        assert_eq!(
            d.vpc_endpoint_header.as_ref().map(|h| h.as_str()),
            Some("x-amzn-vpce-id")
        );
        assert!(d.allowed_vpc_endpoints.is_empty());
        assert!(!d.log_health_checks);
        assert_eq!(d.destination_protocol, DestinationProtocol::Http1);
        assert_eq!(d.h2_max_streams, 100);
        assert_eq!(d.send_timeout, Some(Duration::from_secs(60)));
        let c = with(&[
            ("TCP_KEEPALIVE", "0"),
            ("VPC_ENDPOINT_HEADER", ""),
            (
                "ALLOWED_VPC_ENDPOINTS",
                "vpce-0a1b2c3d4e5f60718, vpce-11112222333344445",
            ),
            ("LOG_HEALTH_CHECKS", "true"),
            ("DESTINATION_PROTOCOL", "H2C"),
            ("H2_MAX_STREAMS", "250"),
        ])
        .unwrap();
        assert_eq!(c.tcp_keepalive, None);
        assert_eq!(c.vpc_endpoint_header, None, "empty means: do not send it");
        assert_eq!(
            c.allowed_vpc_endpoints,
            ["vpce-0a1b2c3d4e5f60718", "vpce-11112222333344445"]
        );
        assert!(c.log_health_checks);
        assert_eq!(c.destination_protocol, DestinationProtocol::H2c);
        assert_eq!(c.h2_max_streams, 250);
        let named = with(&[("VPC_ENDPOINT_HEADER", "X-Tenant-Endpoint")]).unwrap();
        assert_eq!(
            named.vpc_endpoint_header.as_ref().map(|h| h.as_str()),
            Some("x-tenant-endpoint")
        );
        let header = |c: &Config| c.request_id_header.as_ref().map(|h| h.as_str().to_owned());
        assert_eq!(header(&d).as_deref(), Some("x-request-id"));
        assert!(d.amzn_trace_id);
        let ids = with(&[("REQUEST_ID_HEADER", ""), ("AMZN_TRACE_ID", "false")]).unwrap();
        assert_eq!((header(&ids), ids.amzn_trace_id), (None, false));
        let own = with(&[("REQUEST_ID_HEADER", "X-Correlation-Id")]).unwrap();
        assert_eq!(header(&own).as_deref(), Some("x-correlation-id"));
    }

    #[test]
    fn every_parsed_variable_is_documented() {
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        for field in [
            "LISTEN_ON",
            "LISTEN_ON_TLS",
            "DESTINATION_HOSTNAME",
            "DESTINATION_PORT",
            "LISTEN_ADDRESS",
            "PROXY_PROTOCOL",
            "TRUSTED_PROXIES",
            "PROXY_HEADER_TIMEOUT",
            "REQUEST_HEADER_TIMEOUT",
            "KEEPALIVE_TIMEOUT",
            "CONNECT_TIMEOUT",
            "RESPONSE_TIMEOUT",
            "WEBSOCKET_IDLE_TIMEOUT",
            "SEND_TIMEOUT",
            "MAX_CONNECTIONS",
            "MAX_HEADER_BYTES",
            "MAX_BODY_BYTES",
            "SHUTDOWN_DELAY",
            "SHUTDOWN_TIMEOUT",
            "METRICS_LISTEN",
            "LOG_FORMAT",
            "LOG_HEALTH_CHECKS",
            "DESTINATION_PROTOCOL",
            "H2_MAX_STREAMS",
            "TCP_KEEPALIVE",
            "VPC_ENDPOINT_HEADER",
            "ALLOWED_VPC_ENDPOINTS",
        ] {
            assert!(names.contains(&field), "{field} missing from SETTINGS");
        }
    }

    #[test]
    fn config_override_files_are_named() {
        let dir =
            std::env::temp_dir().join(format!("elb-ws-proxy-overrides-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(leftover_overrides(&dir).is_empty());
        std::fs::write(dir.join("timeouts.conf"), "proxy_read_timeout 3600s;").unwrap();
        std::fs::write(dir.join("body.conf"), "client_max_body_size 50m;").unwrap();
        assert_eq!(leftover_overrides(&dir), ["body.conf", "timeouts.conf"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            leftover_overrides(&dir).is_empty(),
            "a missing folder is not an error"
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("KiB"), None);
    }
}
