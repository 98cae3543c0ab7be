//! Reading the PROXY protocol header (v1 text or v2 binary) that the load balancer writes first.
//!
//! [`sniff`] is a pure function over the bytes received so far, so it can be fuzzed and
//! property-tested; [`read_origin`] drives it over a socket with a deadline. Bytes that arrive
//! after the header in the same read are handed back so the HTTP parser sees them intact.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use ppp::{v1, v2, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{Config, ProxyProtocol};

/// A v2 header with TLVs larger than this is refused; AWS sends well under 100 bytes.
pub const MAX_HEADER_LEN: usize = 1024;

const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest legal v1 line, CRLF included.
const V1_MAX_LEN: usize = 107;
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// Health checks the balancer may send without a PROXY header.
const PING_PREFIXES: &[&[u8]] = &[b"GET /ping ", b"GET /ping?", b"HEAD /ping ", b"HEAD /ping?"];

/// What the bytes received so far say about the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// Not enough bytes to decide yet.
    NeedMore,
    /// A complete PROXY header of `len` bytes. `source` is `None` for `UNKNOWN` / `LOCAL`.
    Header {
        len: usize,
        source: Option<SocketAddr>,
        destination_port: Option<u16>,
    },
    /// No header, but the connection starts with a `/ping` health check.
    Ping,
    /// No header: the connection starts with something else.
    NoHeader,
    /// It claims to be a PROXY header but is malformed.
    Invalid(String),
}

/// Classifies the first bytes of a connection. Never panics, whatever the input.
pub fn sniff(buf: &[u8]) -> Sniff {
    if buf.is_empty() {
        return Sniff::NeedMore;
    }
    if is_prefix_either_way(buf, V2_SIGNATURE) {
        return sniff_v2(buf);
    }
    if is_prefix_either_way(buf, V1_PREFIX) {
        return sniff_v1(buf);
    }
    for ping in PING_PREFIXES {
        if buf.starts_with(ping) {
            return Sniff::Ping;
        }
    }
    if PING_PREFIXES.iter().any(|p| p.starts_with(buf)) {
        return Sniff::NeedMore;
    }
    Sniff::NoHeader
}

/// True when one of the two is a prefix of the other: either still possible, or already matched.
fn is_prefix_either_way(buf: &[u8], pattern: &[u8]) -> bool {
    let n = buf.len().min(pattern.len());
    buf[..n] == pattern[..n]
}

fn sniff_v1(buf: &[u8]) -> Sniff {
    // ppp reads a line cut just after a space as malformed, so it only ever sees a whole line.
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() < V1_MAX_LEN {
            Sniff::NeedMore
        } else {
            Sniff::Invalid(format!("PROXY v1 header longer than {V1_MAX_LEN} bytes"))
        };
    };
    let line = &buf[..=newline];
    if line.len() > V1_MAX_LEN {
        return Sniff::Invalid(format!("PROXY v1 header longer than {V1_MAX_LEN} bytes"));
    }
    match v1::Header::try_from(line) {
        Ok(h) if h.header.len() == line.len() => {
            let (source, destination_port) = match h.addresses {
                v1::Addresses::Tcp4(a) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(a.destination_port),
                ),
                v1::Addresses::Tcp6(a) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(a.destination_port),
                ),
                v1::Addresses::Unknown => (None, None),
            };
            Sniff::Header {
                len: line.len(),
                source,
                destination_port,
            }
        }
        Ok(_) => Sniff::Invalid("malformed PROXY v1 header: stray carriage return".into()),
        Err(e) => Sniff::Invalid(format!("malformed PROXY v1 header: {e}")),
    }
}

fn sniff_v2(buf: &[u8]) -> Sniff {
    if buf.len() >= 16 {
        let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if len > MAX_HEADER_LEN {
            return Sniff::Invalid(format!(
                "PROXY v2 header of {len} bytes is longer than {MAX_HEADER_LEN}"
            ));
        }
    }
    match v2::Header::try_from(buf) {
        Ok(h) => {
            let (source, destination_port) = match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(a.destination_port),
                ),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(a.destination_port),
                ),
                // LOCAL, UNSPEC and unix sockets carry no usable client address.
                _ => (None, None),
            };
            Sniff::Header {
                len: h.len(),
                source,
                destination_port,
            }
        }
        Err(e) if e.is_incomplete() => Sniff::NeedMore,
        Err(e) => Sniff::Invalid(format!("malformed PROXY v2 header: {e}")),
    }
}

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
}

