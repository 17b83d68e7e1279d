//! The real binary against a scripted HTTP/1.1 server on loopback: the exact requests HAPI FHIR
//! sends, the broker's retries and dead letters, per-resource ordering, the summary and the truth.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_smile-standin");

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// The answer to the n-th request (1-based) for a method and path.
fn answer(method: &str, path: &str, n: usize) -> (u16, &'static str) {
    match (method, path) {
        // Fails twice, then delivered.
        ("PUT", "/Patient/flaky") if n <= 2 => (503, "upstream-error"),
        ("PUT", "/Patient/flaky") => (if n == 3 { 201 } else { 200 }, "delivered"),
        // Never accepted: dead-lettered after --max-attempts.
        ("PUT", "/Patient/refused") => (429, "throttled"),
        ("PUT", "/Basic/b") => (200, "unsupported-type"),
        ("DELETE", "/Patient/gone") => (204, "already-absent"),
        ("DELETE", _) => (204, "deleted"),
        _ => (201, "delivered"),
    }
}

fn serve(listener: TcpListener, log: Log) {
    let counts: Arc<Mutex<HashMap<(String, String), usize>>> = Arc::default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        let log = Arc::clone(&log);
        let counts = Arc::clone(&counts);
        std::thread::spawn(move || connection(stream, &log, &counts));
    }
}

