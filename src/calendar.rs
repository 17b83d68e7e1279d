//! The calendar math of the relay, in one place: civil dates to and from days since 1970-01-01
//! (proleptic Gregorian), and the two time formats it writes: RFC 3339 (log lines, the
//! CapabilityStatement's date) and SigV4's `x-amz-date`.

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` for Unix seconds, for log lines.
pub fn rfc3339(unix_seconds: u64) -> String {
    let ((year, month, day), (hour, minute, second)) = civil(unix_seconds);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// UTC ((year, month, day), (hour, minute, second)) of a Unix time (proleptic Gregorian).
pub fn civil(unix_seconds: u64) -> ((i64, i64, i64), (u64, u64, u64)) {
    let days = i64::try_from(unix_seconds / 86_400).unwrap_or(0);
    let rem = unix_seconds % 86_400;
    // Civil date from days since 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    ((year, month, day), (rem / 3600, rem % 3600 / 60, rem % 60))
}

/// `YYYYMMDDTHHMMSSZ` (SigV4's `x-amz-date`) for a time. Four digits of year: the host's clock
/// (nanoseconds in a u64) ends in 2554.
pub fn amz_date(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ((year, month, day), (hour, minute, second)) = civil(secs);
    // Digit by digit, not format!: core::fmt costs several times more per request in Wasm.
    let mut out = String::with_capacity(16);
    let number = |v: i64| u64::try_from(v).unwrap_or(0);
    push_digits(&mut out, number(year), 4);
    push_digits(&mut out, number(month), 2);
    push_digits(&mut out, number(day), 2);
    out.push('T');
    push_digits(&mut out, hour, 2);
    push_digits(&mut out, minute, 2);
    push_digits(&mut out, second, 2);
    out.push('Z');
    out
}

/// The last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut String, value: u64, width: u32) {
    for place in (0..width).rev() {
        let digit = value / 10u64.pow(place) % 10;
        out.push(char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn amz_date_formats_known_instants() {
        use std::time::{Duration, SystemTime};
        let at = |s| super::amz_date(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(1_440_938_160), "20150830T123600Z");
        // Leap day, and the last second of a year.
        assert_eq!(at(1_709_210_096), "20240229T123456Z");
        assert_eq!(at(1_767_225_599), "20251231T235959Z");
    }

    #[test]
    fn days_and_dates_agree() {
        for (days, date) in [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (19_782, (2024, 2, 29)),
        ] {
            assert_eq!(super::days_from_civil(date.0, date.1, date.2), days);
        }
        assert_eq!(super::days_in_month(2024, 2), 29);
        assert_eq!(super::days_in_month(1900, 2), 28);
        assert_eq!(super::days_in_month(2000, 2), 29);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_820_400), "2026-11-27T23:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(super::rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn time_of_day() {
        assert_eq!(super::civil(3723), ((1970, 1, 1), (1, 2, 3)));
        assert_eq!(super::civil(86_399), ((1970, 1, 1), (23, 59, 59)));
        assert_eq!(super::civil(86_400), ((1970, 1, 2), (0, 0, 0)));
        assert_eq!(super::civil(1_709_210_096), ((2024, 2, 29), (12, 34, 56)));
    }

    /// Counting days one by one through the Gregorian calendar from 1970-01-01 to 2800: every
    /// Unix day is the date after the one before.
    #[test]
    fn every_day_follows_the_one_before() {
        let leap = |y: i64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for n in 0..303_000u64 {
            // A different time of day each day, so the date never depends on it.
            let second = n * 7919 % 86_400;
            let (date, _) = super::civil(n * 86_400 + second);
            assert_eq!(date, (year, month, day), "day {n}");
            let length = match month {
                2 if leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
        assert_eq!((year, month, day), (2799, 8, 3));
    }
}
