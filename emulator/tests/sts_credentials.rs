//! Temporary credentials issued through the STS proxy, at the handler level: the proxy's
//! recording (`App::record_sts_call`) fed canned STS answers, then requests signed by aws-sigv4
//! with the issued sets handed to `App::handle_at` at chosen times. The proxy over real sockets
//! is in `tests/sts_proxy.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, SystemTime};

use common::app::*;
use common::*;
use healthlake_emulator::timefmt;
use healthlake_emulator::{App, UpstreamOutcome};
use http::StatusCode;
use serde_json::{json, Value};

const STS_AKID: &str = "ASIAISSUEDBYSTS00001";
const STS_SECRET: &str = "issued/Secret+KEY0000000000000000000000";
const STS_TOKEN: &str = "FwoGZXIvYXdzEIssuedSessionToken//////////+token==";
const EXPIRED_BODY: &str = r#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#;

/// A whole second, so `x-amz-date` (whole seconds) and the handler's clock agree.
fn t0() -> SystemTime {
    timefmt::unix_to_system_time(timefmt::system_time_to_unix(SystemTime::now()))
}

fn assume_role_answer(akid: &str, secret: &str, token: &str, expiration: &str) -> String {
    format!(
        r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser>
      <AssumedRoleId>AROA000000000000000:relay</AssumedRoleId>
      <Arn>arn:aws:sts::123456789012:assumed-role/healthlake-writer/relay</Arn>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{akid}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{token}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#
    )
}

/// Records a successful AssumeRole issuing (akid, secret, token) until `expires`.
fn issue(app: &App, akid: &str, secret: &str, token: &str, expires: SystemTime, at: SystemTime) {
    let xml = assume_role_answer(
        akid,
        secret,
        token,
        &timefmt::format_rfc3339_millis(expires).replace('Z', "+00:00"),
    );
    let call = app.record_sts_call(
        Some("AssumeRole"),
        UpstreamOutcome::Answered {
            status: 200,
            body: xml.as_bytes(),
        },
        at,
    );
    assert_eq!(call.issued_access_key_id.as_deref(), Some(akid), "{call:?}");
}

fn sts_opts(time: SystemTime) -> SignOpts {
    SignOpts {
        access_key_id: STS_AKID.into(),
        secret: STS_SECRET.into(),
        token: Some(STS_TOKEN.into()),
        time,
        ..SignOpts::long_term()
    }
}

fn put_at(app: &App, id: &str, opts: &SignOpts) -> Reply {
    send_at(
        app,
        &signed_put("Patient", id, &patient(id), opts),
        opts.time,
    )
}

fn last_record(app: &App) -> Value {
    serde_json::to_value(app.requests().last().unwrap()).unwrap()
}

fn inspect_at(app: &App, method: &str, path: &str, now: SystemTime) -> Reply {
    send_at(app, &unsigned(method, path), now)
}

