//! The IMDSv2 and container credential endpoints at the handler level (`App::handle_at`, so the
//! tests choose the clock): their rules, the sets they issue being accepted by the data plane
//! until they expire (requests signed by aws-sigv4), the faults, the down mode, the inspection
//! endpoints, reset and the state file. Over real sockets and across a restart:
//! `tests/persistence.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::app::*;
use common::*;
use healthlake_emulator::{persist, timefmt, App, Config};
use http::StatusCode;
use serde_json::{json, Value};

const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";
const ROLE: &str = "healthlake-relay-instance";
const EXPIRED_BODY: &str = r#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#;
const FRONT_END: [&str; 5] = [
    "via",
    "x-amz-apigw-id",
    "x-amzn-trace-id",
    "x-amz-cf-id",
    "x-amz-cf-pop",
];

/// A whole second, so `x-amz-date` (whole seconds) and the handler's clock agree.
fn t0() -> SystemTime {
    timefmt::unix_to_system_time(timefmt::system_time_to_unix(SystemTime::now()))
}

fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> http::Request<Vec<u8>> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "169.254.169.254");
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(body.to_vec()).unwrap()
}

fn at(app: &App, req: &http::Request<Vec<u8>>, now: SystemTime) -> Reply {
    send_at(app, req, now)
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// `PUT /latest/api/token` with a TTL; returns the token.
fn imds_session(app: &App, ttl: &str, now: SystemTime) -> String {
    let r = at(
        app,
        &request(
            "PUT",
            "/latest/api/token",
            &[("x-aws-ec2-metadata-token-ttl-seconds", ttl)],
            b"",
        ),
        now,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    assert_eq!(r.header("x-aws-ec2-metadata-token-ttl-seconds"), ttl);
    assert_eq!(r.header("content-type"), "text/plain");
    text(&r)
}

fn imds_get(app: &App, path: &str, token: Option<&str>, now: SystemTime) -> Reply {
    let headers: Vec<(&str, &str)> = token
        .map(|t| ("x-aws-ec2-metadata-token", t))
        .into_iter()
        .collect();
    at(app, &request("GET", path, &headers, b""), now)
}

/// The three IMDSv2 steps; returns the credentials document.
fn imds_credentials(app: &App, now: SystemTime) -> Value {
    let token = imds_session(app, "21600", now);
    let r = imds_get(app, ROLE_PATH, Some(&token), now);
    assert_eq!(r.status, StatusCode::OK);
    let role = text(&r);
    let r = imds_get(app, &format!("{ROLE_PATH}{role}"), Some(&token), now);
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    r.json()
}

fn container_get(app: &App, path: &str, authorization: Option<&str>, now: SystemTime) -> Reply {
    let headers: Vec<(&str, &str)> = authorization
        .map(|t| ("authorization", t))
        .into_iter()
        .collect();
    at(app, &request("GET", path, &headers, b""), now)
}

/// Signing options for a credentials document (`AccessKeyId`, `SecretAccessKey`, `Token`).
fn opts_of(doc: &Value, time: SystemTime) -> SignOpts {
    SignOpts {
        access_key_id: doc["AccessKeyId"].as_str().unwrap().into(),
        secret: doc["SecretAccessKey"].as_str().unwrap().into(),
        token: Some(doc["Token"].as_str().unwrap().into()),
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

fn control(app: &App, method: &str, path: &str, body: &str, now: SystemTime) -> Reply {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
        .unwrap();
    send_at(app, &req, now)
}

fn status(app: &App, now: SystemTime) -> Value {
    let r = control(app, "GET", "/_emulator/credentials", "", now);
    assert_eq!(r.status, StatusCode::OK);
    r.json()
}

fn assert_not_data_plane(r: &Reply, what: &str) {
    for name in FRONT_END.iter().chain(["x-amzn-requestid"].iter()) {
        assert!(r.headers.get(*name).is_none(), "{what}: {name}");
    }
}

fn app_with_token_file(file: &Path) -> App {
    App::new(Config {
        credentials: accepted(),
        container_token_file: Some(file.to_path_buf()),
        ..Config::default()
    })
}

#[test]
fn imds_three_steps_give_a_set_the_data_plane_accepts() {
    let app = app();
    let t0 = t0();
    let token = imds_session(&app, "21600", t0);
    assert!(token.len() > 40, "{token}");

    let r = imds_get(&app, ROLE_PATH, Some(&token), t0);
    assert_eq!((r.status, text(&r).as_str()), (StatusCode::OK, ROLE));
    assert_eq!(r.header("content-type"), "text/plain");
    assert_not_data_plane(&r, "role listing");
    // Without the trailing slash too.
    let r = imds_get(&app, ROLE_PATH.trim_end_matches('/'), Some(&token), t0);
    assert_eq!(text(&r), ROLE);

    let r = imds_get(&app, &format!("{ROLE_PATH}{ROLE}"), Some(&token), t0);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "text/plain");
    assert_not_data_plane(&r, "credentials");
    let doc = r.json();
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "Code",
            "LastUpdated",
            "Type",
            "AccessKeyId",
            "SecretAccessKey",
            "Token",
            "Expiration"
        ]
    );
    assert_eq!(
        (&doc["Code"], &doc["Type"]),
        (&json!("Success"), &json!("AWS-HMAC"))
    );
    assert_eq!(doc["LastUpdated"], timefmt::format_rfc3339_seconds(t0));
    let akid = doc["AccessKeyId"].as_str().unwrap();
    assert!(
        akid.len() == 20
            && akid.starts_with("ASIA")
            && akid[4..]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
        "{akid}"
    );
    assert_eq!(doc["SecretAccessKey"].as_str().unwrap().len(), 40);
    assert!(doc["Token"].as_str().unwrap().len() > 100);
    let expiration = doc["Expiration"].as_str().unwrap();
    assert_eq!(
        expiration,
        timefmt::format_rfc3339_seconds(t0 + Duration::from_secs(21600))
    );
    assert!(expiration.ends_with('Z') && !expiration.contains('.'));

    // A HealthLake PUT signed with the set, its token included: accepted.
    let r = put_at(&app, "imds1", &opts_of(&doc, t0 + Duration::from_secs(5)));
    assert_eq!(r.status, StatusCode::CREATED, "{}", text(&r));
    let rec = last_record(&app);
    assert_eq!(rec["access_key_id"], akid);
    assert_eq!(rec["credential_source"], "imds");
    assert_eq!(rec["credential_valid"], true);
    assert_eq!(
        rec["credential_expires_at"],
        timefmt::format_rfc3339_millis(t0 + Duration::from_secs(21600))
    );
    // Without its token: InvalidClientTokenId, as for an STS set.
    let r = put_at(
        &app,
        "imds1",
        &SignOpts {
            token: None,
            ..opts_of(&doc, t0)
        },
    );
    assert_eq!(r.header("x-amzn-errortype"), "InvalidClientTokenId");

    // A fresh set per request.
    let again = imds_get(&app, &format!("{ROLE_PATH}{ROLE}"), Some(&token), t0).json();
    assert_ne!(again["AccessKeyId"], doc["AccessKeyId"]);
    assert_ne!(again["SecretAccessKey"], doc["SecretAccessKey"]);
    assert_ne!(again["Token"], doc["Token"]);
    assert_eq!(
        put_at(&app, "imds1", &opts_of(&doc, t0)).status,
        StatusCode::OK,
        "the earlier set stays valid"
    );

    // The IMDS requests are in the credentials call log, not in the data-plane request log.
    let v = status(&app, t0);
    let calls: Vec<(String, String, u64)> = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["method"].as_str().unwrap().to_string(),
                c["path"].as_str().unwrap().to_string(),
                c["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("PUT".into(), "/latest/api/token".into(), 200),
            ("GET".into(), ROLE_PATH.into(), 200),
            ("GET".into(), ROLE_PATH.trim_end_matches('/').into(), 200),
            ("GET".into(), format!("{ROLE_PATH}{ROLE}"), 200),
            ("GET".into(), format!("{ROLE_PATH}{ROLE}"), 200),
        ]
    );
    assert!(app
        .requests()
        .iter()
        .all(|r| r.path.starts_with("/datastore/")));
}

