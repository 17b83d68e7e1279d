//! Handler-test helpers: feeding signed or unsigned requests straight to `App::handle_at` (no
//! network) and reading the answer.

use std::time::SystemTime;

use bytes::Bytes;
use healthlake_emulator::{Answer, App, Config};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::*;

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

pub fn app_with(delete_absent: StatusCode) -> App {
    App::new(Config {
        credentials: accepted(),
        delete_absent_status: delete_absent,
        ..Config::default()
    })
}

pub fn app() -> App {
    app_with(StatusCode::NO_CONTENT)
}

/// The raw answer (a response or a reset).
pub fn answer_at(app: &App, req: &http::Request<Vec<u8>>, now: SystemTime) -> Answer {
    futures_block_on(app.handle_at(
        req.method(),
        req.uri(),
        req.headers(),
        Bytes::from(req.body().clone()),
        now,
    ))
}

pub fn answer(app: &App, req: &http::Request<Vec<u8>>) -> Answer {
    answer_at(app, req, SystemTime::now())
}

pub fn reply(answer: Answer) -> Reply {
    let resp = answer.into_response().expect("an answer, not a reset");
    let (parts, body) = resp.into_parts();
    let body = futures_block_on(body.collect()).unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn send_at(app: &App, req: &http::Request<Vec<u8>>, now: SystemTime) -> Reply {
    reply(answer_at(app, req, now))
}

pub fn send(app: &App, req: &http::Request<Vec<u8>>) -> Reply {
    send_at(app, req, SystemTime::now())
}

/// Runs a handler (or collects a `Full` body) on a tiny runtime with a timer (for delays).
pub fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn unsigned(method: &str, uri: &str) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .body(Vec::new())
        .unwrap()
}

pub fn signed(method: &str, type_: &str, id: &str) -> http::Request<Vec<u8>> {
    signed_request(
        method,
        &format!("/datastore/{DATASTORE}/r4/{type_}/{id}"),
        &[("host", HOST)],
        b"",
        &SignOpts::temporary(),
    )
}

pub fn issue(v: &Value) -> (&str, &str) {
    assert_eq!(v["resourceType"], "OperationOutcome");
    let i = &v["issue"][0];
    assert_eq!(i["severity"], "error");
    (
        i["code"].as_str().unwrap(),
        i["diagnostics"].as_str().unwrap(),
    )
}
