//! Fault injection through the handlers (no network): the `/_emulator/faults` endpoints, every
//! `next` kind, unsupported types, rates, the rate limit and latency, checking statuses,
//! headers, exact bodies, the store and the request log. The reset over a real socket is in
//! `tests/binary.rs`.
//!
//! Timing checks are one-sided: an injected wait takes at least its duration (a slow machine
//! only makes it longer); that something is *not* delayed is checked against a delay far longer
//! than any test run could be slowed down by. The rate limiter is driven by the arrival times
//! given to `App::handle_at`, not by the wall clock.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::app::*;
use common::*;
use healthlake_emulator::faults::kind::{GARBLED_BODY, LARGE_BODY_BYTES};
use healthlake_emulator::{Answer, App, Config, FaultSettings, ResourceTypes};
use http::StatusCode;
use serde_json::{json, Value};

fn put_faults(app: &App, body: &str) -> Reply {
    let req = http::Request::builder()
        .method("PUT")
        .uri("/_emulator/faults")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
        .unwrap();
    send(app, &req)
}

fn get_faults(app: &App) -> Value {
    let r = send(app, &unsigned("GET", "/_emulator/faults"));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/json");
    r.json()
}

fn put_patient(id: &str) -> http::Request<Vec<u8>> {
    signed_put("Patient", id, &patient(id), &SignOpts::long_term())
}

fn log(app: &App) -> Vec<Value> {
    let v = send(app, &unsigned("GET", "/_emulator/requests")).json();
    v.as_array().unwrap().clone()
}

const OFF: &str = r#"{"unsupported_types":[],"next":[],"error_rate":null,"reset_rate":null,"throttle_rate":null,"throttle_above_rps":null,"latency_ms":null,"seed":null,"metadata":null}"#;

#[test]
fn faults_endpoint_put_get_delete() {
    let app = app();
    assert_eq!(
        get_faults(&app),
        json!({ "settings": serde_json::from_str::<Value>(OFF).unwrap(), "injected": {} })
    );

    let example = r#"{
        "unsupported_types": ["Basic", "Subscription"],
        "next": ["503", "500", "reset", "throttle-429", "throttle-400", "expired-token",
                 "invalid-signature", "delay:1500"],
        "error_rate": 0.05,
        "reset_rate": 0.02,
        "throttle_rate": 0.1,
        "throttle_above_rps": 200,
        "latency_ms": 0,
        "seed": 42,
        "metadata": "garbage"
    }"#;
    let r = put_faults(&app, example);
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(!r.header("x-amzn-requestid").is_empty());
    let expected = json!({
        "settings": serde_json::from_str::<Value>(example).unwrap(),
        "injected": {}
    });
    assert_eq!(r.json(), expected);
    assert_eq!(get_faults(&app), expected);

    // Unknown fields and bad ranges: 400 with a clear message, and the settings stay.
    for (body, needle) in [
        (r#"{"error_rte":0.1}"#, "unknown field `error_rte`"),
        (
            r#"{"error_rate":2}"#,
            "error_rate must be between 0.0 and 1.0",
        ),
        (r#"{"next":["504","bogus"]}"#, "unknown fault \"bogus\""),
        (
            r#"{"throttle_above_rps":0}"#,
            "throttle_above_rps must be at least 1",
        ),
        ("", "body is empty"),
    ] {
        let r = put_faults(&app, body);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.header("content-type"), "application/fhir+json");
        let v = r.json();
        let (code, diag) = issue(&v);
        assert_eq!(code, "invalid");
        assert!(
            diag.starts_with("invalid fault settings: ") && diag.contains(needle),
            "{body}: {diag}"
        );
    }
    assert_eq!(get_faults(&app), expected);

    // Other methods.
    let r = send(&app, &unsigned("POST", "/_emulator/faults"));
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), "GET, PUT, DELETE");

    // DELETE clears the settings and the counters.
    assert_eq!(
        send(&app, &put_patient("p")).status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get_faults(&app)["injected"], json!({ "503": 1 }));
    let r = send(&app, &unsigned("DELETE", "/_emulator/faults"));
    assert_eq!(r.status, StatusCode::OK);
    let cleared =
        json!({ "settings": serde_json::from_str::<Value>(OFF).unwrap(), "injected": {} });
    assert_eq!(r.json(), cleared);
    assert_eq!(get_faults(&app), cleared);
    assert_eq!(send(&app, &put_patient("p")).status, StatusCode::CREATED);

    // POST /_emulator/reset clears them too.
    put_faults(&app, r#"{"next":["500"],"unsupported_types":["Basic"]}"#);
    assert_eq!(
        send(&app, &unsigned("POST", "/_emulator/reset")).status,
        StatusCode::OK
    );
    assert_eq!(get_faults(&app), cleared);
    assert_eq!(send(&app, &put_patient("p")).status, StatusCode::CREATED);
}

