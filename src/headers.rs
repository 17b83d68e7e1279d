//! Which request headers the relay removes before signing and forwarding.
//!
//! A client-supplied `authorization` or `x-amz-*` header could otherwise reach HealthLake beside
//! (or instead of) the relay's own signature; cookies have no business upstream; HealthLake keeps
//! its own version counter, so Smile CDR's `If-Match` (and the other conditional headers) would
//! make writes fail.

/// Headers removed by exact (case-insensitive) name.
const REMOVED: &[&str] = &[
    "authorization",
    "cookie",
    "if-match",
    "if-none-match",
    "if-none-exist",
    "if-modified-since",
    "if-unmodified-since",
    "proxy-authorization",
];

/// Whether an inbound request header must be removed before the request is signed and forwarded.
pub fn is_removed_before_signing(name: &str) -> bool {
    let starts_x_amz = name
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("x-amz-"));
    starts_x_amz || REMOVED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_credentials_cookies_and_conditionals() {
        for h in [
            "authorization",
            "Authorization",
            "x-amz-date",
            "X-Amz-Security-Token",
            "x-amz-content-sha256",
            "cookie",
            "if-match",
            "If-None-Exist",
        ] {
            assert!(is_removed_before_signing(h), "{h}");
        }
        for h in [
            "content-type",
            "accept",
            "x-request-id",
            "x-am",
            "user-agent",
            ":path",
        ] {
            assert!(!is_removed_before_signing(h), "{h}");
        }
    }
}
