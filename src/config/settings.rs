//! Every setting the proxy reads, with its default and meaning: the one table that `Config`,
//! `--help` and the README's settings table are derived from or checked against, and the
//! parsers for the value formats (durations, sizes).

use std::time::Duration;

use std::net::IpAddr;

use ipnet::IpNet;

/// One documented setting.
pub struct Setting {
    /// The environment variable.
    pub name: &'static str,
    /// Its default, as a user would write the value ([`REQUIRED`] when it has none); the
    /// configuration parses it like any other value, so this is the only place it is written.
    pub default: &'static str,
    /// What it does, for `--help` and the README.
    pub meaning: &'static str,
}

/// The `default` of a setting that must be given.
pub const REQUIRED: &str = "(required)";

/// The `default` of a setting that is simply absent unless given (a file or directory).
pub const NONE: &str = "(none)";

/// The default of `name`, as written in [`SETTINGS`].
pub(crate) fn default_of(name: &str) -> &'static str {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .map_or("", |s| s.default)
}

/// Every setting the proxy reads, in the order `--help` and the README list them.
pub const SETTINGS: &[Setting] = &[
    Setting { name: "LISTEN_ON", default: REQUIRED, meaning: "port for plain-HTTP connections from the balancer; every request is redirected to https" },
    Setting { name: "LISTEN_ON_TLS", default: REQUIRED, meaning: "port whose requests are forwarded to the app: TLS the balancer ended, or (TLS_MODE) TLS the proxy ends" },
    Setting { name: "DESTINATION_HOSTNAME", default: REQUIRED, meaning: "the app's host name or address, resolved on every new upstream connection" },
    Setting { name: "DESTINATION_PORT", default: REQUIRED, meaning: "the app's port" },
    Setting { name: "LISTEN_ADDRESS", default: "0.0.0.0", meaning: "address both listeners bind (`::` for IPv6 and IPv4)" },
    Setting { name: "PROXY_PROTOCOL", default: "required", meaning: "`required`, `optional` (use a header when present) or `off` (never read one)" },
    Setting { name: "TRUSTED_PROXIES", default: "any", meaning: "comma-separated CIDRs allowed to send PROXY headers; others are refused" },
    Setting { name: "PROXY_HEADER_TIMEOUT", default: "5s", meaning: "time for the PROXY header to arrive" },
    Setting { name: "REQUEST_HEADER_TIMEOUT", default: "10s", meaning: "time for a request's headers to arrive once it has started" },
    Setting { name: "KEEPALIVE_TIMEOUT", default: "75s", meaning: "idle client keep-alive connections are closed after this" },
    Setting { name: "CONNECT_TIMEOUT", default: "5s", meaning: "time to connect to the app before answering 502" },
    Setting { name: "RESPONSE_TIMEOUT", default: "60s", meaning: "time for the app's response headers before answering 504" },
    Setting { name: "SEND_TIMEOUT", default: "60s", meaning: "close a client connection that takes none of the bytes waiting for it for this long (0 = never)" },
    Setting { name: "WEBSOCKET_IDLE_TIMEOUT", default: "0", meaning: "close an upgraded connection idle this long in both directions (0 = never)" },
    Setting { name: "MAX_CONNECTIONS", default: "10000", meaning: "open client connections; further ones wait in the accept queue" },
    Setting { name: "MAX_HEADER_BYTES", default: "64KiB", meaning: "larger request headers get 431" },
    Setting { name: "MAX_BODY_BYTES", default: "0", meaning: "larger request bodies get 413 (0 = no limit)" },
    Setting { name: "DESTINATION_PROTOCOL", default: "http1", meaning: "how requests reach the app: `http1` (pooled HTTP/1.1), `h2c` (every request over cleartext HTTP/2, from HTTP/1.1 clients too; needed for gRPC), or `auto` (HTTP/2 clients over h2c, HTTP/1.1 clients over HTTP/1.1)" },
    Setting { name: "H2_MAX_STREAMS", default: "100", meaning: "concurrent streams an HTTP/2 client may open on one connection" },
    Setting { name: "UPGRADE_PROTOCOLS", default: "websocket", meaning: "comma-separated Upgrade protocols passed to the app (case-insensitive); others are removed, h2c never passes" },
    Setting { name: "TLS_MODE", default: "auto", meaning: "`auto`: end TLS for connections on LISTEN_ON_TLS that start a handshake, serve cleartext ones too; `required`: refuse cleartext (a header-less /ping excepted); `off`: never end TLS. `auto` is `off` without a certificate" },
    Setting { name: "TLS_CERT_FILE", default: NONE, meaning: "PEM file with the default certificate, its chain after it" },
    Setting { name: "TLS_KEY_FILE", default: NONE, meaning: "PEM file with the default certificate's key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519)" },
    Setting { name: "TLS_CERT_DIR", default: NONE, meaning: "directory of more certificates chosen by SNI: NAME.crt + NAME.key, or NAME/tls.crt + NAME/tls.key (a Kubernetes TLS secret)" },
    Setting { name: "TLS_SELF_SIGNED", default: "false", meaning: "`true` makes a default certificate at start-up (for NLB TLS target groups, which do not check it) and logs its fingerprint" },
    Setting { name: "TLS_MIN_VERSION", default: "1.2", meaning: "`1.2` or `1.3`" },
    Setting { name: "TLS_CLIENT_CA_FILE", default: NONE, meaning: "PEM bundle of the CAs that sign client certificates (mutual TLS)" },
    Setting { name: "TLS_CLIENT_AUTH", default: "required", meaning: "with TLS_CLIENT_CA_FILE: `required` (no valid certificate, no connection) or `optional`" },
    Setting { name: "CLIENT_CERT_HEADER", default: "X-Forwarded-Client-Cert", meaning: "header that carries a verified client certificate to the app (Hash, Subject, URI, DNS; empty = not sent); a client's copy is always removed" },
    Setting { name: "TLS_RELOAD_INTERVAL", default: "5s", meaning: "how often the certificate files are checked for changes" },
    Setting { name: "SHUTDOWN_DELAY", default: "0s", meaning: "after SIGTERM keep serving this long, every HTTP/1.1 response with `Connection: close` and HTTP/2 connections sent GOAWAY, so clients move to other targets" },
    Setting { name: "SHUTDOWN_TIMEOUT", default: "30s", meaning: "then stop accepting and let in-flight work finish for at most this long; WebSockets still open close one by one over it; a second SIGTERM or SIGINT ends it at once" },
    Setting { name: "SHUTDOWN_PING_STATUS", default: "503", meaning: "what /ping answers from SIGTERM on: `503` (the balancer takes the target out) or `200` (stay healthy until the orchestrator deregisters it, as on EKS)" },
    Setting { name: "METRICS_LISTEN", default: "off", meaning: "address:port for Prometheus metrics at /metrics" },
    Setting { name: "TCP_KEEPALIVE", default: "60s", meaning: "idle time before TCP keepalive probes on client and app sockets; a dead peer is dropped after about twice this (0 = off)" },
    Setting { name: "VPC_ENDPOINT_HEADER", default: "X-Amzn-Vpce-Id", meaning: "header that carries the PrivateLink endpoint id from the PROXY v2 header to the app (empty = not sent)" },
    Setting { name: "ALLOWED_VPC_ENDPOINTS", default: "any", meaning: "comma-separated VPC endpoint ids; connections through any other endpoint, or none, are refused" },
    Setting { name: "REQUEST_ID_HEADER", default: "X-Request-Id", meaning: "header carrying each request's id to the app and back to the client: the client's when printable and at most 128 bytes, otherwise 32 random hex digits (empty = off)" },
    Setting { name: "AMZN_TRACE_ID", default: "true", meaning: "`true` gives the app an X-Amzn-Trace-Id as an ALB does (Root=1-<time>-<random>), keeping a caller's valid one" },
    Setting { name: "LOG_FORMAT", default: "text", meaning: "`text` or `json` (one object per line)" },
    Setting { name: "LOG_HEALTH_CHECKS", default: "false", meaning: "`true` writes access lines for `/ping` too (they are always counted in metrics)" },
    Setting { name: "RUST_LOG", default: "info", meaning: "log level or filter (`warn`, `debug`, `elb_ws_proxy=debug`)" },
];

