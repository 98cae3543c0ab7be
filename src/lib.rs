//! elb-ws-proxy: a reverse proxy for HTTP and WebSockets that sits behind an AWS load balancer
//! in TCP mode, reads the PROXY protocol header it prepends, and forwards to an app with the
//! real client address in `X-Forwarded-For`.
//!
//! [`Proxy::bind`] then [`Proxy::serve`] (or [`run`], which does both) is the whole program;
//! `main.rs` only reads the configuration, sets up logging and passes the shutdown signal.
//!
//! # Layout
//!
//! A connection passes through the rooms in this order; each imports only rooms listed before
//! it, so the tree has no import cycle.
//!
//! - `config/`: the one table of settings ([`settings`]), the checked [`Config`], and its
//!   `summary` as the start-up line and `check` print it.
//! - `http/`: HTTP independent of the engine speaking it. `rules/` decides every rule (framing,
//!   Host and `:authority`, hop-by-hop and forwarding headers, upgrades, retries, request ids
//!   and trace context in `ids`; `h2.rs` applies them to HTTP/2 streams); `head` writes every HTTP/1.1 head; `clocks` (keep-alive
//!   and request-header timeouts, for every path); `body`, `chunked`, `date`, `forwarding`
//!   (the `X-Forwarded-*` facts of one connection), `error` (upstream failures and their
//!   `502`/`504`), `websocket` (the handshake fields the proxy computes), the `Protocol` a
//!   client speaks, and the proxy's own answers `health` and `redirect`.
//! - `accept/`: before any HTTP. `sockets` (keepalive), `descriptors` (`RLIMIT_NOFILE` and the
//!   connection cap), `proxy_header/` (the PROXY header and its TLVs), `detect` (HTTP/2 or
//!   HTTP/1.1), `tls/` (TLS the proxy ends: configuration and handshake in `mod.rs`, `certs`
//!   chosen by SNI and reloaded, `client_cert`, and `stream`, the TLS stream over rustls's
//!   unbuffered connection that holds buffers only while it uses them, with `hello` (the SNI)
//!   and `outgoing` (where records are written)).
//! - `telemetry/`: `metrics`, `timing` (its time histograms), `process` (the standard process
//!   metrics from `/proc`), `tls`, `exhaustion` (running out of descriptors), `request` (the one
//!   end-of-request record: metrics at the response head, the access line at its end),
//!   `access_line` (what one request's line says, written as text or JSON), `access_log`
//!   (the event and the formatter that puts the time and level before it), `log_time`,
//!   `logging`.
//! - `upstream/`: the app. `mod.rs` resolves, connects and pools; `exchange` is one HTTP/1.1
//!   exchange spoken by the proxy; `h2c` the multiplexed HTTP/2 connection.
//! - `conn/`: what a client connection carries: `state` (its clocks, counts and upstream link),
//!   `shared` (what every connection shares), `send_timeout`, `shutdown` (the drain),
//!   `self_wake` (a connection future polled again when it wakes itself).
//! - `proxy/`: a judged request to the app and back: `hyper_client` (through hyper's client,
//!   and upgrade handshakes), `h2c` (from either kind of client, WebSockets as extended
//!   CONNECT), `h2_to_h1` (body-less HTTP/2 streams to an HTTP/1.1 app), `tunnel/` (the bytes
//!   after an accepted upgrade, one copy loop for sockets and HTTP/2 streams).
//! - `h1/`: HTTP/1.1 clients: `request_head` (reading and judging a head), `lean/` (body-less
//!   requests relayed as bytes), `head_gate` (every byte hyper's server reads passes it),
//!   `server` (hyper's server and the service that routes what it reads).
//! - `h2/`: HTTP/2 clients: `server` (the connection's life), `service` (one stream),
//!   `streams` (run in the connection's task), `body`, `guard/` (PING and SETTINGS floods),
//!   `websocket` (RFC 8441).
//! - `server/`: the bound [`Proxy`], its `listener`, the `connection` task phase by phase
//!   (origin, detection, HTTP/2 or the lean path then hyper, tunnel), and the
//!   `metrics_endpoint`.

mod accept;
pub mod config;
mod conn;
mod h1;
mod h2;
mod http;
mod proxy;
mod server;
mod telemetry;
mod upstream;

pub use accept::{descriptors, proxy_header, sockets};
pub use config::settings;
pub use conn::shutdown;
pub use http::health;
pub use telemetry::{logging, metrics};

use futures_util::Stream;
use std::io;

pub use config::Config;
pub use config::Port;
pub use http::error::UpstreamError;
pub use http::forwarding::Forwarding;
pub use server::Proxy;
pub use upstream::{system_resolver, Resolver};

/// Binds and serves until the first item of `shutdown` (a signal) and the drain that follows
/// complete; a second item ends the drain at once.
pub async fn run(config: Config, shutdown: impl Stream<Item = ()> + Unpin) -> io::Result<()> {
    Proxy::bind(config).await?.serve(shutdown).await
}
