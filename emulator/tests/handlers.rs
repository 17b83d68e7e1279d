//! Handler tests: requests signed with aws-sigv4, handed straight to `App::handle_at` (no
//! network), checking statuses, headers, bodies, the store and the request log. Fault
//! injection has its own file, `tests/faults.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::app::*;
use common::*;
use http::{StatusCode, Uri};
use serde_json::Value;

#[test]
fn put_creates_then_updates_and_stores_exact_bytes() {
    let app = app();
    let body = patient("example");
    let r = send(
        &app,
        &signed_put("Patient", "example", &body, &SignOpts::long_term()),
    );
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), "application/fhir+json");
    assert_eq!(r.header("etag"), "W/\"1\"");
    assert_eq!(
        r.header("location"),
        format!("/datastore/{DATASTORE}/r4/Patient/example/_history/1")
    );
    assert!(r.header("last-modified").ends_with(" GMT"));
    assert!(!r.header("x-amzn-requestid").is_empty());
    let echoed = r.json();
    assert_eq!(echoed["meta"]["versionId"], "1");
    let last_updated = echoed["meta"]["lastUpdated"].as_str().unwrap();
    assert_eq!(
        last_updated.len(),
        "2024-01-01T00:00:00.000Z".len(),
        "{last_updated}"
    );
    assert!(last_updated.ends_with('Z'));
    // Key order of the echoed resource is the order sent, meta appended.
    let keys: Vec<&str> = echoed
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["resourceType", "id", "active", "name", "meta"]);
    // The store holds the exact bytes.
    assert_eq!(
        app.stored("Patient", "example").unwrap(),
        Bytes::from(body.clone())
    );

    // Update: 200, version 2, new bytes.
    let body2 = br#"{"resourceType":"Patient","id":"example","active":false}"#;
    let r = send(
        &app,
        &signed_put("Patient", "example", body2, &SignOpts::temporary()),
    );
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("etag"), "W/\"2\"");
    assert_eq!(r.json()["meta"]["versionId"], "2");
    assert_eq!(
        app.stored("Patient", "example").unwrap(),
        Bytes::from_static(body2)
    );

    // GET returns the exact stored bytes.
    let r = send(&app, &signed("GET", "Patient", "example"));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, Bytes::from_static(body2));
    assert_eq!(r.header("etag"), "W/\"2\"");

    // DELETE, then DELETE again (absent: 204 by default), GET 404.
    assert_eq!(
        send(&app, &signed("DELETE", "Patient", "example")).status,
        StatusCode::NO_CONTENT
    );
    let r = send(&app, &signed("DELETE", "Patient", "example"));
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    let r = send(&app, &signed("GET", "Patient", "example"));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("content-type"), "application/fhir+json");
    assert_eq!(issue(&r.json()).0, "not-found");

    // Re-create: 201 with the version history continuing.
    let r = send(
        &app,
        &signed_put("Patient", "example", &body, &SignOpts::long_term()),
    );
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("etag"), "W/\"3\"");
}

#[test]
fn delete_absent_can_be_404() {
    let app = app_with(StatusCode::NOT_FOUND);
    let r = send(&app, &signed("DELETE", "Patient", "nope"));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(issue(&r.json()).0, "not-found");
}

