//! What the proxy tells its operators: metrics, the access line, logging set-up and its clock.

pub(crate) mod access_log;
pub(crate) mod exhaustion;
pub(crate) mod log_time;
pub mod logging;
pub mod metrics;
pub(crate) mod request;
pub(crate) mod tls;