#[test]
fn imds_is_v2_only_and_strict() {
    let app = App::new(Config {
        credentials: accepted(),
        imds_role: "another-role".into(),
        ..Config::default()
    });
    let t0 = t0();
    let creds = format!("{ROLE_PATH}another-role");

    // No token, an unknown token: 401, no v1 fallback.
    for token in [None, Some("AQAEAnot-a-session-token==")] {
        for path in [ROLE_PATH, creds.as_str(), "/latest/meta-data/"] {
            let r = imds_get(&app, path, token, t0);
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} {token:?}");
            assert_not_data_plane(&r, path);
        }
    }

    // Bad TTLs: 400; nothing issued.
    for ttl in [
        None,
        Some("0"),
        Some("21601"),
        Some("abc"),
        Some("-5"),
        Some("1.5"),
        Some(""),
    ] {
        let headers: Vec<(&str, &str)> = ttl
            .map(|t| ("x-aws-ec2-metadata-token-ttl-seconds", t))
            .into_iter()
            .collect();
        let r = at(
            &app,
            &request("PUT", "/latest/api/token", &headers, b""),
            t0,
        );
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{ttl:?}");
    }
    imds_session(&app, "1", t0);
    // Any other method on the token path: 405.
    for method in ["GET", "POST", "DELETE"] {
        let r = at(
            &app,
            &request(
                method,
                "/latest/api/token",
                &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
                b"",
            ),
            t0,
        );
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(r.header("allow"), "PUT");
    }

    // X-Forwarded-For: 403, on the token PUT and on a GET with a good token.
    let r = at(
        &app,
        &request(
            "PUT",
            "/latest/api/token",
            &[
                ("x-aws-ec2-metadata-token-ttl-seconds", "60"),
                ("x-forwarded-for", "10.0.0.1"),
            ],
            b"",
        ),
        t0,
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!text(&r).contains("AQAE"));
    let token = imds_session(&app, "60", t0);
    let r = at(
        &app,
        &request(
            "GET",
            &creds,
            &[
                ("x-aws-ec2-metadata-token", &token),
                ("x-forwarded-for", "10.0.0.1"),
            ],
            b"",
        ),
        t0,
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The session ends with its TTL: 401 at TTL seconds, fine the instant before.
    let r = imds_get(
        &app,
        ROLE_PATH,
        Some(&token),
        t0 + Duration::from_millis(59_999),
    );
    assert_eq!(
        (r.status, text(&r).as_str()),
        (StatusCode::OK, "another-role")
    );
    let r = imds_get(&app, &creds, Some(&token), t0 + Duration::from_secs(60));
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = imds_get(
        &app,
        ROLE_PATH,
        Some(&token),
        t0 + Duration::from_secs(3600),
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Another role, another path, another method: 404, 404, 405.
    let token = imds_session(&app, "60", t0);
    let r = imds_get(&app, &format!("{ROLE_PATH}{ROLE}"), Some(&token), t0);
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = imds_get(&app, "/latest/meta-data/instance-id", Some(&token), t0);
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = at(
        &app,
        &request("POST", &creds, &[("x-aws-ec2-metadata-token", &token)], b""),
        t0,
    );
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), "GET");

    // None of those issued anything; every refusal is recorded with its reason.
    let v = status(&app, t0);
    assert_eq!(v["issued"], json!([]));
    let calls = v["calls"].as_array().unwrap();
    assert!(calls.iter().all(|c| c["source"] == "imds"));
    let unauthorized = &calls[0];
    assert_eq!(unauthorized["status"], 401);
    assert!(unauthorized["error"]
        .as_str()
        .unwrap()
        .contains("X-aws-ec2-metadata-token"));
    let forwarded = calls.iter().find(|c| c["status"] == 403).unwrap();
    assert!(forwarded["error"]
        .as_str()
        .unwrap()
        .contains("X-Forwarded-For"));
    // The session tokens are never shown.
    let shown = v.to_string();
    assert!(!shown.contains(&token), "{shown}");

    // The role listing works with the configured role name.
    let r = imds_get(&app, ROLE_PATH, Some(&token), t0);
    assert_eq!(text(&r), "another-role");
    let r = imds_get(&app, &creds, Some(&token), t0);
    assert_eq!(r.status, StatusCode::OK);
}

