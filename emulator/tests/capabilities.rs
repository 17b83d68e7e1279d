//! Resource-type support through the handlers (no network): HealthLake's list and its per-type
//! exceptions, `--resource-types all`, the `unsupported_types` fault, and the CapabilityStatement
//! (`GET /datastore/{id}/r4/metadata`) with its signature check, its request-log entries and the
//! `metadata` fault.

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
use healthlake_emulator::capabilities::{HEALTHLAKE_TYPES, R4_TYPES};
use healthlake_emulator::{App, Config, ResourceTypes};
use http::StatusCode;
use serde_json::{json, Value};

fn app_in(mode: ResourceTypes) -> App {
    App::new(Config {
        credentials: accepted(),
        resource_types: mode,
        ..Config::default()
    })
}

fn put_faults(app: &App, body: &str) -> Reply {
    let req = http::Request::builder()
        .method("PUT")
        .uri("/_emulator/faults")
        .header("host", "localhost")
        .body(body.as_bytes().to_vec())
        .unwrap();
    send(app, &req)
}

fn log(app: &App) -> Vec<Value> {
    let v = send(app, &unsigned("GET", "/_emulator/requests")).json();
    v.as_array().unwrap().clone()
}

fn put(type_: &str, id: &str) -> http::Request<Vec<u8>> {
    let body = format!(r#"{{"resourceType":"{type_}","id":"{id}"}}"#);
    signed_put(type_, id, body.as_bytes(), &SignOpts::long_term())
}

fn not_supported_body(diagnostics: &str) -> String {
    format!(
        r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"error","code":"not-supported","diagnostics":"{diagnostics}"}}]}}"#
    )
}

fn assert_not_supported(r: &Reply, diagnostics: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{diagnostics}");
    assert_eq!(r.header("content-type"), "application/fhir+json");
    assert!(!r.header("x-amzn-requestid").is_empty());
    assert!(!r.header("x-amz-cf-id").is_empty());
    assert_eq!(
        String::from_utf8(r.body.to_vec()).unwrap(),
        not_supported_body(diagnostics)
    );
}

const METADATA: &str = "/datastore/0123456789abcdef0123456789abcdef/r4/metadata";

fn metadata_request(method: &str, uri: &str) -> http::Request<Vec<u8>> {
    signed_request(method, uri, &[("host", HOST)], b"", &SignOpts::long_term())
}

fn metadata(app: &App) -> Reply {
    send(app, &metadata_request("GET", METADATA))
}

/// The types a CapabilityStatement lists.
fn listed(statement: &Value) -> Vec<String> {
    statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_string())
        .collect()
}

fn entry(statement: &Value, type_: &str) -> Value {
    statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == type_)
        .unwrap_or_else(|| panic!("{type_} not listed"))
        .clone()
}

fn codes(entry: &Value) -> Vec<&str> {
    entry["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect()
}

#[test]
fn healthlake_mode_refuses_basic_and_serves_patient() {
    let app = app();
    assert_eq!(app.config().resource_types, ResourceTypes::HealthLake);
    for req in [
        put("Basic", "b1"),
        signed("GET", "Basic", "b1"),
        signed("DELETE", "Basic", "b1"),
        signed("GET", "Subscription", "s1"),
    ] {
        let t = req.uri().path().split('/').nth(4).unwrap().to_string();
        let r = send(&app, &req);
        assert_not_supported(&r, &format!("ResourceType {t} is not supported."));
    }
    assert!(app.stored("Basic", "b1").is_none());
    assert_eq!(
        send(&app, &put("Patient", "p1")).status,
        StatusCode::CREATED
    );
    assert_eq!(
        send(&app, &signed("GET", "Patient", "p1")).status,
        StatusCode::OK
    );
    // A name that is no R4 type at all gets the same answer.
    assert_not_supported(
        &send(&app, &signed("GET", "Foo", "x")),
        "ResourceType Foo is not supported.",
    );
    // Other methods keep their 405.
    let post = signed_request(
        "POST",
        &format!("/datastore/{DATASTORE}/r4/Basic/b1"),
        &[("host", HOST)],
        b"",
        &SignOpts::long_term(),
    );
    assert_eq!(send(&app, &post).status, StatusCode::METHOD_NOT_ALLOWED);

    // The refusals are recorded with their diagnostics, not as an injected fault.
    let log = log(&app);
    assert_eq!(log[0]["status"], 400);
    assert_eq!(log[0]["verified"], true);
    assert_eq!(log[0]["error"], "ResourceType Basic is not supported.");
    assert_eq!(log[0]["fault"], Value::Null);
    assert_eq!(log[4]["status"], 201);
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/faults")).json()["injected"],
        json!({})
    );
}