#[test]
fn sts_issued_credentials_are_accepted_until_they_expire() {
    let app = app();
    let t0 = t0();
    let expires = t0 + Duration::from_secs(3600);
    issue(&app, STS_AKID, STS_SECRET, STS_TOKEN, expires, t0);
    let expires_text = timefmt::format_rfc3339_millis(expires);

    let r = put_at(&app, "p1", &sts_opts(t0 + Duration::from_secs(10)));
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let rec = last_record(&app);
    assert_eq!(rec["verified"], true);
    assert_eq!(rec["access_key_id"], STS_AKID);
    assert_eq!(rec["credential_source"], "sts");
    assert_eq!(rec["credential_expires_at"], expires_text.as_str());
    assert_eq!(rec["credential_valid"], true);
    assert_eq!(rec["has_security_token"], true);

    // The last second before the expiration.
    let r = put_at(&app, "p1", &sts_opts(expires - Duration::from_secs(1)));
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    // At the expiration: ExpiredTokenException, as AWS answers it, and nothing stored.
    let r = put_at(&app, "p1", &sts_opts(expires));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-amzn-errortype"), "ExpiredTokenException");
    assert_eq!(r.header("content-type"), "application/x-amz-json-1.1");
    assert!(!r.header("x-amzn-requestid").is_empty());
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), EXPIRED_BODY);
    let rec = last_record(&app);
    assert_eq!(rec["status"], 403);
    assert_eq!(rec["verified"], false);
    assert_eq!(rec["error_code"], "expired_token");
    assert_eq!(
        rec["error"],
        "ExpiredTokenException: The security token included in the request is expired"
    );
    assert_eq!(rec["fault"], Value::Null);
    assert_eq!(rec["credential_source"], "sts");
    assert_eq!(rec["credential_expires_at"], expires_text.as_str());
    assert_eq!(rec["credential_valid"], false);
    let r = inspect_at(&app, "GET", "/_emulator/resources", expires);
    assert_eq!(r.json()[0]["versionId"], "2");

    // Long after, too.
    let later = expires + Duration::from_secs(86_400);
    let r = put_at(&app, "p2", &sts_opts(later));
    assert_eq!(r.header("x-amzn-errortype"), "ExpiredTokenException");

    // Static sets never expire; unknown keys have no credential facts.
    let r = put_at(
        &app,
        "s1",
        &SignOpts {
            time: later,
            ..SignOpts::temporary()
        },
    );
    assert_eq!(r.status, StatusCode::CREATED);
    let rec = last_record(&app);
    assert_eq!(
        (
            &rec["credential_source"],
            &rec["credential_expires_at"],
            &rec["credential_valid"]
        ),
        (&json!("static"), &Value::Null, &json!(true))
    );
    let r = put_at(
        &app,
        "u1",
        &SignOpts {
            access_key_id: "ASIAUNKNOWN".into(),
            ..sts_opts(t0)
        },
    );
    assert_eq!(r.header("x-amzn-errortype"), "UnrecognizedClientException");
    let rec = last_record(&app);
    assert_eq!(
        (
            &rec["credential_source"],
            &rec["credential_expires_at"],
            &rec["credential_valid"]
        ),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    let unsigned_put = send_at(
        &app,
        &unsigned("PUT", &format!("/datastore/{DATASTORE}/r4/Patient/x")),
        t0,
    );
    assert_eq!(
        unsigned_put.header("x-amzn-errortype"),
        "IncompleteSignatureException"
    );
    assert_eq!(last_record(&app)["credential_source"], Value::Null);

    // No secret or token anywhere in what the emulator shows.
    for path in ["/_emulator/requests", "/_emulator/sts"] {
        let shown = inspect_at(&app, "GET", path, later);
        let text = String::from_utf8_lossy(&shown.body);
        assert!(
            !text.contains(STS_SECRET) && !text.contains(STS_TOKEN),
            "{text}"
        );
    }
}