#[test]
fn container_endpoint_without_a_token_file() {
    let app = app();
    let t0 = t0();
    for path in [
        "/v1/credentials",
        "/v2/credentials/8c5ee1c0-3a7b-4a38-9f9b-0d9e6f2f7f11",
    ] {
        // No Authorization needed; one sent anyway is ignored.
        for auth in [None, Some("anything")] {
            let r = container_get(&app, path, auth, t0);
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", text(&r));
            assert_eq!(r.header("content-type"), "application/json");
            assert_not_data_plane(&r, path);
            let doc = r.json();
            let keys: Vec<&str> = doc
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                [
                    "AccessKeyId",
                    "SecretAccessKey",
                    "Token",
                    "Expiration",
                    "AccountId"
                ]
            );
            assert_eq!(doc["AccountId"], "123456789012");
            assert_eq!(
                doc["Expiration"],
                timefmt::format_rfc3339_seconds(t0 + Duration::from_secs(21600))
            );
            let r = put_at(&app, "c1", &opts_of(&doc, t0));
            assert!(r.status.is_success(), "{}", text(&r));
            assert_eq!(last_record(&app)["credential_source"], "container");
        }
    }
    for (method, path, expected) in [
        ("GET", "/v2/credentials/", StatusCode::NOT_FOUND),
        ("GET", "/v2/credentials", StatusCode::NOT_FOUND),
        ("PUT", "/v1/credentials", StatusCode::METHOD_NOT_ALLOWED),
        ("POST", "/v2/credentials/x", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let r = at(&app, &request(method, path, &[], b""), t0);
        assert_eq!(r.status, expected, "{method} {path}");
    }
    let v = status(&app, t0);
    assert_eq!(v["issued"].as_array().unwrap().len(), 4);
    assert!(v["issued"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["source"] == "container"));
}

