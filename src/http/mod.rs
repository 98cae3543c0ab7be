//! HTTP itself, independent of the engine that speaks it: every rule a request or response is
//! judged by, bodies and chunked framing, the forwarding values, the date, the upstream
//! failures, and the proxy's own answers (`/ping`, the plain port's redirect).

pub(crate) mod body;
pub(crate) mod chunked;
pub(crate) mod clocks;
pub(crate) mod date;
pub(crate) mod error;
pub(crate) mod forwarding;
pub(crate) mod head;
pub mod health;
pub(crate) mod redirect;
pub(crate) mod rules;
pub(crate) mod websocket;

/// What a client speaks on a connection, or a tunnel once the connection was upgraded: the
/// label of its metrics, its access line and its send clock's warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    H2,
    Tunnel,
}

impl Protocol {
    /// The label: `http1`, `h2` or `tunnel`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
            Protocol::Tunnel => "tunnel",
        }
    }

    /// The HTTP version, as OpenTelemetry's `network.protocol.version` writes it; a tunnel's
    /// is the HTTP/1.1 of its handshake.
    pub(crate) fn version(self) -> &'static str {
        match self {
            Protocol::Http1 | Protocol::Tunnel => "1.1",
            Protocol::H2 => "2",
        }
    }
}
