//! Dates for people: RFC 3339 UTC text and "in 14 min" / "3 h ago" from Unix seconds.

/// `2026-11-28T09:13:20Z` for Unix seconds (proleptic Gregorian calendar, UTC).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant's algorithm), days counted from 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A span in the largest unit that keeps it readable: `45 s`, `14 min`, `3 h`, `12 d`.
pub fn span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    match s {
        0..120 => format!("{s} s"),
        120..7_200 => format!("{} min", s / 60),
        7_200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// How a date claim reads relative to `now`: "expires in 14 min", "expired 3 h ago", …
pub fn relative(claim: &str, at: i64, now: i64) -> String {
    let d = at - now;
    let future = d > 0;
    let s = span(d);
    match (claim, future) {
        ("exp", true) => format!("expires in {s}"),
        ("exp", false) => format!("expired {s} ago"),
        ("nbf", true) => format!("not valid for another {s}"),
        ("nbf", false) => format!("valid since {s} ago"),
        ("iat", true) => format!("issued {s} in the future"),
        ("iat", false) => format!("issued {s} ago"),
        (_, true) => format!("in {s}"),
        (_, false) => format!("{s} ago"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_300_819_380), "2011-03-22T18:43:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(utc(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn relative_spans() {
        assert_eq!(relative("exp", 1000 + 14 * 60, 1000), "expires in 14 min");
        assert_eq!(
            relative("exp", 1000, 1000 + 3 * 3600 + 5),
            "expired 3 h ago"
        );
        assert_eq!(relative("iat", 940, 1000), "issued 60 s ago");
        assert_eq!(relative("exp", 0, 3 * 86_400), "expired 3 d ago");
    }
}
