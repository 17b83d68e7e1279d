//! The STS recording proxy over real sockets: the real binary started with `--sts-upstream`
//! pointing at a fake STS in this test (a plain TCP server that records the exact bytes it
//! receives and answers canned AssumeRole / ErrorResponse XML), then HealthLake requests signed
//! with the issued credentials; and the STS faults (`/_emulator/sts/faults`) over the same path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use common::process::{self, Emulator, Start};
use common::*;
use healthlake_emulator::timefmt;
use serde_json::{json, Value};

const ISSUED_AKID: &str = "ASIAFAKESTS000000001";
const ISSUED_SECRET: &str = "fake/sts+Secret0000000000000000000000000";
const ISSUED_TOKEN: &str = "FQoGZXIvYXdzEFakeStsSessionToken//////////+abc==";

/// The emulator with its STS proxy in front of `upstream`.
struct Proxy {
    _emu: Emulator,
    port: u16,
    sts_port: u16,
    stdout_second_line: String,
}

fn start(upstream: &str) -> Proxy {
    start_with(upstream, &[], false)
}

/// [`start`] with more arguments, and stderr kept for the test if `stderr`.
fn start_with(upstream: &str, extra: &[&str], stderr: bool) -> Proxy {
    let dir = temp_dir("sts");
    let sts_port_file = dir.join("sts.port");
    let sts_port_path = sts_port_file.to_str().unwrap().to_string();
    let mut args = vec![
        "--sts-upstream",
        upstream,
        "--sts-listen",
        "127.0.0.1:0",
        "--sts-port-file",
        &sts_port_path,
    ];
    args.extend_from_slice(extra);
    let emu = process::start(
        dir,
        Start {
            args: &args,
            stdout_lines: 2,
            stderr,
            ..Start::default()
        },
    );
    Proxy {
        port: emu.port,
        sts_port: process::read_port_file(&sts_port_file),
        stdout_second_line: emu.stdout.get(1).cloned().unwrap_or_default(),
        _emu: emu,
    }
}

/// A fake STS: answers each connection with the next canned answer and reports the exact bytes
/// of each request it received.
fn fake_sts(answers: Vec<Vec<u8>>) -> (u16, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for answer in answers {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let received = read_message(&mut stream);
            tx.send(received).unwrap();
            stream.write_all(&answer).unwrap();
            stream.flush().unwrap();
        }
    });
    (port, rx)
}

/// Reads one HTTP/1.1 message framed by Content-Length (or without a body), as raw bytes.
fn read_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "message cut short: {buf:?}"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf.clone()).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    buf.extend_from_slice(&body);
    buf
}

struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

