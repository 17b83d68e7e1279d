//! End-to-end: the real binary, started the way the Python integration tests start it, spoken to
//! over keep-alive HTTP/1.1 connections on loopback; including fault injection that only a real
//! socket shows (a reset connection, the framing of empty and large bodies).
//!
//! No fixed sleeps: a test waits for what it needs by polling the inspection endpoints, with
//! deadlines far longer than a slow machine needs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufReader, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::process::{self, connect, exchange, plain, write_request, Emulator, Start};
use common::*;

fn start(extra: &[&str]) -> Emulator {
    start_in(temp_dir("bin"), extra)
}

fn start_in(dir: std::path::PathBuf, extra: &[&str]) -> Emulator {
    let temporary = format!("{TEMP_AKID}:{TEMP_SECRET}:{TOKEN}");
    process::start(
        dir,
        Start {
            args: extra,
            env: &[("EMULATOR_CREDENTIALS", &temporary)],
            ..Start::default()
        },
    )
}

#[test]
fn serves_signed_requests_over_keep_alive() {
    let mut emu = start(&["--delete-absent-status", "404"]);
    let port = emu.port;
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut conn = BufReader::new(stream);

    let r = exchange(&mut conn, &plain("GET", "/_emulator/health", port));
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));

    // A PUT signed by aws-sigv4 with a session token, for the host the emulator sees.
    let host = format!("127.0.0.1:{port}");
    let body = patient("e2e");
    let put = signed_request(
        "PUT",
        &format!("/datastore/{DATASTORE}/r4/Patient/e2e"),
        &[("host", &host), ("content-type", "application/fhir+json")],
        &body,
        &SignOpts::temporary(),
    );
    let r = exchange(&mut conn, &put);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("etag"), Some("W/\"1\""));
    assert!(r.header("x-amzn-requestid").is_some());

    // Same connection: the stored bytes.
    let r = exchange(
        &mut conn,
        &plain("GET", "/_emulator/resources/Patient/e2e", port),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);

    // DELETE of an absent resource with --delete-absent-status 404.
    let del = signed_request(
        "DELETE",
        &format!("/datastore/{DATASTORE}/r4/Patient/absent"),
        &[("host", &host)],
        b"",
        &SignOpts::long_term(),
    );
    assert_eq!(exchange(&mut conn, &del).status, 404);

    // A bad signature.
    let mut bad = put.clone();
    bad.body_mut().push(b' ');
    let r = exchange(&mut conn, &bad);
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("InvalidSignatureException")
    );

    let r = exchange(&mut conn, &plain("GET", "/_emulator/requests", port));
    let log: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let statuses: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 404, 403]);

    // Stop it and read its stderr: one line per request, no secrets.
    drop(conn);
    let stderr = emu.kill_and_read_stderr();
    assert!(
        stderr.contains(AKID) && stderr.contains(TEMP_AKID),
        "{stderr}"
    );
    assert!(
        !stderr.contains(SECRET) && !stderr.contains(TEMP_SECRET) && !stderr.contains(TOKEN),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "PUT /datastore/{DATASTORE}/r4/Patient/e2e -> 201 verified"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("-> 403 rejected"), "{stderr}");
}

#[test]
fn bad_credentials_fail_without_echoing_secrets() {
    let stderr = process::refused(&["--credential", "AKIDBAD:verysecretvalue:"]);
    assert!(stderr.contains("AKIDBAD"), "{stderr}");
    assert!(!stderr.contains("verysecretvalue"), "{stderr}");
}

fn put_json(uri: &str, body: &str, port: u16) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method("PUT")
        .uri(uri)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
        .unwrap()
}

fn signed_patient_put(id: &str, port: u16) -> http::Request<Vec<u8>> {
    signed_request(
        "PUT",
        &format!("/datastore/{DATASTORE}/r4/Patient/{id}"),
        &[
            ("host", &format!("127.0.0.1:{port}")),
            ("content-type", "application/fhir+json"),
        ],
        &patient(id),
        &SignOpts::long_term(),
    )
}

