//! Cross-check: requests signed by the `aws-sigv4` crate must pass the emulator's independent
//! verifier, and must fail it once the body, the path, a signed header, the token, the scope or
//! the clock is wrong.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use healthlake_emulator::sigv4::{Credential, Reason};

fn reason_of(req: &http::Request<Vec<u8>>, now: SystemTime) -> Option<Reason> {
    let creds = accepted();
    let v = verify(req, &policy(&creds, now));
    v.error().map(|e| e.reason)
}

fn all_signer_variants() -> Vec<(&'static str, SignOpts)> {
    let mut out = Vec::new();
    for (name, base) in [
        ("long-term", SignOpts::long_term()),
        ("temporary", SignOpts::temporary()),
    ] {
        for sha in [true, false] {
            let mut o = base.clone();
            o.content_sha256 = sha;
            out.push((
                if sha {
                    if name == "long-term" {
                        "long-term + x-amz-content-sha256"
                    } else {
                        "temporary + x-amz-content-sha256"
                    }
                } else {
                    name
                },
                o,
            ));
        }
    }
    out
}

#[test]
fn healthlake_puts_signed_by_aws_sigv4_verify() {
    let body = patient("example");
    for (name, opts) in all_signer_variants() {
        let req = signed_put("Patient", "example", &body, &opts);
        let creds = accepted();
        let v = verify(&req, &policy(&creds, opts.time));
        assert!(
            v.is_verified(),
            "{name}: {:?}\n{}",
            v.outcome,
            v.canonical_request.unwrap_or_default()
        );
        let signed = v.signed_headers.unwrap();
        assert!(signed.contains(&"host".to_string()), "{name}");
        assert!(signed.contains(&"x-amz-date".to_string()), "{name}");
        assert_eq!(
            signed.contains(&"x-amz-security-token".to_string()),
            opts.token.is_some(),
            "{name}"
        );
        assert_eq!(
            signed.contains(&"x-amz-content-sha256".to_string()),
            opts.content_sha256,
            "{name}"
        );
        let canonical = v.canonical_request.unwrap();
        assert!(
            canonical.starts_with(&format!(
                "PUT\n/datastore/{DATASTORE}/r4/Patient/example\n\n"
            )),
            "{canonical}"
        );
        assert!(canonical.ends_with(&healthlake_emulator::sigv4::sha256_hex(&body)));
    }
}

#[test]
fn other_methods_paths_and_queries_verify() {
    let opts = SignOpts::temporary();
    let cases: &[(&str, &str, &[u8])] = &[
        ("DELETE", "/datastore/ds/r4/Patient/example", b""),
        ("GET", "/datastore/ds/r4/Patient/example", b""),
        (
            "GET",
            "/datastore/ds/r4/Patient?name=Chalmers&_count=10&birthdate=ge1970-01-01",
            b"",
        ),
        (
            "GET",
            "/datastore/ds/r4/Patient?given=Peter+James&family=a%20b&x=%2F%3D&k&empty=",
            b"",
        ),
        (
            "PUT",
            "/datastore/ds/r4/Binary/a%3Db%20c",
            b"\x00\x01\xff binary",
        ),
        (
            "PUT",
            "/datastore/ds/r4/./Patient/../Patient//example/",
            b"{}",
        ),
        (
            "POST",
            "/datastore/ds/r4/",
            b"{\"resourceType\":\"Bundle\"}",
        ),
        ("PUT", "/datastore/ds/r4/Observation/%E1%88%B4~._-", b"{}"),
    ];
    for (method, uri, body) in cases {
        for sha in [true, false] {
            let mut o = opts.clone();
            o.content_sha256 = sha;
            let req = signed_request(
                method,
                uri,
                &[
                    ("host", HOST),
                    ("content-type", "application/fhir+json"),
                    ("x-amz-target", "x.y"),
                ],
                body,
                &o,
            );
            let creds = accepted();
            let v = verify(&req, &policy(&creds, o.time));
            assert!(
                v.is_verified(),
                "{method} {uri} sha={sha}: {:?}\n{}",
                v.outcome,
                v.canonical_request.unwrap_or_default()
            );
        }
    }
}

