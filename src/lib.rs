//! elb-ws-proxy: a reverse proxy for HTTP and WebSockets that sits behind an AWS load balancer
//! in TCP mode, reads the PROXY protocol header it prepends, and forwards to an app with the
//! real client address in `X-Forwarded-For`.
//!
//! [`Proxy::bind`] then [`Proxy::serve`] (or [`run`], which does both) is the whole program;
//! `main.rs` only reads the configuration, sets up logging and passes the shutdown signal.
//!
//! The modules, leaves first: `error`, `rules` (every HTTP rule), `chunked`, `forwarding`,
//! `body`, `config` and `settings`, `proxy_header`, `preface`, `h2_guard`, `h2_streams`,
//! `send_timeout`, `metrics`, `shutdown`, `log_time`, `http_date`, `access_log`, `logging`; then
//! `request_head`, `upstream` and `upstream_h2`; then the paths: `lean_path`, `h2_to_h1`, `client_io` (the head gate in
//! front of hyper), `hyper_path`, `h2c_path`, `tunnel`, `health`, `redirect`; then
//! `h2_websocket`, `h2_body`, `h2_server`, `connection`, `listener`, `metrics_listener` and
//! `server` on top. README's "Development" section says what each holds.

mod access_log;
mod body;
mod chunked;
mod client_io;
pub mod config;
mod conn_state;
mod connection;
pub mod descriptors;
mod error;
mod forwarding;
mod h1_exchange;
mod h2_body;
mod h2_guard;
mod h2_server;
mod h2_streams;
mod h2_to_h1;
mod h2_websocket;
mod h2c_path;
pub mod health;
mod http_date;
mod hyper_path;
mod lean_path;
mod listener;
mod log_time;
pub mod logging;
pub mod metrics;
mod metrics_listener;
mod preface;
pub mod proxy_header;
mod redirect;
mod request_head;
mod rules;
mod send_timeout;
mod server;
pub mod settings;
mod shared;
pub mod shutdown;
pub mod sockets;
mod tunnel;
mod upstream;
mod upstream_h2;

use std::future::Future;
use std::io;

pub use config::Config;
pub use conn_state::Port;
pub use error::UpstreamError;
pub use forwarding::Forwarding;
pub use server::Proxy;
pub use upstream::{system_resolver, Resolver};

/// Binds and serves until `shutdown` resolves and the drain completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    Proxy::bind(config).await?.serve(shutdown).await
}
