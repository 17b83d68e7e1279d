//! Small UTC date/time helpers: the `x-amz-date` basic ISO-8601 format, RFC 3339 with
//! milliseconds (FHIR `meta.lastUpdated`), the IMF-fixdate of `Last-Modified`, and the extended
//! ISO-8601 timestamps STS writes as a credential's `Expiration`.
//!
//! A thin layer over the `time` crate: each format is one format description, used both to
//! write and to read it. The calendar itself (days, months, leap years, weekdays) is `time`'s.
//!
//! Formatting shows times before 1970 as the epoch, and times after 9999-12-31T23:59:59.999999999Z
//! as that instant: every format here has a four-digit year. Parsing takes four ASCII digits for
//! a year, never a sign.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::BorrowedFormatItem;
use time::macros::{datetime, format_description};
use time::parsing::Parsed;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

/// `2015-08-30T12:36:00.123Z`
const RFC3339_MILLIS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `2015-08-30T12:36:00Z`
const RFC3339_SECONDS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// `20150830T123600Z`
const AMZ_DATE: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// `20150830`
const YYYYMMDD: &[BorrowedFormatItem<'static>] = format_description!("[year][month][day]");

/// `Sun, 30 Aug 2015 12:36:00 GMT`
const HTTP_DATE: &[BorrowedFormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// `2026-11-27T23:00:00Z`, `2026-11-27t23:00:00.5z`, `2026-11-28T00:30:00+01:30`,
/// `2026-11-27T21:00:00-0200`: what [`parse_iso8601`] accepts.
const ISO8601_EXTENDED: &[BorrowedFormatItem<'static>] = format_description!(
    version = 2,
    "[year]-[month]-[day][first [T] [t]][hour]:[minute]:[second]\
     [optional [.[subsecond digits:1+]]]\
     [first [Z] [z] [[offset_hour sign:mandatory]:[offset_minute]] \
     [[offset_hour sign:mandatory][offset_minute]]]"
);

/// The latest instant the formats can show.
const LATEST: OffsetDateTime = datetime!(9999-12-31 23:59:59.999_999_999 UTC);

/// The fractional-second digits beyond nanoseconds are ignored, but `time` reads only so many of
/// them: [`parse_iso8601`] drops them first.
const NANOSECOND_DIGITS: usize = 9;

/// The largest UTC offset hour [`parse_iso8601`] accepts (`time` takes up to 25).
const MAX_OFFSET_HOUR: u8 = 23;

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

/// A `SystemTime` in UTC, within what the formats can show (see the module documentation).
fn utc(t: SystemTime) -> OffsetDateTime {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    time::Duration::try_from(since_epoch)
        .ok()
        .and_then(|d| OffsetDateTime::UNIX_EPOCH.checked_add(d))
        .map_or(LATEST, |at| at.min(LATEST))
}

/// Writes `t` in a format. A description made of UTC date and time components cannot fail to
/// format a UTC instant of a four-digit year, so the empty fallback is never used.
fn format(t: SystemTime, description: &[BorrowedFormatItem<'_>]) -> String {
    utc(t).format(description).unwrap_or_default()
}

/// `2015-08-30T12:36:00.123Z`
pub fn format_rfc3339_millis(t: SystemTime) -> String {
    format(t, RFC3339_MILLIS)
}

/// `2015-08-30T12:36:00Z` (whole seconds, as AWS STS writes an `Expiration`).
pub fn format_rfc3339_seconds(t: SystemTime) -> String {
    format(t, RFC3339_SECONDS)
}

/// `20150830T123600Z`
pub fn format_amz_date(t: SystemTime) -> String {
    format(t, AMZ_DATE)
}

/// `Sun, 30 Aug 2015 12:36:00 GMT` (RFC 9110 IMF-fixdate).
pub fn format_http_date(t: SystemTime) -> String {
    format(t, HTTP_DATE)
}

/// `s` when it starts with a digit: `time` reads an optional sign before a year, these formats
/// have none.
fn unsigned(s: &str) -> Option<&str> {
    s.starts_with(|c: char| c.is_ascii_digit()).then_some(s)
}

/// Unix seconds of a UTC date and time in a format without an offset.
fn parse_utc_seconds(s: &str, description: &[BorrowedFormatItem<'_>]) -> Option<i64> {
    let at = PrimitiveDateTime::parse(unsigned(s)?, description).ok()?;
    Some(at.assume_utc().unix_timestamp())
}

/// Parses `YYYYMMDD` into (year, month, day), checking the calendar.
pub fn parse_yyyymmdd(s: &str) -> Option<(i64, u32, u32)> {
    let date = Date::parse(unsigned(s)?, YYYYMMDD).ok()?;
    Some((
        i64::from(date.year()),
        u32::from(u8::from(date.month())),
        u32::from(date.day()),
    ))
}

/// Parses the SigV4 `x-amz-date` format `YYYYMMDDTHHMMSSZ` strictly, returning Unix seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    parse_utc_seconds(s, AMZ_DATE)
}

/// Parses an RFC 3339 UTC timestamp of the form `YYYY-MM-DDTHH:MM:SSZ` (as used by the SigV4
/// test suite's `context.json`), returning Unix seconds.
pub fn parse_rfc3339_utc_seconds(s: &str) -> Option<i64> {
    parse_utc_seconds(s, RFC3339_SECONDS)
}

/// `s` without the fractional-second digits beyond nanoseconds (`time` stops reading them after
/// a few dozen).
fn drop_excess_fraction_digits(s: &str) -> Cow<'_, str> {
    let Some((whole, fraction)) = s.split_once('.') else {
        return Cow::Borrowed(s);
    };
    let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
    match (fraction.get(..NANOSECOND_DIGITS), fraction.get(digits..)) {
        (Some(kept), Some(rest)) if digits > NANOSECOND_DIGITS => {
            Cow::Owned(format!("{whole}.{kept}{rest}"))
        }
        _ => Cow::Borrowed(s),
    }
}

/// Parses an extended ISO-8601 / RFC 3339 timestamp with a UTC offset, as STS writes a
/// credential's `Expiration`: `YYYY-MM-DDTHH:MM:SS`, optional fractional seconds (any number of
/// digits; beyond nanoseconds they are ignored), then `Z`, `+HH:MM`, `-HH:MM`, `+HHMM` or
/// `-HHMM`. `T`/`Z` may be lowercase.
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let s = drop_excess_fraction_digits(unsigned(s)?);
    let mut parsed = Parsed::new();
    let rest = parsed.parse_items(s.as_bytes(), ISO8601_EXTENDED).ok()?;
    if !rest.is_empty() {
        return None;
    }
    match parsed.offset_hour() {
        // `Z`: UTC.
        None => parsed.set_offset_hour(0)?,
        Some(hour) if hour.unsigned_abs() > MAX_OFFSET_HOUR => return None,
        Some(_) => {}
    }
    let at = OffsetDateTime::try_from(parsed).ok()?;
    Some(
        unix_to_system_time(at.unix_timestamp()) + Duration::from_nanos(u64::from(at.nanosecond())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_days() {
        // Days from 1970 to 9999 (every 53rd, so every day of the week and of the month, and
        // every month, come up), at a time of day that moves through the day.
        for day in (0..2_932_897i64).step_by(53) {
            let secs = day * 86_400 + (day * 3_607) % 86_400;
            let t = unix_to_system_time(secs);
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(secs), "{secs}");
            assert_eq!(
                parse_rfc3339_utc_seconds(&format_rfc3339_seconds(t)),
                Some(secs),
                "{secs}"
            );
            assert_eq!(parse_iso8601(&format_rfc3339_millis(t)), Some(t), "{secs}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
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
    fn formats_the_edges() {
        // Milliseconds are truncated, not rounded.
        let t = unix_to_system_time(1_440_938_160) + Duration::from_nanos(999_999_999);
        assert_eq!(format_rfc3339_millis(t), "2015-08-30T12:36:00.999Z");
        // Before the epoch: the epoch.
        let before = unix_to_system_time(-86_400);
        assert_eq!(format_rfc3339_millis(before), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_amz_date(before), "19700101T000000Z");
        assert_eq!(
            format_http_date(UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        // Leap days, the turn of a year and the last four-digit year.
        assert_eq!(
            format_http_date(unix_to_system_time(951_825_600)),
            "Tue, 29 Feb 2000 12:00:00 GMT"
        );
        assert_eq!(
            format_rfc3339_seconds(unix_to_system_time(1_767_225_599)),
            "2025-12-31T23:59:59Z"
        );
        let last = unix_to_system_time(253_402_300_799) + Duration::from_millis(999);
        assert_eq!(format_rfc3339_millis(last), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_http_date(last), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(
            format_amz_date(last + Duration::from_secs(86_400)),
            "99991231T235959Z"
        );
    }

    #[test]
    fn parses_scope_dates() {
        assert_eq!(parse_yyyymmdd("20150830"), Some((2015, 8, 30)));
        assert_eq!(parse_yyyymmdd("20000229"), Some((2000, 2, 29)));
        assert_eq!(parse_yyyymmdd("00000101"), Some((0, 1, 1)));
        for bad in [
            "",
            "2015083",
            "201508300",
            "20150230",
            "19000229",
            "20151301",
            "20150800",
            "+2015083",
            "2015-830",
            "2015O830",
            "２０１５0830",
        ] {
            assert_eq!(parse_yyyymmdd(bad), None, "{bad}");
        }
        assert_eq!(parse_rfc3339_utc_seconds("2015-08-30T12:36:00z"), None);
        assert_eq!(parse_rfc3339_utc_seconds("2015-08-30t12:36:00Z"), None);
        assert_eq!(parse_rfc3339_utc_seconds("2015-08-30T12:36:60Z"), None);
        assert_eq!(parse_rfc3339_utc_seconds("+015-08-30T12:36:00Z"), None);
        assert_eq!(parse_amz_date("20150830T123660Z"), None);
        assert_eq!(parse_amz_date("20150830T126000Z"), None);
        assert_eq!(parse_amz_date("20150830T123600z"), None);
        assert_eq!(parse_amz_date("20150830T123600Z "), None);
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

    #[test]
    fn parses_sts_expiration_edges() {
        let base = unix_to_system_time(1_795_820_400); // 2026-11-27T23:00:00Z
        assert_eq!(parse_iso8601("2026-11-27T22:30:00-00:30"), Some(base));
        assert_eq!(parse_iso8601("2026-11-28T22:59:00+23:59"), Some(base));
        // Any number of fractional digits, beyond what `time` reads on its own.
        let many = format!("2026-11-27T23:00:00.{}Z", "9".repeat(100));
        assert_eq!(
            parse_iso8601(&many),
            Some(base + Duration::from_nanos(999_999_999))
        );
        // Before the epoch, and a year of zero.
        assert_eq!(
            parse_iso8601("1969-12-31T23:59:59.5Z"),
            Some(unix_to_system_time(-1) + Duration::from_millis(500))
        );
        assert_eq!(
            parse_iso8601("0000-01-01T00:00:00Z"),
            Some(unix_to_system_time(-62_167_219_200))
        );
        for bad in [
            "+2026-11-27T23:00:00Z",
            "-2026-11-27T23:00:00Z",
            "2026-11-27T23:00:60Z",
            "2026-11-27T23:00:00+24:00",
            "2026-11-27T23:00:00+01:60",
            "2026-11-27T23:00:00+1:00",
            "2026-11-27T23:00:00+01:0",
            "2026-11-27T23:00:00+010",
            "2026-11-27T23:00:00 +01:00",
            "2026-11-27T23:00:00.5.5Z",
            "2026-11-27T23:00:00,5Z",
            "2026-11-27T23:00:00.5",
            "2026-11-27X23:00:00Z",
            "2026-13-27T23:00:00Z",
            "2026-11-27T23:00Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
