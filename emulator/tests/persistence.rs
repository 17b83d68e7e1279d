//! `--state-file`: a restarted emulator holds exactly what it held (exact bytes, versions,
//! version counters of deleted resources) and still accepts the temporary credentials STS issued
//! through it; nothing changes once the state is saved for shutdown.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::app::*;
use common::process::{self, exchange_once, Emulator, Start};
use common::*;
use healthlake_emulator::{persist, timefmt, App, UpstreamOutcome, SHUTTING_DOWN};
use http::StatusCode;
use serde_json::Value;

fn start(dir: &Path, state: &Path, port: u16) -> Emulator {
    let state = state.to_str().unwrap();
    process::start(
        dir.to_path_buf(),
        Start {
            port,
            args: &["--state-file", state],
            keep_dir: true,
            ..Start::default()
        },
    )
}

/// SIGTERM, as a harness stops it; returns its stderr.
fn terminate(mut emu: Emulator) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &emu.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = emu.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    emu.stderr()
}

fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let req = http::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .body(Vec::new())
        .unwrap();
    let r = exchange_once(port, &req);
    (r.status, r.body)
}

fn put(port: u16, type_: &str, id: &str, body: &[u8]) -> (u16, String) {
    let req = signed_request(
        "PUT",
        &format!("/datastore/{DATASTORE}/r4/{type_}/{id}"),
        &[
            ("host", &format!("127.0.0.1:{port}")),
            ("content-type", "application/fhir+json"),
        ],
        body,
        &SignOpts::long_term(),
    );
    let r = exchange_once(port, &req);
    (r.status, r.header("etag").unwrap_or_default().to_string())
}

fn delete(port: u16, type_: &str, id: &str) -> u16 {
    let req = signed_request(
        "DELETE",
        &format!("/datastore/{DATASTORE}/r4/{type_}/{id}"),
        &[("host", &format!("127.0.0.1:{port}"))],
        b"",
        &SignOpts::long_term(),
    );
    exchange_once(port, &req).status
}

