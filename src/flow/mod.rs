//! One request through the relay, written against [`Host`]: plan at the headers, hash the body
//! as it arrives, check it, consult the version guard, sign; or hold it for credentials; then
//! classify HealthLake's answer, rewrite it for Smile CDR when the verdict calls for it, and make
//! the verdict visible (header, access log, stats, troubleshooting log).
//!
//! - [`request`]: the request side, up to the signed request or the relay's own answer;
//! - [`response`]: the response side;
//! - [`waiters`]: the root context's part, signing and resuming the writes held for credentials.
//!
//! The proxy-wasm layer (`filter`) only hands Envoy's callbacks to a [`Request`] with itself as
//! the host; the unit tests drive every path with a fake host.

pub mod request;
pub mod response;
pub mod waiters;

use crate::body_budget::Body;
use crate::host::{Clock, SharedData};
use crate::host_encoding::HeaderPairs;
use crate::operation_outcome::FHIR_JSON;
use crate::outcome::{Outcome, Verdict};
use crate::plan::{Operation, Target};
use crate::resource::Version;
use crate::shared_data::ShardRead;
use crate::signing::{PayloadHasher, Signed, SigningInput, HEALTHLAKE_SERVICE};
use crate::worker::Worker;
use std::rc::Rc;
use std::time::SystemTime;

/// What a request needs from its host, besides what the credentials provider needs (a write
/// that finds expired credentials forces their refresh).
pub trait Host: Clock + SharedData + crate::credentials::provider::Host {
    /// Every request header, names and values as the bytes received.
    fn request_headers(&self) -> Option<HeaderPairs>;
    /// Bytes `start..start+len` of the buffered request body.
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Sets (or with `None` removes) a request header; false on a host error.
    fn set_request_header(&self, name: &str, value: Option<&str>) -> bool;
    /// Removes a request header named by the client's bytes; false on a host error.
    fn remove_request_header(&self, name: &[u8]) -> bool;
    /// A host property such as `connection.mtls` or `destination.address`.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// The response's status code (0 if absent or not a number).
    fn response_status(&self) -> u16;
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// A response header as text (bytes that are not UTF-8 replaced), for classification and
    /// logs.
    fn response_header_text(&self, name: &str) -> Option<String> {
        self.response_header(name)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
    fn set_response_header(&self, name: &str, value: &str);
    fn remove_response_header(&self, name: &str);
    /// Bytes `start..start+len` of the buffered response body.
    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Replaces the whole buffered response body (`old_len` bytes) with `new`.
    fn replace_response_body(&self, old_len: usize, new: &[u8]);
    /// Answers the current request locally; false if the host refused (the caller resets).
    fn send_local_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool;
    /// Resets the current request: nothing more is sent for it, in either direction.
    fn reset_request(&self);
    /// Makes `context_id` the request later calls act on; false if it is gone.
    fn set_effective_context(&self, context_id: u32) -> bool;
    /// Lets the held request (of the effective context) continue; false on a host error.
    fn resume_request(&self) -> bool;
    /// A value the access log prints as `%FILTER_STATE(wasm.<key>:PLAIN)%`.
    fn set_filter_state(&self, key: &str, value: &str);
    /// Counts one request with `outcome`, and per type when the type is known.
    fn count(&self, outcome: Outcome, resource_type: Option<&str>);
}

/// What the host does next with the request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// Response header carrying the relay's verdict.
pub const OUTCOME_HEADER: &str = "x-healthlake-outcome";

/// Filter-state keys, printed in the access log as `%FILTER_STATE(wasm.<key>:PLAIN)%`. (The
/// outcome is logged from the [`OUTCOME_HEADER`] response header: one host call less.)
pub mod state_key {
    pub const METHOD: &str = "relay_method";
    pub const PATH: &str = "relay_path";
    pub const UPSTREAM_PATH: &str = "relay_upstream_path";
    pub const RESOURCE_TYPE: &str = "relay_resource_type";
    pub const RESOURCE_ID: &str = "relay_resource_id";
    pub const UPSTREAM_STATUS: &str = "relay_upstream_status";
    pub const ERROR_CODE: &str = "relay_error_code";
}

/// A request sent to HealthLake: what the response side needs to classify and explain it.
pub struct Forwarded {
    pub target: Target,
    pub signed: Signed,
    /// The version a PUT carried, recorded by the version guard once HealthLake accepts it,
    /// and the guard's shard as read to check it.
    pub version: Option<(Version, Option<ShardRead>)>,
    /// The generation of the credentials it was signed with (0: the environment's).
    pub generation: u64,
    /// When it was signed (Unix seconds): the version guard's record time, so that recording
    /// needs no clock call of its own.
    pub signed_at: u64,
}

/// Which request headers already hold what is signed, so that rewriting them is skipped.
#[derive(Clone, Copy, Default)]
pub struct AsSigned {
    /// `:method` is the target's (a PUT or DELETE, not a POST create).
    pub method: bool,
    /// `content-type` is exactly the one signed (or absent for a DELETE).
    pub content_type: bool,
}

/// Everything needed to sign a request whose body has been checked.
pub struct SignJob {
    pub target: Target,
    pub as_signed: AsSigned,
    pub payload_sha256: String,
    pub version: Option<(Version, Option<ShardRead>)>,
}

/// A request held until credentials exist (in the credentials provider's queue); the root
/// context signs and resumes it, or answers it 503 once it has waited `first_fetch_wait_ms`.
pub struct Waiter {
    pub context_id: u32,
    pub job: SignJob,
}

/// What a request whose body is awaited will become.
pub enum Pending {
    /// `PUT`/`DELETE /{type}/{id}`.
    Write(Target),
    /// `POST /{type}`: a PUT of the body's own id.
    Create { resource_type: String },
    /// `POST` to the base: answered with an explanation once the body says which.
    BasePost,
}

pub enum Phase {
    /// Headers not seen yet.
    Start,
    /// The relay answered the request itself, or the response is concluded.
    Done,
    /// Holding the headers while the body arrives: hashed chunk by chunk, and kept for the
    /// resource checks.
    Receiving {
        pending: Pending,
        hasher: PayloadHasher,
        body: Body,
    },
    /// Held until credentials exist (see [`Waiter`]).
    AwaitingCredentials,
    /// Signed and sent to HealthLake; waiting for its answer.
    Forwarded(Box<Forwarded>),
    /// HealthLake answered an error whose body decides the outcome; reading it.
    ReadingError {
        forwarded: Box<Forwarded>,
        status: u16,
        error_type: Option<String>,
    },
    /// The verdict is known; the relay's own body replaces HealthLake's at its end.
    Replacing {
        forwarded: Box<Forwarded>,
        status: u16,
        verdict: Verdict,
    },
}

/// One request: its worker, where it stands, and what the later callbacks need.
pub struct Request {
    worker: Option<Rc<Worker>>,
    phase: Phase,
    /// Request headers that need no rewriting for the signed request.
    as_signed: AsSigned,
    /// The request's declared Content-Length (within the relay's limit).
    declared_length: Option<usize>,
    /// The resource type, once the request passed planning (for per-type stats).
    resource_type: Option<String>,
    context_id: u32,
}

impl Request {
    /// `worker` is `None` when the plugin has no configuration (every request then gets 500).
    pub fn new(worker: Option<Rc<Worker>>, context_id: u32) -> Request {
        Request {
            worker,
            phase: Phase::Start,
            as_signed: AsSigned::default(),
            declared_length: None,
            resource_type: None,
            context_id,
        }
    }

