//! The access line's timestamp, as tracing-subscriber writes one (`2026-11-21T22:52:55.196621Z`,
//! UTC, microseconds), with the date and time up to the second kept per thread: working out
//! and formatting the calendar date was a third of the cost of an access line, and every
//! line in the same second shares it. tracing-subscriber's own formatter only formats "now",
//! so it cannot fill a cache for a given second.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SS.`: what a second's timestamps start with.
type Prefix = [u8; 20];

thread_local! {
    /// The last second this thread formatted, and its prefix.
    static LAST: Cell<(u64, Prefix)> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// Writes the current time.
pub(crate) fn write_now(w: &mut impl fmt::Write) -> fmt::Result {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    write(w, since)
}

/// Writes the time `since` the Unix epoch.
fn write(w: &mut impl fmt::Write, since: Duration) -> fmt::Result {
    let secs = since.as_secs();
    let prefix = LAST.with(|last| match last.get() {
        (s, prefix) if s == secs => prefix,
        _ => {
            let prefix = prefix(secs);
            last.set((secs, prefix));
            prefix
        }
    });
    let mut micros = *b"000000Z";
    digits(&mut micros[..6], since.subsec_micros().into());
    // Both are ASCII digits and punctuation.
    w.write_str(std::str::from_utf8(&prefix).map_err(|_| fmt::Error)?)?;
    w.write_str(std::str::from_utf8(&micros).map_err(|_| fmt::Error)?)
}

/// The prefix for the second `secs` after the epoch.
fn prefix(secs: u64) -> Prefix {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut p = *b"0000-00-00T00:00:00.";
    digits(&mut p[0..4], year);
    digits(&mut p[5..7], month);
    digits(&mut p[8..10], day);
    digits(&mut p[11..13], rest / 3600);
    digits(&mut p[14..16], rest % 3600 / 60);
    digits(&mut p[17..19], rest % 60);
    p
}

/// Fills `out` with the last `out.len()` decimal digits of `n`, zero-padded.
fn digits(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of a day count from 1970-01-01: Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Count from 0000-03-01, so that a leap day ends its year; eras are 400 years.
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::FormatTime;

    use super::*;

    fn text(since: Duration) -> String {
        let mut s = String::new();
        write(&mut s, since).unwrap();
        s
    }

    #[test]
    fn known_instants() {
        assert_eq!(text(Duration::ZERO), "1970-01-01T00:00:00.000000Z");
        let leap = Duration::from_secs(951_782_400) + Duration::from_micros(7);
        assert_eq!(text(leap), "2000-02-29T00:00:00.000007Z");
        let now = Duration::new(1_795_301_575, 196_621_999);
        assert_eq!(text(now), "2026-11-21T22:52:55.196621Z");
        // The cached second serves the next line; a new second replaces it.
        let next = now + Duration::from_micros(1);
        assert_eq!(text(next), "2026-11-21T22:52:55.196622Z");
        let later = now + Duration::from_secs(3605);
        assert_eq!(text(later), "2026-11-21T23:53:00.196621Z");
    }

    /// Every day from 1970 to 2200 (leap centuries included), at a time of day that moves,
    /// against httpdate's calendar.
    #[test]
    fn dates_agree_with_httpdate() {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        for day in 0..84_000u64 {
            let secs = day * 86_400 + (day * 7919) % 86_400;
            let ours = text(Duration::from_secs(secs));
            let theirs = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            // "Sat, 21 Nov 2026 22:52:55 GMT"
            let f: Vec<&str> = theirs.split([' ', ',']).filter(|f| !f.is_empty()).collect();
            let month = MONTHS.iter().position(|m| *m == f[2]).unwrap() + 1;
            let expected = format!("{}-{month:02}-{}T{}.000000Z", f[3], f[1], f[4]);
            assert_eq!(ours, expected, "{secs}");
        }
    }

    /// The format and the clock are tracing-subscriber's.
    #[test]
    fn the_same_as_tracing_subscribers() {
        let theirs = || {
            let mut s = String::new();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut s))
                .unwrap();
            s
        };
        let shape = |s: &str| s.bytes().map(|b| b.is_ascii_digit()).collect::<Vec<_>>();
        // Read between two of theirs in the same second, ours names that second.
        for _ in 0..3 {
            let before = theirs();
            let mut ours = String::new();
            write_now(&mut ours).unwrap();
            let after = theirs();
            assert_eq!(shape(&ours), shape(&before), "{ours} / {before}");
            if before[..19] == after[..19] {
                assert_eq!(ours[..19], before[..19]);
                return;
            }
        }
        panic!("three reads in a row straddled a second");
    }
}