fn connection(stream: TcpStream, log: &Log, counts: &Mutex<HashMap<(String, String), usize>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap().to_string();
        let path = parts.next().unwrap().to_string();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').unwrap();
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let n = {
            let mut c = counts.lock().unwrap();
            let e = c.entry((method.clone(), path.clone())).or_insert(0);
            *e += 1;
            *e
        };
        log.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            headers,
            body,
            at: Instant::now(),
        });
        let (status, outcome) = answer(&method, &path, n);
        let reply = b"{\"resourceType\":\"OperationOutcome\"}";
        let head = format!(
            "HTTP/1.1 {status} X\r\nx-healthlake-outcome: {outcome}\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        out.write_all(head.as_bytes()).unwrap();
        out.write_all(reply).unwrap();
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("standin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn put_line(resource: &str, version: u32) -> (String, String) {
    let (t, id) = resource.split_once('/').unwrap();
    let body = format!(
        "{{\"resourceType\":\"{t}\",\"id\":\"{id}\",\"meta\":{{\"versionId\":\"{version}\",\"lastUpdated\":\"2025-03-01T00:00:0{version}.000+00:00\"}},\"note\":\"caf\u{e9}\"}}"
    );
    let line = serde_json::json!({
        "resource": resource, "method": "PUT", "version_id": version.to_string(), "body": body,
    });
    (line.to_string(), body)
}

#[test]
fn replays_as_hapi_with_retries_ordering_and_dead_letters() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    {
        let log = Arc::clone(&log);
        std::thread::spawn(move || serve(listener, log));
    }

    let dir = temp_dir("send");
    let (flaky1, _) = put_line("Patient/flaky", 1);
    let (flaky2, flaky2_body) = put_line("Patient/flaky", 2);
    let (refused, refused_body) = put_line("Patient/refused", 1);
    let (basic, _) = put_line("Basic/b", 1);
    let (other, other_body) = put_line("Observation/o", 1);
    let plan = [
        flaky1,
        refused,
        basic,
        r#"{"resource":"Patient/gone","method":"DELETE"}"#.to_string(),
        flaky2,
        other,
        r#"{"resource":"Observation/o","method":"DELETE"}"#.to_string(),
    ]
    .join("\n");
    std::fs::write(dir.join("plan.jsonl"), plan).unwrap();

    let out = Command::new(BIN)
        .args(["send", "--endpoint", &format!("http://127.0.0.1:{port}/")])
        .arg("--plan")
        .arg(dir.join("plan.jsonl"))
        .arg("--truth")
        .arg(dir.join("truth.jsonl"))
        .arg("--summary-json")
        .arg(dir.join("summary.json"))
        .arg("--outcomes")
        .arg(dir.join("outcomes.jsonl"))
        .args([
            "--threads",
            "3",
            "--retry-delay-ms",
            "20",
            "--max-attempts",
            "4",
        ])
        .args(["--bearer-token-env", "STANDIN_TEST_TOKEN"])
        .env("STANDIN_TEST_TOKEN", "t0ken-from-the-subscription")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // One dead letter: exit status 1.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("dead-lettered           1"), "{stdout}");

    let seen = log.lock().unwrap().clone();
    // 3 + 4 + 1 + 1 + 1 + 1 + 1 requests.
    assert_eq!(seen.len(), 12, "{seen:#?}");

    // Exactly HAPI's headers.
    let put = seen
        .iter()
        .find(|s| s.path == "/Observation/o" && s.method == "PUT")
        .unwrap();
    assert_eq!(put.body, other_body.as_bytes());
    assert_eq!(
        put.header("content-type"),
        Some("application/fhir+json; charset=UTF-8")
    );
    assert_eq!(
        put.header("accept"),
        Some("application/fhir+json;q=1.0, application/json+fhir;q=0.9")
    );
    assert_eq!(put.header("if-match"), Some("W/\"1\""));
    assert!(put.header("user-agent").unwrap().starts_with("HAPI-FHIR/"));
    assert_eq!(
        put.header("authorization"),
        Some("Bearer t0ken-from-the-subscription")
    );
    assert_eq!(put.header("accept-encoding"), None);
    let delete = seen.iter().find(|s| s.path == "/Patient/gone").unwrap();
    assert_eq!(delete.method, "DELETE");
    assert!(delete.body.is_empty());
    assert_eq!(delete.header("if-match"), None);
    assert_eq!(
        delete.header("authorization"),
        Some("Bearer t0ken-from-the-subscription")
    );

    // Per resource, in order: v2 of the flaky one only after v1 finally got its 2xx.
    let flaky: Vec<&Seen> = seen.iter().filter(|s| s.path == "/Patient/flaky").collect();
    let versions: Vec<&str> = flaky
        .iter()
        .map(|s| s.header("if-match").unwrap())
        .collect();
    assert_eq!(versions, ["W/\"1\"", "W/\"1\"", "W/\"1\"", "W/\"2\""]);
    assert_eq!(flaky[3].body, flaky2_body.as_bytes());
    assert!(flaky[1].at.duration_since(flaky[0].at).as_millis() >= 15);
    let obs: Vec<&str> = seen
        .iter()
        .filter(|s| s.path == "/Observation/o")
        .map(|s| s.method.as_str())
        .collect();
    assert_eq!(obs, ["PUT", "DELETE"]);
    let refused_tries = seen.iter().filter(|s| s.path == "/Patient/refused").count();
    assert_eq!(refused_tries, 4);

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["deliveries"], 7);
    assert_eq!(summary["sent"], 12);
    assert_eq!(summary["retried"], 5);
    assert_eq!(summary["delivered"], 3);
    assert_eq!(summary["deleted"], 1);
    assert_eq!(summary["already_absent"], 1);
    assert_eq!(summary["unsupported"], 1);
    assert_eq!(summary["dead_lettered"], 1);
    assert_eq!(summary["responses_by_outcome"]["throttled"], 4);
    assert_eq!(summary["responses_by_outcome"]["upstream-error"], 2);

    let outcomes: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("outcomes.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outcomes[1]["resource"], "Patient/refused");
    assert_eq!(outcomes[1]["result"], "dead-lettered");
    assert_eq!(outcomes[1]["attempts"], 4);
    assert_eq!(outcomes[0]["attempts"], 3);

    // What Smile CDR holds, whatever became of the deliveries.
    let truth: HashMap<String, serde_json::Value> =
        std::fs::read_to_string(dir.join("truth.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["resource"].as_str().unwrap().to_string(), v)
            })
            .collect();
    assert_eq!(truth.len(), 5);
    assert_eq!(truth["Patient/flaky"]["body"], flaky2_body.as_str());
    assert_eq!(truth["Patient/flaky"]["version_id"], "2");
    assert_eq!(truth["Patient/refused"]["body"], refused_body.as_str());
    assert_eq!(truth["Observation/o"]["state"], "deleted");
    assert_eq!(truth["Patient/gone"]["state"], "deleted");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_plan_is_the_same_for_the_same_seed() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/fhir/package");
    // No silent skip: without the examples this test fails and says how to get them.
    assert!(
        examples.join(".complete").exists(),
        "the HL7 FHIR R4 examples are missing: run `make fixtures` (make test does, before the unit tests)"
    );
    let dir = temp_dir("plan");
    let plan = |name: &str, seed: &str| {
        let status = Command::new(BIN)
            .args(["plan", "--writes", "600", "--seed", seed, "--examples"])
            .arg(&examples)
            .arg("--out")
            .arg(dir.join(name))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(dir.join(name)).unwrap()
    };
    let a = plan("a.jsonl", "5");
    assert_eq!(a, plan("b.jsonl", "5"));
    assert_ne!(a, plan("c.jsonl", "6"));
    let lines: Vec<serde_json::Value> = String::from_utf8(a)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!((600..=602).contains(&lines.len()));
    // Every PUT body is its resource, stamped; later versions of a resource are newer.
    let mut last: HashMap<String, String> = HashMap::new();
    for l in &lines {
        if l["method"] == "PUT" {
            let body: serde_json::Value =
                serde_json::from_str(l["body"].as_str().unwrap()).unwrap();
            let resource = l["resource"].as_str().unwrap();
            assert_eq!(
                format!(
                    "{}/{}",
                    body["resourceType"].as_str().unwrap(),
                    body["id"].as_str().unwrap()
                ),
                resource
            );
            assert_eq!(body["meta"]["versionId"], l["version_id"]);
            let when = body["meta"]["lastUpdated"].as_str().unwrap().to_string();
            if let Some(before) = last.insert(resource.to_string(), when.clone()) {
                assert!(before <= when, "{resource}: {before} then {when}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
