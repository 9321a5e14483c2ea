//! Times as people and logs read them: RFC 3339 in UTC with milliseconds, written from
//! Unix milliseconds without allocating (the access log writes one per request).

use std::fmt::Write;

/// Writes Unix milliseconds as `2026-11-26T12:00:00.000Z` (civil-from-days, Howard
/// Hinnant's algorithm).
pub fn write_rfc3339(out: &mut impl Write, ms: i64) -> std::fmt::Result {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// [`write_rfc3339`] into a new string.
pub fn rfc3339(ms: i64) -> String {
    let mut s = String::with_capacity(24);
    let _ = write_rfc3339(&mut s, ms);
    s
}
