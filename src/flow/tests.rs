//! The request flow driven without Envoy: a fake host holds one request's headers and bodies, the
//! response, the local answer, filter state, stats and shared data, so that every outcome, a
//! credential wait that times out, compare-and-swap conflicts, a local answer that fails and the
//! rewriting of HealthLake's answers are each proven here. Compiled for tests only
//! (`#[cfg(test)] mod tests;` in `flow/mod.rs`).

use super::*;
use crate::credentials::call::Call;
use crate::credentials::provider::Event;
use crate::credentials::refresh::{Published, CREDENTIALS_KEY};
use crate::credentials::Credentials;
use crate::host::Calls;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

const T0_MS: u64 = 1_796_000_000_000;
const DS: &str = "ds1";

/// The relay's own answer: status, headers, body.
type LocalAnswer = (u16, Vec<(String, String)>, Vec<u8>);

/// Envoy as the flow sees it, for one request at a time.
#[derive(Default)]
struct Fake {
    now_ms: Cell<u64>,
    request: RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
    request_body: RefCell<Vec<u8>>,
    properties: RefCell<HashMap<String, Vec<u8>>>,
    response: RefCell<Vec<(String, String)>>,
    response_body: RefCell<Vec<u8>>,
    /// The relay's own answer.
    local: RefCell<Option<LocalAnswer>>,
    local_fails: Cell<bool>,
    resets: Cell<u32>,
    resumed: RefCell<Vec<u32>>,
    gone: RefCell<Vec<u32>>,
    filter_state: RefCell<HashMap<String, String>>,
    counts: RefCell<Vec<(Outcome, Option<String>)>>,
    data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    /// Compare-and-swap writes to refuse, as if another worker always wrote first.
    conflicts: Cell<u32>,
    /// Every call the flow made to its host, in order (the filter makes one host call for each,
    /// except `count`: one `increment_metric` per counter), but for the credentials provider's
    /// own (`dispatch`, `count_refresh`, `expiry_seconds`), which a request never makes.
    calls: RefCell<Vec<String>>,
}

impl Fake {
    fn new() -> Fake {
        let f = Fake::default();
        f.now_ms.set(T0_MS);
        f.properties
            .borrow_mut()
            .insert("destination.address".into(), b"127.0.0.1:10000".to_vec());
        f
    }

