//! Why a request to the app failed, what the client gets for it, and how errors are shown.
//!
//! One kind per cause, whichever path met it: no connection (`connect`, including a failed
//! handshake or `CONNECT_TIMEOUT`) and a broken exchange (`reset`) are `502`; no response
//! headers within `RESPONSE_TIMEOUT` (`timeout`) is `504`.

use std::error::Error as StdError;

use http::StatusCode;

/// Why the app could not answer; also the `kind` label of the metric and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No connection to the app could be made.
    Connect,
    /// The app accepted the request and sent no response headers in time.
    Timeout,
    /// The exchange broke: the app closed, reset, or sent something unusable.
    Reset,
}

impl UpstreamError {
    /// Every kind, in the order of [`UpstreamError::label`]'s metric series.
    pub(crate) const ALL: [UpstreamError; 3] = [Self::Connect, Self::Timeout, Self::Reset];

    /// The label in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Reset => "reset",
        }
    }

    /// The status and short body the client gets.
    pub(crate) fn answer(self) -> (StatusCode, &'static str) {
        match self {
            UpstreamError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "the app did not answer in time\n",
            ),
            _ => (StatusCode::BAD_GATEWAY, "the app is not reachable\n"),
        }
    }
}

/// Why a request got `504`, on every path.
pub(crate) const NO_RESPONSE_HEADERS: &str = "no response headers within RESPONSE_TIMEOUT";

/// An error and each of its causes, outermost first.
pub(crate) fn causes<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&err| err.source())
}

/// Whether `E` is among the causes of `e`.
pub(crate) fn caused_by<E: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
    causes(e).any(|err| err.is::<E>())
}

/// Displays an error with all its causes: "connection error: connection refused".
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn StdError + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in causes(self.0).enumerate() {
            write!(f, "{}{e}", if i == 0 { "" } else { ": " })?;
        }
        Ok(())
    }
}
