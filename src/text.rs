//! Quoting untrusted text (paths, ids, HealthLake's diagnostics) for messages and logs.

/// `s` in double quotes, control characters escaped, cut after `max` characters with `…`.
pub fn quoted(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 4);
    out.push('"');
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bounds() {
        assert_eq!(quoted("a\nb", 10), r#""a\nb""#);
        assert_eq!(quoted("abcdef", 3), "\"abc…\"");
        assert_eq!(quoted("", 3), "\"\"");
    }
}