fn exchange_raw(stream: &mut TcpStream, request: &[u8]) -> Raw {
    stream.write_all(request).unwrap();
    let message = read_message(stream);
    let split = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8(message[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Raw {
        status,
        head,
        body: message[split..].to_vec(),
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// The request as bytes on the wire, header names in `Title-Case` (as botocore writes them), a
/// `Content-Length` last.
fn wire(req: &http::Request<Vec<u8>>) -> Vec<u8> {
    let title = |n: &str| {
        n.split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-")
    };
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method(), req.uri());
    for (n, v) in req.headers() {
        out.push_str(&format!(
            "{}: {}\r\n",
            title(n.as_str()),
            v.to_str().unwrap()
        ));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", req.body().len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(req.body());
    bytes
}

fn plain(method: &str, path: &str, port: u16) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n")
        .into_bytes()
}

fn http_answer(status: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nx-amzn-RequestId: fake-request-1\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn assume_role_xml(expiration: &str) -> String {
    assume_role_xml_for(ISSUED_AKID, expiration)
}

fn assume_role_xml_for(akid: &str, expiration: &str) -> String {
    format!(
        r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><AssumedRoleUser><AssumedRoleId>AROAFAKE:relay</AssumedRoleId><Arn>arn:aws:sts::123456789012:assumed-role/writer/relay</Arn></AssumedRoleUser><Credentials><AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>{ISSUED_SECRET}</SecretAccessKey><SessionToken>{ISSUED_TOKEN}</SessionToken><Expiration>{expiration}</Expiration></Credentials></AssumeRoleResult><ResponseMetadata><RequestId>fake-request-1</RequestId></ResponseMetadata></AssumeRoleResponse>"#
    )
}

const DENIED_XML: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not authorized to perform sts:AssumeRole</Message></Error><RequestId>fake-request-2</RequestId></ErrorResponse>"#;

/// An AssumeRole call signed by aws-sigv4 for STS, for the host the proxy is reached at.
fn assume_role_request(sts_port: u16) -> http::Request<Vec<u8>> {
    let body = b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fwriter&RoleSessionName=relay&Version=2011-06-15";
    signed_request(
        "POST",
        "/",
        &[
            ("host", &format!("127.0.0.1:{sts_port}")),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
        ],
        body,
        &SignOpts {
            service: "sts".into(),
            ..SignOpts::long_term()
        },
    )
}

#[test]
fn issued_credentials_are_accepted_then_expired() {
    let expiration = timefmt::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(3600))
        .replace('Z', "+00:00");
    let assume_role = assume_role_xml(&expiration);
    let (upstream_port, received) = fake_sts(vec![
        http_answer("200 OK", "", &assume_role),
        http_answer(
            "403 Forbidden",
            "X-Amzn-ErrorType: AccessDenied\r\n",
            DENIED_XML,
        ),
    ]);
    let emu = start(&format!("http://127.0.0.1:{upstream_port}"));
    assert_eq!(
        emu.stdout_second_line,
        format!(
            "healthlake-emulator STS proxy listening on http://127.0.0.1:{}, forwarding to http://127.0.0.1:{upstream_port}",
            emu.sts_port
        )
    );

    // AssumeRole through the proxy: the upstream gets exactly the bytes sent (Host included),
    // the caller exactly the upstream's answer (header spelling included; `Connection: close`
    // is hop-by-hop and dropped, so the caller's connection stays open).
    let sent = wire(&assume_role_request(emu.sts_port));
    let mut sts_conn = connect(emu.sts_port);
    let r = exchange_raw(&mut sts_conn, &sent);
    let got = received.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&sent)
    );
    assert_eq!(got, sent);
    assert!(String::from_utf8_lossy(&sent)
        .contains(&format!("\r\nHost: 127.0.0.1:{}\r\n", emu.sts_port)));
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, assume_role.as_bytes());
    assert!(
        r.head.contains("\r\nx-amzn-RequestId: fake-request-1\r\n"),
        "{}",
        r.head
    );
    assert!(
        r.head.contains("\r\nContent-Type: text/xml\r\n"),
        "{}",
        r.head
    );
    assert_eq!(r.header("connection"), None, "{}", r.head);

    // The call log.
    let mut ctl = connect(emu.port);
    let v = exchange_raw(&mut ctl, &plain("GET", "/_emulator/sts", emu.port)).json();
    let call = &v["calls"][0];
    assert_eq!(call["seq"], 1);
    assert_eq!(call["action"], "AssumeRole");
    assert_eq!(call["status"], 200);
    assert_eq!(call["issued_access_key_id"], ISSUED_AKID);
    assert_eq!(call["expiration"], expiration.as_str());
    assert_eq!(call["error_code"], Value::Null);
    assert_eq!(call["proxy_error"], Value::Null);
    assert!(timefmt::parse_iso8601(call["time"].as_str().unwrap()).is_some());
    assert_eq!(v["issued"][0]["access_key_id"], ISSUED_AKID);
    assert_eq!(v["issued"][0]["expired"], false);
    let text = v.to_string();
    assert!(!text.contains(ISSUED_SECRET) && !text.contains(ISSUED_TOKEN));

    // A HealthLake PUT signed with the issued set: accepted.
    let host = format!("127.0.0.1:{}", emu.port);
    let put = signed_request(
        "PUT",
        &format!("/datastore/{DATASTORE}/r4/Patient/sts1"),
        &[("host", &host), ("content-type", "application/fhir+json")],
        &patient("sts1"),
        &SignOpts {
            access_key_id: ISSUED_AKID.into(),
            secret: ISSUED_SECRET.into(),
            token: Some(ISSUED_TOKEN.into()),
            ..SignOpts::long_term()
        },
    );
    let mut data = connect(emu.port);
    let r = exchange_raw(&mut data, &wire(&put));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    // Expire every issued set now.
    let r = exchange_raw(&mut ctl, &plain("POST", "/_emulator/sts/expire", emu.port));
    assert_eq!((r.status, r.json()), (200, json!({ "expired": 1 })));

    // The same PUT again: ExpiredTokenException.
    let r = exchange_raw(&mut data, &wire(&put));
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-amzn-errortype"), Some("ExpiredTokenException"));
    assert_eq!(
        r.json(),
        json!({"__type": "ExpiredTokenException", "message": "The security token included in the request is expired"})
    );

    let log = exchange_raw(&mut ctl, &plain("GET", "/_emulator/requests", emu.port)).json();
    let facts: Vec<(Value, Value, Value, bool)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["status"].clone(),
                e["credential_source"].clone(),
                e["credential_valid"].clone(),
                e["credential_expires_at"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        facts,
        [
            (json!(201), json!("sts"), json!(true), true),
            (json!(403), json!("sts"), json!(false), true)
        ]
    );
    let v = exchange_raw(&mut ctl, &plain("GET", "/_emulator/sts", emu.port)).json();
    assert_eq!(v["issued"][0]["expired"], true);

    // An error answer, on the same (kept-alive) proxy connection: passed on, its code recorded.
    let r = exchange_raw(&mut sts_conn, &sent);
    assert_eq!(
        received.recv_timeout(Duration::from_secs(60)).unwrap(),
        sent
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.body, DENIED_XML.as_bytes());
    assert!(
        r.head.contains("\r\nX-Amzn-ErrorType: AccessDenied\r\n"),
        "{}",
        r.head
    );
    let v = exchange_raw(&mut ctl, &plain("GET", "/_emulator/sts", emu.port)).json();
    let call = &v["calls"][1];
    assert_eq!(
        (
            &call["seq"],
            &call["status"],
            &call["error_code"],
            &call["issued_access_key_id"]
        ),
        (&json!(2), &json!(403), &json!("AccessDenied"), &Value::Null)
    );
    assert_eq!(v["issued"].as_array().unwrap().len(), 1);
}

