//! Classifying the first bytes of a connection: a PROXY v1 line, a v2 header with its TLVs, a
//! header-less `/ping`, or something else. A pure function over the bytes received so far, so
//! it can be fuzzed and property-tested.

use std::net::SocketAddr;

use ppp::{v1, v2, PartialResult};

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
        /// The AWS VPC endpoint id (TLV `0xEA`, subtype `0x01`), when the client came
        /// through PrivateLink.
        vpce: Option<String>,
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
    if let Some(fault) = v1_fault(line) {
        return Sniff::Invalid(format!("malformed PROXY v1 header: {fault}"));
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
                vpce: None,
            }
        }
        Ok(_) => Sniff::Invalid("malformed PROXY v1 header: stray carriage return".into()),
        Err(e) => Sniff::Invalid(format!("malformed PROXY v1 header: {e}")),
    }
}

/// What is wrong with a whole v1 line (up to its LF), named for the log; `None` if nothing
/// this check knows of (ppp then parses it).
fn v1_fault(line: &[u8]) -> Option<String> {
    let Some(text) = line.strip_suffix(b"\r\n") else {
        return Some("the line ends in a bare LF; PROXY v1 lines end in CRLF".into());
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return Some("the line is not ASCII".into());
    };
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.get(1).copied() {
        Some("UNKNOWN") => return None,
        Some("TCP4" | "TCP6") => {}
        Some(other) => return Some(format!("protocol {other:?} is not TCP4, TCP6 or UNKNOWN")),
        None => return Some("no protocol after PROXY".into()),
    }
    if fields.len() != 6 {
        return Some(format!(
            "{} fields where PROXY, the protocol, two addresses and two ports make 6",
            fields.len()
        ));
    }
    let v4 = fields[1] == "TCP4";
    for (what, address) in [("source", fields[2]), ("destination", fields[3])] {
        match address.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_ipv4() == v4 => {}
            Ok(_) => {
                return Some(format!(
                    "{what} address {address} does not match {}",
                    fields[1]
                ))
            }
            Err(_) => return Some(format!("{what} address {address:?} is not an IP address")),
        }
    }
    for (what, port) in [("source", fields[4]), ("destination", fields[5])] {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (port.len() == 1 || !port.starts_with('0'))
            && port.parse::<u16>().is_ok();
        if !valid {
            return Some(format!("{what} port {port:?} is not a TCP port number"));
        }
    }
    None
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
            let vpce = match vpc_endpoint(&h) {
                Ok(v) => v,
                Err(why) => return Sniff::Invalid(why),
            };
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
                vpce,
            }
        }
        Err(e) if e.is_incomplete() => Sniff::NeedMore,
        Err(e) => Sniff::Invalid(format!("malformed PROXY v2 header: {e}")),
    }
}

/// PP2_TYPE_AWS, whose first value byte is a subtype.
const PP2_TYPE_AWS: u8 = 0xEA;
/// PP2_SUBTYPE_AWS_VPCE_ID: the rest of the value is the endpoint id, in ASCII.
const PP2_SUBTYPE_AWS_VPCE_ID: u8 = 0x01;
/// AWS ids are `vpce-` and 17 hex digits; this leaves room without letting a header grow.
const MAX_VPCE_ID_LEN: usize = 64;

