//! What happens to a socket before any HTTP: its options, the descriptor budget, the PROXY
//! header that says who the client is, and the sniff that tells HTTP/2 from HTTP/1.1.

pub mod descriptors;
pub(crate) mod detect;
pub mod proxy_header;
pub mod sockets;
pub(crate) mod tls;
