//! HTTP itself, independent of the engine that speaks it: every rule a request or response is
//! judged by, bodies and chunked framing, the forwarding values, the date, the upstream
//! failures, and the proxy's own answers (`/ping`, the plain port's redirect).

pub(crate) mod body;
pub(crate) mod chunked;
pub(crate) mod date;
pub(crate) mod error;
pub(crate) mod forwarding;
pub(crate) mod head;
pub mod health;
pub(crate) mod redirect;
pub(crate) mod rules;