#[test]
fn a_reset_fault_drops_the_connection_without_an_answer_and_serving_goes_on() {
    let mut emu = start(&[]);
    let port = emu.port;
    // A control connection, kept alive across the reset of another one.
    let mut ctl = connect(port);
    let r = exchange(
        &mut ctl,
        &put_json("/_emulator/faults", r#"{"next":["reset"]}"#, port),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // The victim: a complete, well-signed request, then nothing but a reset.
    let mut victim = connect(port);
    write_request(&mut victim, &signed_patient_put("gone", port));
    let mut buf = [0u8; 256];
    match victim.read(&mut buf) {
        Ok(0) if !cfg!(target_os = "linux") => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!(
            "expected a connection reset and no answer, got {other:?}: {:?}",
            {
                let n = *other.as_ref().unwrap_or(&0);
                String::from_utf8_lossy(&buf[..n]).into_owned()
            }
        ),
    }

    // The server goes on: on the old connection and on new ones.
    let r = exchange(&mut ctl, &plain("GET", "/_emulator/health", port));
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
    let mut fresh = connect(port);
    let r = exchange(&mut fresh, &signed_patient_put("kept", port));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = exchange(&mut fresh, &signed_patient_put("kept", port));
    assert_eq!(r.status, 200);

    // Nothing stored for the reset request; the log says what happened.
    let r = exchange(
        &mut ctl,
        &plain("GET", "/_emulator/resources/Patient/gone", port),
    );
    assert_eq!(r.status, 404);
    let r = exchange(&mut ctl, &plain("GET", "/_emulator/requests", port));
    let log = r.json();
    let got: Vec<(u64, serde_json::Value)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["status"].as_u64().unwrap(), e["fault"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (0, serde_json::json!("reset")),
            (201, serde_json::Value::Null),
            (200, serde_json::Value::Null)
        ]
    );
    let r = exchange(&mut ctl, &plain("GET", "/_emulator/faults", port));
    assert_eq!(r.json()["injected"], serde_json::json!({ "reset": 1 }));

    // The reset is logged as such, not as a connection error.
    drop((ctl, fresh, victim));
    let stderr = emu.kill_and_read_stderr();
    assert!(
        stderr.contains(&format!(
            "PUT /datastore/{DATASTORE}/r4/Patient/gone -> (no answer)"
        )) && stderr.contains("injected fault reset"),
        "{stderr}"
    );
    assert!(!stderr.contains("connection error"), "{stderr}");
}

/// Asks `path` on `ctl` every 20 ms until `ready` holds for its JSON answer, for at most 60 s.
fn poll_until(
    ctl: &mut BufReader<TcpStream>,
    port: u16,
    path: &str,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = exchange(ctl, &plain("GET", path, port)).json();
        if ready(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never happened; last {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_request_whose_client_leaves_during_a_delay_is_still_processed() {
    let emu = start(&[]);
    let port = emu.port;
    let mut ctl = connect(port);
    let r = exchange(
        &mut ctl,
        &put_json("/_emulator/faults", r#"{"next":["delay:2000"]}"#, port),
    );
    assert_eq!(r.status, 200);
    let mut impatient = connect(port);
    write_request(&mut impatient, &signed_patient_put("late", port));
    // The request is in its delay once it has taken the `delay` entry.
    poll_until(
        &mut ctl,
        port,
        "/_emulator/faults",
        "the request took its fault",
        |v| v["settings"]["next"] == serde_json::json!([]),
    );
    drop(impatient);

    let log = poll_until(
        &mut ctl,
        port,
        "/_emulator/requests",
        "the request was recorded",
        |v| !v.as_array().unwrap().is_empty(),
    );
    let entry = &log[0];
    assert_eq!(entry["status"], 201);
    assert_eq!(entry["fault"], "delay");
    let r = exchange(
        &mut ctl,
        &plain("GET", "/_emulator/resources/Patient/late", port),
    );
    assert_eq!(r.status, 200);
    drop(emu);
}

#[test]
fn faults_can_be_set_at_start() {
    let dir = temp_dir("faults");
    let file = dir.join("faults.json");
    std::fs::write(&file, r#"{"next":["throttle-429"],"seed":5}"#).unwrap();
    let emu = start_in(
        dir,
        &[
            "--faults",
            file.to_str().unwrap(),
            "--unsupported-types",
            "Basic,Subscription",
        ],
    );
    let port = emu.port;
    let mut conn = connect(port);
    let r = exchange(&mut conn, &plain("GET", "/_emulator/faults", port));
    let v = r.json();
    assert_eq!(
        v["settings"]["unsupported_types"],
        serde_json::json!(["Basic", "Subscription"])
    );
    assert_eq!(v["settings"]["next"], serde_json::json!(["throttle-429"]));
    assert_eq!(v["settings"]["seed"], 5);

    let r = exchange(&mut conn, &signed_patient_put("p", port));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-amzn-errortype"), Some("ThrottlingException"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.header("x-amzn-requestid").is_some());

    let get_basic = signed_request(
        "GET",
        &format!("/datastore/{DATASTORE}/r4/Basic/b"),
        &[("host", &format!("127.0.0.1:{port}"))],
        b"",
        &SignOpts::long_term(),
    );
    let r = exchange(&mut conn, &get_basic);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"ResourceType Basic is not supported."}]}"#
    );
}

#[test]
fn bad_fault_files_are_a_configuration_error() {
    let dir = temp_dir("badfaults");
    let file = dir.join("faults.json");
    std::fs::write(&file, r#"{"error_rate":3}"#).unwrap();
    let stderr = process::refused(&["--faults", file.to_str().unwrap()]);
    assert!(stderr.contains("error_rate must be between"), "{stderr}");
    let stderr = process::refused(&["--unsupported-types", "Basic,not_a_type"]);
    assert!(stderr.contains("--unsupported-types"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn front_end_headers_and_the_framing_of_odd_bodies_on_the_wire() {
    let emu = start(&[]);
    let port = emu.port;
    let mut ctl = connect(port);
    let r = exchange(
        &mut ctl,
        &put_json(
            "/_emulator/faults",
            r#"{"next":["empty:401","large:503","garbled:500","throttle-429-bare"]}"#,
            port,
        ),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // No front-end headers on inspection answers.
    for name in [
        "via",
        "x-amz-apigw-id",
        "x-amzn-trace-id",
        "x-amz-cf-id",
        "x-amz-cf-pop",
    ] {
        assert_eq!(r.header(name), None, "{name}");
    }

    let mut conn = connect(port);
    let front_end = |r: &process::Response| {
        assert!(
            r.header("via").is_some_and(
                |v| v.starts_with("1.1 ") && v.ends_with(".cloudfront.net (CloudFront)")
            ),
            "{:?}",
            r.headers
        );
        assert!(r.header("x-amz-apigw-id").is_some());
        assert!(r
            .header("x-amzn-trace-id")
            .is_some_and(|v| v.starts_with("Root=1-")));
        assert!(r.header("x-amz-cf-id").is_some());
        assert_eq!(r.header("x-amz-cf-pop"), Some("IAD89-C1"));
        assert!(r.header("x-amzn-requestid").is_some());
    };

    // empty:401 — Content-Length 0, no content type; the connection stays usable.
    let r = exchange(&mut conn, &signed_patient_put("odd", port));
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-length"), Some("0"), "{:?}", r.headers);
    assert_eq!(r.header("content-type"), None);
    assert_eq!(r.header("x-amzn-errortype"), None);
    assert!(r.body.is_empty());
    front_end(&r);

    // large:503 — 100,000 bytes of HTML.
    let r = exchange(&mut conn, &signed_patient_put("odd", port));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-length"), Some("100000"));
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(r.body.len(), 100_000);
    front_end(&r);

    // garbled:500 — bytes that are neither UTF-8 nor JSON.
    let r = exchange(&mut conn, &signed_patient_put("odd", port));
    assert_eq!(r.status, 500);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-amzn-errortype"), None);
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(std::str::from_utf8(&r.body).is_err());
    front_end(&r);

    // throttle-429-bare — no Retry-After.
    let r = exchange(&mut conn, &signed_patient_put("odd", port));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(r.header("x-amzn-errortype"), Some("ThrottlingException"));
    front_end(&r);

    // Then normal, on the same connection; a bad signature has them too.
    let r = exchange(&mut conn, &signed_patient_put("odd", port));
    assert_eq!(r.status, 201);
    front_end(&r);
    let mut bad = signed_patient_put("odd", port);
    bad.body_mut().push(b' ');
    let r = exchange(&mut conn, &bad);
    assert_eq!(r.status, 403);
    front_end(&r);

    let log = exchange(&mut ctl, &plain("GET", "/_emulator/requests", port)).json();
    let faults: Vec<serde_json::Value> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fault"].clone())
        .collect();
    assert_eq!(
        faults,
        serde_json::json!(["empty", "large", "garbled", "throttle-429-bare", null, null])
            .as_array()
            .unwrap()
            .clone()
    );
}
