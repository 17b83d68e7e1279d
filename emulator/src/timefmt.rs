//! Small UTC date/time helpers: the `x-amz-date` basic ISO-8601 format, RFC 3339 with
//! milliseconds (FHIR `meta.lastUpdated`), the IMF-fixdate of `Last-Modified`, and the extended
//! ISO-8601 timestamps STS writes as a credential's `Expiration`.
//!
//! Civil-date conversion uses the days-from-civil / civil-from-days algorithms for the proleptic
//! Gregorian calendar, which are exact for every date these formats can express.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A broken-down UTC timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

/// Days since 1970-01-01 for a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400; // [0, 399]
    let mp = i64::from((month + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both values are in small, known ranges, so the conversions cannot fail.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Number of days in a month of a year (0 for an invalid month).
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Seconds since the Unix epoch of a UTC civil time (milliseconds ignored).
pub fn unix_seconds(c: &Civil) -> i64 {
    days_from_civil(c.year, c.month, c.day) * 86_400
        + i64::from(c.hour) * 3600
        + i64::from(c.minute) * 60
        + i64::from(c.second)
}

/// Signed seconds since the Unix epoch of a `SystemTime`.
pub fn system_time_to_unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs())
            .map(|s| -s)
            .unwrap_or(i64::MIN),
    }
}

/// The `SystemTime` of a number of seconds since the Unix epoch.
pub fn unix_to_system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Breaks a `SystemTime` down into UTC civil time (times before 1970 are clamped to the epoch).
pub fn to_civil(t: SystemTime) -> Civil {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let rem = u32::try_from(rem).unwrap_or(0);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: (rem % 3600) / 60,
        second: rem % 60,
        millis: d.subsec_millis(),
    }
}

/// `2015-08-30T12:36:00.123Z`
pub fn format_rfc3339_millis(t: SystemTime) -> String {
    let c = to_civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

/// `2015-08-30T12:36:00Z` (whole seconds, as AWS STS writes an `Expiration`).
pub fn format_rfc3339_seconds(t: SystemTime) -> String {
    let c = to_civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `20150830T123600Z`
pub fn format_amz_date(t: SystemTime) -> String {
    let c = to_civil(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `Sun, 30 Aug 2015 12:36:00 GMT` (RFC 9110 IMF-fixdate).
pub fn format_http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = to_civil(t);
    let days = days_from_civil(c.year, c.month, c.day);
    let weekday = usize::try_from(days.rem_euclid(7)).unwrap_or(0);
    let wd = DAYS.get(weekday).copied().unwrap_or("Thu");
    let mon = usize::try_from(c.month.saturating_sub(1))
        .ok()
        .and_then(|i| MONTHS.get(i))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{wd}, {:02} {mon} {:04} {:02}:{:02}:{:02} GMT",
        c.day, c.year, c.hour, c.minute, c.second
    )
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// Parses `YYYYMMDD` into (year, month, day), checking the calendar.
pub fn parse_yyyymmdd(s: &str) -> Option<(i64, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 8 {
        return None;
    }
    let year = i64::from(digits(b.get(0..4)?)?);
    let month = digits(b.get(4..6)?)?;
    let day = digits(b.get(6..8)?)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some((year, month, day))
}

/// Parses the SigV4 `x-amz-date` format `YYYYMMDDTHHMMSSZ` strictly, returning Unix seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return None;
    }
    let (year, month, day) = parse_yyyymmdd(s.get(0..8)?)?;
    let hour = digits(b.get(9..11)?)?;
    let minute = digits(b.get(11..13)?)?;
    let second = digits(b.get(13..15)?)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(unix_seconds(&Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        millis: 0,
    }))
}

/// Parses an RFC 3339 UTC timestamp of the form `YYYY-MM-DDTHH:MM:SSZ` (as used by the SigV4
/// test suite's `context.json`), returning Unix seconds.
pub fn parse_rfc3339_utc_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || b.get(19) != Some(&b'Z')
    {
        return None;
    }
    let basic = format!(
        "{}{}{}T{}{}{}Z",
        s.get(0..4)?,
        s.get(5..7)?,
        s.get(8..10)?,
        s.get(11..13)?,
        s.get(14..16)?,
        s.get(17..19)?
    );
    parse_amz_date(&basic)
}

