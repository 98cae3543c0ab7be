//! HTTP/1.1 clients: the request-head reader, the lean path that relays most requests as
//! bytes, and the head gate in front of hyper's server for the rest.

pub(crate) mod head_gate;
pub(crate) mod lean;
pub(crate) mod request_head;
pub(crate) mod server;
