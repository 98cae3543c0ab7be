//! What the app is told about where a request came from, built once per connection from its
//! PROXY header and written by every path the same way.

use std::net::SocketAddr;

use http::HeaderValue;

/// The forwarding facts of one client connection.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// The client's address from the PROXY header (or the socket's peer).
    pub(crate) client: SocketAddr,
    /// `X-Forwarded-For`: the client's IP, formatted once.
    pub(crate) for_value: HeaderValue,
    /// `X-Forwarded-Port`: the port the client reached on the balancer, when known.
    pub(crate) port: Option<HeaderValue>,
}

impl Forwarding {
    /// The facts for `client`, who reached the balancer on `port`.
    pub fn new(client: SocketAddr, port: Option<u16>) -> Self {
        let for_value = HeaderValue::from_str(&client.ip().to_canonical().to_string())
            .expect("an IP address is a valid header value");
        Forwarding {
            client,
            for_value,
            port: port.map(HeaderValue::from),
        }
    }

    /// The client's address.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The headers the app gets, in the order they are written.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        static HTTPS: HeaderValue = HeaderValue::from_static("https");
        [
            Some(("x-forwarded-for", &self.for_value)),
            Some(("x-forwarded-proto", &HTTPS)),
            self.port.as_ref().map(|p| ("x-forwarded-port", p)),
        ]
        .into_iter()
        .flatten()
    }
}
