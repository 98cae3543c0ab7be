//! What the proxy tells its operators: metrics (its own and the process's), the access line,
//! logging set-up and its clock.

pub(crate) mod access_line;
pub(crate) mod access_log;
pub(crate) mod exhaustion;
pub(crate) mod log_time;
pub mod logging;
pub mod metrics;
pub(crate) mod process;
pub(crate) mod request;
pub(crate) mod timing;
pub(crate) mod tls;