#[test]
fn tampering_is_detected() {
    let body = patient("example");
    for (name, opts) in all_signer_variants() {
        let now = opts.time;
        let base = signed_put("Patient", "example", &body, &opts);
        assert_eq!(reason_of(&base, now), None, "{name}");

        // One byte of the body.
        let mut r = base.clone();
        r.body_mut()[10] ^= 0x20;
        let expected = if opts.content_sha256 {
            Reason::PayloadHashMismatch
        } else {
            Reason::SignatureMismatch
        };
        assert_eq!(reason_of(&r, now), Some(expected), "{name}: body");
        if opts.content_sha256 {
            let creds = accepted();
            let v = verify(&r, &policy(&creds, now));
            assert!(v
                .error()
                .unwrap()
                .message
                .contains("body does not match x-amz-content-sha256"));
        }

        // A byte appended to the body.
        let mut r = base.clone();
        r.body_mut().push(b' ');
        assert_eq!(reason_of(&r, now), Some(expected), "{name}: body appended");

        // The path.
        let mut r = base.clone();
        *r.uri_mut() = format!("/datastore/{DATASTORE}/r4/Patient/examplf")
            .parse()
            .unwrap();
        assert_eq!(
            reason_of(&r, now),
            Some(Reason::SignatureMismatch),
            "{name}: path"
        );

        // A query added.
        let mut r = base.clone();
        *r.uri_mut() = format!("/datastore/{DATASTORE}/r4/Patient/example?x=1")
            .parse()
            .unwrap();
        assert_eq!(
            reason_of(&r, now),
            Some(Reason::SignatureMismatch),
            "{name}: query"
        );

        // The method.
        let mut r = base.clone();
        *r.method_mut() = http::Method::POST;
        assert_eq!(
            reason_of(&r, now),
            Some(Reason::SignatureMismatch),
            "{name}: method"
        );

        // A signed header's value.
        let mut r = base.clone();
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        assert_eq!(
            reason_of(&r, now),
            Some(Reason::SignatureMismatch),
            "{name}: content-type"
        );
        let mut r = base.clone();
        r.headers_mut()
            .insert("host", "example.com".parse().unwrap());
        assert_eq!(
            reason_of(&r, now),
            Some(Reason::SignatureMismatch),
            "{name}: host"
        );

        // A signed header repeated.
        let mut r = base.clone();
        r.headers_mut()
            .append("content-type", "application/fhir+json".parse().unwrap());
        assert_eq!(
            reason_of(&r, now),
            Some(Reason::SignatureMismatch),
            "{name}: repeated header"
        );

        // A signed header removed.
        let mut r = base.clone();
        r.headers_mut().remove("content-type");
        assert_eq!(
            reason_of(&r, now),
            Some(Reason::SignedHeaderAbsent),
            "{name}: removed header"
        );

        // The signature itself.
        let mut r = base.clone();
        let auth = r.headers()["authorization"].to_str().unwrap().to_string();
        let last = auth.chars().last().unwrap();
        let flipped = format!(
            "{}{}",
            &auth[..auth.len() - 1],
            if last == '0' { '1' } else { '0' }
        );
        r.headers_mut()
            .insert("authorization", flipped.parse().unwrap());
        assert_eq!(
            reason_of(&r, now),
            Some(Reason::SignatureMismatch),
            "{name}: signature"
        );

        // An unsigned x-amz-* header added.
        let mut r = base.clone();
        r.headers_mut()
            .insert("x-amz-meta-extra", "1".parse().unwrap());
        assert_eq!(
            reason_of(&r, now),
            Some(Reason::RequiredHeaderNotSigned),
            "{name}: x-amz header"
        );

        // An unsigned other header is fine.
        let mut r = base.clone();
        r.headers_mut()
            .insert("user-agent", "envoy".parse().unwrap());
        r.headers_mut()
            .insert("x-request-id", "abc".parse().unwrap());
        assert_eq!(reason_of(&r, now), None, "{name}: unsigned ordinary header");

        // The session token.
        if opts.token.is_some() {
            let mut r = base.clone();
            r.headers_mut()
                .insert("x-amz-security-token", "another-token".parse().unwrap());
            assert_eq!(
                reason_of(&r, now),
                Some(Reason::WrongSecurityToken),
                "{name}: token"
            );
            let mut r = base.clone();
            r.headers_mut().remove("x-amz-security-token");
            assert_eq!(
                reason_of(&r, now),
                Some(Reason::SignedHeaderAbsent),
                "{name}: token removed"
            );
        } else {
            let mut r = base.clone();
            r.headers_mut()
                .insert("x-amz-security-token", "stray".parse().unwrap());
            assert_eq!(
                reason_of(&r, now),
                Some(Reason::RequiredHeaderNotSigned),
                "{name}: unsigned token"
            );
        }
    }
}