#[test]
fn get_reports_the_remaining_queue_and_counters() {
    let app = app();
    put_faults(&app, r#"{"next":["503","503","throttle-429","delay:1"]}"#);
    send(&app, &put_patient("a"));
    send(&app, &put_patient("a"));
    let v = get_faults(&app);
    assert_eq!(v["settings"]["next"], json!(["throttle-429", "delay:1"]));
    assert_eq!(v["injected"], json!({ "503": 2 }));
    send(&app, &put_patient("a"));
    send(&app, &put_patient("a"));
    let v = get_faults(&app);
    assert_eq!(v["settings"]["next"], json!([]));
    assert_eq!(
        v["injected"],
        json!({ "503": 2, "delay": 1, "throttle-429": 1 })
    );
    // A new PUT restarts the queue but keeps counting.
    put_faults(&app, r#"{"next":["500"]}"#);
    send(&app, &put_patient("a"));
    assert_eq!(
        get_faults(&app)["injected"],
        json!({ "500": 1, "503": 2, "delay": 1, "throttle-429": 1 })
    );
}

#[test]
fn next_server_errors() {
    let app = app();
    put_faults(&app, r#"{"next":["503","500","599","502"]}"#);
    for (status, reason) in [
        (503, "Service Unavailable"),
        (500, "Internal Server Error"),
        (599, "Server error"),
    ] {
        let r = send(&app, &put_patient("p"));
        assert_eq!(r.status.as_u16(), status);
        assert_eq!(r.header("content-type"), "application/fhir+json");
        assert!(!r.header("x-amzn-requestid").is_empty());
        assert_eq!(
            String::from_utf8(r.body.to_vec()).unwrap(),
            format!(
                r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"error","code":"exception","diagnostics":"{reason} (fault injected by the HealthLake emulator)"}}]}}"#
            )
        );
        assert!(app.stored("Patient", "p").is_none());
    }
    // Any data-plane request consumes an entry, GETs and DELETEs included.
    assert_eq!(
        send(&app, &signed("GET", "Patient", "p")).status,
        StatusCode::BAD_GATEWAY
    );
    // The queue is empty: normal handling again.
    assert_eq!(send(&app, &put_patient("p")).status, StatusCode::CREATED);

    let log = log(&app);
    let got: Vec<(u64, Value, bool)> = log
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap(),
                r["fault"].clone(),
                r["verified"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (503, json!("503"), true),
            (500, json!("500"), true),
            (599, json!("599"), true),
            (502, json!("502"), true),
            (201, Value::Null, true),
        ]
    );
    assert!(log[0]["error"]
        .as_str()
        .unwrap()
        .contains("Service Unavailable"));
    // The other fields are recorded as for any request.
    assert_eq!(log[0]["method"], "PUT");
    assert_eq!(log[0]["access_key_id"], AKID);
    assert_eq!(log[0]["body_size"], patient("p").len());
}