#[test]
fn an_unreachable_upstream_is_a_502_and_recorded() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let emu = start(&format!("http://127.0.0.1:{port}"));
    let mut conn = connect(emu.sts_port);
    let r = exchange_raw(&mut conn, &wire(&assume_role_request(emu.sts_port)));
    assert_eq!(r.status, 502, "{}", r.head);
    assert!(String::from_utf8_lossy(&r.body).contains("cannot connect"));
    let mut ctl = connect(emu.port);
    let v = exchange_raw(&mut ctl, &plain("GET", "/_emulator/sts", emu.port)).json();
    let call = &v["calls"][0];
    assert_eq!(
        (&call["action"], &call["status"]),
        (&json!("AssumeRole"), &json!(502))
    );
    assert!(call["proxy_error"]
        .as_str()
        .unwrap()
        .contains("cannot connect"));
    assert_eq!(v["issued"], json!([]));
}

#[test]
fn bad_sts_flags_are_a_configuration_error() {
    for (args, expected) in [
        (
            vec!["--sts-upstream", "http://192.0.2.1:5000"],
            "--sts-upstream",
        ),
        (vec!["--sts-upstream", "https://127.0.0.1:5000"], "http://"),
        (vec!["--sts-listen", "127.0.0.1:0"], "--sts-upstream"),
        (
            vec!["--web-identity-token-file", "/tmp/t"],
            "--sts-upstream",
        ),
    ] {
        let stderr = process::refused(&args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

fn put_json(path: &str, body: &str, port: u16) -> Vec<u8> {
    format!(
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A HealthLake PUT signed with a set issued through the proxy (the test's secret and token).
fn put_signed_with(akid: &str, id: &str, port: u16) -> Vec<u8> {
    wire(&signed_request(
        "PUT",
        &format!("/datastore/{DATASTORE}/r4/Patient/{id}"),
        &[
            ("host", &format!("127.0.0.1:{port}")),
            ("content-type", "application/fhir+json"),
        ],
        &patient(id),
        &SignOpts {
            access_key_id: akid.into(),
            secret: ISSUED_SECRET.into(),
            token: Some(ISSUED_TOKEN.into()),
            ..SignOpts::long_term()
        },
    ))
}

fn get_caller_identity(sts_port: u16) -> Vec<u8> {
    wire(&signed_request(
        "POST",
        "/",
        &[
            ("host", &format!("127.0.0.1:{sts_port}")),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
        ],
        b"Action=GetCallerIdentity&Version=2011-06-15",
        &SignOpts {
            service: "sts".into(),
            ..SignOpts::long_term()
        },
    ))
}

#[test]
fn sts_faults_shape_assume_role_answers() {
    const BAD_EXP_AKID: &str = "ASIAFAKESTS000000002";
    const EXPIRED_AKID: &str = "ASIAFAKESTS000000003";
    let real_expiration =
        timefmt::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(3600));
    let caller_identity = "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>";
    let bad_exp_answer = assume_role_xml_for(BAD_EXP_AKID, &real_expiration);
    let (upstream_port, received) = fake_sts(vec![
        http_answer("200 OK", "", caller_identity),
        http_answer("200 OK", "", &bad_exp_answer),
        http_answer(
            "200 OK",
            "",
            &assume_role_xml_for(EXPIRED_AKID, &real_expiration),
        ),
        http_answer("200 OK", "", &assume_role_xml(&real_expiration)),
    ]);
    let emu = start(&format!("http://127.0.0.1:{upstream_port}"));
    let mut ctl = connect(emu.port);
    let r = exchange_raw(
        &mut ctl,
        &put_json(
            "/_emulator/sts/faults",
            r#"{"next":["garbled","no-credentials","huge","503","bad-expiration","expired"]}"#,
            emu.port,
        ),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let all = json!([
        "garbled",
        "no-credentials",
        "huge",
        "503",
        "bad-expiration",
        "expired"
    ]);
    assert_eq!(r.json(), json!({"settings": {"next": all}, "injected": {}}));

    let mut sts = connect(emu.sts_port);
    // Another action consumes nothing and is forwarded.
    let r = exchange_raw(&mut sts, &get_caller_identity(emu.sts_port));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, caller_identity.as_bytes())
    );
    received.recv_timeout(Duration::from_secs(60)).unwrap();
    let v = exchange_raw(&mut ctl, &plain("GET", "/_emulator/sts/faults", emu.port)).json();
    assert_eq!(v["settings"]["next"], all);

    let assume_role = wire(&assume_role_request(emu.sts_port));

    // garbled: 200, text/xml, bytes that are neither UTF-8 nor XML.
    let r = exchange_raw(&mut sts, &assume_role);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("content-type"), Some("text/xml"));
    assert!(!r.body.is_empty() && r.body[0] != b'<');
    assert!(std::str::from_utf8(&r.body).is_err());

    // no-credentials: a well-formed AssumeRoleResponse with a result and no credentials.
    let r = exchange_raw(&mut sts, &assume_role);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/xml"));
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.starts_with("<AssumeRoleResponse "), "{text}");
    assert!(
        text.contains("<AssumeRoleResult>") && !text.contains("Credentials"),
        "{text}"
    );

    // huge: 2,000,000 bytes, still without credentials.
    let r = exchange_raw(&mut sts, &assume_role);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("2000000"));
    assert_eq!(r.body.len(), 2_000_000);
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.starts_with("<AssumeRoleResponse ") && text.ends_with("</AssumeRoleResponse>\n"));
    assert!(!text.contains("<Credentials>"));

    // 503: an AWS XML ErrorResponse.
    let r = exchange_raw(&mut sts, &assume_role);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("text/xml"));
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.starts_with("<ErrorResponse "), "{text}");
    assert!(text.contains("<Code>ServiceUnavailable</Code>"), "{text}");

    // None of those reached the upstream. bad-expiration does: the caller gets `not-a-date`, the
    // emulator accepts the set with its real expiry.
    let r = exchange_raw(&mut sts, &assume_role);
    assert_eq!(
        received.recv_timeout(Duration::from_secs(60)).unwrap(),
        assume_role
    );
    assert_eq!(r.status, 200);
    let expected = bad_exp_answer.replace(
        &format!("<Expiration>{real_expiration}</Expiration>"),
        "<Expiration>not-a-date</Expiration>",
    );
    assert_eq!(String::from_utf8(r.body.clone()).unwrap(), expected);
    assert_eq!(
        r.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    assert!(
        r.head.contains("\r\nx-amzn-RequestId: fake-request-1\r\n"),
        "{}",
        r.head
    );

    // expired: the caller gets an Expiration an hour ago, and the set is accepted as expired.
    let before = SystemTime::now();
    let r = exchange_raw(&mut sts, &assume_role);
    let after = SystemTime::now();
    assert_eq!(
        received.recv_timeout(Duration::from_secs(60)).unwrap(),
        assume_role
    );
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body.clone()).unwrap();
    let shown = text
        .split("<Expiration>")
        .nth(1)
        .and_then(|t| t.split("</Expiration>").next())
        .unwrap()
        .to_string();
    assert_eq!(shown.len(), "2026-11-27T22:00:00Z".len(), "{shown}");
    assert!(shown.ends_with('Z') && !shown.contains('.'), "{shown}");
    let shown_at = timefmt::parse_iso8601(&shown).unwrap();
    let hour = Duration::from_secs(3600);
    assert!(shown_at + hour + Duration::from_secs(1) > before, "{shown}");
    assert!(shown_at + hour <= after, "{shown}");
    assert_eq!(
        text,
        assume_role_xml_for(EXPIRED_AKID, &real_expiration).replace(&real_expiration, &shown)
    );

    // The queue is empty: the next call passes unchanged.
    let r = exchange_raw(&mut sts, &assume_role);
    received.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(r.body, assume_role_xml(&real_expiration).as_bytes());

    // What the emulator recorded.
    let v = exchange_raw(&mut ctl, &plain("GET", "/_emulator/sts/faults", emu.port)).json();
    assert_eq!(
        v,
        json!({"settings": {"next": []}, "injected": {
            "garbled": 1, "no-credentials": 1, "huge": 1, "503": 1, "bad-expiration": 1,
            "expired": 1
        }})
    );
    let v = exchange_raw(&mut ctl, &plain("GET", "/_emulator/sts", emu.port)).json();
    let calls = v["calls"].as_array().unwrap();
    let summary: Vec<(Value, Value, Value, Value)> = calls
        .iter()
        .map(|c| {
            (
                c["action"].clone(),
                c["status"].clone(),
                c["fault"].clone(),
                c["issued_access_key_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                json!("GetCallerIdentity"),
                json!(200),
                Value::Null,
                Value::Null
            ),
            (
                json!("AssumeRole"),
                json!(200),
                json!("garbled"),
                Value::Null
            ),
            (
                json!("AssumeRole"),
                json!(200),
                json!("no-credentials"),
                Value::Null
            ),
            (json!("AssumeRole"), json!(200), json!("huge"), Value::Null),
            (json!("AssumeRole"), json!(503), json!("503"), Value::Null),
            (
                json!("AssumeRole"),
                json!(200),
                json!("bad-expiration"),
                json!(BAD_EXP_AKID)
            ),
            (
                json!("AssumeRole"),
                json!(200),
                json!("expired"),
                json!(EXPIRED_AKID)
            ),
            (
                json!("AssumeRole"),
                json!(200),
                Value::Null,
                json!(ISSUED_AKID)
            ),
        ]
    );
    assert!(calls[1]["proxy_error"]
        .as_str()
        .unwrap()
        .contains("not UTF-8"));
    for c in &calls[2..4] {
        assert!(
            c["proxy_error"]
                .as_str()
                .unwrap()
                .contains("has no AssumeRoleResponse/AssumeRoleResult/Credentials"),
            "{c}"
        );
    }
    assert_eq!(calls[4]["error_code"], "ServiceUnavailable");
    assert_eq!(calls[5]["expiration"], real_expiration.as_str());
    assert_eq!(calls[6]["expiration"], shown.as_str());
    let issued: Vec<(Value, Value)> = v["issued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["access_key_id"].clone(), i["expired"].clone()))
        .collect();
    assert_eq!(
        issued,
        [
            (json!(BAD_EXP_AKID), json!(false)),
            (json!(EXPIRED_AKID), json!(true)),
            (json!(ISSUED_AKID), json!(false)),
        ]
    );

    // The data plane: the bad-expiration set works, the expired one is ExpiredTokenException.
    let mut data = connect(emu.port);
    let r = exchange_raw(&mut data, &put_signed_with(BAD_EXP_AKID, "bx", emu.port));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = exchange_raw(&mut data, &put_signed_with(EXPIRED_AKID, "ex", emu.port));
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-amzn-errortype"), Some("ExpiredTokenException"));
    assert_eq!(
        r.json(),
        json!({"__type": "ExpiredTokenException", "message": "The security token included in the request is expired"})
    );
}

#[test]
fn sts_faults_are_cleared_by_delete_and_reset() {
    // An upstream nothing listens on: entries that do not call it still answer.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let emu = start(&format!("http://127.0.0.1:{port}"));
    let mut ctl = connect(emu.port);
    let mut sts = connect(emu.sts_port);
    let assume_role = wire(&assume_role_request(emu.sts_port));
    let put = |ctl: &mut TcpStream, body: &str| {
        exchange_raw(ctl, &put_json("/_emulator/sts/faults", body, emu.port))
    };

    assert_eq!(put(&mut ctl, r#"{"next":["599","500"]}"#).status, 200);
    let r = exchange_raw(&mut sts, &assume_role);
    assert_eq!(r.status, 599);
    let r = exchange_raw(
        &mut ctl,
        &plain("DELETE", "/_emulator/sts/faults", emu.port),
    );
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"settings": {"next": []}, "injected": {}}))
    );
    // Nothing queued: forwarded, and the upstream is unreachable.
    assert_eq!(exchange_raw(&mut sts, &assume_role).status, 502);

    assert_eq!(put(&mut ctl, r#"{"next":["500"]}"#).status, 200);
    let r = exchange_raw(&mut ctl, &plain("POST", "/_emulator/reset", emu.port));
    assert_eq!(r.status, 200);
    let v = exchange_raw(&mut ctl, &plain("GET", "/_emulator/sts/faults", emu.port)).json();
    assert_eq!(v, json!({"settings": {"next": []}, "injected": {}}));
    assert_eq!(exchange_raw(&mut sts, &assume_role).status, 502);
    // The call log is kept by the reset.
    let v = exchange_raw(&mut ctl, &plain("GET", "/_emulator/sts", emu.port)).json();
    let faults: Vec<Value> = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["fault"].clone())
        .collect();
    assert_eq!(faults, [json!("599"), Value::Null, Value::Null]);
}