/// Walks the TLV area: the VPC endpoint id if there is one; every other TLV (CRC32C, SSL,
/// authority, unique id, NOOP, ...) is skipped. A TLV running past the header, or an endpoint
/// id that is not a short visible-ASCII token, makes the whole header malformed.
fn vpc_endpoint(h: &v2::Header<'_>) -> Result<Option<String>, String> {
    let mut found = None;
    for tlv in h.tlvs() {
        let tlv = tlv.map_err(|e| format!("malformed PROXY v2 TLV area: {e}"))?;
        if tlv.kind != PP2_TYPE_AWS {
            continue;
        }
        let Some((&PP2_SUBTYPE_AWS_VPCE_ID, id)) = tlv.value.split_first() else {
            continue;
        };
        let token = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
        if id.is_empty() || id.len() > MAX_VPCE_ID_LEN || !id.iter().all(token) {
            return Err(
                "malformed PROXY v2 header: AWS VPC endpoint id is not a short ASCII token".into(),
            );
        }
        found = Some(String::from_utf8_lossy(id).into_owned());
    }
    Ok(found)
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
                vpce,
            } => {
                assert_eq!(vpce, None);
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
                destination_port: None,
                vpce: None,
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
    fn v1_malformed_names_the_fault() {
        for (bad, fault) in [
            (
                &b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n"[..],
                "source address \"1.2.3.400\" is not an IP address",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.x 1 2\r\n",
                "destination address \"5.6.7.x\" is not an IP address",
            ),
            (
                b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
                "source address 1.2.3.4 does not match TCP6",
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
                "source address ::1 does not match TCP4",
            ),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                "protocol \"TCP5\" is not TCP4, TCP6 or UNKNOWN",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
                "source port \"99999\" is not a TCP port number",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 02\r\n",
                "destination port \"02\" is not a TCP port number",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                "5 fields where PROXY, the protocol, two addresses and two ports make 6",
            ),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "7 fields where"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                "the line ends in a bare LF; PROXY v1 lines end in CRLF",
            ),
            (b"PROXY \xff\r\n", "the line is not ASCII"),
        ] {
            let text = String::from_utf8_lossy(bad);
            match sniff(bad) {
                Sniff::Invalid(why) => assert!(why.contains(fault), "{text:?}: {why}"),
                other => panic!("{text:?}: {other:?}"),
            }
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
                destination_port: Some(443),
                vpce: Some("vpce".into()),
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
                destination_port: None,
                vpce: None,
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

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&(value.len() as u16).to_be_bytes());
        t.extend_from_slice(value);
        t
    }

    #[test]
    fn v2_aws_tlvs() {
        let addrs = [198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb];
        let id = b"vpce-08d2bf15fac5001c9";
        let vpce = |tlvs: &[u8]| match sniff(&v2_header(1, 0x11, &addrs, tlvs)) {
            Sniff::Header { vpce, .. } => Ok(vpce),
            other => Err(other),
        };
        let crc = tlv(0x03, &[1, 2, 3, 4]);
        let noop = tlv(0x04, &[0; 3]);
        let endpoint = tlv(0xEA, &[&[0x01], &id[..]].concat());
        let with_all = [crc.clone(), endpoint.clone(), noop.clone()].concat();
        assert_eq!(
            vpce(&with_all),
            Ok(Some(String::from_utf8_lossy(id).into()))
        );
        // Another AWS subtype, or none at all, carries no id.
        assert_eq!(vpce(&tlv(0xEA, &[0x02, b'x'])), Ok(None));
        assert_eq!(vpce(&[crc, noop].concat()), Ok(None));
        // LOCAL health checks with the dummy IPv4 block NLBs send still parse.
        let local = v2_header(0, 0x11, &[0; 12], &endpoint);
        assert!(matches!(sniff(&local), Sniff::Header { source: None, .. }));
        // An id that is not a token, and a TLV running past the header, are malformed.
        for bad in [
            tlv(0xEA, &[0x01, b'a', b'\r', b'\n', b'b']),
            tlv(0xEA, &[0x01]),
            tlv(0xEA, &[[0x01].as_slice(), &[b'a'; 65]].concat()),
            vec![0xEA, 0x00, 0x30, 0x01, b'v'],
            vec![0x04, 0x00],
        ] {
            assert!(matches!(vpce(&bad), Err(Sniff::Invalid(_))), "{bad:?}");
        }
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
            prop_assert_eq!(sniff(&input), Sniff::Header { len: line.len(), source: Some(SocketAddr::from((src, sp))), destination_port: Some(dp), vpce: None });
            // Split anywhere inside the header: never a verdict before the whole line is there.
            for cut in 1..line.len() {
                prop_assert_eq!(sniff(&input[..cut]), Sniff::NeedMore);
            }
        }

        #[test]
        fn any_v2_header_round_trips(a in any::<[u8; 16]>(), sp in any::<u16>(), dp in any::<u16>(), others in proptest::collection::vec((0u8..0xE0, proptest::collection::vec(any::<u8>(), 0..40)), 0..4), id in "vpce-[0-9a-f]{17}") {
            let mut addrs = a.to_vec();
            addrs.extend_from_slice(&[0; 16]);
            addrs.extend_from_slice(&sp.to_be_bytes());
            addrs.extend_from_slice(&dp.to_be_bytes());
            // Any other TLVs, in any order around the AWS one, are skipped.
            let mut tlvs: Vec<u8> = others.iter().flat_map(|(kind, value)| tlv(*kind, value)).collect();
            tlvs.extend(tlv(0xEA, &[&[0x01], id.as_bytes()].concat()));
            let h = v2_header(1, 0x21, &addrs, &tlvs);
            let expected = SocketAddr::from((std::net::Ipv6Addr::from(a), sp));
            prop_assert_eq!(sniff(&h), Sniff::Header { len: h.len(), source: Some(expected), destination_port: Some(dp), vpce: Some(id) });
            // A TLV cut short is a malformed header, not a skipped one.
            let mut cut = tlvs.clone();
            cut.extend_from_slice(&[0x04, 0x00, 0x09, 0x00]);
            prop_assert!(matches!(sniff(&v2_header(1, 0x21, &addrs, &cut)), Sniff::Invalid(_)));
        }
    }
}