#[test]
fn put_body_problems_are_400_operation_outcomes() {
    let app = app();
    let cases: &[(&[u8], &str, &str)] = &[
        (b"", "invalid", "empty"),
        (b"not json", "invalid", "not valid JSON"),
        (b"[1,2]", "invalid", "JSON object"),
        (br#"{"id":"example"}"#, "invalid", "resourceType"),
        (
            br#"{"resourceType":"Observation","id":"example"}"#,
            "processing",
            "resourceType 'Observation'",
        ),
        (br#"{"resourceType":"Patient"}"#, "processing", "no id"),
        (
            br#"{"resourceType":"Patient","id":"other"}"#,
            "processing",
            "id 'other'",
        ),
    ];
    for (body, code, needle) in cases {
        let r = send(
            &app,
            &signed_put("Patient", "example", body, &SignOpts::long_term()),
        );
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        let v = r.json();
        let (c, diag) = issue(&v);
        assert_eq!(c, *code);
        assert!(diag.contains(needle), "{diag}");
    }
    assert!(app.stored("Patient", "example").is_none());
    let log = app.requests();
    assert!(log
        .iter()
        .all(|r| r.verified && r.status == 400 && r.error.is_some()));
}

#[test]
fn routing_errors() {
    let app = app();
    let opts = SignOpts::long_term();
    let req = |method: &str, uri: &str| signed_request(method, uri, &[("host", HOST)], b"", &opts);

    let r = send(
        &app,
        &req(
            "GET",
            "/datastore/ffffffffffffffffffffffffffffffff/r4/Patient/x",
        ),
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let v = r.json();
    let (code, diag) = issue(&v);
    assert_eq!(code, "not-found");
    assert!(diag.contains("ffffffffffffffffffffffffffffffff"), "{diag}");

    for uri in [
        format!("/datastore/{DATASTORE}/r4/Patient"),
        format!("/datastore/{DATASTORE}/r4/Patient/x/_history/1"),
        format!("/datastore/{DATASTORE}/r5/Patient/x"),
        "/r4/Patient/x".to_string(),
        "/".to_string(),
    ] {
        let r = send(&app, &req("GET", &uri));
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(issue(&r.json()).0, "not-found");
    }

    let r = send(
        &app,
        &req("POST", &format!("/datastore/{DATASTORE}/r4/Patient/x")),
    );
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("content-type"), "application/fhir+json");
    assert!(!issue(&r.json()).1.is_empty());

    // Routing happens only after verification: an unsigned request to a bad path is a 403.
    let r = send(&app, &unsigned("GET", "/nowhere"));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[test]
fn forbidden_bodies() {
    let app = app();
    // Missing Authorization: IncompleteSignatureException without a canonical request.
    let r = send(
        &app,
        &unsigned("PUT", &format!("/datastore/{DATASTORE}/r4/Patient/x")),
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-amzn-errortype"), "IncompleteSignatureException");
    assert_eq!(r.header("content-type"), "application/x-amz-json-1.1");
    assert!(!r.header("x-amzn-requestid").is_empty());
    let v = r.json();
    assert_eq!(v["__type"], "IncompleteSignatureException");
    assert!(v["message"].as_str().unwrap().contains("authorization"));
    assert!(v.get("canonicalRequest").is_none() && v.get("stringToSign").is_none());

    // Tampered body: the canonical request and string to sign are reported.
    let mut o = SignOpts::long_term();
    o.content_sha256 = false;
    let mut req = signed_put(
        "Patient",
        "x",
        br#"{"resourceType":"Patient","id":"x"}"#,
        &o,
    );
    req.body_mut().push(b'\n');
    let r = send(&app, &req);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-amzn-errortype"), "InvalidSignatureException");
    let v = r.json();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["__type", "message", "canonicalRequest", "stringToSign"]
    );
    let canonical = v["canonicalRequest"].as_str().unwrap();
    assert!(
        canonical.starts_with(&format!("PUT\n/datastore/{DATASTORE}/r4/Patient/x\n\n")),
        "{canonical}"
    );
    assert!(v["stringToSign"]
        .as_str()
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256\n"));
    assert!(!String::from_utf8_lossy(&r.body).contains(SECRET));
    assert!(app.stored("Patient", "x").is_none());

    // Unknown key; wrong token.
    let mut o = SignOpts::long_term();
    o.access_key_id = "AKIDNOBODY".into();
    let r = send(&app, &signed_put("Patient", "x", b"{}", &o));
    assert_eq!(r.header("x-amzn-errortype"), "UnrecognizedClientException");
    let mut o = SignOpts::temporary();
    o.token = Some("bad".into());
    let r = send(&app, &signed_put("Patient", "x", b"{}", &o));
    assert_eq!(r.header("x-amzn-errortype"), "InvalidClientTokenId");

    // Outside the skew window.
    let req = signed_put("Patient", "x", b"{}", &SignOpts::long_term());
    let r = send_at(&app, &req, SystemTime::now() + Duration::from_secs(600));
    assert_eq!(r.header("x-amzn-errortype"), "InvalidSignatureException");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("Signature expired"));
}

#[test]
fn request_log_records_metadata_but_no_secrets() {
    let app = app();
    let body = patient("p1");
    let req = signed_put("Patient", "p1", &body, &SignOpts::temporary());
    assert_eq!(send(&app, &req).status, StatusCode::CREATED);
    let mut bad = signed_put("Patient", "p1", &body, &SignOpts::long_term());
    bad.body_mut()[3] ^= 1;
    assert_eq!(send(&app, &bad).status, StatusCode::FORBIDDEN);
    // Inspection requests are not logged.
    send(&app, &unsigned("GET", "/_emulator/health"));

    let r = send(&app, &unsigned("GET", "/_emulator/requests"));
    assert_eq!(r.status, StatusCode::OK);
    let raw = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(!raw.contains(SECRET) && !raw.contains(TEMP_SECRET) && !raw.contains(TOKEN));
    assert!(!raw.contains("Signature="));
    let log = r.json();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2);

    let first = &log[0];
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "seq",
        "method",
        "path",
        "status",
        "verified",
        "error",
        "access_key_id",
        "signed_headers",
        "header_names",
        "content_type",
        "host",
        "body_size",
        "body_sha256",
        "has_security_token",
        "x_amz_date",
    ] {
        assert!(keys.contains(&k), "missing {k}: {keys:?}");
    }
    assert_eq!(first["seq"], 1);
    assert_eq!(first["method"], "PUT");
    assert_eq!(
        first["path"],
        format!("/datastore/{DATASTORE}/r4/Patient/p1")
    );
    assert_eq!(first["status"], 201);
    assert_eq!(first["verified"], true);
    assert_eq!(first["error"], Value::Null);
    assert_eq!(first["fault"], Value::Null);
    assert_eq!(first["access_key_id"], TEMP_AKID);
    let signed: Vec<&str> = first["signed_headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(signed.contains(&"x-amz-security-token") && signed.contains(&"host"));
    let names: Vec<&str> = first["header_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(names.contains(&"authorization") && names.contains(&"x-amz-security-token"));
    assert!(names.iter().all(|n| *n == n.to_lowercase()));
    assert_eq!(first["content_type"], "application/fhir+json");
    assert_eq!(first["host"], HOST);
    assert_eq!(first["body_size"], body.len());
    assert_eq!(
        first["body_sha256"],
        healthlake_emulator::sigv4::sha256_hex(&body)
    );
    assert_eq!(first["has_security_token"], true);
    assert_eq!(first["x_amz_date"].as_str().unwrap().len(), 16);

    let second = &log[1];
    assert_eq!(second["seq"], 2);
    assert_eq!(second["status"], 403);
    assert_eq!(second["verified"], false);
    assert_eq!(second["access_key_id"], AKID);
    assert_eq!(second["has_security_token"], false);
    assert!(second["error"]
        .as_str()
        .unwrap()
        .contains("body does not match x-amz-content-sha256"));
    assert_eq!(second["error_code"], "payload_hash_mismatch");
}

#[test]
fn inspection_endpoints() {
    let app = app();
    let r = send(&app, &unsigned("GET", "/_emulator/health"));
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::OK, b"ok".as_ref())
    );
    assert!(!r.header("x-amzn-requestid").is_empty());

    let opts = SignOpts::long_term();
    send(&app, &signed_put("Patient", "b", &patient("b"), &opts));
    send(&app, &signed_put("Patient", "a", &patient("a"), &opts));
    send(&app, &signed_put("Patient", "a", &patient("a"), &opts));
    let obs = br#"{"resourceType":"Observation","id":"z","status":"final"}"#;
    send(&app, &signed_put("Observation", "z", obs, &opts));

    let r = send(&app, &unsigned("GET", "/_emulator/resources"));
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json();
    let list = list.as_array().unwrap();
    let ids: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|e| {
            (
                e["resourceType"].as_str().unwrap(),
                e["id"].as_str().unwrap(),
                e["versionId"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("Observation", "z", "1"),
            ("Patient", "a", "2"),
            ("Patient", "b", "1")
        ]
    );
    assert_eq!(list[0]["size"], obs.len());
    assert_eq!(
        list[0]["sha256"],
        healthlake_emulator::sigv4::sha256_hex(obs)
    );

    let r = send(&app, &unsigned("GET", "/_emulator/resources/Observation/z"));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_ref(), obs.as_ref());
    let r = send(
        &app,
        &unsigned("GET", "/_emulator/resources/Observation/nope"),
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    assert_eq!(
        send(&app, &unsigned("POST", "/_emulator/health")).status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/reset")).status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/nothing")).status,
        StatusCode::NOT_FOUND
    );

    let r = send(&app, &unsigned("POST", "/_emulator/reset"));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/resources")).json(),
        Value::Array(vec![])
    );
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/requests")).json(),
        Value::Array(vec![])
    );
    // After a reset, versions and sequence numbers start again.
    let r = send(&app, &signed_put("Patient", "a", &patient("a"), &opts));
    assert_eq!(
        (r.status, r.header("etag")),
        (StatusCode::CREATED, "W/\"1\"")
    );
    assert_eq!(app.requests()[0].seq, 1);
}