#[test]
fn next_throttles() {
    let app = app();
    put_faults(&app, r#"{"next":["throttle-429","throttle-400"]}"#);
    for status in [StatusCode::TOO_MANY_REQUESTS, StatusCode::BAD_REQUEST] {
        let r = send(&app, &put_patient("t"));
        assert_eq!(r.status, status);
        assert_eq!(r.header("x-amzn-errortype"), "ThrottlingException");
        assert_eq!(r.header("retry-after"), "1");
        assert_eq!(r.header("content-type"), "application/x-amz-json-1.1");
        assert!(!r.header("x-amzn-requestid").is_empty());
        assert_eq!(
            r.body.as_ref(),
            br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
        );
    }
    assert!(app.stored("Patient", "t").is_none());
    let faults: Vec<Value> = log(&app).iter().map(|r| r["fault"].clone()).collect();
    assert_eq!(faults, [json!("throttle-429"), json!("throttle-400")]);
}

#[test]
fn next_throttle_429_bare_has_no_retry_after() {
    let app = app();
    put_faults(&app, r#"{"next":["throttle-429-bare","throttle-429"]}"#);
    let r = send(&app, &put_patient("t"));
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.get("retry-after").is_none(), "{:?}", r.headers);
    assert_eq!(r.header("x-amzn-errortype"), "ThrottlingException");
    assert_eq!(r.header("content-type"), "application/x-amz-json-1.1");
    assert!(!r.header("x-amzn-requestid").is_empty());
    assert_eq!(
        r.body.as_ref(),
        br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
    );
    // The plain form still has it.
    let r = send(&app, &put_patient("t"));
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), "1");
    assert!(app.stored("Patient", "t").is_none());
    let faults: Vec<Value> = log(&app).iter().map(|r| r["fault"].clone()).collect();
    assert_eq!(faults, [json!("throttle-429-bare"), json!("throttle-429")]);
    assert_eq!(
        get_faults(&app)["injected"],
        json!({ "throttle-429-bare": 1, "throttle-429": 1 })
    );
}

#[test]
fn next_empty_large_and_garbled_bodies() {
    let app = app();
    let next =
        r#"{"next":["empty:401","empty:503","large:503","large:400","garbled:429","garbled:500"]}"#;
    let r = put_faults(&app, next);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["settings"]["next"],
        json!([
            "empty:401",
            "empty:503",
            "large:503",
            "large:400",
            "garbled:429",
            "garbled:500"
        ])
    );

    // empty:NNN: the status, no body, no content type, no error type.
    for status in [401, 503] {
        let r = send(&app, &put_patient("e"));
        assert_eq!(r.status.as_u16(), status);
        assert!(r.body.is_empty());
        assert!(r.headers.get("content-type").is_none(), "{:?}", r.headers);
        assert!(r.headers.get("x-amzn-errortype").is_none());
        assert!(r.headers.get("retry-after").is_none());
        assert!(!r.header("x-amzn-requestid").is_empty());
    }

    // large:NNN: an HTML page of exactly 100,000 bytes, not JSON.
    for status in [503, 400] {
        let r = send(&app, &put_patient("e"));
        assert_eq!(r.status.as_u16(), status);
        assert_eq!(r.header("content-type"), "text/html");
        assert!(r.headers.get("x-amzn-errortype").is_none());
        assert_eq!(r.body.len(), LARGE_BODY_BYTES);
        assert_eq!(LARGE_BODY_BYTES, 100_000);
        assert!(r.body.len() > 64 * 1024);
        assert!(serde_json::from_slice::<Value>(&r.body).is_err());
        let page = std::str::from_utf8(&r.body).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains(&format!("<h1>{status} ")), "{}", &page[..200]);
    }

    // garbled:NNN: JSON content type, a body neither UTF-8 nor JSON, no error type.
    for status in [429, 500] {
        let r = send(&app, &put_patient("e"));
        assert_eq!(r.status.as_u16(), status);
        assert_eq!(r.header("content-type"), "application/json");
        assert!(r.headers.get("x-amzn-errortype").is_none());
        assert!(r.headers.get("retry-after").is_none());
        assert_eq!(r.body.as_ref(), GARBLED_BODY);
        assert!(r.body.starts_with(b"{\"__type\": \"Thrott\xff\xfe\x00"));
        assert!(std::str::from_utf8(&r.body).is_err());
        assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    }

    // Nothing stored; then normal handling again.
    assert!(app.stored("Patient", "e").is_none());
    assert_eq!(send(&app, &put_patient("e")).status, StatusCode::CREATED);

    let log = log(&app);
    let got: Vec<(Value, Value, Value)> = log
        .iter()
        .map(|r| {
            (
                r["status"].clone(),
                r["fault"].clone(),
                r["verified"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!(401), json!("empty"), json!(true)),
            (json!(503), json!("empty"), json!(true)),
            (json!(503), json!("large"), json!(true)),
            (json!(400), json!("large"), json!(true)),
            (json!(429), json!("garbled"), json!(true)),
            (json!(500), json!("garbled"), json!(true)),
            (json!(201), Value::Null, json!(true)),
        ]
    );
    assert!(log[0]["error"].as_str().unwrap().contains("empty body"));
    assert!(log[2]["error"].as_str().unwrap().contains("text/html"));
    assert!(log[4]["error"].as_str().unwrap().contains("garbled"));
    assert_eq!(
        get_faults(&app)["injected"],
        json!({ "empty": 2, "large": 2, "garbled": 2 })
    );
}

