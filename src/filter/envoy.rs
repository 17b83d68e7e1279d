//! The proxy-wasm side of the credentials provider (`crate::credentials::provider`): its host
//! calls, and the answers of its HTTP calls handed back to it.

use super::abi::{Buffer, Map};
use super::host;
use super::http::Waiter;
use super::metrics::Metrics;
use crate::credentials::call::Call;
use crate::credentials::provider::{Event, Host, Provider, MAX_ANSWER_BYTES};
use proxy_wasm::hostcalls;
use std::time::{Duration, SystemTime};

/// One worker's provider; the writes it holds are [`Waiter`]s.
pub type CredentialProvider = Provider<Waiter>;

/// Envoy, as the provider's host.
pub struct WasmHost<'a> {
    pub metrics: &'a Metrics,
}

impl Host for WasmHost<'_> {
    fn now(&self) -> Option<SystemTime> {
        host::now()
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        host::shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        host::set_shared_data(key, value, cas)
    }

    fn overwrite_shared_data(&self, key: &str, value: &[u8]) -> bool {
        host::overwrite_shared_data(key, value)
    }

    fn dispatch(&self, call: &Call, timeout: Duration) -> Result<u32, String> {
        dispatch(call, timeout)
    }

    fn count(&self, event: Event, source: Option<&'static str>) {
        self.metrics.refresh(event, source);
    }

    fn expiry_seconds(&self, seconds: u64) {
        self.metrics.credentials_expiry_seconds(seconds);
    }
}

/// Sends `call` through its cluster; the answer comes back to the root context with the token.
pub fn dispatch(call: &Call, timeout: Duration) -> Result<u32, String> {
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

/// An answer to one of the provider's calls: handed to it with its status and (at most
/// [`MAX_ANSWER_BYTES`] + 1 of) its body. Returns false when it is not the provider's call.
pub fn on_response(
    provider: &mut CredentialProvider,
    metrics: &Metrics,
    token: u32,
    body_size: usize,
) -> bool {
    if !provider.awaits(token) {
        return false;
    }
    let status = host::status_code(
        super::abi::header(Map::HttpCallResponse, b":status")
            .ok()
            .flatten()
            .as_deref(),
    );
    let read = body_size.min(MAX_ANSWER_BYTES.saturating_add(1));
    let body = host::buffer(Buffer::HttpCallResponseBody, 0, read).unwrap_or_default();
    provider.on_answer(&WasmHost { metrics }, token, status, &body)
}
