//! FHIR `instant` values (`meta.lastUpdated`): `YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)`,
//! turned into a comparable point in time.

/// Nanoseconds since the Unix epoch (negative before 1970).
pub type Nanos = i128;

fn digits(s: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(range)?;
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
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
        || day > days_in_month(year, month)
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
    let days = days_from_civil(year, month, day);
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