#[test]
fn all_mode_serves_every_r4_type_and_nothing_else() {
    let app = app_in(ResourceTypes::All);
    assert_eq!(send(&app, &put("Basic", "b1")).status, StatusCode::CREATED);
    assert_eq!(
        send(&app, &signed("GET", "Basic", "b1")).status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, &put("AuditEvent", "a")).status,
        StatusCode::CREATED
    );
    assert_eq!(
        send(&app, &signed("GET", "Parameters", "x")).status,
        StatusCode::NOT_FOUND
    );
    assert_not_supported(
        &send(&app, &put("Foo", "x")),
        "ResourceType Foo is not supported.",
    );
}

#[test]
fn audit_event_is_read_only_operation_outcome_and_parameters_write_only() {
    let app = app();
    assert_not_supported(
        &send(&app, &put("AuditEvent", "a1")),
        "ResourceType AuditEvent does not support the update interaction.",
    );
    assert_not_supported(
        &send(&app, &signed("DELETE", "AuditEvent", "a1")),
        "ResourceType AuditEvent does not support the delete interaction.",
    );
    assert!(app.stored("AuditEvent", "a1").is_none());
    let r = send(&app, &signed("GET", "AuditEvent", "a1"));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(issue(&r.json()).0, "not-found");

    for t in ["OperationOutcome", "Parameters"] {
        assert_not_supported(
            &send(&app, &signed("GET", t, "x")),
            &format!("ResourceType {t} does not support the read interaction."),
        );
        assert_eq!(send(&app, &put(t, "x")).status, StatusCode::CREATED, "{t}");
        assert_eq!(
            send(&app, &signed("DELETE", t, "x")).status,
            StatusCode::NO_CONTENT,
            "{t}"
        );
    }
    let log = log(&app);
    assert_eq!(
        log[0]["error"],
        "ResourceType AuditEvent does not support the update interaction."
    );
    assert_eq!(log[0]["fault"], Value::Null);
}

#[test]
fn the_unsupported_types_fault_removes_a_type_at_run_time() {
    let app = app();
    let before = metadata(&app).json();
    assert!(listed(&before).contains(&"Observation".to_string()));

    put_faults(&app, r#"{"unsupported_types":["Observation","Basic"]}"#);
    let statement = metadata(&app).json();
    let types = listed(&statement);
    assert_eq!(types.len(), HEALTHLAKE_TYPES.len() - 1);
    assert!(!types.contains(&"Observation".to_string()));
    assert_not_supported(
        &send(&app, &put("Observation", "o1")),
        "ResourceType Observation is not supported.",
    );
    // Basic, refused by both, is recorded as the fault's.
    assert_not_supported(
        &send(&app, &signed("GET", "Basic", "b")),
        "ResourceType Basic is not supported.",
    );
    let faults: Vec<Value> = log(&app).iter().map(|r| r["fault"].clone()).collect();
    assert_eq!(
        faults,
        [
            Value::Null,
            Value::Null,
            json!("unsupported-type"),
            json!("unsupported-type")
        ]
    );

    put_faults(&app, "{}");
    assert!(listed(&metadata(&app).json()).contains(&"Observation".to_string()));
    assert_eq!(
        send(&app, &put("Observation", "o1")).status,
        StatusCode::CREATED
    );

    // In all mode too.
    let app = app_in(ResourceTypes::All);
    put_faults(&app, r#"{"unsupported_types":["Basic"]}"#);
    let types = listed(&metadata(&app).json());
    assert_eq!(types.len(), R4_TYPES.len() - 1);
    assert!(!types.contains(&"Basic".to_string()));
}

#[test]
fn metadata_needs_a_signature() {
    let app = app();
    let r = send(&app, &unsigned("GET", METADATA));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("content-type"), "application/x-amz-json-1.1");
    assert_eq!(r.header("x-amzn-errortype"), "IncompleteSignatureException");
    assert!(!r.header("x-amz-cf-id").is_empty());
    // Badly signed: the query changed after signing.
    let mut bad = metadata_request("GET", METADATA);
    *bad.uri_mut() = format!("{METADATA}?_format=xml").parse().unwrap();
    let r = send(&app, &bad);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-amzn-errortype"), "InvalidSignatureException");

    let log = log(&app);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["path"], METADATA);
    assert_eq!(log[0]["verified"], false);
    assert_eq!(log[1]["error_code"], "signature_mismatch");
}