    /// A new request with these headers and body (the response side cleared).
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut h = vec![
            (b":method".to_vec(), method.as_bytes().to_vec()),
            (b":path".to_vec(), path.as_bytes().to_vec()),
            (b":authority".to_vec(), b"relay".to_vec()),
        ];
        for (n, v) in headers {
            h.push((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
        *self.request.borrow_mut() = h;
        *self.request_body.borrow_mut() = body.to_vec();
        self.response.borrow_mut().clear();
        self.response_body.borrow_mut().clear();
        *self.local.borrow_mut() = None;
        self.filter_state.borrow_mut().clear();
    }

    fn note(&self, call: &str) {
        self.calls.borrow_mut().push(call.to_owned());
    }

    /// The calls made since the last time this was asked.
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    fn request_header(&self, name: &str) -> Option<String> {
        self.request
            .borrow()
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// HealthLake's answer.
    fn answer(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let mut h = vec![(":status".to_owned(), status.to_string())];
        h.extend(
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        *self.response.borrow_mut() = h;
        *self.response_body.borrow_mut() = body.to_vec();
    }

    fn response_header_value(&self, name: &str) -> Option<String> {
        self.response
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn local_status(&self) -> Option<u16> {
        self.local.borrow().as_ref().map(|(s, _, _)| *s)
    }

    fn local_header(&self, name: &str) -> Option<String> {
        self.local
            .borrow()
            .as_ref()
            .and_then(|(_, h, _)| h.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()))
    }

    fn local_json(&self) -> serde_json::Value {
        let local = self.local.borrow();
        let body = local
            .as_ref()
            .map(|(_, _, b)| b.clone())
            .unwrap_or_default();
        serde_json::from_slice(&body).unwrap()
    }

    fn last_count(&self) -> Option<(Outcome, Option<String>)> {
        self.counts.borrow().last().cloned()
    }

    fn state(&self, key: &str) -> Option<String> {
        self.filter_state.borrow().get(key).cloned()
    }
}

impl Clock for Fake {
    fn now(&self) -> Option<SystemTime> {
        self.note("now");
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(self.now_ms.get()))
    }
}

impl SharedData for Fake {
    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.note(&format!("shared_data {key}"));
        match self.data.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.note(&format!("set_shared_data {key}"));
        if self.conflicts.get() > 0 {
            self.conflicts.set(self.conflicts.get() - 1);
            return false;
        }
        if self.data.borrow().get(key).map(|(_, c)| *c) != cas {
            return false;
        }
        self.store(key, value)
    }
    fn overwrite_shared_data(&self, key: &str, value: &[u8]) -> bool {
        self.note(&format!("overwrite_shared_data {key}"));
        self.store(key, value)
    }
}

impl Fake {
    /// Writes a shared-data value with a new CAS token.
    fn store(&self, key: &str, value: &[u8]) -> bool {
        self.next_cas.set(self.next_cas.get() + 1);
        self.data
            .borrow_mut()
            .insert(key.to_owned(), (value.to_vec(), self.next_cas.get()));
        true
    }
}

impl Calls for Fake {
    fn dispatch(&self, _: &Call, _: Duration) -> Result<u32, String> {
        Err("no calls from a request".into())
    }
}

impl crate::credentials::provider::Host for Fake {
    fn count_refresh(&self, _: Event, _: Option<&'static str>) {}
    fn expiry_seconds(&self, _: u64) {}
}

impl Host for Fake {
    fn request_headers(&self) -> Option<HeaderPairs> {
        self.note("request_headers");
        Some(self.request.borrow().clone())
    }
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.note("request_body");
        let body = self.request_body.borrow();
        body.get(start..start + len).map(<[u8]>::to_vec)
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) -> bool {
        self.note(&format!("set_request_header {name}"));
        let mut h = self.request.borrow_mut();
        h.retain(|(n, _)| n != name.as_bytes());
        if let Some(v) = value {
            h.push((name.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
        true
    }
    fn remove_request_header(&self, name: &[u8]) -> bool {
        self.note(&format!(
            "remove_request_header {}",
            String::from_utf8_lossy(name)
        ));
        self.request.borrow_mut().retain(|(n, _)| n != name);
        true
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.note(&format!("property {}", path.join(".")));
        self.properties.borrow().get(&path.join(".")).cloned()
    }
    fn response_status(&self) -> u16 {
        self.note("response_status");
        self.response_header_value(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.note(&format!("response_header {name}"));
        self.response_header_value(name).map(String::into_bytes)
    }
    fn set_response_header(&self, name: &str, value: &str) {
        self.note(&format!("set_response_header {name}"));
        let mut h = self.response.borrow_mut();
        h.retain(|(n, _)| n != name);
        h.push((name.to_owned(), value.to_owned()));
    }
    fn remove_response_header(&self, name: &str) {
        self.note(&format!("remove_response_header {name}"));
        self.response.borrow_mut().retain(|(n, _)| n != name);
    }
    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.note("response_body");
        let body = self.response_body.borrow();
        body.get(start..start + len).map(<[u8]>::to_vec)
    }
    fn replace_response_body(&self, old_len: usize, new: &[u8]) {
        self.note("replace_response_body");
        assert_eq!(old_len, self.response_body.borrow().len());
        *self.response_body.borrow_mut() = new.to_vec();
    }
    fn send_local_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
        self.note("send_local_response");
        if self.local_fails.get() {
            return false;
        }
        let headers = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        *self.local.borrow_mut() = Some((status, headers, body.to_vec()));
        true
    }
    fn reset_request(&self) {
        self.note("reset_request");
        self.resets.set(self.resets.get() + 1);
    }
    fn set_effective_context(&self, context_id: u32) -> bool {
        self.note("set_effective_context");
        !self.gone.borrow().contains(&context_id)
    }
    fn resume_request(&self) -> bool {
        self.note("resume_request");
        self.resumed.borrow_mut().push(0);
        true
    }
    fn set_filter_state(&self, key: &str, value: &str) {
        self.note(&format!("set_filter_state {key}"));
        self.filter_state
            .borrow_mut()
            .insert(key.to_owned(), value.to_owned());
    }
    fn count(&self, outcome: Outcome, resource_type: Option<&str>) {
        self.note("count");
        self.counts
            .borrow_mut()
            .push((outcome, resource_type.map(str::to_owned)));
    }
}

/// A worker whose configuration is the minimal one plus `extra` (JSON fields), credentials from
/// `env`.
fn worker_with(extra: &str, env: &[(&str, &str)]) -> Rc<Worker> {
    let mut config = serde_json::json!({
        "region": "us-east-1",
        "datastore_id": DS,
        "healthlake_host": "healthlake.us-east-1.amazonaws.com",
        "inbound_auth": "none",
        "capabilities_refresh_seconds": 0,
    });
    let extra: serde_json::Value =
        serde_json::from_str(&format!("{{{}}}", extra.trim_start_matches(','))).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let json = config.to_string();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Rc::new(Worker::start(json.as_bytes(), |name| env.get(name).cloned(), true).unwrap())
}

const KEYS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    (
        "AWS_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    ),
];

fn worker() -> Rc<Worker> {
    worker_with("", KEYS)
}

const FHIR: (&str, &str) = ("content-type", "application/fhir+json");

fn patient(id: &str, last_updated: &str) -> Vec<u8> {
    format!(r#"{{"resourceType":"Patient","id":"{id}","meta":{{"lastUpdated":"{last_updated}"}}}}"#)
        .into_bytes()
}

/// Sends the request through the request side; returns the action of the last callback.
fn send(host: &Fake, r: &mut Request, method: &str, path: &str, body: &[u8]) -> Action {
    let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[FHIR] };
    host.request(method, path, headers, body);
    let at_headers = r.on_request_headers(host, body.is_empty());
    if body.is_empty() || at_headers == Action::Continue || host.local.borrow().is_some() {
        return at_headers;
    }
    r.on_request_body(host, body.len(), true)
}

/// HealthLake's answer through the response side; returns the actions at its headers and body.
fn respond(
    host: &Fake,
    r: &mut Request,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Action, Option<Action>) {
    host.answer(status, headers, body);
    let at_headers = r.on_response_headers(host, body.is_empty());
    if body.is_empty() || at_headers == Action::Continue {
        return (at_headers, None);
    }
    (at_headers, Some(r.on_response_body(host, body.len(), true)))
}

fn outcome_of(host: &Fake) -> Option<String> {
    host.local_header(OUTCOME_HEADER)
        .or_else(|| host.response_header_value(OUTCOME_HEADER))
}

#[test]
fn a_put_is_signed_forwarded_and_delivered() {
    let host = Fake::new();
    let mut r = Request::new(Some(worker()), 1);
    let body = patient("p1", "2026-01-01T00:00:00Z");
    host.request(
        "PUT",
        "/Patient/p1",
        &[FHIR, ("if-match", "W/\"3\""), ("authorization", "Basic x")],
        &body,
    );
    assert_eq!(r.on_request_headers(&host, false), Action::Pause);
    assert_eq!(r.on_request_body(&host, body.len(), true), Action::Continue);
    assert_eq!(
        host.request_header(":path").as_deref(),
        Some("/datastore/ds1/r4/Patient/p1")
    );
    assert_eq!(
        host.request_header(":authority").as_deref(),
        Some("healthlake.us-east-1.amazonaws.com")
    );
    let auth = host.request_header("authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{auth}"
    );
    assert!(host.request_header("if-match").is_none());
    assert_eq!(
        host.request_header("x-amz-content-sha256"),
        Some(hex::encode(sha2::Sha256::digest(&body)))
    );
    assert_eq!(
        host.state(state_key::UPSTREAM_PATH).as_deref(),
        Some("/datastore/ds1/r4/Patient/p1")
    );

    assert_eq!(
        respond(&host, &mut r, 201, &[("etag", "W/\"1\"")], b"{}"),
        (Action::Continue, None)
    );
    assert_eq!(outcome_of(&host).as_deref(), Some("delivered"));
    assert_eq!(
        host.last_count(),
        Some((Outcome::Delivered, Some("Patient".into())))
    );
    assert_eq!(
        host.state(state_key::UPSTREAM_STATUS).as_deref(),
        Some("201")
    );
    // The version guard recorded it: an older version is now stale.
    let mut older = Request::new(r.worker.clone(), 2);
    send(
        &host,
        &mut older,
        "PUT",
        "/Patient/p1",
        &patient("p1", "2025-01-01T00:00:00Z"),
    );
    assert_eq!(host.local_status(), Some(200));
    assert_eq!(outcome_of(&host).as_deref(), Some("stale-version"));
}

use sha2::Digest;

#[test]
fn a_delete_is_deleted_and_an_absent_one_already_absent() {
    let host = Fake::new();
    let w = worker();
    let mut r = Request::new(Some(Rc::clone(&w)), 1);
    assert_eq!(
        send(&host, &mut r, "DELETE", "/Patient/p1", b""),
        Action::Continue
    );
    assert_eq!(host.request_header("content-type"), None);
    respond(&host, &mut r, 204, &[], b"");
    assert_eq!(outcome_of(&host).as_deref(), Some("deleted"));

    let mut r = Request::new(Some(w), 2);
    send(&host, &mut r, "DELETE", "/Patient/p2", b"");
    let body =
        br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}"#;
    assert_eq!(
        respond(
            &host,
            &mut r,
            404,
            &[("content-type", "application/fhir+json")],
            body
        ),
        (Action::Pause, Some(Action::Continue))
    );
    assert_eq!(host.response_status(), 204);
    assert!(host.response_body.borrow().is_empty());
    assert_eq!(host.response_header_value("content-type"), None);
    assert_eq!(outcome_of(&host).as_deref(), Some("already-absent"));
}

#[test]
fn healthlakes_errors_are_classified_and_rewritten() {
    let w = worker();
    for (status, headers, body, outcome, sent) in [
        (429, vec![], &b""[..], "throttled", 429),
        (
            400,
            vec![("x-amzn-errortype", "ThrottlingException")],
            &br#"{"__type":"ThrottlingException"}"#[..],
            "throttled",
            429,
        ),
        (500, vec![], &b"oops"[..], "upstream-error", 502),
        (504, vec![], &b""[..], "upstream-error", 504),
        (
            403,
            vec![("x-amzn-errortype", "InvalidSignatureException")],
            &br#"{"message":"bad"}"#[..],
            "auth-failed",
            503,
        ),
        (
            400,
            vec![],
            &br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"bad"}]}"#[..],
            "rejected",
            400,
        ),
    ] {
        let host = Fake::new();
        let mut r = Request::new(Some(Rc::clone(&w)), 1);
        send(&host, &mut r, "PUT", "/Patient/p1", &patient("p1", "2026-01-01T00:00:00Z"));
        respond(&host, &mut r, status, &headers, body);
        let answered = host
            .local_status()
            .unwrap_or_else(|| host.response_status());
        assert_eq!(
            (outcome_of(&host).as_deref(), answered),
            (Some(outcome), sent),
            "{status} {headers:?}"
        );
        if outcome == "throttled" {
            assert_eq!(host.response_header_value("retry-after").as_deref(), Some("5"));
        }
    }
}

