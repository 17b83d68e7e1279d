//! FHIR `instant` values (`meta.lastUpdated`): `YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)`,
//! turned into a comparable point in time.

use crate::calendar;

/// Nanoseconds since the Unix epoch (negative before 1970).
pub type Nanos = i128;

fn digits(s: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(range)?;
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// Parses a FHIR instant; `None` if it is not one.
pub fn parse(s: &str) -> Option<Nanos> {
    let b = s.as_bytes();
    if b.len() < 20
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (year, month, day) = (digits(s, 0..4)?, digits(s, 5..7)?, digits(s, 8..10)?);
    let (hour, minute, second) = (digits(s, 11..13)?, digits(s, 14..16)?, digits(s, 17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > calendar::days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut rest = s.get(19..)?;
    let mut nanos: i128 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        let frac = fraction.get(..len)?;
        // Keep nanosecond precision; further digits do not change the order meaningfully.
        for (i, c) in frac.bytes().take(9).enumerate() {
            nanos += i128::from(c - b'0') * 10i128.pow(8 - i as u32);
        }
        rest = fraction.get(len..)?;
    }
    let offset_seconds: i64 = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let (oh, om) = (digits(rest, 1..3)?, digits(rest, 4..6)?);
            if oh > 14 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = calendar::days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(i128::from(seconds) * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i128 = 1_000_000_000;

    #[test]
    fn parses_utc_and_offsets_to_the_same_instant() {
        let z = parse("2026-01-15T09:30:00Z").unwrap();
        assert_eq!(z, 1_768_469_400 * NS);
        assert_eq!(parse("2026-01-15T10:30:00+01:00"), Some(z));
        assert_eq!(parse("2026-01-15T04:00:00-05:30"), Some(z));
        assert_eq!(parse("1970-01-01T00:00:00.000+00:00"), Some(0));
        assert_eq!(parse("1969-12-31T23:59:59Z"), Some(-NS));
    }

    #[test]
    fn fractions_order_correctly() {
        let a = parse("2026-01-15T09:30:00.1Z").unwrap();
        let b = parse("2026-01-15T09:30:00.099999999Z").unwrap();
        let c = parse("2026-01-15T09:30:00.100000001Z").unwrap();
        assert!(b < a && a < c);
        assert_eq!(a % NS, 100_000_000);
        assert_eq!(
            parse("2026-01-15T09:30:00.1234567891234Z").unwrap() % NS,
            123_456_789
        );
    }

    /// The Gregorian calendar's month lengths, for the sweeps below.
    fn month_length(year: i64, month: i64) -> i64 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ][month as usize - 1]
    }

    /// Every date of `years` (and the day after each month's last, which is not one): each valid
    /// date is exactly one day after the one before.
    fn sweep(years: std::ops::RangeInclusive<i64>) -> (i128, i128) {
        let day = 86_400 * NS;
        let (mut first, mut previous) = (None, None::<i128>);
        for year in years {
            for month in 1..=12 {
                let length = month_length(year, month);
                for d in 1..=length + 1 {
                    let s = format!("{year:04}-{month:02}-{d:02}T00:00:00Z");
                    let t = parse(&s);
                    if d > length {
                        assert_eq!(t, None, "{s}");
                        continue;
                    }
                    let t = t.unwrap_or_else(|| panic!("{s}"));
                    if let Some(p) = previous {
                        assert_eq!(t - p, day, "{s}");
                    }
                    first.get_or_insert(t);
                    previous = Some(t);
                }
            }
        }
        (first.unwrap(), previous.unwrap())
    }

    #[test]
    fn every_date_is_one_day_after_the_one_before() {
        let day = 86_400 * NS;
        // Four Gregorian centuries around the epoch: 146,097 days each.
        let (first, last) = sweep(1600..=2399);
        assert_eq!(first, parse("1600-01-01T00:00:00Z").unwrap());
        assert_eq!(last - first, (2 * 146_097 - 1) * day);
        // Known days: the epoch, the leap day of 2000, the last day of 9999.
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("2000-03-01T00:00:00Z"), Some(951_868_800 * NS));
        assert_eq!(parse("9999-12-31T00:00:00Z"), Some(253_402_214_400 * NS));
        assert_eq!(first, -11_676_096_000 * NS);
        // Years before 400 (negative eras inside the algorithm) and the first years.
        let (first, last) = sweep(0..=400);
        assert_eq!(first, -62_167_219_200 * NS);
        assert_eq!(last - first, (146_097 + 366 - 1) * day);
    }

    #[test]
    fn time_of_day_and_its_limits() {
        let midnight = parse("2026-03-04T00:00:00Z").unwrap();
        assert_eq!(
            parse("2026-03-04T13:47:29Z"),
            Some(midnight + (13 * 3600 + 47 * 60 + 29) * NS)
        );
        assert_eq!(
            parse("2026-03-04T23:59:60Z"),
            Some(midnight + 86_400 * NS),
            "a leap second"
        );
        for bad in [
            "2026-03-04T24:00:00Z",
            "2026-03-04T23:60:00Z",
            "2026-03-04T23:59:61Z",
            "2026-00-04T00:00:00Z",
            "2026-03-00T00:00:00Z",
            "2026-13-04T00:00:00Z",
            "2026-03-04T0a:00:00Z",
            "2026-03-04T00:0-:00Z",
            "2026-03-04T00:00:-0Z",
            "2026-0+-04T00:00:00Z",
            "2026-03--4T00:00:00Z",
            "2026/03-04T00:00:00Z",
            "2026-03/04T00:00:00Z",
            "2026-03-04t00:00:00Z",
            "2026-03-04T00-00:00Z",
            "2026-03-04T00:00-00Z",
            "2026-03-04T00:00:00z",
            "2026-03-04T00:00:00.1",
            "2026-03-04T00:00:00Z ",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn offsets_and_their_limits() {
        let z = parse("2026-03-04T12:00:00Z").unwrap();
        let h = 3600 * NS;
        assert_eq!(parse("2026-03-04T12:00:00+00:00"), Some(z));
        assert_eq!(parse("2026-03-04T12:00:00-00:00"), Some(z));
        assert_eq!(parse("2026-03-04T12:00:00+14:00"), Some(z - 14 * h));
        assert_eq!(parse("2026-03-04T12:00:00-14:00"), Some(z + 14 * h));
        assert_eq!(
            parse("2026-03-04T12:00:00+05:59"),
            Some(z - 5 * h - 59 * 60 * NS)
        );
        assert_eq!(
            parse("2026-03-04T12:00:00.5-01:01"),
            Some(z + h + 60 * NS + NS / 2)
        );
        for bad in [
            "2026-03-04T12:00:00+15:00",
            "2026-03-04T12:00:00+00:60",
            "2026-03-04T12:00:00*01:00",
            "2026-03-04T12:00:00+01-00",
            "2026-03-04T12:00:00+1:00",
            "2026-03-04T12:00:00+01:000",
            "2026-03-04T12:00:00+0a:00",
            "2026-03-04T12:00:00+01:0a",
            "2026-03-04T12:00:00",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_fraction_digit_has_its_weight() {
        let whole = parse("2026-03-04T12:00:00Z").unwrap();
        let mut weight = 100_000_000;
        for position in 1..=9 {
            let digits = format!("{}7", "0".repeat(position - 1));
            let t = parse(&format!("2026-03-04T12:00:00.{digits}Z")).unwrap();
            assert_eq!(t - whole, 7 * weight, ".{digits}");
            weight /= 10;
        }
        assert_eq!(
            parse("2026-03-04T12:00:00.987654321Z"),
            Some(whole + 987_654_321)
        );
        assert_eq!(
            parse("1969-12-31T23:59:59.25Z"),
            Some(-NS + NS / 4),
            "before the epoch a fraction still counts forward"
        );
    }

    #[test]
    fn leap_days() {
        assert!(parse("2024-02-29T00:00:00Z").is_some());
        assert!(parse("2023-02-29T00:00:00Z").is_none());
        assert!(parse("2000-02-29T00:00:00Z").is_some());
        assert!(parse("1900-02-29T00:00:00Z").is_none());
    }

    #[test]
    fn rejects_what_is_not_an_instant() {
        for s in [
            "",
            "2026-01-15",
            "2026-01-15T09:30:00",
            "2026-01-15T09:30:00+0100",
            "2026-13-15T09:30:00Z",
            "2026-01-32T09:30:00Z",
            "2026-01-15T24:00:00Z",
            "2026-01-15T09:30:00.Z",
            "2026-01-15T09:30:00ZZ",
            "2026-01-15 09:30:00Z",
            "２026-01-15T09:30:00Z",
            "+026-01-15T09:30:00Z",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }
}
