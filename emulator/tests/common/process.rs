//! The real emulator binary on loopback, started the way the Python harness starts it (free port,
//! `--port-file`, readiness from its first stdout line) and killed when dropped; and raw HTTP/1.1
//! exchanges with it, Content-Length framed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{AKID, SECRET};

pub const BIN: &str = env!("CARGO_BIN_EXE_healthlake-emulator");

/// A running emulator.
pub struct Emulator {
    pub child: Child,
    pub port: u16,
    /// The stdout lines read before returning (the first is "listening on ...").
    pub stdout: Vec<String>,
    pub dir: PathBuf,
    keep_dir: bool,
}

impl Emulator {
    /// Kills it and returns what it wrote to stderr (started with `stderr: true`).
    pub fn kill_and_read_stderr(&mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.stderr()
    }

    /// What it wrote to stderr, once it has exited.
    pub fn stderr(&mut self) -> String {
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        stderr
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// How to start it: always `--credential AKID:SECRET` and `--port-file <dir>/port`.
pub struct Start<'a> {
    /// 0 for a free port.
    pub port: u16,
    pub args: &'a [&'a str],
    /// `EMULATOR_CREDENTIALS` is removed unless set here.
    pub env: &'a [(&'a str, &'a str)],
    /// Stdout lines to read before returning.
    pub stdout_lines: usize,
    /// Whether stderr is kept (piped) for the test to read; otherwise discarded.
    pub stderr: bool,
    /// Whether `dir` outlives the process (a state file to restart from).
    pub keep_dir: bool,
}

impl Default for Start<'_> {
    fn default() -> Self {
        Start {
            port: 0,
            args: &[],
            env: &[],
            stdout_lines: 1,
            stderr: true,
            keep_dir: false,
        }
    }
}

/// Runs the binary with `args` (and no `EMULATOR_CREDENTIALS`), expects it to refuse to start
/// (exit code 2, a configuration error), and returns what it wrote to stderr.
pub fn refused(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("EMULATOR_CREDENTIALS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A port file as the emulator writes it: digits and a newline.
pub fn read_port_file(path: &Path) -> u16 {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.ends_with('\n') && text.trim().chars().all(|c| c.is_ascii_digit()),
        "{text:?}"
    );
    text.trim().parse().unwrap()
}

/// Starts the binary in `dir` and waits until it says it listens.
pub fn start(dir: PathBuf, how: Start<'_>) -> Emulator {
    let port_file = dir.join("port");
    let _ = std::fs::remove_file(&port_file);
    let mut command = Command::new(BIN);
    command
        .args([
            "--listen",
            &format!("127.0.0.1:{}", how.port),
            "--port-file",
        ])
        .arg(&port_file)
        .args(["--credential", &format!("{AKID}:{SECRET}")])
        .args(how.args)
        .env_remove("EMULATOR_CREDENTIALS")
        .envs(how.env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if how.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let stdout: Vec<String> = (0..how.stdout_lines)
        .map(|_| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim_end().to_string()
        })
        .collect();
    let port = read_port_file(&port_file);
    assert_eq!(
        stdout.first().map(String::as_str),
        Some(format!("healthlake-emulator listening on http://127.0.0.1:{port}").as_str())
    );
    Emulator {
        child,
        port,
        stdout,
        dir,
        keep_dir: how.keep_dir,
    }
}

/// An answer: status, headers (names lowercase) and body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A connection to the emulator, with a 60 s read timeout (only a broken emulator takes that long).
pub fn connect(port: u16) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    BufReader::new(stream)
}

pub fn write_request(stream: &mut BufReader<TcpStream>, req: &http::Request<Vec<u8>>) {
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method(), req.uri());
    for (n, v) in req.headers() {
        head.push_str(&format!("{}: {}\r\n", n, v.to_str().unwrap()));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", req.body().len()));
    let s = stream.get_mut();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(req.body()).unwrap();
}

pub fn read_response(stream: &mut BufReader<TcpStream>) -> Response {
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
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    Response {
        status,
        headers,
        body,
    }
}

/// One request and its answer on a kept-alive connection.
pub fn exchange(stream: &mut BufReader<TcpStream>, req: &http::Request<Vec<u8>>) -> Response {
    write_request(stream, req);
    read_response(stream)
}

/// One request on a connection of its own.
pub fn exchange_once(port: u16, req: &http::Request<Vec<u8>>) -> Response {
    exchange(&mut connect(port), req)
}

/// An unsigned request with no body, for the emulator's own endpoints.
pub fn plain(method: &str, uri: &str, port: u16) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", format!("127.0.0.1:{port}"))
        .body(Vec::new())
        .unwrap()
}