/// Why a connection was closed before any HTTP was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed(String),
    Timeout,
    Untrusted,
    Closed,
    Io(String),
}

impl Refusal {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Missing => "proxy_header_missing",
            Refusal::Malformed(_) => "proxy_header_malformed",
            Refusal::Timeout => "proxy_header_timeout",
            Refusal::Untrusted => "untrusted_peer",
            Refusal::Closed => "closed_before_header",
            Refusal::Io(_) => "io_error",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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
        }
    }
}

/// Reads the PROXY header according to the configured mode, within `PROXY_HEADER_TIMEOUT`.
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
    };
    match config.proxy_protocol {
        ProxyProtocol::Off => return Ok(plain(Bytes::new())),
        ProxyProtocol::Required if !local_probe_allowed => return Err(Refusal::Untrusted),
        _ => {}
    }
    let read = tokio::time::timeout(config.proxy_header_timeout, read_sniffed(stream));
    let (sniffed, buf) = read.await.map_err(|_| Refusal::Timeout)??;
    match sniffed {
        Sniff::Header {
            source: Some(_), ..
        } if !trusted => Err(Refusal::Untrusted),
        Sniff::Header { source: None, .. } if !local_probe_allowed => Err(Refusal::Untrusted),
        Sniff::Header {
            len,
            source,
            destination_port,
        } => Ok(Origin {
            client: source.unwrap_or(peer),
            destination_port,
            leftover: Bytes::copy_from_slice(&buf[len..]),
            health_only: false,
        }),
        Sniff::Invalid(why) => Err(Refusal::Malformed(why)),
        Sniff::Ping if config.proxy_protocol == ProxyProtocol::Required => Ok(Origin {
            health_only: true,
            ..plain(Bytes::from(buf))
        }),
        Sniff::Ping | Sniff::NoHeader if config.proxy_protocol == ProxyProtocol::Optional => {
            Ok(plain(Bytes::from(buf)))
        }
        _ => Err(Refusal::Missing),
    }
}