#[test]
fn request_ids_are_unique() {
    let app = app();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let r = send(&app, &unsigned("GET", "/_emulator/health"));
        assert!(seen.insert(r.header("x-amzn-requestid").to_string()));
    }
}

#[test]
fn query_is_kept_in_the_log_path() {
    let app = app();
    let opts = SignOpts::long_term();
    let uri = format!("/datastore/{DATASTORE}/r4/Patient/q?_format=json");
    let req = signed_request("GET", &uri, &[("host", HOST)], b"", &opts);
    assert_eq!(send(&app, &req).status, StatusCode::NOT_FOUND);
    assert_eq!(app.requests()[0].path, uri);
    // Sanity: Uri parsing keeps the raw query.
    let u: Uri = uri.parse().unwrap();
    assert_eq!(u.query(), Some("_format=json"));
}

#[test]
fn forbidden_body_never_echoes_the_session_token() {
    let app = app();
    let mut req = signed_put(
        "Patient",
        "t",
        br#"{"resourceType":"Patient","id":"t"}"#,
        &SignOpts::temporary(),
    );
    req.body_mut().push(b' ');
    let r = send(&app, &req);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let v = r.json();
    let canonical = v["canonicalRequest"].as_str().unwrap();
    assert!(
        canonical.contains("\nx-amz-security-token:<redacted>\n"),
        "{canonical}"
    );
    assert!(!String::from_utf8_lossy(&r.body).contains(TOKEN));
}

