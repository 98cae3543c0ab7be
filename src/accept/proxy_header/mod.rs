//! Reading the PROXY protocol header (v1 text or v2 binary) that the load balancer writes first,
//! and deciding from it who the client is and whether the connection may go on.
//!
//! [`sniff`] classifies bytes; [`read_origin`] drives it over a socket with its clocks. Bytes
//! that arrive after the header in the same read are handed back so the HTTP parser sees them
//! intact.

mod sniff;

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{Config, ProxyProtocol};

pub use sniff::{sniff, Sniff, MAX_HEADER_LEN};

/// Where a connection really comes from, once the header (if any) has been read.
#[derive(Debug)]
pub struct Origin {
    /// The client address to report upstream.
    pub client: SocketAddr,
    /// The port the client connected to on the balancer, when the header says.
    pub destination_port: Option<u16>,
    /// Bytes read past the header; the start of the HTTP request.
    pub leftover: Bytes,
    /// No header was sent and the connection opened with a `/ping`: answer health checks only.
    pub health_only: bool,
    /// The AWS VPC endpoint the client came through, from the v2 header's TLV.
    pub vpce: Option<String>,
}

/// Why a connection was closed before any HTTP was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Closed (or reset) without sending a byte: a balancer's health check or probe.
    Empty,
    /// Sent nothing for `KEEPALIVE_TIMEOUT`: an unused preconnect or pooled connection.
    Idle,
    Missing,
    Malformed(String),
    Timeout,
    Untrusted,
    Closed,
    Io(String),
    /// `ALLOWED_VPC_ENDPOINTS` is set and the header named another endpoint, or none.
    VpcEndpoint(Option<String>),
}

impl Refusal {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Empty => "empty",
            Refusal::Idle => "idle_before_header",
            Refusal::Missing => "proxy_header_missing",
            Refusal::Malformed(_) => "proxy_header_malformed",
            Refusal::Timeout => "proxy_header_timeout",
            Refusal::Untrusted => "untrusted_peer",
            Refusal::Closed => "closed_before_header",
            Refusal::Io(_) => "io_error",
            Refusal::VpcEndpoint(_) => "vpc_endpoint_not_allowed",
        }
    }

    /// Every label, for metrics created at start-up.
    pub const LABELS: [&'static str; 9] = [
        "empty",
        "idle_before_header",
        "proxy_header_missing",
        "proxy_header_malformed",
        "proxy_header_timeout",
        "untrusted_peer",
        "closed_before_header",
        "io_error",
        "vpc_endpoint_not_allowed",
    ];

    /// Health checks and probes do this many times a minute: counted, logged at `debug` only.
    pub fn quiet(&self) -> bool {
        matches!(self, Refusal::Empty | Refusal::Idle)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Empty => f.write_str("closed without sending a byte"),
            Refusal::Idle => f.write_str("nothing sent within KEEPALIVE_TIMEOUT"),
            Refusal::Missing => f.write_str("no PROXY protocol header (PROXY_PROTOCOL=required)"),
            Refusal::Malformed(why) => f.write_str(why),
            Refusal::Timeout => {
                f.write_str("PROXY protocol header did not arrive in time (PROXY_HEADER_TIMEOUT)")
            }
            Refusal::Untrusted => f.write_str("peer is not in TRUSTED_PROXIES"),
            Refusal::Closed => {
                f.write_str("peer closed the connection before sending a PROXY header")
            }
            Refusal::Io(e) => write!(f, "read error before the PROXY header: {e}"),
            Refusal::VpcEndpoint(Some(id)) => {
                write!(f, "VPC endpoint {id} is not in ALLOWED_VPC_ENDPOINTS")
            }
            Refusal::VpcEndpoint(None) => {
                f.write_str("no VPC endpoint id in the header (ALLOWED_VPC_ENDPOINTS is set)")
            }
        }
    }
}

