//! Hostile input for the whole request flow (`healthlake_relay::flow`), driven without Envoy: a
//! write's method, path, headers and body, delivered in chunks, then HealthLake's status,
//! headers and body, all from the fuzzer's bytes, through a host that hands them over as Envoy
//! would (and sometimes refuses, as Envoy can).
//!
//! Input: `METHOD \0 PATH \0 HEADERS \0 BODY \0 STATUS-HEADERS \0 ANSWER`, headers as
//! `name:value` lines (missing parts are empty). The property checked: no panic, every request
//! ends in exactly one outcome, and nothing is forwarded unsigned.
#![no_main]

use healthlake_relay::credentials::call::Call;
use healthlake_relay::credentials::provider::Event;
use healthlake_relay::flow::{Action, Host, Request};
use healthlake_relay::host::{Calls, Clock, SharedData};
use healthlake_relay::host_encoding::HeaderPairs;
use healthlake_relay::outcome::Outcome;
use healthlake_relay::worker::Worker;
use libfuzzer_sys::fuzz_target;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

#[derive(Default)]
struct FuzzHost {
    request: RefCell<HeaderPairs>,
    body: Vec<u8>,
    response: RefCell<Vec<(String, Vec<u8>)>>,
    answer: RefCell<Vec<u8>>,
    data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    cas: Cell<u32>,
    /// Host calls to refuse (one bit each, in turn), as Envoy may.
    refusals: Cell<u64>,
    outcomes: Cell<u32>,
    local: Cell<bool>,
}

impl FuzzHost {
    fn refuses(&self) -> bool {
        let r = self.refusals.get();
        self.refusals.set(r.rotate_right(1));
        r & 1 == 1
    }
}

impl Clock for FuzzHost {
    fn now(&self) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_323_200))
    }
}

impl SharedData for FuzzHost {
    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.data.borrow().get(key) {
            Some((v, c)) => (Some(v.clone()), Some(*c)),
            None => (None, None),
        }
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        if self.refuses() || self.data.borrow().get(key).map(|(_, c)| *c) != cas {
            return false;
        }
        self.overwrite_shared_data(key, value)
    }
    fn overwrite_shared_data(&self, key: &str, value: &[u8]) -> bool {
        self.cas.set(self.cas.get().wrapping_add(1));
        self.data
            .borrow_mut()
            .insert(key.to_owned(), (value.to_vec(), self.cas.get()));
        true
    }
}

impl Calls for FuzzHost {
    fn dispatch(&self, _: &Call, _: Duration) -> Result<u32, String> {
        Err("no calls".into())
    }
}

