//! FHIR `instant` text for a point in time, as Smile CDR (HAPI) writes `meta.lastUpdated`:
//! `2025-03-01T10:15:30.123+00:00`. The calendar is the `time` crate's (proleptic Gregorian,
//! years -9999 to 9999).

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Date, Duration, Month, OffsetDateTime};

/// A FHIR instant in UTC with milliseconds.
const INSTANT: &[BorrowedFormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory]:[offset_minute]"
);

/// (year, month, day) to days since 1970-01-01. A day past the end of its month runs on into
/// the next (2025-02-31 is 2025-03-03), day 0 is the last day of the month before. `None` if
/// the month is not 1 to 12 or the date is outside the years -9999 to 9999.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let first = Date::from_calendar_date(i32::try_from(year).ok()?, month, 1).ok()?;
    let date = first.checked_add(Duration::days(i64::from(day) - 1))?;
    Some((date - OffsetDateTime::UNIX_EPOCH.date()).whole_days())
}

/// Milliseconds since the Unix epoch as a FHIR instant in UTC with milliseconds; an error
/// outside the years -9999 to 9999.
pub fn instant_from_unix_millis(millis: i64) -> Result<String, String> {
    let nanos = i128::from(millis) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| format!("{millis} ms since the Unix epoch is not in the years -9999 to 9999"))?
        .format(INSTANT)
        .map_err(|e| format!("{millis} ms since the Unix epoch: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_instants() {
        let instant = |ms| instant_from_unix_millis(ms).unwrap();
        assert_eq!(instant(0), "1970-01-01T00:00:00.000+00:00");
        let t = days_from_civil(2025, 3, 1).unwrap() * 86_400_000 + 36_930_123;
        assert_eq!(instant(t), "2025-03-01T10:15:30.123+00:00");
        let leap = days_from_civil(2024, 2, 29).unwrap() * 86_400_000 + 86_399_999;
        assert_eq!(instant(leap), "2024-02-29T23:59:59.999+00:00");
        assert_eq!(instant(-1), "1969-12-31T23:59:59.999+00:00");
        assert_eq!(instant(1_000_000_000_007), "2001-09-09T01:46:40.007+00:00");
        let first = days_from_civil(0, 1, 1).unwrap() * 86_400_000;
        assert_eq!(instant(first), "0000-01-01T00:00:00.000+00:00");
        let last = days_from_civil(9999, 12, 31).unwrap() * 86_400_000 + 86_399_999;
        assert_eq!(instant(last), "9999-12-31T23:59:59.999+00:00");
        assert!(instant_from_unix_millis(last + 1).is_err());
        assert!(instant_from_unix_millis(i64::MAX).is_err());
        assert!(instant_from_unix_millis(i64::MIN).is_err());
    }

    #[test]
    fn counts_days() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(1969, 12, 31), Some(-1));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(days_from_civil(2025, 3, 1), Some(20_148));
        assert_eq!(days_from_civil(0, 1, 1), Some(-719_528));
        // Days past the end of the month run on; day 0 is the day before the 1st.
        assert_eq!(days_from_civil(2025, 2, 31), days_from_civil(2025, 3, 3));
        assert_eq!(days_from_civil(2024, 2, 31), days_from_civil(2024, 3, 2));
        assert_eq!(days_from_civil(2025, 3, 0), days_from_civil(2025, 2, 28));
        assert_eq!(days_from_civil(2025, 12, 32), days_from_civil(2026, 1, 1));
        assert_eq!(days_from_civil(2025, 0, 1), None);
        assert_eq!(days_from_civil(2025, 13, 1), None);
        assert_eq!(days_from_civil(10_000, 1, 1), None);
        assert_eq!(days_from_civil(9999, 12, 32), None);
        assert_eq!(days_from_civil(i64::MAX, 1, 1), None);
    }
}
