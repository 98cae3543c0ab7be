//! The `Date` field for responses the proxy writes itself, on the lean path: its own answers,
//! and an app's response that came without one (RFC 9110 §6.6.1: a recipient with a clock
//! adds one to a response it forwards). hyper's server does the same on its paths.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The second last formatted on this thread, and its IMF-fixdate.
    static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Calls `f` with the current time as an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// formatted at most once a second per thread.
pub(crate) fn with_now<T>(f: impl FnOnce(&[u8]) -> T) -> T {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_now_as_an_imf_fixdate() {
        for _ in 0..3 {
            let text = with_now(|d| String::from_utf8(d.to_vec()).unwrap());
            assert_eq!(text.len(), 29, "{text}");
            assert!(text.ends_with(" GMT"), "{text}");
            let then = httpdate::parse_http_date(&text).unwrap();
            let now = SystemTime::now();
            let age = now.duration_since(then).unwrap();
            assert!(age.as_secs() <= 1, "{text} is {age:?} old");
        }
    }
}