#[test]
fn an_sts_key_needs_its_own_session_token() {
    let app = app();
    let t0 = t0();
    let expires = t0 + Duration::from_secs(900);
    issue(&app, STS_AKID, STS_SECRET, STS_TOKEN, expires, t0);

    let wrong = SignOpts {
        token: Some("FwoGZXIvYXdzEAnotherToken".into()),
        ..sts_opts(t0)
    };
    let r = put_at(&app, "w", &wrong);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-amzn-errortype"), "InvalidClientTokenId");
    let rec = last_record(&app);
    assert_eq!(rec["error_code"], "wrong_security_token");
    assert_eq!(rec["credential_source"], "sts");
    assert_eq!(rec["credential_valid"], true);

    // The token of another STS-issued set does not do either.
    issue(
        &app,
        "ASIAOTHERSET0000001",
        "other/secret",
        "FwoGZXIvYXdzEOtherSetToken",
        expires,
        t0,
    );
    let crossed = SignOpts {
        token: Some("FwoGZXIvYXdzEOtherSetToken".into()),
        ..sts_opts(t0)
    };
    assert_eq!(
        put_at(&app, "w", &crossed).header("x-amzn-errortype"),
        "InvalidClientTokenId"
    );

    let missing = SignOpts {
        token: None,
        ..sts_opts(t0)
    };
    let r = put_at(&app, "m", &missing);
    assert_eq!(r.header("x-amzn-errortype"), "InvalidClientTokenId");
    assert_eq!(last_record(&app)["error_code"], "missing_security_token");

    // Expired: what else is wrong is reported first; only an otherwise acceptable request is
    // reported as expired.
    let after = expires + Duration::from_secs(1);
    let r = put_at(
        &app,
        "w",
        &SignOpts {
            time: after,
            ..wrong
        },
    );
    assert_eq!(r.header("x-amzn-errortype"), "InvalidClientTokenId");
    assert_eq!(last_record(&app)["credential_valid"], false);
    let r = put_at(
        &app,
        "w",
        &SignOpts {
            secret: "not/the/secret".into(),
            ..sts_opts(after)
        },
    );
    assert_eq!(r.header("x-amzn-errortype"), "InvalidSignatureException");
    let r = put_at(&app, "w", &sts_opts(after));
    assert_eq!(r.header("x-amzn-errortype"), "ExpiredTokenException");
}

#[test]
fn expire_endpoint_ends_every_issued_set_early() {
    let app = app();
    let t0 = t0();
    let expires = t0 + Duration::from_secs(3600);
    issue(&app, STS_AKID, STS_SECRET, STS_TOKEN, expires, t0);
    issue(
        &app,
        "ASIASECONDSET000001",
        "second/secret",
        "FwoGsecondToken",
        expires,
        t0,
    );

    let r = inspect_at(&app, "GET", "/_emulator/sts", t0);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/json");
    let v = r.json();
    let expiration = timefmt::format_rfc3339_millis(expires).replace('Z', "+00:00");
    let expires_at = timefmt::format_rfc3339_millis(expires);
    assert_eq!(
        v["calls"][0],
        json!({
            "seq": 1,
            "time": timefmt::format_rfc3339_millis(t0),
            "action": "AssumeRole",
            "status": 200,
            "issued_access_key_id": STS_AKID,
            "expiration": expiration,
            "error_code": null,
            "proxy_error": null,
            "fault": null,
            "web_identity_token_sha256_prefix": null,
        })
    );
    assert_eq!(v["calls"][1]["seq"], 2);
    assert_eq!(
        v["issued"],
        json!([
            {"access_key_id": STS_AKID, "expiration": expiration, "expires_at": expires_at, "expired": false},
            {"access_key_id": "ASIASECONDSET000001", "expiration": expiration, "expires_at": expires_at, "expired": false},
        ])
    );

    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(put_at(&app, "e", &sts_opts(t1)).status, StatusCode::CREATED);

    let t2 = t0 + Duration::from_secs(10);
    let r = inspect_at(&app, "POST", "/_emulator/sts/expire", t2);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({ "expired": 2 }));

    // The very request accepted before is now refused as expired.
    let r = put_at(&app, "e", &sts_opts(t2));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), EXPIRED_BODY);
    let rec = last_record(&app);
    assert_eq!(rec["credential_valid"], false);
    assert_eq!(
        rec["credential_expires_at"],
        timefmt::format_rfc3339_millis(t2)
    );
    let second = SignOpts {
        access_key_id: "ASIASECONDSET000001".into(),
        secret: "second/secret".into(),
        token: Some("FwoGsecondToken".into()),
        ..sts_opts(t2)
    };
    assert_eq!(
        put_at(&app, "e", &second).header("x-amzn-errortype"),
        "ExpiredTokenException"
    );

    let v = inspect_at(&app, "GET", "/_emulator/sts", t2).json();
    for issued in v["issued"].as_array().unwrap() {
        assert_eq!(issued["expired"], true);
        assert_eq!(
            issued["expiration"],
            expiration.as_str(),
            "STS's text is kept"
        );
        assert_eq!(issued["expires_at"], timefmt::format_rfc3339_millis(t2));
    }
    // Nothing left to expire; a set issued afterwards is valid again.
    let r = inspect_at(&app, "POST", "/_emulator/sts/expire", t2);
    assert_eq!(r.json(), json!({ "expired": 0 }));
    issue(&app, STS_AKID, STS_SECRET, STS_TOKEN, expires, t2);
    assert_eq!(put_at(&app, "e", &sts_opts(t2)).status, StatusCode::OK);

    // Methods.
    let r = inspect_at(&app, "GET", "/_emulator/sts/expire", t2);
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), "POST");
    let r = inspect_at(&app, "POST", "/_emulator/sts", t2);
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), "GET");
}

