//! A stand-in for an AWS Network Load Balancer in front of the proxy, writing what an NLB
//! writes: the PROXY v2 header held back until the client's first payload and sent with it,
//! TLVs (the VPC endpoint id, CRC32C over the header), `LOCAL` health checks with the dummy
//! IPv4 address block, and connectivity probes that close without a byte.

use std::net::{SocketAddr, SocketAddrV4};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// PP2_TYPE_AWS with subtype PP2_SUBTYPE_AWS_VPCE_ID.
pub fn vpce_tlv(id: &str) -> Vec<u8> {
    tlv(0xEA, &[&[0x01], id.as_bytes()].concat())
}

pub fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend_from_slice(&(value.len() as u16).to_be_bytes());
    t.extend_from_slice(value);
    t
}

/// CRC-32C (Castagnoli), bit by bit: enough for headers of a few dozen bytes.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A v2 header: `PROXY` from `client` to the balancer's `listener` when `client` is set,
/// `LOCAL` with a zeroed IPv4 block (as NLB health checks send) when not; then `tlvs` and a
/// CRC32C TLV computed over the whole header, as the PROXY protocol specifies it.
pub fn v2_header(client: Option<SocketAddrV4>, listener_port: u16, tlvs: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    let command = match client {
        Some(c) => {
            body.extend_from_slice(&c.ip().octets());
            body.extend_from_slice(&[10, 0, 1, 20]);
            body.extend_from_slice(&c.port().to_be_bytes());
            body.extend_from_slice(&listener_port.to_be_bytes());
            0x21
        }
        None => {
            body.extend_from_slice(&[0; 12]);
            0x20
        }
    };
    for t in tlvs {
        body.extend_from_slice(t);
    }
    let crc_at = body.len() + 3;
    body.extend_from_slice(&tlv(0x03, &[0; 4]));
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(command);
    h.push(0x11);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    let crc = crc32c(&h);
    let at = 16 + crc_at;
    h[at..at + 4].copy_from_slice(&crc.to_be_bytes());
    h
}

/// One client flow through the NLB: connected at once, header sent with the first payload.
pub struct Flow {
    pub stream: TcpStream,
    header: Option<Vec<u8>>,
}

impl Flow {
    /// Opens the flow for `client` (through VPC endpoint `vpce`, if any) to the proxy at `to`.
    pub async fn open(to: SocketAddr, client: &str, vpce: Option<&str>) -> Flow {
        let client: SocketAddrV4 = client.parse().unwrap();
        let tlvs: Vec<Vec<u8>> = vpce.map(vpce_tlv).into_iter().collect();
        Flow {
            stream: TcpStream::connect(to).await.unwrap(),
            header: Some(v2_header(Some(client), 443, &tlvs)),
        }
    }

    /// Writes `payload`, preceded by the header if this is the first payload.
    pub async fn send(&mut self, payload: &[u8]) {
        let mut out = self.header.take().unwrap_or_default();
        out.extend_from_slice(payload);
        self.stream.write_all(&out).await.unwrap();
    }
}

/// A TLS-listener connectivity probe or TCP health check: connect, then close without a byte.
pub async fn probe(to: SocketAddr) {
    drop(TcpStream::connect(to).await.unwrap());
}

/// An HTTP health check as an NLB target group sends it through a PROXY v2 listener.
pub async fn health_check(to: SocketAddr) -> String {
    let mut req = v2_header(None, 0, &[]);
    req.extend_from_slice(b"GET /ping HTTP/1.1\r\nHost: 10.0.1.20\r\nConnection: close\r\n\r\n");
    super::exchange(to, &req).await
}

/// A listener that plays the NLB for clients that cannot write a PROXY header themselves (a
/// gRPC library, say): each connection to it is forwarded to `to` with a v2 header for
/// `client`, sent together with the client's first bytes.
pub async fn forwarder(to: SocketAddr, client: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client: SocketAddrV4 = client.parse().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut first = vec![0u8; 65536];
                let n = match inbound.read(&mut first).await {
                    Ok(n) if n > 0 => n,
                    _ => return,
                };
                let Ok(mut outbound) = TcpStream::connect(to).await else {
                    return;
                };
                let mut out = v2_header(Some(client), 443, &[]);
                out.extend_from_slice(&first[..n]);
                if outbound.write_all(&out).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}