/// Reads until [`sniff`] can decide; returns its verdict and every byte read.
async fn read_sniffed(stream: &mut TcpStream) -> Result<(Sniff, Vec<u8>), Refusal> {
    let mut buf = Vec::with_capacity(512);
    loop {
        let room = MAX_HEADER_LEN.saturating_sub(buf.len()).max(1);
        let mut limited = (&mut *stream).take(room as u64);
        match limited.read_buf(&mut buf).await {
            Ok(0) => return Err(Refusal::Closed),
            Ok(_) => {}
            Err(e) => return Err(Refusal::Io(e.to_string())),
        }
        match sniff(&buf) {
            Sniff::NeedMore if buf.len() < MAX_HEADER_LEN => continue,
            Sniff::NeedMore => return Ok((Sniff::Invalid("PROXY header too long".into()), buf)),
            verdict => return Ok((verdict, buf)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2_header(command: u8, family: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn v1_tcp4_with_request_after_it() {
        let input = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        match sniff(input) {
            Sniff::Header {
                len,
                source,
                destination_port,
            } => {
                assert_eq!(&input[len..], b"GET / HTTP/1.1\r\n");
                assert_eq!(source, Some("203.0.113.7:51234".parse().unwrap()));
                assert_eq!(destination_port, Some(443));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let s = sniff(b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 444\r\n");
        assert!(
            matches!(s, Sniff::Header { source: Some(a), destination_port: Some(444), .. } if a.ip().is_ipv6())
        );
        assert_eq!(
            sniff(b"PROXY UNKNOWN\r\n"),
            Sniff::Header {
                len: 15,
                source: None,
                destination_port: None
            }
        );
        let unknown_with_junk = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nX";
        assert!(matches!(
            sniff(unknown_with_junk),
            Sniff::Header {
                len: 35,
                source: None,
                ..
            }
        ));
    }

    #[test]
    fn v1_partial_then_complete() {
        let full = b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n";
        for cut in 1..full.len() {
            assert_eq!(sniff(&full[..cut]), Sniff::NeedMore, "cut at {cut}");
        }
        assert!(matches!(sniff(full), Sniff::Header { len: 38, .. }));
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n"[..],
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        ] {
            assert!(
                matches!(sniff(bad), Sniff::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let too_long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(sniff(&too_long), Sniff::Invalid(_)));
    }

    #[test]
    fn v2_proxy_local_and_tlvs() {
        let addrs = [198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb];
        let aws_tlv = [0xEA, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e'];
        let h = v2_header(1, 0x11, &addrs, &aws_tlv);
        let mut input = h.clone();
        input.extend_from_slice(b"GET");
        assert_eq!(
            sniff(&input),
            Sniff::Header {
                len: h.len(),
                source: Some("198.51.100.9:8080".parse().unwrap()),
                destination_port: Some(443)
            }
        );
        for cut in 1..h.len() {
            assert_eq!(sniff(&h[..cut]), Sniff::NeedMore, "cut at {cut}");
        }
        let local = v2_header(0, 0x00, &[], &[]);
        assert_eq!(
            sniff(&local),
            Sniff::Header {
                len: 16,
                source: None,
                destination_port: None
            }
        );
        let mut v6 = vec![0u8; 36];
        v6[15] = 1;
        v6[32..34].copy_from_slice(&40000u16.to_be_bytes());
        v6[34..36].copy_from_slice(&444u16.to_be_bytes());
        assert!(
            matches!(sniff(&v2_header(1, 0x21, &v6, &[])), Sniff::Header { source: Some(a), destination_port: Some(444), .. } if a.ip().is_loopback())
        );
    }

    #[test]
    fn v2_malformed_and_oversized() {
        let mut bad_version = v2_header(1, 0x11, &[0; 12], &[]);
        bad_version[12] = 0x31;
        assert!(matches!(sniff(&bad_version), Sniff::Invalid(_)));
        let short_addrs = v2_header(1, 0x11, &[0; 4], &[]);
        assert!(matches!(sniff(&short_addrs), Sniff::Invalid(_)));
        let huge = v2_header(1, 0x11, &[0; 12], &[0; 2000]);
        assert!(matches!(sniff(&huge[..20]), Sniff::Invalid(_)));
    }

    #[test]
    fn ping_and_plain_http() {
        assert_eq!(sniff(b"GET /ping HTTP/1.1\r\n"), Sniff::Ping);
        assert_eq!(sniff(b"HEAD /ping?x=1 HTTP/1.0\r\n"), Sniff::Ping);
        assert_eq!(sniff(b"GET /pi"), Sniff::NeedMore);
        assert_eq!(sniff(b"GET /pingpong HTTP/1.1\r\n"), Sniff::NoHeader);
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::NoHeader);
        assert_eq!(sniff(b"POST /ping HTTP/1.1\r\n"), Sniff::NoHeader);
        assert_eq!(sniff(b"PROX"), Sniff::NeedMore);
        assert_eq!(sniff(b"PROXIMITY"), Sniff::NoHeader);
        assert_eq!(sniff(b"\r\n\r\n\0\r"), Sniff::NeedMore);
        assert_eq!(sniff(b"\x16\x03\x01"), Sniff::NoHeader);
    }

    proptest! {
        #[test]
        fn sniff_never_panics_and_is_consistent(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            match sniff(&input) {
                Sniff::Header { len, .. } => prop_assert!(len <= input.len()),
                Sniff::NeedMore => prop_assert!(input.len() < MAX_HEADER_LEN),
                _ => {}
            }
        }

        #[test]
        fn any_v1_tcp4_header_round_trips(a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), sp in any::<u16>(), dp in any::<u16>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let src = std::net::Ipv4Addr::from(a);
            let line = format!("PROXY TCP4 {} {} {} {}\r\n", src, std::net::Ipv4Addr::from(b), sp, dp);
            let mut input = line.clone().into_bytes();
            input.extend_from_slice(&tail);
            prop_assert_eq!(sniff(&input), Sniff::Header { len: line.len(), source: Some(SocketAddr::from((src, sp))), destination_port: Some(dp) });
            // Split anywhere inside the header: never a verdict before the whole line is there.
            for cut in 1..line.len() {
                prop_assert_eq!(sniff(&input[..cut]), Sniff::NeedMore);
            }
        }

        #[test]
        fn any_v2_header_round_trips(a in any::<[u8; 16]>(), sp in any::<u16>(), dp in any::<u16>(), tlv in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut addrs = a.to_vec();
            addrs.extend_from_slice(&[0; 16]);
            addrs.extend_from_slice(&sp.to_be_bytes());
            addrs.extend_from_slice(&dp.to_be_bytes());
            let h = v2_header(1, 0x21, &addrs, &tlv);
            let expected = SocketAddr::from((std::net::Ipv6Addr::from(a), sp));
            prop_assert_eq!(sniff(&h), Sniff::Header { len: h.len(), source: Some(expected), destination_port: Some(dp) });
        }
    }
}