const WEB_AKID_1: &str = "ASIAWEBIDENTITY00001";
const WEB_AKID_2: &str = "ASIAWEBIDENTITY00002";
const WEB_AKID_3: &str = "ASIAWEBIDENTITY00003";
/// Two versions of a projected service-account token (JWT-like, with a `+` and a `=` that are percent-encoded on the wire).
const WEB_TOKEN_1: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cmVsYXkifQ.sig-version_1+a=";
const WEB_TOKEN_2: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cmVsYXkifQ.sig-version_2+b=";

fn web_identity_xml(akid: &str, expiration: &str) -> String {
    format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>system:serviceaccount:relay</SubjectFromWebIdentityToken><Credentials><AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>{ISSUED_SECRET}</SecretAccessKey><SessionToken>{ISSUED_TOKEN}</SessionToken><Expiration>{expiration}</Expiration></Credentials></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>fake-request-1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>"#
    )
}

/// The percent-encoding of a form value (unreserved characters kept).
fn form_encode(v: &str) -> String {
    healthlake_emulator::sigv4::uri_encode(v.as_bytes(), false)
}

/// An unsigned AssumeRoleWithWebIdentity call as botocore sends it, the token in the form body
/// (`in_query`: in the query string instead, the rest in the body), or no token at all.
fn web_identity_call(sts_port: u16, token: Option<&str>, in_query: bool) -> Vec<u8> {
    let mut body = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Frelay&RoleSessionName=relay".to_string();
    let mut uri = "/".to_string();
    if let Some(t) = token {
        if in_query {
            uri = format!("/?WebIdentityToken={}", form_encode(t));
        } else {
            body.push_str(&format!("&WebIdentityToken={}", form_encode(t)));
        }
    }
    format!(
        "POST {uri} HTTP/1.1\r\nHost: 127.0.0.1:{sts_port}\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn digest(token: &str) -> String {
    healthlake_emulator::sigv4::sha256_hex(token.as_bytes())[..12].to_string()
}

#[test]
fn web_identity_tokens_are_checked_against_the_token_file() {
    let expiration = timefmt::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600));
    let answers = [WEB_AKID_1, WEB_AKID_2, WEB_AKID_3]
        .iter()
        .map(|akid| http_answer("200 OK", "", &web_identity_xml(akid, &expiration)))
        .collect();
    let (upstream_port, received) = fake_sts(answers);
    let dir = temp_dir("webid");
    let file = dir.join("token");
    std::fs::write(&file, format!("{WEB_TOKEN_1}\n")).unwrap();
    let file_arg = file.to_str().unwrap().to_string();
    let mut emu = start_with(
        &format!("http://127.0.0.1:{upstream_port}"),
        &["--web-identity-token-file", &file_arg],
        true,
    );
    let mut sts = connect(emu.sts_port);

    // The file's token in the form body: forwarded unchanged, its answer passed back.
    let sent = web_identity_call(emu.sts_port, Some(WEB_TOKEN_1), false);
    assert!(String::from_utf8_lossy(&sent).ends_with("&WebIdentityToken=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cmVsYXkifQ.sig-version_1%2Ba%3D"));
    let r = exchange_raw(&mut sts, &sent);
    assert_eq!(
        received.recv_timeout(Duration::from_secs(60)).unwrap(),
        sent
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, web_identity_xml(WEB_AKID_1, &expiration).as_bytes());

    // Another token, or none: 400 InvalidIdentityToken from the proxy, nothing forwarded.
    for call in [
        web_identity_call(emu.sts_port, Some(WEB_TOKEN_2), false),
        web_identity_call(emu.sts_port, None, false),
        web_identity_call(emu.sts_port, Some(WEB_TOKEN_2), true),
    ] {
        let r = exchange_raw(&mut sts, &call);
        assert_eq!(r.status, 400, "{}", r.head);
        assert_eq!(r.header("content-type"), Some("text/xml"));
        assert!(r.header("x-amzn-requestid").is_some_and(|v| !v.is_empty()));
        let text = String::from_utf8(r.body.clone()).unwrap();
        assert!(
            text.starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"),
            "{text}"
        );
        assert!(
            text.contains("<Type>Sender</Type>")
                && text.contains("<Code>InvalidIdentityToken</Code>"),
            "{text}"
        );
        assert!(text.contains("<RequestId>"), "{text}");
        assert!(!text.contains("sig-version"), "{text}");
        assert!(
            received.try_recv().is_err(),
            "a refused call reached the upstream"
        );
    }

    // The file's token in the query string: forwarded unchanged too.
    let sent = web_identity_call(emu.sts_port, Some(WEB_TOKEN_1), true);
    let r = exchange_raw(&mut sts, &sent);
    assert_eq!(
        received.recv_timeout(Duration::from_secs(60)).unwrap(),
        sent
    );
    assert_eq!(r.status, 200);

    // Rotated: read for each call, so the old token is refused at once and the new one taken.
    std::fs::write(&file, WEB_TOKEN_2).unwrap();
    let r = exchange_raw(
        &mut sts,
        &web_identity_call(emu.sts_port, Some(WEB_TOKEN_1), false),
    );
    assert_eq!(r.status, 400);
    assert!(received.try_recv().is_err());
    let sent = web_identity_call(emu.sts_port, Some(WEB_TOKEN_2), false);
    let r = exchange_raw(&mut sts, &sent);
    assert_eq!(
        received.recv_timeout(Duration::from_secs(60)).unwrap(),
        sent
    );
    assert_eq!(r.status, 200);

    // The file gone: 500 from the proxy, nothing forwarded.
    std::fs::remove_file(&file).unwrap();
    let r = exchange_raw(
        &mut sts,
        &web_identity_call(emu.sts_port, Some(WEB_TOKEN_2), false),
    );
    assert_eq!(r.status, 500);
    assert!(String::from_utf8_lossy(&r.body).contains("cannot read the web identity token file"));
    assert!(received.try_recv().is_err());

    // The call log: which token version each call carried, never the token.
    let mut ctl = connect(emu.port);
    let v = exchange_raw(&mut ctl, &plain("GET", "/_emulator/sts", emu.port)).json();
    let calls: Vec<(Value, Value, Value, Value)> = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["status"].clone(),
                c["error_code"].clone(),
                c["issued_access_key_id"].clone(),
                c["web_identity_token_sha256_prefix"].clone(),
            )
        })
        .collect();
    let invalid = json!("InvalidIdentityToken");
    assert_eq!(
        calls,
        [
            (
                json!(200),
                Value::Null,
                json!(WEB_AKID_1),
                json!(digest(WEB_TOKEN_1))
            ),
            (
                json!(400),
                invalid.clone(),
                Value::Null,
                json!(digest(WEB_TOKEN_2))
            ),
            (json!(400), invalid.clone(), Value::Null, Value::Null),
            (
                json!(400),
                invalid.clone(),
                Value::Null,
                json!(digest(WEB_TOKEN_2))
            ),
            (
                json!(200),
                Value::Null,
                json!(WEB_AKID_2),
                json!(digest(WEB_TOKEN_1))
            ),
            (json!(400), invalid, Value::Null, json!(digest(WEB_TOKEN_1))),
            (
                json!(200),
                Value::Null,
                json!(WEB_AKID_3),
                json!(digest(WEB_TOKEN_2))
            ),
            (
                json!(500),
                Value::Null,
                Value::Null,
                json!(digest(WEB_TOKEN_2))
            ),
        ]
    );
    assert!(v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["action"] == "AssumeRoleWithWebIdentity"));
    assert!(v["calls"][7]["proxy_error"]
        .as_str()
        .unwrap()
        .contains("cannot read"));
    let shown = v.to_string();
    assert!(!shown.contains("sig-version"), "{shown}");

    // The issued sets work on the data plane.
    let mut data = connect(emu.port);
    let r = exchange_raw(&mut data, &put_signed_with(WEB_AKID_3, "irsa", emu.port));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    // stderr: one line per call, never a token.
    let stderr = emu._emu.kill_and_read_stderr();
    assert!(
        stderr.contains("AssumeRoleWithWebIdentity -> 400 error InvalidIdentityToken"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "web identity token sha256 {}",
            digest(WEB_TOKEN_1)
        )),
        "{stderr}"
    );
    for secret in ["sig-version", ISSUED_SECRET, ISSUED_TOKEN] {
        assert!(!stderr.contains(secret), "{secret}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_a_token_file_any_web_identity_token_is_forwarded() {
    let expiration = timefmt::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600));
    let (upstream_port, received) = fake_sts(vec![http_answer(
        "200 OK",
        "",
        &web_identity_xml(WEB_AKID_1, &expiration),
    )]);
    let emu = start(&format!("http://127.0.0.1:{upstream_port}"));
    let sent = web_identity_call(emu.sts_port, Some("any.token.at-all"), false);
    let r = exchange_raw(&mut connect(emu.sts_port), &sent);
    assert_eq!(
        received.recv_timeout(Duration::from_secs(60)).unwrap(),
        sent
    );
    assert_eq!(r.status, 200);
    let v = exchange_raw(
        &mut connect(emu.port),
        &plain("GET", "/_emulator/sts", emu.port),
    )
    .json();
    assert_eq!(v["calls"][0]["issued_access_key_id"], WEB_AKID_1);
    assert_eq!(
        v["calls"][0]["web_identity_token_sha256_prefix"],
        digest("any.token.at-all")
    );
}