#[test]
fn reset_keeps_the_sts_ledger() {
    let app = app();
    let t0 = t0();
    issue(
        &app,
        STS_AKID,
        STS_SECRET,
        STS_TOKEN,
        t0 + Duration::from_secs(600),
        t0,
    );
    assert_eq!(put_at(&app, "r", &sts_opts(t0)).status, StatusCode::CREATED);
    let r = inspect_at(&app, "POST", "/_emulator/reset", t0);
    assert_eq!(r.status, StatusCode::OK);
    assert!(app.requests().is_empty());
    let v = inspect_at(&app, "GET", "/_emulator/sts", t0).json();
    assert_eq!(v["calls"].as_array().unwrap().len(), 1);
    assert_eq!(v["issued"][0]["access_key_id"], STS_AKID);
    assert_eq!(put_at(&app, "r", &sts_opts(t0)).status, StatusCode::CREATED);
}

#[test]
fn error_answers_and_unreadable_answers_issue_nothing() {
    let app = app();
    let t0 = t0();
    let call = app.record_sts_call(
        Some("AssumeRole"),
        UpstreamOutcome::Answered {
            status: 403,
            body: br#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not authorized</Message></Error><RequestId>x</RequestId></ErrorResponse>"#,
        },
        t0,
    );
    assert_eq!(call.error_code.as_deref(), Some("AccessDenied"));
    // A 200 whose credentials cannot be read.
    let broken = assume_role_answer(STS_AKID, STS_SECRET, STS_TOKEN, "in an hour");
    let call = app.record_sts_call(
        Some("AssumeRole"),
        UpstreamOutcome::Answered {
            status: 200,
            body: broken.as_bytes(),
        },
        t0,
    );
    assert_eq!(call.issued_access_key_id, None);
    assert!(call.proxy_error.unwrap().contains("Expiration"));
    let v = inspect_at(&app, "GET", "/_emulator/sts", t0).json();
    assert_eq!(v["issued"], json!([]));
    assert_eq!(
        v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["status"].clone(), c["error_code"].clone()))
            .collect::<Vec<_>>(),
        [
            (json!(403), json!("AccessDenied")),
            (json!(200), Value::Null)
        ]
    );
    assert_eq!(
        put_at(&app, "n", &sts_opts(t0)).header("x-amzn-errortype"),
        "UnrecognizedClientException"
    );
}

#[test]
fn a_static_set_wins_a_key_id_clash() {
    let app = app();
    let t0 = t0();
    // STS "issues" the static long-term key id with another secret and a token.
    issue(
        &app,
        AKID,
        "sts/secret",
        "FwoGclashToken",
        t0 + Duration::from_secs(60),
        t0,
    );
    let r = put_at(
        &app,
        "c",
        &SignOpts {
            time: t0 + Duration::from_secs(120),
            ..SignOpts::long_term()
        },
    );
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(last_record(&app)["credential_source"], "static");
}