#[test]
fn container_token_file_is_checked_on_every_request() {
    let dir = temp_dir("ctoken");
    let file = dir.join("token");
    let app = app_with_token_file(&file);
    let t0 = t0();
    const V1: &str = "eyJhbGciOiJSUzI1NiJ9.pod-identity-token-version-1.c2lnbmF0dXJl";
    const V2: &str = "eyJhbGciOiJSUzI1NiJ9.pod-identity-token-version-2.c2lnbmF0dXJl";

    // The file cannot be read yet: 500, nothing issued.
    let r = container_get(&app, "/v1/credentials", Some(V1), t0);
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("cannot read"));

    std::fs::write(&file, format!("{V1}\n")).unwrap();
    // Missing or wrong Authorization: 401 with a small JSON body that does not echo anything.
    for auth in [None, Some(V2), Some("Bearer x"), Some(&V1[..V1.len() - 1])] {
        let r = container_get(&app, "/v1/credentials", auth, t0);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.header("content-type"), "application/json");
        let v = r.json();
        assert_eq!(v["code"], "Unauthorized");
        let shown = text(&r);
        assert!(
            !shown.contains("pod-identity-token") && !shown.contains("Bearer"),
            "{shown}"
        );
    }
    // The file's content, without its trailing newline: 200.
    let r = container_get(&app, "/v1/credentials", Some(V1), t0);
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    let doc = r.json();
    assert_eq!(
        put_at(&app, "pod", &opts_of(&doc, t0)).status,
        StatusCode::CREATED
    );
    let r = container_get(&app, "/v2/credentials/abc", Some(V1), t0);
    assert_eq!(r.status, StatusCode::OK);

    // Rotated: the file is read for each request, so the old token stops working at once.
    std::fs::write(&file, format!("  {V2}\r\n\n")).unwrap();
    let r = container_get(&app, "/v1/credentials", Some(V1), t0);
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = container_get(&app, "/v1/credentials", Some(V2), t0);
    assert_eq!(r.status, StatusCode::OK);
    // Sets issued before the rotation stay valid.
    assert_eq!(
        put_at(&app, "pod", &opts_of(&doc, t0)).status,
        StatusCode::OK
    );

    // An empty file or a removed one: 500.
    std::fs::write(&file, "\n").unwrap();
    assert_eq!(
        container_get(&app, "/v1/credentials", Some(V2), t0).status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        container_get(&app, "/v1/credentials", Some(V2), t0).status,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    // IMDS does not look at the container token.
    assert_eq!(imds_credentials(&app, t0)["Code"], "Success");

    // The call log: statuses and reasons, never a token.
    let v = status(&app, t0);
    let shown = v.to_string();
    assert!(!shown.contains("pod-identity-token"), "{shown}");
    let statuses: Vec<u64> = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["source"] == "container")
        .map(|c| c["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [500, 401, 401, 401, 401, 200, 200, 401, 200, 500, 500]
    );
    let missing = &v["calls"][1];
    assert!(missing["error"]
        .as_str()
        .unwrap()
        .contains("no Authorization"));
    let wrong = &v["calls"][2];
    assert!(wrong["error"].as_str().unwrap().contains("does not match"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_credentials_fault() {
    let app = app();
    let t0 = t0();
    let r = control(
        &app,
        "PUT",
        "/_emulator/credentials/faults",
        r#"{"next":["garbled","no-credentials","huge","503","bad-expiration","expired","500","garbled"]}"#,
        t0,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    let all = json!([
        "garbled",
        "no-credentials",
        "huge",
        "503",
        "bad-expiration",
        "expired",
        "500",
        "garbled"
    ]);
    assert_eq!(r.json(), json!({"settings": {"next": all}, "injected": {}}));

    // The IMDS token PUT and the role listing consume nothing.
    let token = imds_session(&app, "600", t0);
    assert_eq!(
        imds_get(&app, ROLE_PATH, Some(&token), t0).status,
        StatusCode::OK
    );
    // Neither does a refused request.
    assert_eq!(
        imds_get(&app, &format!("{ROLE_PATH}{ROLE}"), None, t0).status,
        StatusCode::UNAUTHORIZED
    );
    let r = control(&app, "GET", "/_emulator/credentials/faults", "", t0);
    assert_eq!(r.json()["settings"]["next"], all);

    let imds = |now: SystemTime| imds_get(&app, &format!("{ROLE_PATH}{ROLE}"), Some(&token), now);
    let container = |now: SystemTime| container_get(&app, "/v1/credentials", None, now);

    // garbled: 200, neither JSON nor UTF-8.
    let r = imds(t0);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "text/plain");
    assert!(std::str::from_utf8(&r.body).is_err());
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    // no-credentials: 200 JSON without the set.
    let r = container(t0);
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert!(
        v.get("AccessKeyId").is_none()
            && v.get("SecretAccessKey").is_none()
            && v.get("Token").is_none()
    );
    assert_eq!(v["AccountId"], "123456789012");
    // huge: 4,000,000 bytes of JSON, still without credentials.
    let r = imds(t0);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), 4_000_000);
    let v = r.json();
    assert_eq!(v["Code"], "Success");
    assert!(v.get("AccessKeyId").is_none());
    // 503: that status, a small text body.
    let r = container(t0);
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("content-type"), "text/plain");
    assert!(r.body.len() < 200);
    assert_eq!(
        status(&app, t0)["issued"],
        json!([]),
        "nothing issued so far"
    );

    // bad-expiration: the Expiration is not a date, the set is accepted with the real expiry.
    let r = imds(t0);
    let bad = r.json();
    assert_eq!(bad["Expiration"], "not-a-date");
    assert_eq!(
        put_at(&app, "bad-exp", &opts_of(&bad, t0)).status,
        StatusCode::CREATED
    );
    let real = t0 + Duration::from_secs(21600);
    let r = put_at(&app, "bad-exp", &opts_of(&bad, real));
    assert_eq!(r.header("x-amzn-errortype"), "ExpiredTokenException");

    // expired: a real set whose Expiration is an hour ago; the data plane refuses it.
    let r = container(t0);
    let expired = r.json();
    assert_eq!(
        expired["Expiration"],
        timefmt::format_rfc3339_seconds(t0 - Duration::from_secs(3600))
    );
    let r = put_at(&app, "expired", &opts_of(&expired, t0));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), EXPIRED_BODY);
    assert_eq!(last_record(&app)["credential_valid"], false);

    // 500 on IMDS, then garbled on the container endpoint (application/json announced).
    assert_eq!(imds(t0).status, StatusCode::INTERNAL_SERVER_ERROR);
    let r = container(t0);
    assert_eq!(r.header("content-type"), "application/json");
    assert!(std::str::from_utf8(&r.body).is_err());
    // The queue is empty: normal answers again.
    let r = imds(t0);
    assert!(r.json()["AccessKeyId"].is_string());

    let r = control(&app, "GET", "/_emulator/credentials/faults", "", t0);
    assert_eq!(
        r.json(),
        json!({"settings": {"next": []}, "injected": {
            "garbled": 2, "no-credentials": 1, "huge": 1, "503": 1, "bad-expiration": 1,
            "expired": 1, "500": 1
        }})
    );
    let v = status(&app, t0);
    let faults: Vec<Value> = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["fault"].clone())
        .collect();
    assert_eq!(
        faults,
        [
            Value::Null,
            Value::Null,
            Value::Null, // token, listing, 401
            json!("garbled"),
            json!("no-credentials"),
            json!("huge"),
            json!("503"),
            json!("bad-expiration"),
            json!("expired"),
            json!("500"),
            json!("garbled"),
            Value::Null,
        ]
    );
    let bad_call = &v["calls"][7];
    assert_eq!(bad_call["issued_access_key_id"], bad["AccessKeyId"]);
    assert_eq!(
        bad_call["expiration"],
        timefmt::format_rfc3339_seconds(real)
    );
    let expired_call = &v["calls"][8];
    assert_eq!(expired_call["expiration"], expired["Expiration"]);
    let issued: Vec<(Value, bool)> = v["issued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["access_key_id"].clone(), i["expired"].as_bool().unwrap()))
        .collect();
    assert_eq!(issued.len(), 3);
    assert_eq!(issued[0], (bad["AccessKeyId"].clone(), false));
    assert_eq!(issued[1], (expired["AccessKeyId"].clone(), true));

    // Bad settings: 400, the queue in force unchanged.
    control(
        &app,
        "PUT",
        "/_emulator/credentials/faults",
        r#"{"next":["503"]}"#,
        t0,
    );
    for body in [
        r#"{"next":["teapot"]}"#,
        r#"{"next":["404"]}"#,
        r#"{"nxt":[]}"#,
        "",
        "[]",
    ] {
        let r = control(&app, "PUT", "/_emulator/credentials/faults", body, t0);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let v = r.json();
        let (code, diagnostics) = issue(&v);
        assert_eq!(code, "invalid");
        assert!(
            diagnostics.starts_with("invalid credentials fault settings: "),
            "{diagnostics}"
        );
    }
    let r = control(&app, "GET", "/_emulator/credentials/faults", "", t0);
    assert_eq!(r.json()["settings"]["next"], json!(["503"]));
    // DELETE: no faults, counters cleared.
    let r = control(&app, "DELETE", "/_emulator/credentials/faults", "", t0);
    assert_eq!(r.json(), json!({"settings": {"next": []}, "injected": {}}));
    assert_eq!(container(t0).status, StatusCode::OK);
    let r = control(&app, "POST", "/_emulator/credentials/faults", "", t0);
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), "GET, PUT, DELETE");
}