#[test]
fn a_bare_403_still_gets_an_operation_outcome_as_a_local_answer() {
    let host = Fake::new();
    let mut r = Request::new(Some(worker()), 1);
    send(
        &host,
        &mut r,
        "PUT",
        "/Patient/p1",
        &patient("p1", "2026-01-01T00:00:00Z"),
    );
    let (at_headers, _) = respond(&host, &mut r, 403, &[("x-amzn-requestid", "rid-1")], b"");
    assert_eq!(at_headers, Action::Pause);
    assert_eq!(host.local_status(), Some(503));
    assert_eq!(
        host.local_header("x-amzn-requestid").as_deref(),
        Some("rid-1")
    );
    assert_eq!(host.local_json()["issue"][0]["code"], "transient");
}

#[test]
fn an_unsupported_type_is_learned_and_then_answered_locally() {
    let host = Fake::new();
    let w = worker();
    let mut r = Request::new(Some(Rc::clone(&w)), 1);
    let basic = br#"{"resourceType":"Basic","id":"b1"}"#;
    send(&host, &mut r, "PUT", "/Basic/b1", basic);
    let refusal = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"ResourceType Basic is not supported."}]}"#;
    respond(&host, &mut r, 400, &[], refusal);
    assert_eq!(host.response_status(), 200);
    assert_eq!(outcome_of(&host).as_deref(), Some("unsupported-type"));
    assert_eq!(
        host.response_header_value("x-healthlake-type-support")
            .as_deref(),
        Some("healthlake")
    );
    assert!(host
        .data
        .borrow()
        .contains_key("healthlake_relay.unsupported.Basic"));

    let mut r = Request::new(Some(w), 2);
    assert_eq!(
        send(&host, &mut r, "PUT", "/Basic/b2", basic),
        Action::Pause
    );
    assert_eq!(host.local_status(), Some(200));
    assert_eq!(
        host.local_header("x-healthlake-type-support").as_deref(),
        Some("learned")
    );
    assert_eq!(host.request_header("authorization"), None, "never signed");
}