#[test]
fn wrong_credentials_and_scope_are_rejected() {
    let body = patient("example");
    let now = SystemTime::now();

    let mut o = SignOpts::long_term();
    o.secret = "not-the-secret".into();
    assert_eq!(
        reason_of(&signed_put("Patient", "example", &body, &o), now),
        Some(Reason::SignatureMismatch)
    );

    let mut o = SignOpts::long_term();
    o.access_key_id = "AKIDUNKNOWN".into();
    assert_eq!(
        reason_of(&signed_put("Patient", "example", &body, &o), now),
        Some(Reason::UnknownAccessKey)
    );

    let mut o = SignOpts::long_term();
    o.region = "us-west-2".into();
    assert_eq!(
        reason_of(&signed_put("Patient", "example", &body, &o), now),
        Some(Reason::WrongRegion)
    );

    let mut o = SignOpts::long_term();
    o.service = "execute-api".into();
    assert_eq!(
        reason_of(&signed_put("Patient", "example", &body, &o), now),
        Some(Reason::WrongService)
    );

    // A temporary key signed without its token.
    let mut o = SignOpts::temporary();
    o.token = None;
    assert_eq!(
        reason_of(&signed_put("Patient", "example", &body, &o), now),
        Some(Reason::MissingSecurityToken)
    );

    // A temporary key signed with a wrong token.
    let mut o = SignOpts::temporary();
    o.token = Some("wrong-token".into());
    assert_eq!(
        reason_of(&signed_put("Patient", "example", &body, &o), now),
        Some(Reason::WrongSecurityToken)
    );

    // A long-term key used with a (signed) token.
    let mut o = SignOpts::long_term();
    o.token = Some("unexpected".into());
    assert_eq!(
        reason_of(&signed_put("Patient", "example", &body, &o), now),
        Some(Reason::UnexpectedSecurityToken)
    );

    // The token added after signing (SessionTokenMode::Exclude) is not signed.
    let mut o = SignOpts::temporary();
    o.sign_token = false;
    let req = signed_put("Patient", "example", &body, &o);
    assert!(req.headers().contains_key("x-amz-security-token"));
    assert_eq!(reason_of(&req, now), Some(Reason::RequiredHeaderNotSigned));

    // Two credential sets: the right one is picked by access key id.
    let creds = vec![
        Credential::new("AKIDOTHER", "other", None),
        Credential::new(AKID, SECRET, None),
    ];
    let req = signed_put("Patient", "example", &body, &SignOpts::long_term());
    assert!(verify(&req, &policy(&creds, now)).is_verified());
}

