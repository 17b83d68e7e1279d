//! End-to-end: the real binary, started the way the Python integration tests start it, spoken to
//! over a keep-alive HTTP/1.1 connection on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_healthlake-emulator");

struct Emulator {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hle-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(extra: &[&str]) -> (Emulator, String) {
    let dir = temp_dir("bin");
    let port_file = dir.join("port");
    let _ = std::fs::remove_file(&port_file);
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port_file)
        .args(["--credential", &format!("{AKID}:{SECRET}")])
        .args(extra)
        .env(
            "EMULATOR_CREDENTIALS",
            format!("{TEMP_AKID}:{TEMP_SECRET}:{TOKEN}"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port_text = std::fs::read_to_string(&port_file).unwrap();
    assert!(port_text.ends_with('\n') && port_text.trim().chars().all(|c| c.is_ascii_digit()));
    let port: u16 = port_text.trim().parse().unwrap();
    assert_eq!(
        line.trim_end(),
        format!("healthlake-emulator listening on http://127.0.0.1:{port}")
    );
    (Emulator { child, port, dir }, line)
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Writes one request and reads one response (Content-Length framed) on a kept-alive connection.
fn exchange(stream: &mut BufReader<TcpStream>, req: &http::Request<Vec<u8>>) -> HttpResponse {
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method(), req.uri());
    for (n, v) in req.headers() {
        head.push_str(&format!("{}: {}\r\n", n, v.to_str().unwrap()));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", req.body().len()));
    let s = stream.get_mut();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(req.body()).unwrap();

    let mut status_line = String::new();
    stream.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
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
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn plain(method: &str, uri: &str, port: u16) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", format!("127.0.0.1:{port}"))
        .body(Vec::new())
        .unwrap()
}

#[test]
fn serves_signed_requests_over_keep_alive() {
    let (mut emu, _) = start(&["--delete-absent-status", "404"]);
    let port = emu.port;
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
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
    emu.child.kill().unwrap();
    emu.child.wait().unwrap();
    let mut stderr = String::new();
    emu.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
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
    let out = Command::new(BIN)
        .args(["--credential", "AKIDBAD:verysecretvalue:"])
        .env_remove("EMULATOR_CREDENTIALS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AKIDBAD"), "{stderr}");
    assert!(!stderr.contains("verysecretvalue"), "{stderr}");
}