#[test]
fn a_type_the_capability_statement_leaves_out_is_answered_locally() {
    let host = Fake::new();
    let w = worker_with(r#","capabilities_refresh_seconds":3600"#, KEYS);
    // The worker reads HealthLake's statement: Patient only.
    let creds = Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "secret".into(),
        session_token: None,
        expires_at: None,
    };
    struct Calling<'a>(&'a Fake);
    impl Clock for Calling<'_> {
        fn now(&self) -> Option<SystemTime> {
            self.0.now()
        }
    }
    impl SharedData for Calling<'_> {
        fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.0.shared_data(key)
        }
        fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            self.0.set_shared_data(key, value, cas)
        }
        fn overwrite_shared_data(&self, key: &str, value: &[u8]) -> bool {
            self.0.overwrite_shared_data(key, value)
        }
    }
    impl Calls for Calling<'_> {
        fn dispatch(&self, _: &Call, _: Duration) -> Result<u32, String> {
            Ok(7)
        }
    }
    impl crate::discovery::Host for Calling<'_> {
        fn count_fetch(&self, _: Event) {}
        fn capabilities_in_use(&self, _: Option<usize>) {}
    }
    let calling = Calling(&host);
    let statement = br#"{"resourceType":"CapabilityStatement","rest":[{"mode":"server","resource":[{"type":"Patient","interaction":[{"code":"update"},{"code":"delete"}]}]}]}"#;
    {
        let mut d = w.discovery.borrow_mut();
        d.tick(&calling, Some(&creds));
        assert!(d.on_answer(&calling, 7, 200, statement));
    }
    let mut r = Request::new(Some(Rc::clone(&w)), 1);
    send(&host, &mut r, "DELETE", "/Observation/o1", b"");
    assert_eq!(host.local_status(), Some(200));
    assert_eq!(
        host.local_header("x-healthlake-type-support").as_deref(),
        Some("capability-statement")
    );
    assert!(host.local_json()["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("delete interaction"));
    let mut r = Request::new(Some(Rc::clone(&w)), 2);
    assert_eq!(
        send(&host, &mut r, "DELETE", "/Patient/p1", b""),
        Action::Continue
    );

    // Its own statement lists what it forwards.
    let mut r = Request::new(Some(w), 3);
    send(&host, &mut r, "GET", "/metadata?_format=json", b"");
    assert_eq!(host.local_status(), Some(200));
    assert_eq!(outcome_of(&host).as_deref(), Some("capabilities"));
    let statement = host.local_json();
    let types: Vec<_> = statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["Patient"]);
}