/// Reads the PROXY header according to the configured mode.
///
/// Its clock starts at its first byte: an NLB sends the header only together with the client's
/// first payload, so before that the connection is merely idle (closed after
/// `KEEPALIVE_TIMEOUT`); once a byte has come, the whole header must follow within
/// `PROXY_HEADER_TIMEOUT`.
///
/// A peer outside `TRUSTED_PROXIES` may not claim an address. Loopback peers are the one
/// exception for headers that claim none (v2 `LOCAL`, v1 `UNKNOWN`): that is what
/// `elb-ws-proxy healthcheck` sends from inside the container, in every mode.
pub async fn read_origin(
    stream: &mut TcpStream,
    peer: SocketAddr,
    config: &Config,
) -> Result<Origin, Refusal> {
    let trusted = config.is_trusted(peer.ip());
    let local_probe_allowed = trusted || peer.ip().is_loopback();
    let plain = |leftover: Bytes| Origin {
        client: peer,
        destination_port: None,
        leftover,
        health_only: false,
        vpce: None,
    };
    match config.proxy_protocol {
        ProxyProtocol::Off => return Ok(plain(Bytes::new())),
        ProxyProtocol::Required if !local_probe_allowed => return Err(Refusal::Untrusted),
        _ => {}
    }
    let mut buf = Vec::with_capacity(512);
    match tokio::time::timeout(config.keepalive_timeout, read_more(stream, &mut buf)).await {
        Err(_) => return Err(Refusal::Idle),
        // A reset before any byte is how some probes end, too.
        Ok(Err(Refusal::Closed | Refusal::Io(_))) => return Err(Refusal::Empty),
        Ok(result) => result?,
    }
    let read = tokio::time::timeout(config.proxy_header_timeout, read_sniffed(stream, buf));
    let (sniffed, buf) = read.await.map_err(|_| Refusal::Timeout)??;
    let allowed = |vpce: &Option<String>| {
        let list = &config.allowed_vpc_endpoints;
        list.is_empty() || vpce.as_ref().is_some_and(|id| list.contains(id))
    };
    match sniffed {
        Sniff::Header {
            source: Some(_), ..
        } if !trusted => Err(Refusal::Untrusted),
        Sniff::Header { source: None, .. } if !local_probe_allowed => Err(Refusal::Untrusted),
        // Health checks (LOCAL, UNKNOWN) carry no endpoint id and always pass.
        Sniff::Header {
            source: Some(_),
            vpce,
            ..
        } if !allowed(&vpce) => Err(Refusal::VpcEndpoint(vpce)),
        Sniff::Header {
            len,
            source,
            destination_port,
            vpce,
        } => Ok(Origin {
            client: source.unwrap_or(peer),
            destination_port,
            leftover: Bytes::copy_from_slice(&buf[len..]),
            health_only: false,
            vpce,
        }),
        Sniff::Invalid(why) => Err(Refusal::Malformed(why)),
        Sniff::Ping if config.proxy_protocol == ProxyProtocol::Required => Ok(Origin {
            health_only: true,
            ..plain(Bytes::from(buf))
        }),
        Sniff::Ping => Ok(plain(Bytes::from(buf))),
        Sniff::NoHeader if config.proxy_protocol == ProxyProtocol::Optional => {
            if allowed(&None) {
                Ok(plain(Bytes::from(buf)))
            } else {
                Err(Refusal::VpcEndpoint(None))
            }
        }
        _ => Err(Refusal::Missing),
    }
}

/// One read onto `buf`, at most up to [`MAX_HEADER_LEN`] in all.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Refusal> {
    let room = MAX_HEADER_LEN.saturating_sub(buf.len()).max(1);
    let mut limited = (&mut *stream).take(room as u64);
    match limited.read_buf(buf).await {
        Ok(0) => Err(Refusal::Closed),
        Ok(_) => Ok(()),
        Err(e) => Err(Refusal::Io(e.to_string())),
    }
}

/// Reads until [`sniff`] can decide about `buf` and what follows; returns its verdict and
/// every byte read.
async fn read_sniffed(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
) -> Result<(Sniff, Vec<u8>), Refusal> {
    loop {
        match sniff(&buf) {
            Sniff::NeedMore if buf.len() < MAX_HEADER_LEN => read_more(stream, &mut buf).await?,
            Sniff::NeedMore => return Ok((Sniff::Invalid("PROXY header too long".into()), buf)),
            verdict => return Ok((verdict, buf)),
        }
    }
}