#[test]
fn metadata_serves_healthlakes_capability_statement() {
    let app = app();
    let uri = format!("{METADATA}?_format=json");
    let r = send(&app, &metadata_request("GET", &uri));
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), "application/fhir+json");
    assert!(!r.header("x-amzn-requestid").is_empty());
    assert!(r.header("via").ends_with(".cloudfront.net (CloudFront)"));
    let s = r.json();
    assert_eq!(s["resourceType"], "CapabilityStatement");
    assert_eq!(s["status"], "active");
    assert_eq!(s["kind"], "instance");
    assert_eq!(s["fhirVersion"], "4.0.1");
    assert_eq!(s["format"], json!(["application/fhir+json", "json"]));
    assert_eq!(s["software"]["name"], "healthlake-emulator");
    assert_eq!(
        s["implementation"]["url"],
        format!("http://{HOST}/datastore/{DATASTORE}/r4/")
    );
    assert!(s["date"].as_str().unwrap().ends_with('Z'));
    assert_eq!(listed(&s), HEALTHLAKE_TYPES);
    assert_eq!(listed(&s).len(), 106);
    let audit = entry(&s, "AuditEvent");
    assert!(!codes(&audit).contains(&"update") && !codes(&audit).contains(&"delete"));
    assert!(codes(&audit).contains(&"read") && codes(&audit).contains(&"create"));
    assert_eq!(audit.get("updateCreate"), None);
    let patient = entry(&s, "Patient");
    assert_eq!(
        codes(&patient),
        [
            "read",
            "vread",
            "update",
            "delete",
            "history-instance",
            "history-type",
            "create",
            "search-type"
        ]
    );
    assert_eq!(patient["versioning"], "versioned");
    assert_eq!(patient["updateCreate"], true);
    assert_eq!(codes(&entry(&s, "Parameters")), ["update", "delete"]);

    // Recorded like any data-plane request, path as sent.
    let log = log(&app);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["method"], "GET");
    assert_eq!(log[0]["path"], uri);
    assert_eq!(log[0]["status"], 200);
    assert_eq!(log[0]["verified"], true);
    assert_eq!(log[0]["fault"], Value::Null);
    assert_eq!(log[0]["error"], Value::Null);

    // Every R4 type in all mode.
    let s = metadata(&app_in(ResourceTypes::All)).json();
    assert_eq!(listed(&s), R4_TYPES);
    assert_eq!(codes(&entry(&s, "AuditEvent")).len(), 8);
}

#[test]
fn metadata_takes_only_get() {
    let app = app();
    let r = send(&app, &metadata_request("POST", METADATA));
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), "GET");
    assert_eq!(issue(&r.json()).0, "not-supported");
    assert_eq!(log(&app)[0]["status"], 405);
}

