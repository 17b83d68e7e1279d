//! The host calls the filter makes, over [`abi`]: errors are logged and turned into `Option`s or
//! `bool`s the caller handles. Header names and values are bytes where they come from a client.

use super::abi::{self, Buffer, Level, Map};
use crate::host_encoding::HeaderPairs;

pub fn log_error(message: &str) {
    // If even logging fails there is nothing left to tell.
    let _ = abi::log(Level::Error, message);
}

/// Every request header, names and values as the bytes received.
pub fn request_headers() -> Option<HeaderPairs> {
    abi::header_pairs(Map::Request)
        .map_err(|s| {
            log_error(&format!(
                "healthlake-relay: cannot read request headers: {s:?}"
            ))
        })
        .ok()
}

/// A response header as bytes.
pub fn response_header(name: &str) -> Option<Vec<u8>> {
    abi::header(Map::Response, name.as_bytes()).ok().flatten()
}

/// The response's status code (0 if absent or not a number).
pub fn response_status() -> u16 {
    status_code(response_header(":status").as_deref())
}

/// A `:status` value as a number (0 if absent or not a number).
pub fn status_code(value: Option<&[u8]>) -> u16 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0)
}

/// Sets (or with `None` removes) a request header. Returns false on a host error.
pub fn set_request_header(name: &str, value: Option<&str>) -> bool {
    let result = match value {
        Some(v) => abi::set_header(Map::Request, name.as_bytes(), v.as_bytes()),
        None => abi::remove_header(Map::Request, name.as_bytes()),
    };
    match result {
        Ok(()) => true,
        Err(s) => {
            log_error(&format!(
                "healthlake-relay: cannot set request header {name}: {s:?}"
            ));
            false
        }
    }
}

/// Removes a request header named by the client's bytes. Returns false on a host error.
pub fn remove_request_header(name: &[u8]) -> bool {
    match abi::remove_header(Map::Request, name) {
        Ok(()) => true,
        Err(s) => {
            log_error(&format!(
                "healthlake-relay: cannot remove a request header: {s:?}"
            ));
            false
        }
    }
}

pub fn set_response_header(name: &str, value: &str) {
    if let Err(s) = abi::set_header(Map::Response, name.as_bytes(), value.as_bytes()) {
        log_error(&format!(
            "healthlake-relay: cannot set response header {name}: {s:?}"
        ));
    }
}

pub fn remove_response_header(name: &str) {
    if let Err(s) = abi::remove_header(Map::Response, name.as_bytes()) {
        log_error(&format!(
            "healthlake-relay: cannot remove response header {name}: {s:?}"
        ));
    }
}

/// Bytes `start..start+len` of the buffered request body.
pub fn request_body(start: usize, len: usize) -> Option<Vec<u8>> {
    buffer(Buffer::RequestBody, start, len)
}

/// Bytes `start..start+len` of the buffered response body.
pub fn response_body(start: usize, len: usize) -> Option<Vec<u8>> {
    buffer(Buffer::ResponseBody, start, len)
}

/// Bytes `start..start+len` of a buffer (the plugin configuration, an STS answer, ...).
pub fn buffer(which: Buffer, start: usize, len: usize) -> Option<Vec<u8>> {
    abi::buffer(which, start, len)
        .map_err(|s| log_error(&format!("healthlake-relay: cannot read {which:?}: {s:?}")))
        .ok()
}

/// Replaces the whole buffered response body (`old_len` bytes) with `new`.
pub fn replace_response_body(old_len: usize, new: &[u8]) {
    if let Err(s) = abi::set_buffer(Buffer::ResponseBody, 0, old_len, new) {
        log_error(&format!(
            "healthlake-relay: cannot replace the response body: {s:?}"
        ));
    }
}

/// Filter state readable in the access log as `%FILTER_STATE(wasm.<key>:PLAIN)%`.
pub fn set_filter_state(key: &str, value: &str) {
    if let Err(s) = abi::set_property(&[key], value.as_bytes()) {
        log_error(&format!(
            "healthlake-relay: cannot set filter state {key}: {s:?}"
        ));
    }
}

/// A host property such as `connection.mtls` or `source.address`.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    abi::property(path).ok().flatten()
}

pub fn now() -> Option<std::time::SystemTime> {
    abi::now()
        .map_err(|s| log_error(&format!("healthlake-relay: cannot read the clock: {s:?}")))
        .ok()
}

/// Answers the current request locally. False if the host refused (the caller resets).
pub fn send_local_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    match abi::send_local_response(status, &headers, body) {
        Ok(()) => true,
        Err(s) => {
            log_error(&format!(
                "healthlake-relay: cannot send a local response: {s:?}"
            ));
            false
        }
    }
}

/// Resets the current request: nothing more is sent for it, in either direction.
pub fn reset_request() {
    if let Err(s) = abi::reset_request() {
        log_error(&format!(
            "healthlake-relay: cannot reset the request: {s:?}"
        ));
    }
}

/// Lets the held request (of the effective context) continue.
pub fn resume_request() -> bool {
    abi::resume_request().is_ok()
}

/// Makes `context_id` the request later host calls act on; false if it is gone.
pub fn set_effective_context(context_id: u32) -> bool {
    abi::set_effective_context(context_id).is_ok()
}

/// A shared-data value (shared by every worker of this plugin) and its CAS token.
pub fn shared_data(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    match abi::shared_data(key) {
        Ok((value, cas)) => (value, (cas != 0).then_some(cas)),
        Err(_) => (None, None),
    }
}

/// The CAS token written with a key that was absent when read. Envoy creates an absent key
/// whatever the token, and refuses a token that its entry does not hold once another worker has
/// created it: no entry holds this one (Envoy's counter would have to wrap onto it at that very
/// moment). Token 0 would mean "whatever is there", and let two workers both create the key.
const CAS_ABSENT: u32 = u32::MAX;

/// Stores a shared-data value if nobody wrote it since it was read: `cas` as read with it, or
/// `None` if the key was absent then (the write then succeeds only while it still is). False if
/// another worker got there first.
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    abi::set_shared_data(key, value, cas.unwrap_or(CAS_ABSENT)).is_ok()
}

/// Stores a shared-data value whatever is there (only the holder of a lock writes the key).
pub fn overwrite_shared_data(key: &str, value: &[u8]) -> bool {
    abi::set_shared_data(key, value, 0).is_ok()
}
