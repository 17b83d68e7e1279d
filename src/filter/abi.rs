//! The proxy-wasm ABI calls the relay makes, declared here and wrapped so that nothing can panic.
//!
//! The SDK's own wrappers (`proxy_wasm::hostcalls`, 0.2.5) panic in two ways that a request can
//! reach: header maps and values are turned into `String`s with `unwrap` (one header value that is
//! not UTF-8, from any client, before authentication, traps the VM), and any host status a wrapper
//! did not foresee is a `panic!` (e.g. a local reply the host refuses). Here every call returns
//! `Result<_, Status>` for every status, header names and values stay bytes, and buffers handed
//! over by the host are parsed with bounds checks.
//!
//! Two SDK pieces stay in use, audited: its dispatcher (the `proxy_on_*` exports that route host
//! callbacks to contexts; its panics are host-protocol invariants such as an unknown context id,
//! never request data) and `hostcalls::dispatch_http_call`, which must register the call's token
//! with that dispatcher (it maps every status Envoy's `httpCall` returns: Ok, BadArgument,
//! InternalFailure).

use crate::host_encoding::{decode_pairs, encode_pairs, encode_path, HeaderPairs};
use std::ptr::{null, null_mut};

/// A host status other than Ok (proxy-wasm ABI numbering: 1 NotFound, 2 BadArgument,
/// 8 CasMismatch, 10 InternalFailure, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

/// Which header map.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Map {
    Request = 0,
    Response = 2,
    HttpCallResponse = 6,
}

/// Which buffer.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Buffer {
    RequestBody = 0,
    ResponseBody = 1,
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

/// Log levels, as the host numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
}

const STREAM_HTTP_REQUEST: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_log_level(level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path: *const u8,
        path_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
}

fn check(status: u32) -> Result<(), Status> {
    if status == OK {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// Takes ownership of bytes the host allocated in this VM (through the SDK's
/// `proxy_on_memory_allocate`, which allocates exactly `size` bytes).
///
/// # Safety
/// `data` must be null or point to `size` bytes allocated for this call by the host.
unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        // SAFETY: the host handed over an allocation of exactly `size` bytes (see above).
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }
}

pub fn log(level: Level, message: &str) -> Result<(), Status> {
    // SAFETY: pointer and length of a live &str.
    check(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
}

pub fn log_level() -> Result<Level, Status> {
    let mut level = 0u32;
    // SAFETY: the host writes one u32.
    check(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(match level {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        4 => Level::Error,
        _ => Level::Critical,
    })
}

pub fn now() -> Result<std::time::SystemTime, Status> {
    let mut nanos = 0u64;
    // SAFETY: the host writes one u64.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
}

pub fn set_tick_period(period: std::time::Duration) -> Result<(), Status> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// Lets the held request continue (to the next filter, and HealthLake).
pub fn resume_request() -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) })
}

/// Resets the request's stream.
pub fn reset_request() -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_close_stream(STREAM_HTTP_REQUEST) })
}

/// Bytes `start..start+max_size` of a buffer (fewer if it is shorter; empty if absent).
pub fn buffer(buffer: Buffer, start: usize, max_size: usize) -> Result<Vec<u8>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host writes a pointer it allocated here and its size.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size) };
    match status {
        OK => Ok(unsafe { take(data, size) }.unwrap_or_default()),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(Status(other)),
    }
}

/// Replaces bytes `start..start+size` of a buffer with `value`.
pub fn set_buffer(buffer: Buffer, start: usize, size: usize, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length of a live slice.
    check(unsafe {
        proxy_set_buffer_bytes(buffer as u32, start, size, value.as_ptr(), value.len())
    })
}

/// Every header of a map, names and values as bytes.
pub fn header_pairs(map: Map) -> Result<HeaderPairs, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host writes a pointer it allocated here and its size.
    check(unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) })?;
    match unsafe { take(data, size) } {
        Some(bytes) => decode_pairs(&bytes).ok_or(Status(SERIALIZATION_FAILURE)),
        None => Ok(Vec::new()),
    }
}

const SERIALIZATION_FAILURE: u32 = 3;

/// One header's value as bytes; `None` when absent.
pub fn header(map: Map, name: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: pointer and length of a live slice; the host writes a pointer and a size.
    let status = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    match status {
        OK => Ok(unsafe { take(data, size) }),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

/// Sets a header (replacing every value it had).
pub fn set_header(map: Map, name: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices.
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: Map, name: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length of a live slice.
    check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// A property (e.g. `connection.mtls`, `source.address`); `None` when absent.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let path = encode_path(path);
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: pointer and length of a live Vec; the host writes a pointer and a size.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match status {
        OK => Ok(unsafe { take(data, size) }),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

/// Sets filter state (`wasm.<key>` for a one-element path).
pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    let path = encode_path(path);
    // SAFETY: pointers and lengths of live slices.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// A shared-data value and its CAS token (0: none).
pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, u32), Status> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: pointer and length of a live &str; the host writes a pointer, a size and a u32.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        OK => Ok((unsafe { take(data, size) }, cas)),
        NOT_FOUND => Ok((None, 0)),
        other => Err(Status(other)),
    }
}

/// Stores a shared-data value if `cas` (0: unconditionally) still matches.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Answers the current request locally.
pub fn send_local_response(
    status: u16,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Result<(), Status> {
    let headers = encode_pairs(headers);
    // SAFETY: pointers and lengths of live slices; an empty details string.
    check(unsafe {
        proxy_send_local_response(
            u32::from(status),
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

pub fn define_metric(kind: MetricKind, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: pointer and length of a live &str; the host writes one u32.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_increment_metric(id, offset) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_record_metric(id, value) })
}
