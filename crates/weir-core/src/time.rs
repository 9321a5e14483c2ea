//! Times as people and logs read them: RFC 3339 in UTC with milliseconds, written from
//! Unix milliseconds without allocating (the access log writes one per request).

/// Appends Unix milliseconds as `2026-11-26T12:00:00.000Z` (civil-from-days, Howard
/// Hinnant's algorithm), the digits written by hand: the access log writes one per request.
pub fn push_rfc3339(s: &mut String, ms: i64) {
    use crate::json::push_u64;
    let c = civil(ms);
    // A year before 0 or after 9999 is no RFC 3339 time; clamp rather than mis-format.
    push_u64(s, c.year.clamp(0, 9999) as u64, 4);
    for (sep, v) in [
        ('-', c.month),
        ('-', c.day),
        ('T', c.hour),
        (':', c.minute),
        (':', c.second),
    ] {
        s.push(sep);
        push_u64(s, v as u64, 2);
    }
    s.push('.');
    push_u64(s, c.milli as u64, 3);
    s.push('Z');
}

struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    milli: i64,
}

fn civil(ms: i64) -> Civil {
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
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        milli,
    }
}

/// [`push_rfc3339`] into a new string.
pub fn rfc3339(ms: i64) -> String {
    let mut s = String::with_capacity(24);
    push_rfc3339(&mut s, ms);
    s
}
