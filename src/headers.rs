//! Which request headers reach HealthLake: a short allowlist, and the relay's own.
//!
//! Everything else a client sends is removed before signing: `authorization` and `x-amz-*` could
//! otherwise reach HealthLake beside (or instead of) the relay's signature, `host` overrides and
//! `x-forwarded-*` could mislead it, cookies have no business upstream, HealthLake keeps its own
//! version counter so Smile CDR's `If-Match` (and the other conditional headers) would make writes
//! fail, and `accept-encoding` could make HealthLake compress the error bodies the relay reads.
//! Pseudo-headers are Envoy's and stay; the relay rewrites `:method`, `:path` and `:authority`.

/// Client headers forwarded as they are. `x-forwarded-proto` is Envoy's own (the listener sets it
/// from the connection, `use_remote_address`) and its router needs it to match the route; the
/// route's `request_headers_to_remove` drops it on the way to HealthLake.
const FORWARDED: &[&str] = &[
    "content-type",
    "content-length",
    "accept",
    "user-agent",
    "x-request-id",
    "x-forwarded-proto",
];

/// Whether an inbound request header is removed before the request is signed and forwarded.
pub fn is_removed_before_signing(name: &[u8]) -> bool {
    !name.starts_with(b":")
        && !FORWARDED
            .iter()
            .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allowlist_and_pseudo_headers_stay() {
        for h in [
            "authorization",
            "Authorization",
            "proxy-authorization",
            "x-amz-date",
            "X-Amz-Security-Token",
            "x-amz-content-sha256",
            "cookie",
            "if-match",
            "If-None-Exist",
            "if-modified-since",
            "host",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-envoy-original-path",
            "forwarded",
            "accept-encoding",
            "x-http-method-override",
            "prefer",
            "x-caf\u{e9}",
        ] {
            assert!(is_removed_before_signing(h.as_bytes()), "{h}");
        }
        for h in [
            "content-type",
            "Content-Length",
            "accept",
            "user-agent",
            "x-request-id",
            "x-forwarded-proto",
            ":path",
            ":authority",
        ] {
            assert!(!is_removed_before_signing(h.as_bytes()), "{h}");
        }
    }
}
