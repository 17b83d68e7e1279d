//! The proxy-wasm side of discovery (`crate::discovery`): its host calls, and the answer of its
//! call handed back to it.

use super::abi::{Buffer, Map};
use super::credentials::WasmHost;
use super::host;
use crate::capabilities::MAX_STATEMENT_BYTES;
use crate::credentials::call::Call;
use crate::credentials::provider::Event;
use crate::discovery::{Discovery, Host};
use std::time::{Duration, SystemTime};

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

    fn dispatch(&self, call: &Call, timeout: Duration) -> Result<u32, String> {
        super::credentials::dispatch(call, timeout)
    }

    fn count(&self, event: Event) {
        self.metrics.discovery(event);
    }

    fn in_use(&self, update_types: Option<usize>) {
        self.metrics.capabilities_in_use(update_types);
    }
}

/// An answer to discovery's call: handed to it with its status and (at most
/// [`MAX_STATEMENT_BYTES`] + 1 of) its body. Returns false when it is not discovery's call.
pub fn on_response(
    discovery: &mut Discovery,
    host: &WasmHost<'_>,
    token: u32,
    body_size: usize,
) -> bool {
    if !discovery.awaits(token) {
        return false;
    }
    let status = host::status_code(
        super::abi::header(Map::HttpCallResponse, b":status")
            .ok()
            .flatten()
            .as_deref(),
    );
    let read = body_size.min(MAX_STATEMENT_BYTES.saturating_add(1));
    let body = host::buffer(Buffer::HttpCallResponseBody, 0, read).unwrap_or_default();
    discovery.on_answer(host, token, status, &body)
}
