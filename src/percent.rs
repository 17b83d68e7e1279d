//! RFC 3986 percent-encoding of every byte but the unreserved characters (`A-Z a-z 0-9 - . _ ~`),
//! upper-case hex: what SigV4 requires of each path segment, and what STS's form body takes.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Appends `value`, percent-encoded, to `out`.
pub fn encode_into(out: &mut String, value: &str) {
    out.extend(utf8_percent_encode(value, NOT_UNRESERVED));
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_only_the_unreserved_characters() {
        let mut out = String::new();
        super::encode_into(&mut out, "aZ09-._~ /+=&%é\u{0}");
        assert_eq!(out, "aZ09-._~%20%2F%2B%3D%26%25%C3%A9%00");
    }
}
