//! Small wrappers over proxy-wasm host calls: errors are logged and turned into `Option`s or
//! `bool`s the caller handles, never unwrapped.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

pub fn log_error(message: &str) {
    // If even logging fails there is nothing left to tell.
    let _ = hostcalls::log(LogLevel::Error, message);
}

pub fn request_headers() -> Option<Vec<(String, String)>> {
    hostcalls::get_map(MapType::HttpRequestHeaders)
        .map_err(|s| {
            log_error(&format!(
                "healthlake-relay: cannot read request headers: {s:?}"
            ))
        })
        .ok()
}

pub fn response_header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

/// Sets (or with `None` removes) a request header. Returns false on a host error.
pub fn set_request_header(name: &str, value: Option<&str>) -> bool {
    match hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value) {
        Ok(()) => true,
        Err(s) => {
            log_error(&format!(
                "healthlake-relay: cannot set request header {name}: {s:?}"
            ));
            false
        }
    }
}

pub fn set_response_header(name: &str, value: &str) {
    if let Err(s) = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value)) {
        log_error(&format!(
            "healthlake-relay: cannot set response header {name}: {s:?}"
        ));
    }
}

/// Bytes `start..start+len` of the buffered request body.
pub fn request_body(start: usize, len: usize) -> Option<Vec<u8>> {
    match hostcalls::get_buffer(BufferType::HttpRequestBody, start, len) {
        Ok(b) => Some(b.unwrap_or_default()),
        Err(s) => {
            log_error(&format!(
                "healthlake-relay: cannot read the request body: {s:?}"
            ));
            None
        }
    }
}

/// Filter state readable in the access log as `%FILTER_STATE(wasm.<key>:PLAIN)%`.
pub fn set_filter_state(key: &str, value: &str) {
    if let Err(s) = hostcalls::set_property(vec![key], Some(value.as_bytes())) {
        log_error(&format!(
            "healthlake-relay: cannot set filter state {key}: {s:?}"
        ));
    }
}

pub fn now() -> Option<std::time::SystemTime> {
    hostcalls::get_current_time()
        .map_err(|s| log_error(&format!("healthlake-relay: cannot read the clock: {s:?}")))
        .ok()
}

pub fn send_local_response(status: u16, headers: Vec<(&str, &str)>, body: &[u8]) -> bool {
    match hostcalls::send_http_response(u32::from(status), headers, Some(body)) {
        Ok(()) => true,
        Err(s) => {
            log_error(&format!(
                "healthlake-relay: cannot send a local response: {s:?}"
            ));
            false
        }
    }
}

pub fn remove_response_header(name: &str) {
    if let Err(s) = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, None) {
        log_error(&format!(
            "healthlake-relay: cannot remove response header {name}: {s:?}"
        ));
    }
}

/// Bytes `start..start+len` of the buffered response body.
pub fn response_body(start: usize, len: usize) -> Option<Vec<u8>> {
    match hostcalls::get_buffer(BufferType::HttpResponseBody, start, len) {
        Ok(b) => Some(b.unwrap_or_default()),
        Err(s) => {
            log_error(&format!(
                "healthlake-relay: cannot read the response body: {s:?}"
            ));
            None
        }
    }
}

/// Replaces the whole buffered response body (`old_len` bytes) with `new`.
pub fn replace_response_body(old_len: usize, new: &[u8]) {
    if let Err(s) = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, old_len, new) {
        log_error(&format!(
            "healthlake-relay: cannot replace the response body: {s:?}"
        ));
    }
}

/// A shared-data value (shared by every worker of this plugin) and its CAS token.
pub fn shared_data(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// Stores a shared-data value if `cas` still matches; false if another worker got there first.
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    hostcalls::set_shared_data(key, Some(value), cas).is_ok()
}
