//! Known-answer tests: the AWS SigV4 test suite (see `aws-signing-test-suite/NOTICE.md`) run
//! through the emulator's own verifier.
//!
//! For every vector directory with a `context.json` and a `header-signed-request.txt`, the signed
//! request is parsed from its raw HTTP text and verified with the context's credentials, region,
//! service, timestamp (as "now") and normalisation flag. The verifier's canonical request and
//! string to sign must equal the suite's, the signature computed from them must equal the suite's,
//! verification must succeed, and changing one byte of the body or of the path must make it fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use healthlake_emulator::sigv4::{self, Credential, Policy, Reason, Request};
use healthlake_emulator::timefmt;

/// Vector directories without a `context.json`, which therefore cannot be run as full
/// verification vectors, with the reason. Each still gets the narrower check in its own test
/// below.
const NO_CONTEXT: &[(&str, &str)] = &[
    (
        "double-encode-path",
        "no context.json, no string to sign or signature, and its signed request's x-amz-date \
         (20150830T123600Z) disagrees with its canonical request (20210511T154045Z); only the \
         canonical URI is checked (test double_encode_path_canonical_uri)",
    ),
    (
        "double-url-encode",
        "no context.json or header-signature.txt; checked with the suite's standard example \
         credentials in test double_url_encode_vector",
    ),
];

/// Vectors that must verify *unsuccessfully* under the HealthLake policy, with the reason.
const EXPECTED_REJECTIONS: &[(&str, Reason, &str)] = &[(
    "post-sts-header-after",
    Reason::RequiredHeaderNotSigned,
    "signed with omit_session_token: x-amz-security-token is added after signing and is not in \
     SignedHeaders; HealthLake requires the token to be signed, so the verifier must reject it \
     (canonical request, string to sign and signature are still checked)",
)];

const EXAMPLE_ACCESS_KEY_ID: &str = "AKIDEXAMPLE";
const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws-signing-test-suite/v4")
}

#[derive(Clone, Debug)]
struct RawRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl RawRequest {
    /// Parses raw HTTP/1.1 request text. Lines starting with a space or tab continue the previous
    /// header's value (obsolete line folding); the line break is kept in the value, as received.
    fn parse(text: &str) -> RawRequest {
        let (head, body) = match text.find("\n\n") {
            Some(i) => (&text[..i], &text[i + 2..]),
            None => (text.trim_end_matches('\n'), ""),
        };
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let request_line = lines.next().expect("request line");
        let (method, rest) = request_line.split_once(' ').expect("method and target");
        let target = match rest.rsplit_once(' ') {
            Some((t, version)) if version.starts_with("HTTP/") => t,
            _ => rest,
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().expect("continuation after a header");
                last.1.push(b'\n');
                last.1.extend_from_slice(line.as_bytes());
            } else {
                let (name, value) = line.split_once(':').expect("header name:value");
                headers.push((name.to_string(), value.as_bytes().to_vec()));
            }
        }
        RawRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn verify(&self, policy: &Policy<'_>) -> sigv4::Verification {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        sigv4::verify(
            &Request {
                method: &self.method,
                path: &self.path,
                query: &self.query,
                headers: &headers,
                body: &self.body,
            },
            policy,
        )
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

struct Context {
    credential: Credential,
    region: String,
    service: String,
    now: std::time::SystemTime,
    normalize: bool,
}

fn load_context(dir: &Path) -> Context {
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("context.json")).unwrap()).unwrap();
    let creds = &json["credentials"];
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    let timestamp = json["timestamp"].as_str().unwrap();
    Context {
        credential: Credential::new(
            text(&creds["access_key_id"]),
            text(&creds["secret_access_key"]),
            creds.get("token").map(text),
        ),
        region: text(&json["region"]),
        service: text(&json["service"]),
        now: timefmt::unix_to_system_time(
            timefmt::parse_rfc3339_utc_seconds(timestamp).expect("context timestamp"),
        ),
        normalize: json["normalize"].as_bool().unwrap(),
    }
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

