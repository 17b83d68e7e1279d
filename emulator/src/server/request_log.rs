//! The request log: one [`RequestRecord`] per data-plane request (`GET /_emulator/requests`),
//! built from what was observed of the request and how it fared.

use http::{HeaderMap, Method, Uri};
use serde::Serialize;

use super::verification::CredentialFacts;
use super::App;
use crate::faults::Fault;
use crate::sigv4;
use crate::timefmt;

/// One data-plane request as recorded for `GET /_emulator/requests`. Header values other than
/// `content-type`, `host` and `x-amz-date` are never recorded.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RequestRecord {
    pub seq: u64,
    pub request_id: String,
    pub method: String,
    pub path: String,
    /// The status answered; 0 when the connection was reset instead.
    pub status: u16,
    pub verified: bool,
    pub error: Option<String>,
    pub error_code: Option<String>,
    /// The injected fault that shaped the answer (`"503"`, `"reset"`, `"throttle-429"`,
    /// `"delay"`, `"unsupported-type"`, `"metadata-500"`, ...), or null.
    pub fault: Option<String>,
    pub access_key_id: Option<String>,
    pub signed_headers: Option<Vec<String>>,
    pub header_names: Vec<String>,
    pub content_type: Option<String>,
    pub host: Option<String>,
    pub body_size: usize,
    pub body_sha256: String,
    pub has_security_token: bool,
    pub x_amz_date: Option<String>,
    /// Where the access key id's credential set came from: `"static"` (`--credential`,
    /// `EMULATOR_CREDENTIALS`), `"sts"` (issued through the STS proxy), `"imds"` or
    /// `"container"` (issued by those endpoints); null when the key is unknown or the request
    /// named none.
    pub credential_source: Option<String>,
    /// When that set expires (RFC 3339 UTC with milliseconds); null for a static set.
    pub credential_expires_at: Option<String>,
    /// Whether that set was unexpired when the request arrived; null when the key is unknown.
    pub credential_valid: Option<bool>,
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Replaces the value of an `X-Amz-Security-Token` query parameter (a presigned URL) so it is
/// never logged or recorded.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("X-Amz-Security-Token") => {
                format!("{k}=REDACTED")
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn path_with_query(uri: &Uri) -> String {
    match uri.query() {
        Some(q) => format!("{}?{}", uri.path(), redact_query(q)),
        None => uri.path().to_string(),
    }
}

/// The fields of a request the recorder needs, before a response exists.
pub(super) struct Observed {
    request_id: String,
    method: String,
    path: String,
    header_names: Vec<String>,
    content_type: Option<String>,
    host: Option<String>,
    body_size: usize,
    body_sha256: String,
    has_security_token: bool,
    x_amz_date: Option<String>,
}

impl Observed {
    pub(super) fn new(
        request_id: &str,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Self {
        Observed {
            request_id: request_id.to_string(),
            method: method.as_str().to_string(),
            path: path_with_query(uri),
            header_names: headers
                .iter()
                .map(|(n, _)| n.as_str().to_string())
                .collect(),
            content_type: header_str(headers, "content-type"),
            host: header_str(headers, "host"),
            body_size: body.len(),
            body_sha256: sigv4::sha256_hex(body),
            has_security_token: headers.contains_key("x-amz-security-token"),
            x_amz_date: header_str(headers, "x-amz-date"),
        }
    }
}

/// How a request fared, for the request log.
pub(super) struct Verdict {
    /// The status answered; 0 for a reset.
    pub(super) status: u16,
    pub(super) verified: bool,
    pub(super) access_key_id: Option<String>,
    pub(super) signed_headers: Option<Vec<String>>,
    pub(super) error: Option<String>,
    pub(super) error_code: Option<String>,
    pub(super) fault: Option<Fault>,
    pub(super) credential: CredentialFacts,
}

impl Verdict {
    pub(super) fn new(status: u16, v: &sigv4::Verification, credential: &CredentialFacts) -> Self {
        Verdict {
            status,
            verified: v.is_verified(),
            access_key_id: v.access_key_id.clone(),
            signed_headers: v.signed_headers.clone(),
            error: None,
            error_code: None,
            fault: None,
            credential: credential.clone(),
        }
    }
}

/// Recorded as the `error` of a request answered with a reset.
pub(super) const RESET_DIAGNOSTICS: &str = "connection reset without an answer (injected fault)";

impl App {
    /// A snapshot of the request log.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    pub(super) fn record(&self, o: Observed, verdict: Verdict) {
        let mut state = self.lock();
        state.seq = state.seq.saturating_add(1);
        if let Some(fault) = &verdict.fault {
            state.faults.count(fault);
        }
        let record = RequestRecord {
            seq: state.seq,
            request_id: o.request_id,
            method: o.method,
            path: o.path,
            status: verdict.status,
            verified: verdict.verified,
            error: verdict.error,
            error_code: verdict.error_code,
            fault: verdict.fault.map(|f| f.kind()),
            access_key_id: verdict.access_key_id,
            signed_headers: verdict.signed_headers,
            header_names: o.header_names,
            content_type: o.content_type,
            host: o.host,
            body_size: o.body_size,
            body_sha256: o.body_sha256,
            has_security_token: o.has_security_token,
            x_amz_date: o.x_amz_date,
            credential_source: verdict.credential.source.map(str::to_string),
            credential_expires_at: verdict
                .credential
                .expires_at
                .map(timefmt::format_rfc3339_millis),
            credential_valid: verdict.credential.valid,
        };
        state.requests.push(record);
    }
}