#[test]
fn the_relay_answers_what_it_never_forwards() {
    let w = worker_with(r#","unsupported_types":["TestScript"]"#, KEYS);
    for (method, path, headers, body, status, outcome) in [
        ("GET", "/Patient/p1", vec![], "", 405, "read-dropped"),
        (
            "PUT",
            "/Patient/p1",
            vec![("content-type", "text/xml")],
            "<x/>",
            415,
            "invalid-request",
        ),
        ("PUT", "/Patient/p1", vec![FHIR], "", 400, "invalid-request"),
        (
            "PUT",
            "/Patient/p1",
            vec![FHIR, ("content-length", "99999999")],
            "",
            413,
            "invalid-request",
        ),
        (
            "PUT",
            "/Patient/p1",
            vec![FHIR],
            r#"{"resourceType":"Patient","id":"other"}"#,
            400,
            "invalid-request",
        ),
        (
            "DELETE",
            "/Patient/p1",
            vec![FHIR],
            "{}",
            400,
            "invalid-request",
        ),
        ("POST", "/", vec![FHIR], "", 400, "invalid-request"),
        ("PATCH", "/Patient/p1", vec![], "", 405, "invalid-request"),
        (
            "PUT",
            "/TestScript/t1",
            vec![FHIR],
            r#"{"resourceType":"TestScript","id":"t1"}"#,
            200,
            "unsupported-type",
        ),
    ] {
        let host = Fake::new();
        let mut r = Request::new(Some(Rc::clone(&w)), 1);
        host.request(method, path, &headers, body.as_bytes());
        if r.on_request_headers(&host, body.is_empty()) == Action::Pause
            && host.local.borrow().is_none()
        {
            r.on_request_body(&host, body.len(), true);
        }
        assert_eq!(
            (host.local_status(), outcome_of(&host).as_deref()),
            (Some(status), Some(outcome)),
            "{method} {path} {headers:?}"
        );
        assert_eq!(
            host.local_header("content-type").as_deref(),
            Some("application/fhir+json")
        );
        assert_eq!(host.request_header("authorization"), None, "never signed");
    }
}

#[test]
fn callers_are_checked_first() {
    let tokens = [(
        "RELAY_INBOUND_TOKENS",
        "a-token-of-at-least-thirty-two-chars!!",
    )];
    let env: Vec<_> = KEYS.iter().chain(tokens.iter()).copied().collect();
    let w = worker_with(r#","inbound_auth":"bearer""#, &env);
    let host = Fake::new();
    let mut r = Request::new(Some(Rc::clone(&w)), 1);
    send(
        &host,
        &mut r,
        "PUT",
        "/Patient/p1",
        &patient("p1", "2026-01-01T00:00:00Z"),
    );
    assert_eq!(host.local_status(), Some(401));
    assert_eq!(outcome_of(&host).as_deref(), Some("unauthorized"));
    assert!(host.local_header("www-authenticate").is_some());

    // Without authentication only loopback connections are served.
    let open = worker();
    host.properties
        .borrow_mut()
        .insert("destination.address".into(), b"10.0.0.5:10000".to_vec());
    let mut r = Request::new(Some(open), 2);
    send(&host, &mut r, "DELETE", "/Patient/p1", b"");
    assert_eq!(host.local_status(), Some(401));
}

#[test]
fn without_credentials_nothing_is_forwarded() {
    let host = Fake::new();
    let mut r = Request::new(Some(worker_with("", &[])), 1);
    send(
        &host,
        &mut r,
        "PUT",
        "/Patient/p1",
        &patient("p1", "2026-01-01T00:00:00Z"),
    );
    assert_eq!(host.local_status(), Some(503));
    assert_eq!(outcome_of(&host).as_deref(), Some("no-credentials"));
    assert_eq!(host.local_header("retry-after").as_deref(), Some("30"));
}

/// A worker whose credentials come from the container endpoint (fetched, so writes wait for
/// them), waiting at most 1 s.
fn fetching_worker() -> Rc<Worker> {
    worker_with(
        r#","credentials":{"source":"container","first_fetch_wait_ms":1000,"container":{"host":"127.0.0.1:9","path":"/creds"}}"#,
        &[],
    )
}

fn publish_credentials(host: &Fake) {
    let creds = Credentials {
        access_key_id: "ASIATEMP".into(),
        secret_access_key: "secret".into(),
        session_token: Some("token".into()),
        expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(T0_MS + 3_600_000)),
    };
    let published = Published::new(&creds, 1, T0_MS);
    host.overwrite_shared_data(CREDENTIALS_KEY, &published.encode());
}

#[test]
fn a_write_waiting_for_credentials_is_signed_and_resumed_when_they_come() {
    let host = Fake::new();
    let w = fetching_worker();
    let mut r = Request::new(Some(Rc::clone(&w)), 5);
    assert_eq!(
        send(
            &host,
            &mut r,
            "PUT",
            "/Patient/p1",
            &patient("p1", "2026-01-01T00:00:00Z")
        ),
        Action::Pause
    );
    assert!(host.local.borrow().is_none());
    waiters::resolve(&host, &w);
    assert!(host.resumed.borrow().is_empty(), "still waiting");

    publish_credentials(&host);
    w.credentials.borrow_mut().observe(&host);
    waiters::resolve(&host, &w);
    assert_eq!(host.resumed.borrow().len(), 1);
    assert_eq!(
        host.request_header("x-amz-security-token").as_deref(),
        Some("token")
    );
    respond(&host, &mut r, 200, &[], b"{}");
    assert_eq!(outcome_of(&host).as_deref(), Some("delivered"));
}

#[test]
fn a_write_that_waited_too_long_is_answered_503() {
    let host = Fake::new();
    let w = fetching_worker();
    let mut r = Request::new(Some(Rc::clone(&w)), 5);
    send(&host, &mut r, "DELETE", "/Patient/p1", b"");
    host.now_ms.set(T0_MS + 999);
    waiters::resolve(&host, &w);
    assert!(host.local.borrow().is_none());
    host.now_ms.set(T0_MS + 1_000);
    waiters::resolve(&host, &w);
    assert_eq!(host.local_status(), Some(503));
    assert_eq!(outcome_of(&host).as_deref(), Some("no-credentials"));
    assert!(host.local_json()["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("within 1000 ms"));
}

#[test]
fn a_write_gone_while_waiting_is_never_resumed() {
    let host = Fake::new();
    let w = fetching_worker();
    let mut r = Request::new(Some(Rc::clone(&w)), 5);
    send(&host, &mut r, "DELETE", "/Patient/p1", b"");
    r.on_done();
    publish_credentials(&host);
    w.credentials.borrow_mut().observe(&host);
    waiters::resolve(&host, &w);
    assert!(host.resumed.borrow().is_empty());
    // Nor one whose context the host no longer knows.
    let mut r = Request::new(Some(Rc::clone(&w)), 6);
    host.gone.borrow_mut().push(6);
    w.credentials.borrow_mut().observe(&host);
    send(&host, &mut r, "DELETE", "/Patient/p2", b"");
    assert_eq!(
        host.resumed.borrow().len(),
        0,
        "signed at once: credentials exist"
    );
}

#[test]
fn a_local_answer_that_fails_resets_the_request() {
    let host = Fake::new();
    host.local_fails.set(true);
    let mut r = Request::new(Some(worker()), 1);
    send(&host, &mut r, "GET", "/Patient/p1", b"");
    assert_eq!(host.resets.get(), 1);
    assert_eq!(host.last_count(), Some((Outcome::ReadDropped, None)));
}

#[test]
fn compare_and_swap_conflicts_lose_nothing_but_the_record() {
    let host = Fake::new();
    let w = worker();
    let mut r = Request::new(Some(Rc::clone(&w)), 1);
    send(
        &host,
        &mut r,
        "PUT",
        "/Patient/p1",
        &patient("p1", "2026-01-01T00:00:00Z"),
    );
    // Another worker wins every compare-and-swap: the write is still delivered.
    host.conflicts.set(100);
    respond(&host, &mut r, 200, &[], b"{}");
    assert_eq!(outcome_of(&host).as_deref(), Some("delivered"));
    assert!(host.data.borrow().is_empty(), "nothing recorded");
    // A refusal not recorded is still answered unsupported-type.
    let mut r = Request::new(Some(w), 2);
    send(
        &host,
        &mut r,
        "PUT",
        "/Basic/b1",
        br#"{"resourceType":"Basic","id":"b1"}"#,
    );
    let refusal = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"ResourceType Basic is not supported."}]}"#;
    respond(&host, &mut r, 400, &[], refusal);
    assert_eq!(outcome_of(&host).as_deref(), Some("unsupported-type"));
    assert!(host.data.borrow().is_empty());
}