#[test]
fn bad_new_next_entries_are_rejected() {
    let app = app();
    put_faults(&app, r#"{"next":["empty:503"]}"#);
    for (entry, needle) in [
        ("empty:200", "a status must be 400..599"),
        ("large:600", "a status must be 400..599"),
        ("garbled:", "expected a status 400..599 after \"garbled:\""),
        ("empty:50x", "expected a status 400..599 after \"empty:\""),
        ("large", "unknown fault \"large\""),
        ("throttle-429-Bare", "unknown fault"),
    ] {
        let r = put_faults(&app, &format!(r#"{{"next":["{entry}"]}}"#));
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{entry}");
        let v = r.json();
        let (code, diag) = issue(&v);
        assert_eq!(code, "invalid");
        assert!(
            diag.starts_with("invalid fault settings: ") && diag.contains(needle),
            "{entry}: {diag}"
        );
    }
    // The settings in force are unchanged.
    assert_eq!(get_faults(&app)["settings"]["next"], json!(["empty:503"]));
}

#[test]
fn next_expired_token_and_invalid_signature() {
    let app = app();
    put_faults(&app, r#"{"next":["expired-token","invalid-signature"]}"#);

    let r = send(&app, &put_patient("x"));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-amzn-errortype"), "ExpiredTokenException");
    assert_eq!(r.header("content-type"), "application/x-amz-json-1.1");
    assert!(r.headers.get("retry-after").is_none());
    assert_eq!(
        r.body.as_ref(),
        br#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#
    );

    let r = send(&app, &put_patient("x"));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-amzn-errortype"), "InvalidSignatureException");
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 2);
    assert_eq!(v["__type"], "InvalidSignatureException");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("The request signature we calculated does not match"));

    assert!(app.stored("Patient", "x").is_none());
    let log = log(&app);
    // The signatures were good: `verified` says so; the fault says what was answered.
    assert_eq!(
        log.iter()
            .map(|r| (
                r["status"].clone(),
                r["verified"].clone(),
                r["fault"].clone()
            ))
            .collect::<Vec<_>>(),
        [
            (json!(403), json!(true), json!("expired-token")),
            (json!(403), json!(true), json!("invalid-signature")),
        ]
    );
    assert_eq!(log[0]["error_code"], Value::Null);
}

#[test]
fn next_reset_answers_nothing_and_stores_nothing() {
    let app = app();
    put_faults(&app, r#"{"next":["reset"]}"#);
    assert!(matches!(answer(&app, &put_patient("r")), Answer::Reset));
    assert!(app.stored("Patient", "r").is_none());
    // Then normal again.
    assert_eq!(send(&app, &put_patient("r")).status, StatusCode::CREATED);
    let log = log(&app);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["status"], 0);
    assert_eq!(log[0]["fault"], "reset");
    assert_eq!(log[0]["verified"], true);
    assert!(log[0]["error"].as_str().unwrap().contains("reset"));
    assert_eq!(log[1]["status"], 201);
    assert_eq!(log[1]["fault"], Value::Null);
    assert_eq!(get_faults(&app)["injected"], json!({ "reset": 1 }));
}

/// Sends `req` with a generous deadline, far longer than any slowdown of the machine: `None` if
/// it was not answered by then (so it was held back by a delay at least that long).
fn send_within(app: &App, req: &http::Request<Vec<u8>>, deadline: Duration) -> Option<Reply> {
    let answered = futures_block_on(async {
        tokio::time::timeout(
            deadline,
            app.handle_at(
                req.method(),
                req.uri(),
                req.headers(),
                bytes::Bytes::from(req.body().clone()),
                SystemTime::now(),
            ),
        )
        .await
    });
    answered.ok().map(reply)
}

#[test]
fn next_delay_waits_then_handles_normally() {
    let app = app();
    put_faults(&app, r#"{"next":["delay:300"]}"#);
    let started = Instant::now();
    let r = send(&app, &put_patient("d"));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(app.stored("Patient", "d").is_some());
    // The entry was consumed: nothing is left to delay the next request.
    assert_eq!(get_faults(&app)["settings"]["next"], json!([]));
    assert_eq!(send(&app, &put_patient("d")).status, StatusCode::OK);
    let log = log(&app);
    assert_eq!(
        (log[0]["status"].clone(), log[0]["fault"].clone()),
        (json!(201), json!("delay"))
    );
    assert_eq!(log[1]["fault"], Value::Null);
}

#[test]
fn latency_delays_every_data_plane_answer() {
    let app = app();
    put_faults(&app, r#"{"latency_ms":300}"#);
    let timed = |req: &http::Request<Vec<u8>>| {
        let started = Instant::now();
        let status = send(&app, req).status;
        (status, started.elapsed())
    };
    let (status, took) = timed(&put_patient("l"));
    assert_eq!(status, StatusCode::CREATED);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    // A rejected signature is answered late too.
    let mut bad = put_patient("l");
    bad.body_mut().push(b' ');
    let (status, took) = timed(&bad);
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    // Inspection is not delayed: with ten minutes of latency, it still answers within 30 s,
    // while a data-plane request does not.
    put_faults(&app, r#"{"latency_ms":600000}"#);
    let r = send_within(
        &app,
        &unsigned("GET", "/_emulator/health"),
        Duration::from_secs(30),
    )
    .expect("inspection answered despite the latency");
    assert_eq!(r.status, StatusCode::OK);
    assert!(send_within(&app, &put_patient("l"), Duration::from_millis(300)).is_none());
    put_faults(&app, "{}");
    // Latency is not a fault of its own.
    assert!(log(&app).iter().all(|r| r["fault"].is_null()));
    assert_eq!(get_faults(&app)["injected"], json!({}));
}

#[test]
fn a_bad_signature_does_not_consume_the_queue() {
    let app = app();
    put_faults(&app, r#"{"next":["503"]}"#);
    let mut bad = put_patient("s");
    bad.body_mut().push(b' ');
    let r = send(&app, &bad);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-amzn-errortype"), "InvalidSignatureException");
    assert!(r.json().get("canonicalRequest").is_some());
    // Nor do inspection requests.
    send(&app, &unsigned("GET", "/_emulator/health"));
    assert_eq!(get_faults(&app)["settings"]["next"], json!(["503"]));
    assert_eq!(
        send(&app, &put_patient("s")).status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let log = log(&app);
    assert_eq!(
        (log[0]["verified"].clone(), log[0]["fault"].clone()),
        (json!(false), Value::Null)
    );
    assert_eq!(log[1]["fault"], "503");
}

#[test]
fn unsupported_types_answer_healthlakes_400() {
    let app = app();
    put_faults(&app, r#"{"unsupported_types":["Basic","Subscription"]}"#);
    let basic = br#"{"resourceType":"Basic","id":"b1","code":{"text":"x"}}"#;
    let requests = [
        signed_put("Basic", "b1", basic, &SignOpts::long_term()),
        signed("GET", "Basic", "b1"),
        signed("DELETE", "Basic", "b1"),
        signed("GET", "Subscription", "s1"),
    ];
    for req in &requests {
        let r = send(&app, req);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", req.method());
        assert_eq!(r.header("content-type"), "application/fhir+json");
        assert!(!r.header("x-amzn-requestid").is_empty());
        let t = if req.uri().path().contains("/Basic/") {
            "Basic"
        } else {
            "Subscription"
        };
        assert_eq!(
            String::from_utf8(r.body.to_vec()).unwrap(),
            format!(
                r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"error","code":"not-supported","diagnostics":"ResourceType {t} is not supported."}}]}}"#
            )
        );
    }
    assert!(app.stored("Basic", "b1").is_none());
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/resources")).json(),
        json!([])
    );
    // Other methods keep their 405; other types work.
    let post = signed_request(
        "POST",
        &format!("/datastore/{DATASTORE}/r4/Basic/b1"),
        &[("host", HOST)],
        b"",
        &SignOpts::long_term(),
    );
    assert_eq!(send(&app, &post).status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(send(&app, &put_patient("ok")).status, StatusCode::CREATED);

    let faults: Vec<(Value, Value)> = log(&app)
        .iter()
        .map(|r| (r["status"].clone(), r["fault"].clone()))
        .collect();
    assert_eq!(
        faults,
        [
            (json!(400), json!("unsupported-type")),
            (json!(400), json!("unsupported-type")),
            (json!(400), json!("unsupported-type")),
            (json!(400), json!("unsupported-type")),
            (json!(405), Value::Null),
            (json!(201), Value::Null),
        ]
    );
    assert_eq!(
        get_faults(&app)["injected"],
        json!({ "unsupported-type": 4 })
    );
}

/// The faults of `n` GETs, as recorded (`None` for no fault).
fn run_gets(app: &App, n: usize) -> Vec<(u64, Option<String>)> {
    let before = log(app).len();
    for _ in 0..n {
        // A reset answers nothing; everything else answers.
        let _ = answer(app, &signed("GET", "Patient", "absent"));
    }
    log(app)[before..]
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap(),
                r["fault"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn random_faults_are_reproducible_from_the_seed() {
    let app = app();
    let settings = r#"{"error_rate":0.3,"reset_rate":0.1,"throttle_rate":0.2,"seed":42}"#;
    put_faults(&app, settings);
    let first = run_gets(&app, 60);
    put_faults(&app, settings);
    let again = run_gets(&app, 60);
    assert_eq!(first, again);
    put_faults(
        &app,
        r#"{"error_rate":0.3,"reset_rate":0.1,"throttle_rate":0.2,"seed":7}"#,
    );
    assert_ne!(run_gets(&app, 60), first);

    // Each recorded status matches its fault.
    for (status, fault) in &first {
        match fault.as_deref() {
            None => assert_eq!(*status, 404),
            Some("reset") => assert_eq!(*status, 0),
            Some("throttle-429") => assert_eq!(*status, 429),
            Some("throttle-400") => assert_eq!(*status, 400),
            Some(s) => {
                assert!(["500", "502", "503", "504"].contains(&s), "{s}");
                assert_eq!(status.to_string(), s);
            }
        }
    }
    assert!(first.iter().any(|(_, f)| f.as_deref() == Some("reset")));
    assert!(first.iter().any(|(_, f)| f.is_none()));
}

/// The status and recorded fault of a GET arriving at `at`.
fn get_at(app: &App, at: SystemTime) -> (u64, Option<String>) {
    let _ = answer_at(app, &signed("GET", "Patient", "absent"), at);
    let last = log(app).last().cloned().unwrap();
    (
        last["status"].as_u64().unwrap(),
        last["fault"].as_str().map(str::to_string),
    )
}

#[test]
fn the_rate_limit_throttles_the_excess() {
    // The arrival times are given, so the token bucket sees exactly these gaps however slow the
    // machine is.
    let app = app();
    put_faults(&app, r#"{"throttle_above_rps":2}"#);
    let t0 = SystemTime::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let got: Vec<(u64, Option<String>)> = [0, 10, 20, 30, 40]
        .iter()
        .map(|ms| get_at(&app, at(*ms)))
        .collect();
    assert_eq!(
        got,
        [
            (404, None),
            (404, None),
            (429, Some("throttle-429".to_string())),
            (400, Some("throttle-400".to_string())),
            (429, Some("throttle-429".to_string())),
        ]
    );
    // 2 per second: what is left at 40 ms (0.08 of a token) makes a whole one only after
    // another 460 ms.
    assert_eq!(
        get_at(&app, at(400)),
        (400, Some("throttle-400".to_string()))
    );
    assert_eq!(get_at(&app, at(600)), (404, None));
    assert_eq!(
        get_at(&app, at(610)),
        (429, Some("throttle-429".to_string()))
    );
    // A long pause refills the bucket to its size, not beyond.
    let later: Vec<u64> = [5000, 5001, 5002]
        .iter()
        .map(|ms| get_at(&app, at(*ms)).0)
        .collect();
    assert_eq!(later, [404, 404, 400]);
}

#[test]
fn startup_faults_are_restored_by_delete_and_reset() {
    let mut startup = FaultSettings::default();
    startup.add_unsupported_types(["Basic"]).unwrap();
    // Every R4 type is served: Basic is refused by the fault setting alone.
    let app = App::new(Config {
        credentials: accepted(),
        faults: startup,
        resource_types: ResourceTypes::All,
        ..Config::default()
    });
    let basic = || signed("GET", "Basic", "b");
    assert_eq!(send(&app, &basic()).status, StatusCode::BAD_REQUEST);
    assert_eq!(
        get_faults(&app)["settings"]["unsupported_types"],
        json!(["Basic"])
    );
    put_faults(&app, "{}");
    assert_eq!(send(&app, &basic()).status, StatusCode::NOT_FOUND);
    send(&app, &unsigned("DELETE", "/_emulator/faults"));
    assert_eq!(send(&app, &basic()).status, StatusCode::BAD_REQUEST);
    put_faults(&app, "{}");
    send(&app, &unsigned("POST", "/_emulator/reset"));
    assert_eq!(send(&app, &basic()).status, StatusCode::BAD_REQUEST);
    assert_eq!(
        get_faults(&app)["injected"],
        json!({ "unsupported-type": 1 })
    );
    assert_eq!(app.faults().settings.unsupported_types, ["Basic"]);
}

fn put_sts_faults(app: &App, body: &str) -> Reply {
    let req = http::Request::builder()
        .method("PUT")
        .uri("/_emulator/sts/faults")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
        .unwrap();
    send(app, &req)
}

#[test]
fn sts_faults_endpoint_put_get_delete() {
    let app = app();
    let none = json!({ "settings": { "next": [] }, "injected": {} });
    let r = send(&app, &unsigned("GET", "/_emulator/sts/faults"));
    assert_eq!((r.status, r.json()), (StatusCode::OK, none.clone()));
    assert_eq!(r.header("content-type"), "application/json");

    let all =
        r#"{"next":["garbled","no-credentials","bad-expiration","expired","huge","500","599"]}"#;
    let r = put_sts_faults(&app, all);
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let expected = json!({
        "settings": serde_json::from_str::<Value>(all).unwrap(),
        "injected": {}
    });
    assert_eq!(r.json(), expected);
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/sts/faults")).json(),
        expected
    );

    // Bad bodies: 400, the settings stay.
    for (body, needle) in [
        ("", "body is empty"),
        (
            r#"{"next":["503"],"error_rate":1}"#,
            "unknown field `error_rate`",
        ),
        (
            r#"{"next":["throttle-429"]}"#,
            "unknown STS fault \"throttle-429\"",
        ),
        (r#"{"next":["404"]}"#, "500..599"),
        (r#"{"next":["600"]}"#, "500..599"),
        (r#"{"next":"huge"}"#, "expected a sequence"),
        ("[]", "expected a JSON object"),
        ("{\"next\":", "EOF"),
    ] {
        let r = put_sts_faults(&app, body);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.header("content-type"), "application/fhir+json");
        let v = r.json();
        let (code, diag) = issue(&v);
        assert_eq!(code, "invalid");
        assert!(
            diag.starts_with("invalid STS fault settings: ") && diag.contains(needle),
            "{body}: {diag}"
        );
    }
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/sts/faults")).json(),
        expected
    );

    let r = send(&app, &unsigned("POST", "/_emulator/sts/faults"));
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), "GET, PUT, DELETE");

    // The data-plane faults are separate.
    assert_eq!(get_faults(&app)["settings"]["next"], json!([]));

    let r = send(&app, &unsigned("DELETE", "/_emulator/sts/faults"));
    assert_eq!((r.status, r.json()), (StatusCode::OK, none.clone()));

    put_sts_faults(&app, r#"{"next":["huge"]}"#);
    send(&app, &unsigned("POST", "/_emulator/reset"));
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/sts/faults")).json(),
        none
    );
}