/// Parses an extended ISO-8601 / RFC 3339 timestamp with a UTC offset, as STS writes a
/// credential's `Expiration`: `YYYY-MM-DDTHH:MM:SS`, optional fractional seconds (any number of
/// digits; beyond nanoseconds they are ignored), then `Z`, `+HH:MM`, `-HH:MM`, `+HHMM` or
/// `-HHMM`. `T`/`Z` may be lowercase.
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let year = i64::from(digits(b.get(0..4)?)?);
    let month = digits(b.get(5..7)?)?;
    let day = digits(b.get(8..10)?)?;
    let hour = digits(b.get(11..13)?)?;
    let minute = digits(b.get(14..16)?)?;
    let second = digits(b.get(17..19)?)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = b.get(19..)?;
    let mut nanos: u32 = 0;
    if let Some((b'.', tail)) = rest.split_first() {
        let count = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return None;
        }
        let mut scale = 100_000_000u32;
        for d in tail.get(..count)?.iter().take(9) {
            nanos += u32::from(d - b'0') * scale;
            scale /= 10;
        }
        rest = tail.get(count..)?;
    }
    let offset_seconds: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let oh = digits(&[*h1, *h2])?;
            let om = digits(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let magnitude = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };
    let local = unix_seconds(&Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        millis: 0,
    });
    Some(unix_to_system_time(local - offset_seconds) + Duration::from_nanos(u64::from(nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_days() {
        for days in -800_000..800_000i64 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(
            parse_rfc3339_utc_seconds("2015-08-30T12:36:00Z"),
            Some(1_440_938_160)
        );
        assert_eq!(parse_amz_date("20000229T000000Z"), Some(951_782_400));
        assert_eq!(parse_amz_date("20010229T000000Z"), None);
        assert_eq!(parse_amz_date("20150830T243600Z"), None);
        assert_eq!(parse_amz_date("20150830 123600Z"), None);
        assert_eq!(parse_amz_date("2015083OT123600Z"), None);
        assert_eq!(parse_amz_date("+0150830T123600Z"), None);
        let t = unix_to_system_time(1_440_938_160) + Duration::from_millis(7);
        assert_eq!(format_rfc3339_millis(t), "2015-08-30T12:36:00.007Z");
        assert_eq!(format_rfc3339_seconds(t), "2015-08-30T12:36:00Z");
        assert_eq!(format_amz_date(t), "20150830T123600Z");
        assert_eq!(format_http_date(t), "Sun, 30 Aug 2015 12:36:00 GMT");
        assert_eq!(
            format_http_date(unix_to_system_time(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(system_time_to_unix(unix_to_system_time(-5)), -5);
    }

    #[test]
    fn parses_sts_expirations() {
        let base = unix_to_system_time(1_795_820_400); // 2026-11-27T23:00:00Z
        assert_eq!(parse_iso8601("2026-11-27T23:00:00Z"), Some(base));
        assert_eq!(parse_iso8601("2026-11-27t23:00:00z"), Some(base));
        assert_eq!(parse_iso8601("2026-11-27T23:00:00+00:00"), Some(base));
        assert_eq!(parse_iso8601("2026-11-28T00:30:00+01:30"), Some(base));
        assert_eq!(parse_iso8601("2026-11-27T21:00:00-0200"), Some(base));
        assert_eq!(
            parse_iso8601("2026-11-27T23:00:00.5Z"),
            Some(base + Duration::from_millis(500))
        );
        assert_eq!(
            parse_iso8601("2026-11-27T23:00:00.123456+00:00"),
            Some(base + Duration::from_micros(123_456))
        );
        assert_eq!(
            parse_iso8601("2026-11-27T23:00:00.1234567891234Z"),
            Some(base + Duration::from_nanos(123_456_789))
        );
        assert_eq!(
            format_rfc3339_millis(parse_iso8601("2026-11-27T23:00:00.000Z").unwrap()),
            "2026-11-27T23:00:00.000Z"
        );
        for bad in [
            "",
            "2026-11-27T23:00:00",
            "2026-11-27 23:00:00Z",
            "2026-11-27T23:00:00.Z",
            "2026-11-27T24:00:00Z",
            "2026-02-29T23:00:00Z",
            "2026-11-27T23:00:00+25:00",
            "2026-11-27T23:00:00+00",
            "2026-11-27T23:00:00ZZ",
            "20261127T230000Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