/// The routing headers of AWS's front end, checked for their format.
const FRONT_END: [&str; 5] = [
    "via",
    "x-amz-apigw-id",
    "x-amzn-trace-id",
    "x-amz-cf-id",
    "x-amz-cf-pop",
];

fn assert_front_end_headers(r: &Reply, what: &str) {
    let via = r.header("via");
    let edge = via
        .strip_prefix("1.1 ")
        .and_then(|v| v.strip_suffix(".cloudfront.net (CloudFront)"))
        .unwrap_or_else(|| panic!("{what}: via {via}"));
    assert!(
        edge.len() == 32 && edge.bytes().all(|b| b.is_ascii_hexdigit()),
        "{what}: {via}"
    );
    let apigw = r.header("x-amz-apigw-id");
    assert!(apigw.len() == 16 && apigw.ends_with('='), "{what}: {apigw}");
    let trace = r.header("x-amzn-trace-id");
    let parts: Vec<&str> = trace.strip_prefix("Root=1-").unwrap().split('-').collect();
    assert!(
        parts.len() == 2
            && parts[0].len() == 8
            && parts[1].len() == 24
            && parts
                .iter()
                .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit())),
        "{what}: {trace}"
    );
    let cf_id = r.header("x-amz-cf-id");
    assert!(
        cf_id.len() == 56 && cf_id.ends_with("=="),
        "{what}: {cf_id}"
    );
    assert_eq!(r.header("x-amz-cf-pop"), "IAD89-C1", "{what}");
    assert!(!r.header("x-amzn-requestid").is_empty(), "{what}");
}