/// Sends `req` with a deadline far longer than any slowdown of the machine: `None` if it was
/// not answered by then.
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
fn metadata_escapes_the_data_plane_faults() {
    let app = app();
    put_faults(
        &app,
        r#"{"next":["503"],"error_rate":1,"throttle_above_rps":1,"latency_ms":600000}"#,
    );
    for _ in 0..3 {
        let r = send_within(
            &app,
            &metadata_request("GET", METADATA),
            Duration::from_secs(30),
        )
        .expect("metadata answered despite the latency");
        assert_eq!(r.status, StatusCode::OK);
    }
    // Its 403 is not delayed either.
    let r = send_within(&app, &unsigned("GET", METADATA), Duration::from_secs(30))
        .expect("metadata's 403 answered despite the latency");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let faults = send(&app, &unsigned("GET", "/_emulator/faults")).json();
    assert_eq!(faults["settings"]["next"], json!(["503"]));
    assert_eq!(faults["injected"], json!({}));
    put_faults(&app, r#"{"next":["503"]}"#);
    let _ = metadata(&app);
    assert_eq!(
        send(&app, &put("Patient", "p")).status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[test]
fn each_metadata_fault() {
    let app = app();

    put_faults(&app, r#"{"metadata":"500"}"#);
    for _ in 0..2 {
        // It stays until changed.
        let r = metadata(&app);
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.header("content-type"), "application/fhir+json");
        assert_eq!(issue(&r.json()).0, "exception");
    }
    // Other requests are not touched.
    assert_eq!(send(&app, &put("Patient", "p")).status, StatusCode::CREATED);

    put_faults(&app, r#"{"metadata":"garbage"}"#);
    let r = metadata(&app);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/fhir+json");
    assert_eq!(r.body.as_ref(), b"<html>maintenance</html>");
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    put_faults(&app, r#"{"metadata":"empty"}"#);
    let s = metadata(&app).json();
    assert_eq!(s["resourceType"], "CapabilityStatement");
    assert_eq!(s["rest"][0]["mode"], "server");
    assert!(s["rest"][0].get("resource").is_none());

    put_faults(&app, r#"{"metadata":"no-interactions"}"#);
    let s = metadata(&app).json();
    assert_eq!(listed(&s), HEALTHLAKE_TYPES);
    assert!(s["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.get("interaction").is_none()));

    put_faults(&app, r#"{"metadata":null}"#);
    assert_eq!(listed(&metadata(&app).json()).len(), 106);

    let recorded: Vec<(Value, Value)> = log(&app)
        .iter()
        .map(|r| (r["status"].clone(), r["fault"].clone()))
        .collect();
    assert_eq!(
        recorded,
        [
            (json!(500), json!("metadata-500")),
            (json!(500), json!("metadata-500")),
            (json!(201), Value::Null),
            (json!(200), json!("metadata-garbage")),
            (json!(200), json!("metadata-empty")),
            (json!(200), json!("metadata-no-interactions")),
            (json!(200), Value::Null),
        ]
    );
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/faults")).json()["injected"],
        json!({"metadata-500": 2, "metadata-garbage": 1, "metadata-empty": 1,
               "metadata-no-interactions": 1})
    );
}

#[test]
fn a_bad_metadata_fault_is_refused_clearly() {
    let app = app();
    put_faults(&app, r#"{"metadata":"empty"}"#);
    for (body, needle) in [
        (
            r#"{"metadata":"teapot"}"#,
            r#"unknown metadata fault "teapot": expected "500", "garbage", "empty", "no-interactions" or null"#,
        ),
        (r#"{"metadata":500}"#, "invalid type: integer `500`"),
        (r#"{"next":["metadata-500"]}"#, "set `metadata`"),
    ] {
        let r = put_faults(&app, body);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let v = r.json();
        let (code, diag) = issue(&v);
        assert_eq!(code, "invalid");
        assert!(
            diag.starts_with("invalid fault settings: ") && diag.contains(needle),
            "{body}: {diag}"
        );
        assert!(!diag.contains('\n'), "{diag}");
    }
    // The settings in force did not change.
    assert_eq!(
        send(&app, &unsigned("GET", "/_emulator/faults")).json()["settings"]["metadata"],
        "empty"
    );
}