    /// The request ended (answered, or the client went away): a request held for credentials
    /// must not be resumed later.
    pub fn on_done(&mut self) {
        if let Some(worker) = &self.worker {
            if let Ok(mut provider) = worker.credentials.try_borrow_mut() {
                let id = self.context_id;
                provider.retain_waiting(|w| w.context_id != id);
            }
            if let Ok(mut resumed) = worker.resumed.try_borrow_mut() {
                resumed.remove(&self.context_id);
            }
        }
    }

    /// Counts the outcome of this request in the stats.
    fn count(&self, host: &impl Host, outcome: Outcome) {
        host.count(outcome, self.resource_type.as_deref());
    }
}

/// The `content-type` sent (and signed) with `op`: FHIR JSON with a body, none without.
pub(crate) fn signed_content_type(op: Operation) -> Option<&'static str> {
    match op {
        Operation::Put => Some(FHIR_JSON),
        Operation::Delete => None,
    }
}

/// What is signed for `target` (the request side signs it; the response side rebuilds it for the
/// troubleshooting log of an `auth-failed`).
pub fn signing_input<'a>(
    worker: &'a Worker,
    target: &'a Target,
    payload_sha256: &'a str,
    time: SystemTime,
) -> SigningInput<'a> {
    SigningInput {
        method: target.op.method(),
        host: &worker.config.healthlake_host,
        path: &target.upstream_path,
        content_type: signed_content_type(target.op),
        payload_sha256,
        region: &worker.config.region,
        service: HEALTHLAKE_SERVICE,
        time,
    }
}

#[cfg(test)]
mod tests;