#[test]
fn every_data_plane_answer_has_the_front_end_headers() {
    let app = app();
    let put = signed_put("Patient", "fe", &patient("fe"), &SignOpts::long_term());
    let mut bad_signature = put.clone();
    bad_signature.body_mut().push(b' ');
    let unknown_route = signed_request(
        "GET",
        "/datastore/ffffffffffffffffffffffffffffffff/r4/Patient/fe",
        &[("host", HOST)],
        b"",
        &SignOpts::long_term(),
    );
    let post = signed_request(
        "POST",
        &format!("/datastore/{DATASTORE}/r4/Patient/fe"),
        &[("host", HOST)],
        b"",
        &SignOpts::long_term(),
    );
    let unsigned_data_plane = unsigned("GET", &format!("/datastore/{DATASTORE}/r4/Patient/fe"));
    let cases: Vec<(&str, &http::Request<Vec<u8>>, u16)> = vec![
        ("PUT created", &put, 201),
        ("PUT updated", &put, 200),
        ("bad signature", &bad_signature, 403),
        ("no signature", &unsigned_data_plane, 403),
        ("unknown datastore", &unknown_route, 404),
        ("method not allowed", &post, 405),
    ];
    let mut seen = Vec::new();
    for (what, req, status) in cases {
        let r = send(&app, req);
        assert_eq!(r.status.as_u16(), status, "{what}");
        assert_front_end_headers(&r, what);
        seen.push(r.header("x-amz-cf-id").to_string());
    }
    let r = send(&app, &signed("GET", "Patient", "fe"));
    assert_eq!(r.status, StatusCode::OK);
    assert_front_end_headers(&r, "GET");
    let r = send(&app, &signed("DELETE", "Patient", "fe"));
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_front_end_headers(&r, "DELETE");
    let r = send(&app, &signed("GET", "Patient", "fe"));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_front_end_headers(&r, "GET absent");
    // Each answer its own values.
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6);

    // Injected faults too.
    let faults = http::Request::builder()
        .method("PUT")
        .uri("/_emulator/faults")
        .header("host", "localhost")
        .body(br#"{"next":["503","throttle-429-bare","empty:401","large:502","garbled:500","expired-token"]}"#.to_vec())
        .unwrap();
    let r = send(&app, &faults);
    assert_eq!(r.status, StatusCode::OK);
    // Inspection answers have none of them.
    for name in FRONT_END {
        assert!(
            r.headers.get(name).is_none(),
            "PUT /_emulator/faults: {name}"
        );
    }
    for status in [503, 429, 401, 502, 500, 403] {
        let r = send(&app, &put);
        assert_eq!(r.status.as_u16(), status);
        assert_front_end_headers(&r, &format!("injected {status}"));
    }

    for path in [
        "/_emulator/health",
        "/_emulator/requests",
        "/_emulator/resources",
        "/_emulator/faults",
        "/_emulator/sts",
        "/_emulator/sts/faults",
        "/_emulator/credentials",
        "/_emulator/credentials/faults",
        "/_emulator/credentials/settings",
        "/_emulator/nope",
    ] {
        let r = send(&app, &unsigned("GET", path));
        for name in FRONT_END {
            assert!(r.headers.get(name).is_none(), "{path}: {name}");
        }
        assert!(!r.header("x-amzn-requestid").is_empty());
    }
}