#[test]
fn down_mode_answers_503_to_every_credential_request() {
    let dir = temp_dir("down");
    let file = dir.join("token");
    std::fs::write(&file, "tok").unwrap();
    let app = app_with_token_file(&file);
    let t0 = t0();
    let token = imds_session(&app, "600", t0);

    let r = control(&app, "GET", "/_emulator/credentials/settings", "", t0);
    assert_eq!(r.json(), json!({"lifetime_seconds": 21600, "down": false}));
    let r = control(
        &app,
        "PUT",
        "/_emulator/credentials/settings",
        r#"{"lifetime_seconds": 900, "down": true}"#,
        t0,
    );
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"lifetime_seconds": 900, "down": true}));
    // A fault queued meanwhile is not consumed by a 503.
    control(
        &app,
        "PUT",
        "/_emulator/credentials/faults",
        r#"{"next":["garbled"]}"#,
        t0,
    );

    let requests = [
        request(
            "PUT",
            "/latest/api/token",
            &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
            b"",
        ),
        request(
            "GET",
            ROLE_PATH,
            &[("x-aws-ec2-metadata-token", &token)],
            b"",
        ),
        request(
            "GET",
            &format!("{ROLE_PATH}{ROLE}"),
            &[("x-aws-ec2-metadata-token", &token)],
            b"",
        ),
        request("GET", &format!("{ROLE_PATH}{ROLE}"), &[], b""),
        request("GET", "/v1/credentials", &[("authorization", "tok")], b""),
        request("GET", "/v2/credentials/x", &[], b""),
    ];
    for req in &requests {
        let r = at(&app, req, t0);
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{} {}",
            req.method(),
            req.uri()
        );
        assert_eq!(r.header("content-type"), "text/plain");
        assert_eq!(text(&r), "credentials endpoint down");
    }
    let v = status(&app, t0);
    assert_eq!(
        v["settings"],
        json!({"lifetime_seconds": 900, "down": true})
    );
    assert_eq!(v["issued"], json!([]));
    let r = control(&app, "GET", "/_emulator/credentials/faults", "", t0);
    assert_eq!(r.json()["settings"]["next"], json!(["garbled"]));

    // Up again, with the new lifetime; absent fields take their defaults.
    let r = control(
        &app,
        "PUT",
        "/_emulator/credentials/settings",
        r#"{"lifetime_seconds": 900}"#,
        t0,
    );
    assert_eq!(r.json(), json!({"lifetime_seconds": 900, "down": false}));
    control(&app, "DELETE", "/_emulator/credentials/faults", "", t0);
    let doc = container_get(&app, "/v1/credentials", Some("tok"), t0).json();
    assert_eq!(
        doc["Expiration"],
        timefmt::format_rfc3339_seconds(t0 + Duration::from_secs(900))
    );
    let doc = imds_get(&app, &format!("{ROLE_PATH}{ROLE}"), Some(&token), t0).json();
    assert_eq!(
        doc["Expiration"],
        timefmt::format_rfc3339_seconds(t0 + Duration::from_secs(900))
    );

    // Bad settings: 400, unchanged.
    for body in [
        r#"{"lifetime_seconds": 0}"#,
        r#"{"down": 1}"#,
        r#"{"ttl": 5}"#,
        "",
        "3",
    ] {
        let r = control(&app, "PUT", "/_emulator/credentials/settings", body, t0);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(issue(&r.json())
            .1
            .starts_with("invalid credentials settings: "));
    }
    assert_eq!(
        status(&app, t0)["settings"],
        json!({"lifetime_seconds": 900, "down": false})
    );
    let r = control(&app, "DELETE", "/_emulator/credentials/settings", "", t0);
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn issued_sets_expire_and_can_be_expired_early() {
    let app = app();
    let t0 = t0();
    control(
        &app,
        "PUT",
        "/_emulator/credentials/settings",
        r#"{"lifetime_seconds": 60}"#,
        t0,
    );
    let imds = imds_credentials(&app, t0);
    let container = container_get(&app, "/v2/credentials/task", None, t0).json();

    // Accepted up to the last second before the Expiration, refused at it.
    for doc in [&imds, &container] {
        let r = put_at(&app, "e", &opts_of(doc, t0 + Duration::from_secs(59)));
        assert!(r.status.is_success(), "{}", text(&r));
        let r = put_at(&app, "e", &opts_of(doc, t0 + Duration::from_secs(60)));
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(std::str::from_utf8(&r.body).unwrap(), EXPIRED_BODY);
        let rec = last_record(&app);
        assert_eq!(rec["error_code"], "expired_token");
        assert_eq!(rec["credential_valid"], false);
    }
    let v = status(&app, t0 + Duration::from_secs(60));
    let issued = v["issued"].as_array().unwrap();
    assert_eq!(issued.len(), 2);
    assert_eq!(
        issued[0],
        json!({
            "access_key_id": imds["AccessKeyId"],
            "expiration": timefmt::format_rfc3339_seconds(t0 + Duration::from_secs(60)),
            "expires_at": timefmt::format_rfc3339_millis(t0 + Duration::from_secs(60)),
            "expired": true,
            "source": "imds",
        })
    );
    assert_eq!(
        (&issued[1]["source"], &issued[1]["expired"]),
        (&json!("container"), &json!(true))
    );

    // POST /_emulator/credentials/expire: every set still valid (only this one) expires now.
    control(&app, "PUT", "/_emulator/credentials/settings", "{}", t0);
    let fresh = container_get(&app, "/v1/credentials", None, t0).json();
    assert_eq!(
        put_at(&app, "f", &opts_of(&fresh, t0)).status,
        StatusCode::CREATED
    );
    let t1 = t0 + Duration::from_secs(61);
    let r = control(&app, "POST", "/_emulator/credentials/expire", "", t1);
    assert_eq!(r.json(), json!({"expired": 1}));
    let r = put_at(&app, "f", &opts_of(&fresh, t1));
    assert_eq!(r.header("x-amzn-errortype"), "ExpiredTokenException");
    let v = status(&app, t1);
    let last = v["issued"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["expires_at"], timefmt::format_rfc3339_millis(t1));
    assert_eq!(
        last["expiration"],
        timefmt::format_rfc3339_seconds(t0 + Duration::from_secs(21600))
    );
    let r = control(&app, "POST", "/_emulator/credentials/expire", "", t1);
    assert_eq!(r.json(), json!({"expired": 0}));
    // STS-issued sets are not touched by it, and the other way round.
    assert_eq!(
        control(&app, "POST", "/_emulator/sts/expire", "", t1).json(),
        json!({"expired": 0})
    );
}

