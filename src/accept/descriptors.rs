//! File descriptors: enough of them for `MAX_CONNECTIONS`, and a calm answer when they run out.
//!
//! Many container runtimes start a process with a soft `RLIMIT_NOFILE` of 1024 and a far
//! higher hard limit. Each forwarded connection needs two descriptors (client and app), so
//! at start-up the soft limit is raised to the hard one, as Go servers do; when even that cannot
//! hold `MAX_CONNECTIONS`, the connection cap is lowered so that excess clients wait in the
//! accept queue instead of failing with `EMFILE`.

use std::io;

/// Descriptors one forwarded connection holds: the client's and the app's.
pub const PER_CONNECTION: u64 = 2;
/// Kept free for listeners, the metrics endpoint, idle pooled app connections beyond the
/// active ones, name lookups, logging and the runtime itself.
pub const RESERVE: u64 = 128;

/// The process's descriptor limit after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The soft limit the process was started with.
    pub was: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. `None` where there is no such limit or
/// it cannot be read.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
pub fn raise() -> Option<Limit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let was = lim.rlim_cur as u64;
    // macOS refuses more than OPEN_MAX for the soft limit, whatever the hard one says.
    #[cfg(target_os = "macos")]
    let target = lim.rlim_max.min(10240);
    #[cfg(not(target_os = "macos"))]
    let target = lim.rlim_max;
    if target > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = target;
        }
    }
    Some(Limit {
        soft: lim.rlim_cur as u64,
        was,
    })
}

#[cfg(not(unix))]
pub fn raise() -> Option<Limit> {
    None
}

/// How many connections `soft` descriptors can serve at once, at most `wanted`.
pub fn connection_cap(soft: u64, wanted: usize) -> usize {
    let fits = soft.saturating_sub(RESERVE) / PER_CONNECTION;
    (fits.max(1) as usize).min(wanted)
}

/// Whether an accept or connect failed for want of descriptors (the process's or the system's).
pub(crate) fn is_exhausted(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_leaves_a_reserve_and_never_exceeds_the_setting() {
        assert_eq!(connection_cap(1024, 10_000), (1024 - 128) / 2);
        assert_eq!(connection_cap(1_048_576, 10_000), 10_000);
        assert_eq!(connection_cap(100, 10_000), 1);
    }

    #[test]
    fn emfile_and_enfile_are_exhaustion() {
        assert!(is_exhausted(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_exhausted(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_exhausted(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
    }
}
