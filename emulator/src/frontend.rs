//! The routing headers AWS's front end (CloudFront in front of API Gateway) adds to every
//! HealthLake data-plane answer. The emulator adds them too, so the relay's tests can check that
//! Envoy does not pass them on to Smile CDR.
//!
//! The values have AWS's formats and are derived from the request id (SHA-256), so they differ
//! per answer: `via: 1.1 {32 hex}.cloudfront.net (CloudFront)`, `x-amz-apigw-id` (16 base64
//! characters ending in `=`), `x-amzn-trace-id: Root=1-{8 hex: Unix seconds}-{24 hex}`,
//! `x-amz-cf-id` (56 URL-safe base64 characters ending in `==`) and the fixed
//! `x-amz-cf-pop: IAD89-C1`.

use std::time::SystemTime;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::timefmt;

/// The names of the headers [`headers`] returns, in that order.
pub const HEADER_NAMES: [&str; 5] = [
    "via",
    "x-amz-apigw-id",
    "x-amzn-trace-id",
    "x-amz-cf-id",
    "x-amz-cf-pop",
];

/// The CloudFront edge location named in `x-amz-cf-pop`.
pub const CF_POP: &str = "IAD89-C1";

/// The front-end headers for the answer to the request `request_id`, answered at `now`.
pub fn headers(request_id: &str, now: SystemTime) -> [(&'static str, String); 5] {
    let a = Sha256::digest(format!("edge:{request_id}").as_bytes());
    let b = Sha256::digest(format!("gateway:{request_id}").as_bytes());
    let a = a.as_slice();
    let b = b.as_slice();
    let part =
        |bytes: &[u8], from: usize, to: usize| bytes.get(from..to).unwrap_or_default().to_vec();
    let epoch = u32::try_from(timefmt::system_time_to_unix(now)).unwrap_or(0);
    let mut cf_id = part(b, 0, 32);
    cf_id.extend(part(a, 24, 32));
    [
        (
            "via",
            format!(
                "1.1 {}.cloudfront.net (CloudFront)",
                hex::encode(part(a, 0, 16))
            ),
        ),
        ("x-amz-apigw-id", STANDARD.encode(part(b, 0, 11))),
        (
            "x-amzn-trace-id",
            format!("Root=1-{epoch:08x}-{}", hex::encode(part(a, 12, 24))),
        ),
        ("x-amz-cf-id", URL_SAFE.encode(cf_id)),
        ("x-amz-cf-pop", CF_POP.to_string()),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn have_aws_formats_and_differ_per_request() {
        let now = timefmt::unix_to_system_time(1_795_816_800);
        let h = headers("5b1e0c4e-0000-4000-8000-000000000001", now);
        let names: Vec<&str> = h.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, HEADER_NAMES);
        let via = &h[0].1;
        let host = via
            .strip_prefix("1.1 ")
            .and_then(|v| v.strip_suffix(".cloudfront.net (CloudFront)"))
            .unwrap();
        assert!(
            host.len() == 32 && host.bytes().all(|c| c.is_ascii_hexdigit()),
            "{via}"
        );
        let apigw = &h[1].1;
        assert!(
            apigw.len() == 16 && apigw.ends_with('=') && !apigw.ends_with("=="),
            "{apigw}"
        );
        let trace = &h[2].1;
        assert!(trace.starts_with("Root=1-6b09fd60-"), "{trace}");
        assert_eq!(trace.len(), "Root=1-".len() + 8 + 1 + 24);
        let cf_id = &h[3].1;
        assert!(cf_id.len() == 56 && cf_id.ends_with("=="), "{cf_id}");
        assert!(!cf_id.contains('+') && !cf_id.contains('/'), "{cf_id}");
        assert_eq!(h[4].1, "IAD89-C1");
        // Another request, other values; the same request, the same values.
        let other = headers("5b1e0c4e-0000-4000-8000-000000000002", now);
        assert!((0..4).all(|i| h[i].1 != other[i].1));
        assert_eq!(h, headers("5b1e0c4e-0000-4000-8000-000000000001", now));
    }
}