#[test]
fn the_inspection_endpoint_shows_no_secret() {
    let dir = temp_dir("insp");
    let file = dir.join("token");
    std::fs::write(&file, "container-authorization-token-value\n").unwrap();
    let app = app_with_token_file(&file);
    let t0 = t0();
    let token = imds_session(&app, "600", t0);
    assert_eq!(
        imds_get(&app, ROLE_PATH, Some(&token), t0).status,
        StatusCode::OK
    );
    let imds = imds_get(&app, &format!("{ROLE_PATH}{ROLE}"), Some(&token), t0).json();
    let container = container_get(
        &app,
        "/v2/credentials/0f0e",
        Some("container-authorization-token-value"),
        t0,
    )
    .json();
    put_at(&app, "s", &opts_of(&imds, t0));

    let v = status(&app, t0);
    assert_eq!(
        v["calls"][2],
        json!({
            "seq": 3,
            "time": timefmt::format_rfc3339_millis(t0),
            "source": "imds",
            "method": "GET",
            "path": format!("{ROLE_PATH}{ROLE}"),
            "status": 200,
            "issued_access_key_id": imds["AccessKeyId"],
            "expiration": imds["Expiration"],
            "fault": null,
            "error": null,
        })
    );
    assert_eq!(v["calls"][0]["path"], "/latest/api/token");
    assert_eq!(v["calls"][0]["issued_access_key_id"], Value::Null);
    assert_eq!(v["calls"][1]["source"], "imds");
    assert_eq!(v["calls"][1]["path"], ROLE_PATH);
    assert_eq!(v["calls"][1]["seq"], 2);
    assert_eq!(v["calls"][3]["source"], "container");
    assert_eq!(v["calls"][3]["path"], "/v2/credentials/0f0e");
    assert_eq!(
        v["calls"][3]["issued_access_key_id"],
        container["AccessKeyId"]
    );
    assert_eq!(
        v["settings"],
        json!({"lifetime_seconds": 21600, "down": false})
    );
    let secrets = [
        token.as_str(),
        "container-authorization-token-value",
        imds["SecretAccessKey"].as_str().unwrap(),
        imds["Token"].as_str().unwrap(),
        container["SecretAccessKey"].as_str().unwrap(),
        container["Token"].as_str().unwrap(),
    ];
    for path in [
        "/_emulator/credentials",
        "/_emulator/requests",
        "/_emulator/sts",
    ] {
        let shown = text(&control(&app, "GET", path, "", t0));
        for secret in secrets {
            assert!(!shown.contains(secret), "{path} shows a secret: {shown}");
        }
    }
    let r = control(&app, "PUT", "/_emulator/credentials", "{}", t0);
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = control(&app, "GET", "/_emulator/credentials/expire", "", t0);
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reset_keeps_issued_sets_and_clears_faults_and_settings() {
    let app = app();
    let t0 = t0();
    let token = imds_session(&app, "600", t0);
    let doc = container_get(&app, "/v1/credentials", None, t0).json();
    control(
        &app,
        "PUT",
        "/_emulator/credentials/settings",
        r#"{"lifetime_seconds": 5, "down": true}"#,
        t0,
    );
    control(
        &app,
        "PUT",
        "/_emulator/credentials/faults",
        r#"{"next":["503","huge"]}"#,
        t0,
    );

    let r = control(&app, "POST", "/_emulator/reset", "", t0);
    assert_eq!(r.status, StatusCode::OK);
    // Faults and settings are back to the defaults.
    let r = control(&app, "GET", "/_emulator/credentials/faults", "", t0);
    assert_eq!(r.json(), json!({"settings": {"next": []}, "injected": {}}));
    let v = status(&app, t0);
    assert_eq!(
        v["settings"],
        json!({"lifetime_seconds": 21600, "down": false})
    );
    // The issued set is still accepted, the call log and the IMDS session are kept.
    assert_eq!(v["issued"].as_array().unwrap().len(), 1);
    assert_eq!(v["calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        put_at(&app, "r", &opts_of(&doc, t0)).status,
        StatusCode::CREATED
    );
    assert_eq!(
        imds_get(&app, ROLE_PATH, Some(&token), t0).status,
        StatusCode::OK
    );
}

#[test]
fn issued_sets_survive_a_state_file_round_trip() {
    let first = app();
    let t0 = t0();
    let imds = imds_credentials(&first, t0);
    let container = container_get(&first, "/v1/credentials", None, t0).json();
    let early = container_get(&first, "/v1/credentials", None, t0).json();
    // Expire them all early, then issue one more: only the last one stays valid.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(first.expire_issued_credentials(t1), 3);
    let fresh = container_get(&first, "/v1/credentials", None, t1).json();

    let dir = temp_dir("state");
    let state = dir.join("state.jsonl");
    persist::save(&state, &first.snapshot(), t1).unwrap();
    // The secret scan of the relay's test suite reads `secret_access_key` and `session_token` of
    // every `sts_credential` line: the sets issued here are such lines.
    let text = std::fs::read_to_string(&state).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (line, doc, source) in [
        (&lines[0], &imds, "imds"),
        (&lines[1], &container, "container"),
        (&lines[2], &early, "container"),
        (&lines[3], &fresh, "container"),
    ] {
        assert_eq!(line["kind"], "sts_credential");
        assert_eq!(line["source"], source);
        assert_eq!(line["access_key_id"], doc["AccessKeyId"]);
        assert_eq!(line["secret_access_key"], doc["SecretAccessKey"]);
        assert_eq!(line["session_token"], doc["Token"]);
        assert_eq!(line["expiration"], doc["Expiration"]);
    }

    let second = app();
    let (live, sets) = second.restore(persist::load(&state).unwrap().unwrap());
    assert_eq!((live, sets), (0, 4));
    assert_eq!(
        serde_json::to_value(second.credentials(t1)).unwrap()["issued"],
        serde_json::to_value(first.credentials(t1)).unwrap()["issued"]
    );
    let t2 = t0 + Duration::from_secs(2);
    let r = put_at(&second, "after", &opts_of(&fresh, t2));
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(last_record(&second)["credential_source"], "container");
    for doc in [&imds, &container, &early] {
        let r = put_at(&second, "after", &opts_of(doc, t2));
        assert_eq!(r.header("x-amzn-errortype"), "ExpiredTokenException");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nothing_is_issued_once_the_state_is_saved_for_shutdown() {
    let app = app();
    let t0 = t0();
    let token = imds_session(&app, "600", t0);
    let saved = app.freeze_and_snapshot();
    let r = imds_get(&app, &format!("{ROLE_PATH}{ROLE}"), Some(&token), t0);
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = container_get(&app, "/v1/credentials", None, t0);
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text(&r).contains("shutting down"));
    assert_eq!(app.snapshot(), saved);
    assert_eq!(status(&app, t0)["issued"], json!([]));
}
