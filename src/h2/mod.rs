//! HTTP/2 clients: hyper's server behind a frame guard, the streams run in the connection's
//! own task, request and response bodies, and WebSockets over extended CONNECT.

pub(crate) mod body;
pub(crate) mod guard;
pub(crate) mod server;
pub(crate) mod service;
pub(crate) mod streams;
pub(crate) mod websocket;