fn listing(port: u16) -> Value {
    let (status, body) = get(port, "/_emulator/resources");
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn a_restart_keeps_every_resource_byte_identical_and_the_version_counters() {
    let dir = temp_dir("restart");
    let state = dir.join("state.jsonl");
    let emu = start(&dir, &state, 0);
    let port = emu.port;

    // Bytes a re-serialisation would change: spacing, key order, escapes, non-ASCII.
    let odd = "{ \"id\":\"odd\",  \"resourceType\" : \"Observation\",\n\t\"note\":[{\"text\":\"caf\u{e9} \\u00e9 \\\"q\\\" \u{1f600}\"}] }\n";
    assert_eq!(
        put(port, "Observation", "odd", odd.as_bytes()),
        (201, "W/\"1\"".into())
    );
    assert_eq!(put(port, "Patient", "twice", &patient("twice")).0, 201);
    assert_eq!(
        put(port, "Patient", "twice", &patient("twice")),
        (200, "W/\"2\"".into())
    );
    assert_eq!(put(port, "Patient", "gone", &patient("gone")).0, 201);
    assert_eq!(delete(port, "Patient", "gone"), 204);
    let before = listing(port);
    assert_eq!(before.as_array().unwrap().len(), 2);

    let stderr = terminate(emu);
    assert!(stderr.contains("state saved to"), "{stderr}");
    assert!(stderr.contains(": 2 resources, 0 STS-issued"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");

    // Same port, same state file.
    let emu = start(&dir, &state, port);
    assert_eq!(emu.port, port);
    assert_eq!(listing(port), before);
    assert_eq!(
        get(port, "/_emulator/resources/Observation/odd"),
        (200, odd.as_bytes().to_vec())
    );
    assert_eq!(
        get(port, "/_emulator/resources/Patient/twice"),
        (200, patient("twice"))
    );
    assert_eq!(get(port, "/_emulator/resources/Patient/gone").0, 404);
    // The request log is not kept.
    assert_eq!(get(port, "/_emulator/requests"), (200, b"[]".to_vec()));
    // The version counters go on, the deleted resource's too.
    assert_eq!(
        put(port, "Patient", "twice", &patient("twice")),
        (200, "W/\"3\"".into())
    );
    assert_eq!(
        put(port, "Patient", "gone", &patient("gone")),
        (201, "W/\"2\"".into())
    );

    // A second restart keeps the writes of the second run.
    let stderr = terminate(emu);
    assert!(stderr.contains("state loaded from"), "{stderr}");
    let emu = start(&dir, &state, port);
    let after = listing(port);
    let versions: Vec<(String, String)> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["versionId"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("odd".into(), "1".into()),
            ("gone".into(), "2".into()),
            ("twice".into(), "3".into())
        ]
    );
    drop(emu);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unreadable_state_file_stops_the_start() {
    let dir = temp_dir("bad");
    let state = dir.join("state.jsonl");
    std::fs::write(
        &state,
        "{\"kind\":\"header\",\"format\":\"something-else\",\"version\":1,\"saved_at\":\"\"}\n",
    )
    .unwrap();
    let stderr = process::refused(&["--state-file", state.to_str().unwrap()]);
    assert!(stderr.contains("not a state file"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

const STS_AKID: &str = "ASIAKEPTACROSSRESTART";
const STS_SECRET: &str = "kept/Secret+KEY00000000000000000000000";
const STS_TOKEN: &str = "FwoGZXIvYXdzEKeptSessionToken//////////+token==";
const OLD_AKID: &str = "ASIAEXPIREDEARLY0001";

fn issue(app: &App, akid: &str, expires: SystemTime, at: SystemTime) {
    let xml = format!(
        "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>{STS_SECRET}</SecretAccessKey><SessionToken>{STS_TOKEN}</SessionToken><Expiration>{}</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>",
        timefmt::format_rfc3339_millis(expires)
    );
    app.record_sts_call(
        Some("AssumeRole"),
        UpstreamOutcome::Answered {
            status: 200,
            body: xml.as_bytes(),
        },
        at,
    );
}

fn sts_signed_put(akid: &str, id: &str, time: SystemTime) -> http::Request<Vec<u8>> {
    let opts = SignOpts {
        access_key_id: akid.into(),
        secret: STS_SECRET.into(),
        token: Some(STS_TOKEN.into()),
        time,
        ..SignOpts::long_term()
    };
    signed_put("Patient", id, &patient(id), &opts)
}

#[test]
fn sts_issued_credentials_are_still_accepted_after_a_restart_and_early_expiry_is_kept() {
    let t0 = timefmt::unix_to_system_time(timefmt::system_time_to_unix(SystemTime::now()));
    let first = app();
    issue(&first, OLD_AKID, t0 + Duration::from_secs(900), t0);
    assert_eq!(first.expire_sts_credentials(t0 + Duration::from_secs(1)), 1);
    issue(
        &first,
        STS_AKID,
        t0 + Duration::from_secs(900),
        t0 + Duration::from_secs(2),
    );
    let t = t0 + Duration::from_secs(3);
    assert_eq!(
        send_at(&first, &sts_signed_put(STS_AKID, "p", t), t).status,
        StatusCode::CREATED
    );

    let dir = temp_dir("sts");
    let state = dir.join("state.jsonl");
    persist::save(&state, &first.snapshot(), t).unwrap();
    let text = std::fs::read_to_string(&state).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}"); // header, one resource, two sets

    let second = app();
    let (live, sets) = second.restore(persist::load(&state).unwrap().unwrap());
    assert_eq!((live, sets), (1, 2));
    assert_eq!(second.stored("Patient", "p"), first.stored("Patient", "p"));
    let t = t0 + Duration::from_secs(10);
    let r = send_at(&second, &sts_signed_put(STS_AKID, "q", t), t);
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let record = serde_json::to_value(second.requests().last().unwrap()).unwrap();
    assert_eq!(record["credential_source"], "sts");
    assert_eq!(record["credential_valid"], true);
    // The set expired early stays expired; the other one still runs out at its expiry.
    let r = send_at(&second, &sts_signed_put(OLD_AKID, "r", t), t);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-amzn-errortype"), "ExpiredTokenException");
    let late = t0 + Duration::from_secs(900);
    let r = send_at(&second, &sts_signed_put(STS_AKID, "s", late), late);
    assert_eq!(r.header("x-amzn-errortype"), "ExpiredTokenException");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nothing_changes_once_the_state_is_saved_for_shutdown() {
    let app = app();
    let t0 = timefmt::unix_to_system_time(timefmt::system_time_to_unix(SystemTime::now()));
    let opts = SignOpts {
        time: t0,
        ..SignOpts::long_term()
    };
    assert_eq!(
        send_at(&app, &signed_put("Patient", "a", &patient("a"), &opts), t0).status,
        StatusCode::CREATED
    );
    let saved = app.freeze_and_snapshot();
    assert_eq!(saved.live_resources(), 1);

    let r = send_at(&app, &signed_put("Patient", "b", &patient("b"), &opts), t0);
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let del = signed_request(
        "DELETE",
        &format!("/datastore/{DATASTORE}/r4/Patient/a"),
        &[("host", HOST)],
        b"",
        &opts,
    );
    assert_eq!(
        send_at(&app, &del, t0).status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(app.stored("Patient", "a").is_some());
    assert!(app.stored("Patient", "b").is_none());

    // An STS answer arriving now is not accepted: it would not be in the state file.
    issue(&app, STS_AKID, t0 + Duration::from_secs(900), t0);
    let status = app.sts(t0);
    assert!(status.issued.is_empty());
    assert_eq!(status.calls[0].proxy_error.as_deref(), Some(SHUTTING_DOWN));
    assert_eq!(app.snapshot(), saved);
}

fn credential_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> process::Response {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"));
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    exchange_once(port, &b.body(Vec::new()).unwrap())
}

fn put_with(port: u16, id: &str, doc: &Value) -> process::Response {
    let req = signed_request(
        "PUT",
        &format!("/datastore/{DATASTORE}/r4/Patient/{id}"),
        &[
            ("host", &format!("127.0.0.1:{port}")),
            ("content-type", "application/fhir+json"),
        ],
        &patient(id),
        &SignOpts {
            access_key_id: doc["AccessKeyId"].as_str().unwrap().into(),
            secret: doc["SecretAccessKey"].as_str().unwrap().into(),
            token: Some(doc["Token"].as_str().unwrap().into()),
            ..SignOpts::long_term()
        },
    );
    exchange_once(port, &req)
}

#[test]
fn sets_from_the_credential_endpoints_are_served_logged_without_secrets_and_kept_across_a_restart()
{
    const POD_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eks-pod-identity-token.c2ln";
    let dir = temp_dir("creds");
    let state = dir.join("state.jsonl");
    let token_file = dir.join("pod-token");
    std::fs::write(&token_file, format!("{POD_TOKEN}\n")).unwrap();
    let args = [
        "--state-file",
        state.to_str().unwrap(),
        "--container-token-file",
        token_file.to_str().unwrap(),
        "--imds-role",
        "relay-node",
    ];
    let emu = process::start(
        dir.clone(),
        Start {
            args: &args,
            keep_dir: true,
            ..Start::default()
        },
    );
    let port = emu.port;

    // IMDSv2 over the wire.
    let r = credential_request(
        port,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    let session = String::from_utf8(r.body).unwrap();
    let r = credential_request(
        port,
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &[("X-aws-ec2-metadata-token", &session)],
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"relay-node".as_slice())
    );
    let r = credential_request(
        port,
        "GET",
        "/latest/meta-data/iam/security-credentials/relay-node",
        &[("X-aws-ec2-metadata-token", &session)],
    );
    assert_eq!(r.status, 200);
    let imds = r.json();
    assert_eq!(put_with(port, "imds", &imds).status, 201);

    // The container endpoint over the wire.
    let r = credential_request(port, "GET", "/v1/credentials", &[]);
    assert_eq!(r.status, 401);
    let r = credential_request(
        port,
        "GET",
        "/v1/credentials",
        &[("Authorization", POD_TOKEN)],
    );
    assert_eq!(r.status, 200);
    let container = r.json();
    assert_eq!(put_with(port, "pod", &container).status, 201);

    let stderr = terminate(emu);
    assert!(
        stderr.contains(
            "creds GET /latest/meta-data/iam/security-credentials/relay-node -> 200 issued ASIA"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("creds GET /v1/credentials -> 401 refused: no Authorization"),
        "{stderr}"
    );
    assert!(
        stderr.contains(imds["AccessKeyId"].as_str().unwrap()),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "2 resources, 0 STS-issued credential sets, 2 issued by the IMDS/container endpoints"
        ),
        "{stderr}"
    );
    for secret in [
        session.as_str(),
        POD_TOKEN,
        imds["SecretAccessKey"].as_str().unwrap(),
        imds["Token"].as_str().unwrap(),
        container["SecretAccessKey"].as_str().unwrap(),
        container["Token"].as_str().unwrap(),
    ] {
        assert!(!stderr.contains(secret), "stderr shows a secret: {stderr}");
    }
    // The state file holds them as `sts_credential` lines (what the relay suite's secret scan
    // reads), mode 0600.
    let text = std::fs::read_to_string(&state).unwrap();
    let kinds: Vec<(String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "sts_credential")
        .map(|v| {
            assert!(v["secret_access_key"].is_string() && v["session_token"].is_string());
            (
                v["access_key_id"].as_str().unwrap().to_string(),
                v["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (
                imds["AccessKeyId"].as_str().unwrap().to_string(),
                "imds".to_string()
            ),
            (
                container["AccessKeyId"].as_str().unwrap().to_string(),
                "container".to_string()
            ),
        ]
    );

    // Restarted: both sets are still accepted, and listed.
    let emu = start(&dir, &state, port);
    assert_eq!(put_with(port, "imds", &imds).status, 200);
    assert_eq!(put_with(port, "pod", &container).status, 200);
    let (status, body) = get(port, "/_emulator/credentials");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let sources: Vec<&str> = v["issued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["imds", "container"]);
    assert_eq!(
        v["calls"],
        serde_json::json!([]),
        "the call log is not kept"
    );
    drop(emu);
    std::fs::remove_dir_all(&dir).unwrap();
}
