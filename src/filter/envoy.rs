//! Envoy as the core's host: `crate::host`'s traits, the credentials provider's, discovery's and
//! the request flow's, over the host calls of [`host`]; and the answers of the root context's
//! calls.

use super::abi::{Buffer, Map};
use super::host;
use super::metrics::Metrics;
use crate::credentials::call::Call;
use crate::credentials::provider::Event;
use crate::host::{Calls, Clock, SharedData};
use crate::host_encoding::HeaderPairs;
use crate::outcome::Outcome;
use proxy_wasm::hostcalls;
use std::time::{Duration, SystemTime};

/// Envoy, as the host of the core: the current request's (the effective context's) and the
/// worker's.
pub struct WasmHost<'a> {
    pub metrics: &'a Metrics,
}

impl WasmHost<'_> {
    pub fn new(metrics: &Metrics) -> WasmHost<'_> {
        WasmHost { metrics }
    }
}

impl Clock for WasmHost<'_> {
    fn now(&self) -> Option<SystemTime> {
        host::now()
    }
}

impl SharedData for WasmHost<'_> {
    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        host::shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        host::set_shared_data(key, value, cas)
    }

    fn overwrite_shared_data(&self, key: &str, value: &[u8]) -> bool {
        host::overwrite_shared_data(key, value)
    }
}

impl Calls for WasmHost<'_> {
    fn dispatch(&self, call: &Call, timeout: Duration) -> Result<u32, String> {
        let headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = (!call.body.is_empty()).then_some(call.body.as_slice());
        // The SDK's call, not abi's: its dispatcher must know the token to route the answer.
        hostcalls::dispatch_http_call(&call.cluster, headers, body, Vec::new(), timeout)
            .map_err(|status| format!("{status:?}"))
    }
}

impl crate::credentials::provider::Host for WasmHost<'_> {
    fn count_refresh(&self, event: Event, source: Option<&'static str>) {
        self.metrics.refresh(event, source);
    }

    fn expiry_seconds(&self, seconds: u64) {
        self.metrics.credentials_expiry_seconds(seconds);
    }
}

impl crate::discovery::Host for WasmHost<'_> {
    fn count_fetch(&self, event: Event) {
        self.metrics.discovery(event);
    }

    fn capabilities_in_use(&self, update_types: Option<usize>) {
        self.metrics.capabilities_in_use(update_types);
    }
}

impl crate::flow::Host for WasmHost<'_> {
    fn request_headers(&self) -> Option<HeaderPairs> {
        host::request_headers()
    }
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        host::request_body(start, len)
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) -> bool {
        host::set_request_header(name, value)
    }
    fn remove_request_header(&self, name: &[u8]) -> bool {
        host::remove_request_header(name)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        host::property(path)
    }
    fn response_status(&self) -> u16 {
        host::response_status()
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        host::response_header(name)
    }
    fn set_response_header(&self, name: &str, value: &str) {
        host::set_response_header(name, value)
    }
    fn remove_response_header(&self, name: &str) {
        host::remove_response_header(name)
    }
    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        host::response_body(start, len)
    }
    fn replace_response_body(&self, old_len: usize, new: &[u8]) {
        host::replace_response_body(old_len, new)
    }
    fn send_local_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
        host::send_local_response(status, headers, body)
    }
    fn reset_request(&self) {
        host::reset_request()
    }
    fn set_effective_context(&self, context_id: u32) -> bool {
        host::set_effective_context(context_id)
    }
    fn resume_request(&self) -> bool {
        host::resume_request()
    }
    fn set_filter_state(&self, key: &str, value: &str) {
        host::set_filter_state(key, value)
    }
    fn count(&self, outcome: Outcome, resource_type: Option<&str>) {
        self.metrics.count(outcome, resource_type)
    }
}

/// The status and (at most `most` + 1 bytes of) the body of the answer to one of the root
/// context's calls.
pub fn call_answer(body_size: usize, most: usize) -> (u16, Vec<u8>) {
    let status = host::status_code(
        super::abi::header(Map::HttpCallResponse, b":status")
            .ok()
            .flatten()
            .as_deref(),
    );
    let read = body_size.min(most.saturating_add(1));
    let body = host::buffer(Buffer::HttpCallResponseBody, 0, read).unwrap_or_default();
    (status, body)
}