#[test]
fn clock_skew_window() {
    let body = patient("example");
    let now = SystemTime::now();
    let at = |offset: i64| {
        let mut o = SignOpts::long_term();
        o.time = if offset >= 0 {
            now + Duration::from_secs(offset.unsigned_abs())
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        };
        signed_put("Patient", "example", &body, &o)
    };
    assert_eq!(reason_of(&at(0), now), None);
    assert_eq!(reason_of(&at(-299), now), None);
    assert_eq!(reason_of(&at(299), now), None);
    assert_eq!(reason_of(&at(-301), now), Some(Reason::RequestExpired));
    assert_eq!(reason_of(&at(301), now), Some(Reason::RequestNotYetValid));
    assert_eq!(reason_of(&at(-3600), now), Some(Reason::RequestExpired));

    let creds = accepted();
    let v = verify(&at(-301), &policy(&creds, now));
    let e = v.error().unwrap();
    assert_eq!(e.reason.error_type(), "InvalidSignatureException");
    assert!(e.message.starts_with("Signature expired"), "{}", e.message);
    // The canonical request and string to sign are still reported.
    assert!(v.canonical_request.is_some() && v.string_to_sign.is_some());

    // A custom window.
    let mut p = policy(&creds, now);
    p.max_skew = Duration::from_secs(10);
    assert!(!verify(&at(-60), &p).is_verified());
    assert!(verify(&at(-5), &p).is_verified());
}

#[test]
fn scope_date_must_match_x_amz_date() {
    let body = patient("example");
    let opts = SignOpts::long_term();
    let mut req = signed_put("Patient", "example", &body, &opts);
    let amz_date = req.headers()["x-amz-date"].to_str().unwrap().to_string();
    let auth = req.headers()["authorization"].to_str().unwrap().to_string();
    let date = &amz_date[..8];
    let other = if date == "20200101" {
        "20200102"
    } else {
        "20200101"
    };
    let auth = auth.replace(&format!("/{date}/"), &format!("/{other}/"));
    req.headers_mut()
        .insert("authorization", auth.parse().unwrap());
    assert_eq!(reason_of(&req, opts.time), Some(Reason::ScopeDateMismatch));
}

#[test]
fn missing_or_malformed_headers() {
    let body = patient("example");
    let opts = SignOpts::long_term();
    let base = signed_put("Patient", "example", &body, &opts);

    let mut r = base.clone();
    r.headers_mut().remove("authorization");
    assert_eq!(reason_of(&r, opts.time), Some(Reason::MissingAuthorization));

    let mut r = base.clone();
    r.headers_mut()
        .insert("authorization", "Bearer abc".parse().unwrap());
    assert_eq!(reason_of(&r, opts.time), Some(Reason::UnsupportedAlgorithm));

    let mut r = base.clone();
    r.headers_mut()
        .insert("authorization", "AWS4-HMAC-SHA256 garbage".parse().unwrap());
    assert_eq!(
        reason_of(&r, opts.time),
        Some(Reason::MalformedAuthorization)
    );

    let mut r = base.clone();
    r.headers_mut().remove("x-amz-date");
    assert_eq!(reason_of(&r, opts.time), Some(Reason::MissingDate));

    let mut r = base.clone();
    r.headers_mut()
        .insert("x-amz-date", "2020-01-01T00:00:00Z".parse().unwrap());
    assert_eq!(reason_of(&r, opts.time), Some(Reason::MalformedDate));

    // Every error maps onto an AWS error type.
    for (reason, ty) in [
        (Reason::MissingAuthorization, "IncompleteSignatureException"),
        (Reason::UnknownAccessKey, "UnrecognizedClientException"),
        (Reason::WrongSecurityToken, "InvalidClientTokenId"),
        (Reason::SignatureMismatch, "InvalidSignatureException"),
        (Reason::RequestExpired, "InvalidSignatureException"),
    ] {
        assert_eq!(reason.error_type(), ty);
    }
}