/// Runs one vector; returns the problems found (empty when it passes).
fn run_vector(dir: &Path) -> Vec<String> {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let mut problems = Vec::new();
    let ctx = load_context(dir);
    let request = RawRequest::parse(&read(dir, "header-signed-request.txt"));
    let credentials = [ctx.credential.clone()];
    let policy = Policy {
        region: &ctx.region,
        service: &ctx.service,
        credentials: &credentials,
        now: ctx.now,
        max_skew: Duration::from_secs(300),
        normalize_path: ctx.normalize,
    };

    let v = request.verify(&policy);
    let expected_canonical = read(dir, "header-canonical-request.txt");
    let expected_sts = read(dir, "header-string-to-sign.txt");
    let expected_signature = read(dir, "header-signature.txt").trim().to_string();
    if v.canonical_request.as_deref() != Some(expected_canonical.as_str()) {
        problems.push(format!(
            "{name}: canonical request differs\n--- expected\n{expected_canonical}\n--- got\n{}",
            v.canonical_request.as_deref().unwrap_or("<none>")
        ));
    }
    if v.string_to_sign.as_deref() != Some(expected_sts.as_str()) {
        problems.push(format!(
            "{name}: string to sign differs\n--- expected\n{expected_sts}\n--- got\n{}",
            v.string_to_sign.as_deref().unwrap_or("<none>")
        ));
    }
    let scope_date = &expected_sts.lines().nth(2).unwrap_or_default()[..8];
    let signature = sigv4::compute_signature(
        &ctx.credential.secret_access_key,
        scope_date,
        &ctx.region,
        &ctx.service,
        &expected_sts,
    );
    if signature != expected_signature {
        problems.push(format!(
            "{name}: signature {signature} != expected {expected_signature}"
        ));
    }

    match EXPECTED_REJECTIONS.iter().find(|(n, _, _)| *n == name) {
        Some((_, reason, _)) => {
            if v.error().map(|e| e.reason) != Some(*reason) {
                problems.push(format!(
                    "{name}: expected rejection {reason:?}, got {:?}",
                    v.outcome
                ));
            }
        }
        None => {
            if let Err(e) = &v.outcome {
                problems.push(format!("{name}: verification failed: {e}"));
            }
        }
    }

    // One byte of the body changed (appended when the body is empty).
    let mut tampered = request.clone();
    match tampered.body.last_mut() {
        Some(b) => *b ^= 0x01,
        None => tampered.body.push(b'x'),
    }
    let t = tampered.verify(&policy);
    let expected_reason = if request.has_header("x-amz-content-sha256") {
        Reason::PayloadHashMismatch
    } else {
        Reason::SignatureMismatch
    };
    match t.error() {
        None => problems.push(format!("{name}: verified with a tampered body")),
        Some(e) if !EXPECTED_REJECTIONS.iter().any(|(n, _, _)| *n == name) => {
            if e.reason != expected_reason {
                problems.push(format!(
                    "{name}: tampered body gave {:?}, expected {expected_reason:?}",
                    e.reason
                ));
            }
        }
        Some(_) => {}
    }

    // One character of the path changed (the last one).
    let mut tampered = request.clone();
    let last = tampered.path.pop().unwrap_or('/');
    tampered.path.push(if last == 'x' { 'y' } else { 'x' });
    let t = tampered.verify(&policy);
    if t.is_verified() {
        problems.push(format!(
            "{name}: verified with a tampered path {}",
            tampered.path
        ));
    }
    problems
}

#[test]
fn aws_sigv4_test_suite() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(suite_dir())
        .expect("test suite directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();

    let mut ran = Vec::new();
    let mut problems = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let runnable =
            dir.join("context.json").is_file() && dir.join("header-signed-request.txt").is_file();
        if !runnable {
            match NO_CONTEXT.iter().find(|(n, _)| *n == name) {
                Some((_, why)) => println!("not run as a full vector: {name}: {why}"),
                None => problems.push(format!(
                    "{name}: has no context.json/header-signed-request.txt and is not listed in NO_CONTEXT"
                )),
            }
            continue;
        }
        problems.extend(run_vector(dir));
        ran.push(name);
    }
    for (name, reason, why) in EXPECTED_REJECTIONS {
        println!("expected rejection: {name} ({reason:?}): {why}");
    }
    println!("ran {} vectors: {}", ran.len(), ran.join(", "));
    assert!(
        ran.len() >= 38,
        "expected at least 38 runnable vectors, found {}",
        ran.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn double_url_encode_vector() {
    let dir = suite_dir().join("double-url-encode");
    let request = RawRequest::parse(&read(&dir, "header-signed-request.txt"));
    let credentials = [Credential::new(EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET, None)];
    let policy = Policy {
        region: "us-east-2",
        service: "lambda",
        credentials: &credentials,
        now: timefmt::unix_to_system_time(timefmt::parse_amz_date("20210511T154045Z").unwrap()),
        max_skew: Duration::from_secs(300),
        normalize_path: true,
    };
    // The suite's request scopes the signature to us-east-2/lambda; it is signed with the suite's
    // standard example secret.
    let v = request.verify(&policy);
    assert_eq!(
        v.canonical_request.as_deref(),
        Some(read(&dir, "header-canonical-request.txt").as_str())
    );
    assert_eq!(
        v.string_to_sign.as_deref(),
        Some(read(&dir, "header-string-to-sign.txt").trim_end())
    );
    assert!(v.is_verified(), "{:?}", v.outcome);
}

#[test]
fn double_encode_path_canonical_uri() {
    let dir = suite_dir().join("double-encode-path");
    let request = RawRequest::parse(&read(&dir, "header-signed-request.txt"));
    let expected = read(&dir, "header-canonical-request.txt");
    let expected_uri = expected.lines().nth(1).unwrap();
    assert_eq!(sigv4::canonical_uri(&request.path, true), expected_uri);
    assert_eq!(sigv4::canonical_uri(&request.path, false), expected_uri);
}

#[test]
fn raw_parser_handles_folding_and_bodies() {
    let r = RawRequest::parse("POST /a b?x=1 HTTP/1.1\nHost:h\nMy:v1\n  v2\n\nbody");
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/a b");
    assert_eq!(r.query, "x=1");
    assert_eq!(r.headers[1], ("My".to_string(), b"v1\n  v2".to_vec()));
    assert_eq!(r.body, b"body");
}