/// The settings and value formats as `--help` shows them: each setting on its own line with
/// its default, its meaning wrapped below it, so no value overruns a column.
pub fn help() -> String {
    const WIDTH: usize = 100;
    const INDENT: &str = "      ";
    let mut out = String::from("SETTINGS (environment variables):\n");
    for s in SETTINGS {
        out.push_str(&format!("  {}  default {}\n", s.name, s.default));
        let mut line = String::from(INDENT);
        for word in s.meaning.split(' ') {
            if line.len() > INDENT.len() && line.len() + 1 + word.len() > WIDTH {
                out.push_str(line.trim_end());
                out.push('\n');
                line = String::from(INDENT);
            }
            if line.len() > INDENT.len() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(
        "\nVALUES:\n\
         \x20 durations  500ms, 5s, 2m, 1h, or a number of seconds; 0 turns off a timeout whose meaning says so\n\
         \x20 sizes      a number of bytes, or with B, KiB, MiB, GiB (1024) or KB, MB, GB (1000): 64KiB\n\
         \x20 booleans   true or false (yes/no, on/off, 1/0)\n",
    );
    out
}

/// `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// A byte count: a bare number, or with `B`, `KiB`, `MiB`, `GiB` (1024) or `KB`, `MB`, `GB` (1000).
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

pub(crate) fn parse_cidrs(v: &str) -> Option<Vec<IpNet>> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// Files in the nginx image's `/config-overrides` folder, which this proxy does not read.
/// `main` warns with their names, so a user migrating with that mount still in place notices.
pub fn leftover_overrides(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `websocket, Foo/2` → `["websocket", "foo/2"]`; `None` if empty, not tokens, or `h2c`.
/// `VPC_ENDPOINT_HEADER`: `Some(name)`, `Some(None)` for off, `None` when invalid. The name may
/// not be one the proxy writes or frames by, or the two would be confused.
pub(crate) fn parse_endpoint_header(v: &str) -> Option<Option<http::HeaderName>> {
    let header = parse_app_header(v)?;
    let forwarded = header
        .as_ref()
        .is_some_and(|h| h.as_str().starts_with("x-forwarded-"));
    (!forwarded).then_some(header)
}

/// A header the proxy sets for the app (`CLIENT_CERT_HEADER`, and the endpoint header above),
/// or `off`: any name but those that frame or route the request or say where it came from.
pub(crate) fn parse_app_header(v: &str) -> Option<Option<http::HeaderName>> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("off") {
        return Some(None);
    }
    let name = http::HeaderName::from_bytes(v.as_bytes()).ok()?;
    let taken = [
        "host",
        "connection",
        "upgrade",
        "content-length",
        "transfer-encoding",
        "forwarded",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-port",
    ];
    (!taken.contains(&name.as_str())).then_some(Some(name))
}

/// `ALLOWED_VPC_ENDPOINTS`: `any` (or nothing) allows all; otherwise ids like
/// `vpce-0123456789abcdef0`, compared exactly.
pub(crate) fn parse_endpoints(v: &str) -> Option<Vec<String>> {
    if v.trim().eq_ignore_ascii_case("any") {
        return Some(Vec::new());
    }
    let ids: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let valid = |id: &String| {
        id.strip_prefix("vpce-").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
    };
    (!ids.is_empty() && ids.iter().all(valid)).then_some(ids)
}

pub(crate) fn parse_protocols(v: &str) -> Option<Vec<String>> {
    let list: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let token = |p: &String| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b))
    };
    let ok = !list.is_empty()
        && list.iter().all(token)
        && !list.iter().any(|p| p.split('/').next() == Some("h2c"));
    ok.then_some(list)
}
