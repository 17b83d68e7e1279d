//! The request line and the few headers the relay reads, from Envoy's header map as bytes.
//!
//! Envoy passes on header values that are not UTF-8 from any client (only names are checked by
//! its codec), so nothing here assumes text. What non-UTF-8 means, per header: in `:method` or
//! `:path` the request cannot be a FHIR write (`400`, see [`crate::plan::plan_request`]); in
//! `authorization` it is not a configured token (`401`); in `content-type` it is not FHIR JSON
//! (`415`); `content-length` is a number Envoy's codec already checked; any other header is not
//! read, and is removed before signing unless it is on the forwarding allowlist
//! ([`crate::headers`]), where it passes as the bytes received.

use crate::headers::is_removed_before_signing;
use crate::host_encoding::HeaderPairs;
use std::borrow::Cow;

/// What the relay reads of a request's headers, borrowed from the header map.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub authorization: Option<&'a [u8]>,
    /// The first `content-type`, and how many there are (a repeated one is never passed on).
    pub content_type: Option<&'a [u8]>,
    pub content_types: usize,
    pub content_length: Option<&'a [u8]>,
}

impl<'a> RequestHead<'a> {
    pub fn read(headers: &'a [(Vec<u8>, Vec<u8>)]) -> RequestHead<'a> {
        let mut head = RequestHead::default();
        for (name, value) in headers {
            match name.as_slice() {
                b":method" => head.method = value,
                b":path" => head.path = value,
                b"authorization" => head.authorization = head.authorization.or(Some(value)),
                b"content-type" => {
                    head.content_type = head.content_type.or(Some(value));
                    head.content_types += 1;
                }
                b"content-length" => head.content_length = Some(value),
                _ => {}
            }
        }
        head
    }

    /// The declared body length, when it is a decimal number.
    pub fn declared_length(&self) -> Option<u64> {
        std::str::from_utf8(self.content_length?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The content type as text; a value that is not UTF-8 is named as such (it is not FHIR
    /// JSON either way).
    pub fn content_type_text(&self) -> Option<&'a str> {
        self.content_type
            .map(|v| std::str::from_utf8(v).unwrap_or("(not UTF-8)"))
    }
}

/// The names of the request headers removed before signing (see [`crate::headers`]).
pub fn removed_before_signing(headers: &HeaderPairs) -> impl Iterator<Item = &[u8]> {
    headers
        .iter()
        .map(|(name, _)| name.as_slice())
        .filter(|name| is_removed_before_signing(name))
}

/// Longest path written to the access log (a path can be as long as Envoy's header limit).
pub const LOGGED_PATH_MAX: usize = 2048;

/// The path as the access log shows it: without its query string (a client may put a token
/// there), bytes that are not UTF-8 replaced, at most [`LOGGED_PATH_MAX`] bytes.
pub fn logged_path(path: &[u8]) -> Cow<'_, str> {
    let end = memchr::memchr2(b'?', b'#', path).unwrap_or(path.len());
    String::from_utf8_lossy(path.get(..end.min(LOGGED_PATH_MAX)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &[u8])]) -> HeaderPairs {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn reads_what_the_relay_needs_as_bytes() {
        let headers = h(&[
            (":method", b"PUT"),
            (":path", b"/Patient/caf\xe9"),
            ("x-test", b"caf\xe9"),
            ("authorization", b"Bearer \xff"),
            ("content-type", b"application/fhir+json"),
            ("content-type", b"text/plain"),
            ("content-length", b"42"),
        ]);
        let head = RequestHead::read(&headers);
        assert_eq!(head.method, b"PUT");
        assert_eq!(head.path, b"/Patient/caf\xe9");
        assert_eq!(head.authorization, Some(&b"Bearer \xff"[..]));
        assert_eq!(head.content_type_text(), Some("application/fhir+json"));
        assert_eq!(head.content_types, 2);
        assert_eq!(head.declared_length(), Some(42));
        let removed: Vec<&[u8]> = removed_before_signing(&headers).collect();
        assert_eq!(removed, vec![&b"x-test"[..], b"authorization"]);
    }

    #[test]
    fn odd_values_are_named_not_trusted() {
        let headers = h(&[("content-type", b"\xff"), ("content-length", b"12x")]);
        let head = RequestHead::read(&headers);
        assert_eq!(head.content_type_text(), Some("(not UTF-8)"));
        assert_eq!(head.declared_length(), None);
        assert_eq!(RequestHead::read(&[]), RequestHead::default());
    }

    #[test]
    fn the_logged_path_has_no_query_and_is_bounded_text() {
        assert_eq!(logged_path(b"/Patient/x?access_token=secret"), "/Patient/x");
        assert_eq!(logged_path(b"/Patient/x#frag"), "/Patient/x");
        assert_eq!(logged_path(b"/caf\xe9"), "/caf\u{fffd}");
        assert_eq!(logged_path(&[b'a'; 5000]).len(), LOGGED_PATH_MAX);
        assert_eq!(logged_path(b""), "");
    }
}