impl healthlake_relay::credentials::provider::Host for FuzzHost {
    fn count_refresh(&self, _: Event, _: Option<&'static str>) {}
    fn expiry_seconds(&self, _: u64) {}
}

impl Host for FuzzHost {
    fn request_headers(&self) -> Option<HeaderPairs> {
        (!self.refuses()).then(|| self.request.borrow().clone())
    }
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.body
            .get(start..start.checked_add(len)?)
            .map(<[u8]>::to_vec)
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) -> bool {
        let mut h = self.request.borrow_mut();
        h.retain(|(n, _)| n != name.as_bytes());
        if let Some(v) = value {
            h.push((name.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
        !self.refuses()
    }
    fn remove_request_header(&self, name: &[u8]) -> bool {
        self.request.borrow_mut().retain(|(n, _)| n != name);
        !self.refuses()
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        (path == ["destination", "address"]).then(|| b"127.0.0.1:10000".to_vec())
    }
    fn response_status(&self) -> u16 {
        self.response_header(":status")
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.response
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
    fn set_response_header(&self, name: &str, value: &str) {
        let mut h = self.response.borrow_mut();
        h.retain(|(n, _)| n != name);
        h.push((name.to_owned(), value.as_bytes().to_vec()));
    }
    fn remove_response_header(&self, name: &str) {
        self.response.borrow_mut().retain(|(n, _)| n != name);
    }
    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        let a = self.answer.borrow();
        a.get(start..start.checked_add(len)?.min(a.len()))
            .map(<[u8]>::to_vec)
    }
    fn replace_response_body(&self, _: usize, new: &[u8]) {
        *self.answer.borrow_mut() = new.to_vec();
    }
    fn send_local_response(&self, _: u16, _: &[(&str, &str)], _: &[u8]) -> bool {
        self.local.set(true);
        !self.refuses()
    }
    fn reset_request(&self) {}
    fn set_effective_context(&self, _: u32) -> bool {
        true
    }
    fn resume_request(&self) -> bool {
        true
    }
    fn set_filter_state(&self, _: &str, _: &str) {}
    fn count(&self, _: Outcome, _: Option<&str>) {
        self.outcomes.set(self.outcomes.get() + 1);
    }
}

fn worker() -> Option<Rc<Worker>> {
    let env = |name: &str| match name {
        "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".to_owned()),
        "AWS_SECRET_ACCESS_KEY" => Some("secret".to_owned()),
        _ => None,
    };
    Worker::start(
        br#"{"region":"us-east-1","datastore_id":"ds","healthlake_host":"h","inbound_auth":"none","inbound_base_path":"/fhir","capabilities_refresh_seconds":0,"max_body_bytes":65536,"body_budget_bytes":65536}"#,
        env,
        true,
    )
    .ok()
    .map(Rc::new)
}

fn header_lines(text: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    text.split(|b| *b == b'\n')
        .filter_map(|line| {
            let at = line.iter().position(|b| *b == b':')?;
            Some((
                line.get(..at)?.to_ascii_lowercase(),
                line.get(at + 1..)?.to_vec(),
            ))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some(worker) = worker() else { return };
    let mut parts = data.splitn(6, |b| *b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (method, path, headers, body, answer_head, answer) =
        (next(), next(), next(), next(), next(), next());
    let mut request = vec![
        (b":method".to_vec(), method.to_vec()),
        (b":path".to_vec(), path.to_vec()),
    ];
    request.extend(header_lines(headers));
    let host = FuzzHost {
        request: RefCell::new(request),
        body: body.to_vec(),
        answer: RefCell::new(answer.to_vec()),
        refusals: Cell::new(u64::from(data.len() as u8 & 0x0f == 0x0f) << 5),
        ..FuzzHost::default()
    };
    let mut r = Request::new(Some(worker), 1);
    let mut action = r.on_request_headers(&host, body.is_empty());
    // The body in chunks of the path's length, as Envoy buffers it.
    let step = path.len().max(1);
    let mut to = 0;
    while action == Action::Pause && !host.local.get() && to < body.len() {
        to = (to + step).min(body.len());
        action = r.on_request_body(&host, to, to == body.len());
    }
    if action == Action::Continue && !host.local.get() {
        // Forwarded: it must have been signed.
        let signed = host
            .request
            .borrow()
            .iter()
            .any(|(n, v)| n == b"authorization" && v.starts_with(b"AWS4-HMAC-SHA256 "));
        let is_write = matches!(method, b"PUT" | b"DELETE" | b"POST");
        assert!(!is_write || signed, "a write went on unsigned");
        if signed {
            let mut head = vec![(":status".to_owned(), b"200".to_vec())];
            for (n, v) in header_lines(answer_head) {
                head.push((String::from_utf8_lossy(&n).into_owned(), v));
            }
            *host.response.borrow_mut() = head;
            let at_headers = r.on_response_headers(&host, answer.is_empty());
            if at_headers == Action::Pause && !answer.is_empty() {
                r.on_response_body(&host, answer.len(), true);
            }
        }
    }
    r.on_done();
    assert!(
        host.outcomes.get() <= 1,
        "more than one outcome for one request"
    );
});