#[test]
fn a_body_past_the_workers_budget_is_refused_and_retried_later() {
    let host = Fake::new();
    let w = worker_with(r#","max_body_bytes":64,"body_budget_bytes":64"#, KEYS);
    let mut held = Request::new(Some(Rc::clone(&w)), 1);
    let big = format!(
        r#"{{"resourceType":"Patient","id":"p1","x":"{}"}}"#,
        "a".repeat(20)
    );
    host.request("PUT", "/Patient/p1", &[FHIR], big.as_bytes());
    held.on_request_headers(&host, false);
    // Part of the body arrives and is held.
    assert_eq!(held.on_request_body(&host, 40, false), Action::Pause);
    let mut r = Request::new(Some(w), 2);
    host.request("PUT", "/Patient/p2", &[FHIR], big.as_bytes());
    r.on_request_headers(&host, false);
    r.on_request_body(&host, big.len(), true);
    assert_eq!(host.local_status(), Some(503));
    assert_eq!(outcome_of(&host).as_deref(), Some("overloaded"));
}

#[test]
fn an_unconfigured_relay_answers_500() {
    let host = Fake::new();
    let mut r = Request::new(None, 1);
    send(
        &host,
        &mut r,
        "PUT",
        "/Patient/p1",
        &patient("p1", "2026-01-01T00:00:00Z"),
    );
    assert_eq!(host.local_status(), Some(500));
}

/// Every host call is a crossing between the VM and Envoy, and costs whatever the work behind it
/// (`make bench-instructions INSTRUCTIONS_ARGS="--probes"`, bench/results/instructions.md: about
/// 1,000 to 4,200 instructions for a call that returns nothing, a header or filter-state write
/// at the top of that range; 10,500 to 12,100 for one that returns bytes, which Envoy allocates
/// in the VM). These are the calls of a delivered PUT, callback by callback, as the README's
/// Performance section counts them: a new one must be worth its price. (`count` is one
/// `increment_metric` per counter, and a `define_metric` the first time a counter is used.)
#[test]
fn a_delivered_put_makes_these_host_calls() {
    let host = Fake::new();
    let mut r = Request::new(Some(worker()), 1);
    let body = patient("p1", "2026-01-01T00:00:00Z");
    host.request("PUT", "/Patient/p1", &[FHIR], &body);
    assert_eq!(r.on_request_headers(&host, false), Action::Pause);
    let at_headers = host.take_calls();
    assert_eq!(r.on_request_body(&host, body.len(), true), Action::Continue);
    let at_body = host.take_calls();
    host.answer(201, &[("content-type", "application/fhir+json")], b"");
    assert_eq!(r.on_response_headers(&host, true), Action::Continue);
    let at_response = host.take_calls();
    assert_eq!(outcome_of(&host).as_deref(), Some("delivered"));
    let shard = "healthlake_relay.versions.6250.1818";
    assert_eq!(
        at_headers,
        [
            "request_headers",
            "set_filter_state relay_method",
            "set_filter_state relay_path",
            "property destination.address",
            "set_filter_state relay_resource_type",
            "set_filter_state relay_resource_id",
            "shared_data healthlake_relay.unsupported.Patient",
        ]
    );
    assert_eq!(
        at_body,
        [
            "request_body".to_owned(),
            "now".to_owned(),
            format!("shared_data {shard}"),
            "set_request_header :path".to_owned(),
            "set_request_header :authority".to_owned(),
            "set_request_header x-amz-date".to_owned(),
            "set_request_header x-amz-content-sha256".to_owned(),
            "set_request_header authorization".to_owned(),
            "set_filter_state relay_upstream_path".to_owned(),
        ]
    );
    assert_eq!(
        at_response,
        [
            "response_status".to_owned(),
            "set_response_header x-healthlake-outcome".to_owned(),
            "set_filter_state relay_upstream_status".to_owned(),
            "count".to_owned(),
            format!("set_shared_data {shard}"),
        ]
    );
}
