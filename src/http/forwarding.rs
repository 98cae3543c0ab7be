//! What the app is told about where a request came from, built once per connection from its
//! PROXY header and written by every path the same way.

use std::net::SocketAddr;

use http::{HeaderName, HeaderValue};

/// The forwarding facts of one client connection.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// The client's address from the PROXY header (or the socket's peer).
    pub(crate) client: SocketAddr,
    /// The socket peer's IP, formatted once for the access line: the balancer's own address.
    pub(crate) peer_ip: Option<Box<str>>,
    /// `X-Forwarded-For`: the client's IP, formatted once.
    pub(crate) for_value: HeaderValue,
    /// `X-Forwarded-Port`: the port the client reached on the balancer, when known.
    pub(crate) port: Option<HeaderValue>,
    /// `VPC_ENDPOINT_HEADER`, when configured: a client's header of that name is always
    /// dropped, whether or not there is an id to send in it.
    pub(crate) vpce_header: Option<HeaderName>,
    /// The PrivateLink endpoint id the client came through, from the PROXY v2 header.
    pub(crate) vpce: Option<HeaderValue>,
    /// `CLIENT_CERT_HEADER`, when configured: a client's header of that name is always
    /// dropped; the proxy's carries a verified client certificate.
    pub(crate) client_cert_header: Option<HeaderName>,
    /// What the TLS handshake settled, when the proxy ended TLS itself.
    pub(crate) tls: Option<TlsFacts>,
}

/// What a TLS handshake the proxy ended settled: for the access line and the app.
#[derive(Debug, Clone)]
pub(crate) struct TlsFacts {
    /// The server name the client asked for (SNI).
    pub(crate) sni: Option<String>,
    /// `TLSv1_3` or `TLSv1_2`.
    pub(crate) version: &'static str,
    /// The cipher suite, as rustls names it.
    pub(crate) cipher: &'static str,
    /// What ALPN chose: `h2`, `http/1.1`, or nothing.
    pub(crate) alpn: Option<&'static str>,
    /// The client's verified certificate (mutual TLS).
    pub(crate) client: Option<ClientCert>,
}

/// A verified client certificate.
#[derive(Debug, Clone)]
pub(crate) struct ClientCert {
    /// Its subject, as the access line shows it.
    pub(crate) subject: String,
    /// The value of `CLIENT_CERT_HEADER`.
    pub(crate) header: HeaderValue,
}

static FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

impl Forwarding {
    /// The facts for `client`, who reached the balancer on `port`, through the VPC endpoint
    /// `vpce` (sent to the app in `vpce_header`, when that is set).
    pub fn new(
        client: SocketAddr,
        port: Option<u16>,
        vpce_header: Option<HeaderName>,
        vpce: Option<&str>,
    ) -> Self {
        let for_value = HeaderValue::from_str(&client.ip().to_canonical().to_string())
            .expect("an IP address is a valid header value");
        Forwarding {
            client,
            peer_ip: None,
            for_value,
            port: port.map(HeaderValue::from),
            vpce_header,
            // The PROXY header reader admits only short ASCII tokens as ids.
            vpce: vpce.and_then(|id| HeaderValue::from_str(id).ok()),
            client_cert_header: None,
            tls: None,
        }
    }

    /// With the socket's peer, which the access line names.
    pub(crate) fn with_peer(mut self, peer: SocketAddr) -> Self {
        self.peer_ip = Some(peer.ip().to_canonical().to_string().into());
        self
    }

    /// The client's IP as `X-Forwarded-For` gives it, for the access line.
    pub(crate) fn client_ip(&self) -> &str {
        self.for_value.to_str().unwrap_or("-")
    }

    /// With `CLIENT_CERT_HEADER` and what the TLS handshake settled, if the proxy ended TLS.
    pub(crate) fn with_tls(mut self, header: Option<HeaderName>, tls: Option<TlsFacts>) -> Self {
        self.client_cert_header = header;
        self.tls = tls;
        self
    }

    /// The client's address.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The verified client certificate's header value, when there is one.
    fn client_cert(&self) -> Option<&HeaderValue> {
        let tls = self.tls.as_ref()?;
        tls.client.as_ref().map(|c| &c.header)
    }

    /// The VPC endpoint id, when the client came through one.
    pub(crate) fn vpce(&self) -> Option<&str> {
        self.vpce.as_ref().and_then(|v| v.to_str().ok())
    }

    /// The headers the app gets, in the order they are written. Any header of the client's
    /// with one of these names is dropped first (see `rules`).
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        static HTTPS: HeaderValue = HeaderValue::from_static("https");
        [
            Some((&FOR, &self.for_value)),
            Some((&PROTO, &HTTPS)),
            self.port.as_ref().map(|p| (&PORT, p)),
            self.vpce_header.as_ref().zip(self.vpce.as_ref()),
            (self.client_cert_header.as_ref()).zip(self.client_cert()),
        ]
        .into_iter()
        .flatten()
    }
}
