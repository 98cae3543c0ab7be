//! The WebSocket handshake fields the proxy writes itself when it carries a WebSocket between
//! HTTP/1.1 and HTTP/2 (RFC 8441 drops them there): a key towards an HTTP/1.1 app, the accept
//! value towards an HTTP/1.1 client (RFC 6455 §4.2.2).

use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use data_encoding::BASE64;
use http::HeaderValue;
use sha1::{Digest, Sha1};

/// RFC 6455 §1.3.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A fresh `Sec-WebSocket-Key`: 16 bytes that need only be unpredictable enough to tell
/// handshakes apart (RFC 6455 §4.1), in base64.
pub(crate) fn key() -> HeaderValue {
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    for (i, half) in bytes.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        h.write_u128(Instant::now().elapsed().as_nanos());
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    HeaderValue::from_str(&BASE64.encode(&bytes)).expect("base64 is a valid header value")
}

/// The `Sec-WebSocket-Accept` that answers `key`.
pub(crate) fn accept(key: &[u8]) -> HeaderValue {
    let digest = Sha1::new().chain_update(key).chain_update(GUID).finalize();
    HeaderValue::from_str(&BASE64.encode(&digest)).expect("base64 is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_value_of_rfc_6455s_example() {
        assert_eq!(
            accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn keys_are_16_bytes_in_base64_and_differ() {
        let (a, b) = (key(), key());
        assert_eq!(BASE64.decode(a.as_bytes()).unwrap().len(), 16);
        assert_ne!(a, b);
    }
}
