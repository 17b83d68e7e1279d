//! The HTTP side: routing, the data-plane handlers (`/datastore/{ds}/r4/{Type}/{id}`, the
//! CapabilityStatement at `/datastore/{ds}/r4/metadata`), fault injection into them, the request
//! log, the STS ledger, the credential endpoints (IMDSv2 `/latest/...`, container
//! `/v1/credentials`, `/v2/credentials/...`) and the inspection endpoints (`/_emulator/...`).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::json;

use crate::capabilities::{self, Interaction, Listing, ResourceTypes};
use crate::credentials::container::{self, Authorization};
use crate::credentials::faults::CredentialFaultSettings;
use crate::credentials::{self, imds, CredentialsStatus, EndpointRequest, IssuedBy, Issuer};
use crate::faults::metadata::GARBAGE_BODY;
use crate::faults::{
    self, Decision, Fault, FaultInjector, FaultReply, FaultSettings, MetadataFault,
};
use crate::fhir::{self, FHIR_JSON};
use crate::frontend;
use crate::persist::{SavedCredential, SavedResource, Snapshot};
use crate::sigv4::{self, Credential, Policy, Request as SignedRequest};
use crate::store::Store;
use crate::sts::faults::{StsFault, StsFaultInjector, StsFaultSettings, StsFaultStatus};
use crate::sts::{CallNotes, StsCall, StsLedger, StsStatus, UpstreamOutcome};
use crate::timefmt;

/// The SigV4 service name HealthLake signs with.
pub const SERVICE: &str = "healthlake";
/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// The content type of AWS JSON error bodies.
pub const AWS_JSON: &str = "application/x-amz-json-1.1";

/// Emulator settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub region: String,
    pub datastore_id: String,
    pub credentials: Vec<Credential>,
    pub max_skew: Duration,
    /// Status for a DELETE of an absent resource: 204 or 404.
    pub delete_absent_status: StatusCode,
    /// The resource types served (`--resource-types`): HealthLake's list or all of R4.
    pub resource_types: ResourceTypes,
    /// Print one line per request to stderr.
    pub log_requests: bool,
    /// The faults in force at start, and again after `DELETE /_emulator/faults` or
    /// `POST /_emulator/reset`.
    pub faults: FaultSettings,
    /// The instance's role on the IMDSv2 endpoint (`--imds-role`).
    pub imds_role: String,
    /// When set, every container credentials request must carry this file's content as its
    /// `Authorization` (`--container-token-file`); read for each request.
    pub container_token_file: Option<PathBuf>,
    /// When set, the STS proxy refuses an `AssumeRoleWithWebIdentity` call whose
    /// `WebIdentityToken` is not this file's content (`--web-identity-token-file`); read for
    /// each call.
    pub web_identity_token_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: "us-east-1".into(),
            datastore_id: "0123456789abcdef0123456789abcdef".into(),
            credentials: Vec::new(),
            max_skew: Duration::from_secs(300),
            delete_absent_status: StatusCode::NO_CONTENT,
            resource_types: ResourceTypes::HealthLake,
            log_requests: false,
            faults: FaultSettings::default(),
            imds_role: imds::DEFAULT_ROLE.into(),
            container_token_file: None,
            web_identity_token_file: None,
        }
    }
}

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

#[derive(Debug, Default)]
struct State {
    store: Store,
    requests: Vec<RequestRecord>,
    seq: u64,
    faults: FaultInjector,
    /// Not cleared by `POST /_emulator/reset`.
    sts: StsLedger,
    /// The faults of the STS proxy (`/_emulator/sts/faults`); cleared by `POST /_emulator/reset`.
    sts_faults: StsFaultInjector,
    /// The IMDS and container credential endpoints: their issued sets and call log are not
    /// cleared by `POST /_emulator/reset`, their faults and settings are.
    credentials: Issuer,
    /// Set once the state was saved for shutdown: nothing may change after that.
    frozen: bool,
}

/// The diagnostics of writes (and STS answers) refused after the state was saved for shutdown.
pub const SHUTTING_DOWN: &str = "the emulator is shutting down";

/// The emulator: configuration plus shared mutable state.
#[derive(Debug)]
pub struct App {
    config: Config,
    state: Mutex<State>,
    request_counter: AtomicU64,
    /// The monotonic and the wall clock read together at start: [`App::handle_at`] maps the
    /// arrival time it is given onto the monotonic clock the rate limiter runs on.
    clock_origin: (Instant, SystemTime),
}

type Resp = Response<Full<Bytes>>;

/// What the server does with a request.
#[derive(Debug)]
pub enum Answer {
    /// Send this response.
    Respond(Resp),
    /// Close the connection without answering (an injected `reset`).
    Reset,
}

impl Answer {
    /// The response, or `None` for a reset.
    pub fn into_response(self) -> Option<Resp> {
        match self {
            Answer::Respond(resp) => Some(resp),
            Answer::Reset => None,
        }
    }
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

/// The canonical request with the session token's value replaced: the 403 body goes back to the
/// caller, which may log it.
fn redact_token_line(canonical_request: &str) -> String {
    canonical_request
        .split('\n')
        .map(|line| {
            if line.starts_with("x-amz-security-token:") {
                "x-amz-security-token:<redacted>"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn path_with_query(uri: &Uri) -> String {
    match uri.query() {
        Some(q) => format!("{}?{}", uri.path(), redact_query(q)),
        None => uri.path().to_string(),
    }
}

/// Builds a response; header values that cannot be represented are skipped (they are all built
/// from validated text, so this does not happen in practice).
fn response(status: StatusCode, headers: &[(&str, String)], body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

fn outcome_response(status: StatusCode, code: &str, diagnostics: &str) -> Resp {
    response(
        status,
        &[("content-type", FHIR_JSON.to_string())],
        fhir::operation_outcome(code, diagnostics),
    )
}

/// An AWS JSON error: `{"__type", "message"}` with `x-amzn-ErrorType`.
fn aws_error_response(
    status: StatusCode,
    error_type: &str,
    message: &str,
    retry_after_seconds: Option<u32>,
) -> Resp {
    let mut headers = vec![
        ("content-type", AWS_JSON.to_string()),
        ("x-amzn-errortype", error_type.to_string()),
    ];
    if let Some(seconds) = retry_after_seconds {
        headers.push(("retry-after", seconds.to_string()));
    }
    let body = json!({ "__type": error_type, "message": message });
    response(
        status,
        &headers,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// Adds the routing headers of AWS's front end (`via`, `x-amz-apigw-id`, `x-amzn-trace-id`,
/// `x-amz-cf-id`, `x-amz-cf-pop`) to a data-plane answer.
fn add_front_end_headers(resp: &mut Resp, request_id: &str, now: SystemTime) {
    for (name, value) in frontend::headers(request_id, now) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Resp {
    response(
        status,
        &[("content-type", "application/json".to_string())],
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// What the data-plane routing made of a path.
enum Route<'a> {
    Resource {
        resource_type: &'a str,
        id: &'a str,
    },
    /// `/datastore/{ds}/r4/metadata`: the CapabilityStatement.
    Capabilities,
    UnknownDatastore(&'a str),
    NoMatch,
}

fn route<'a>(path: &'a str, datastore_id: &str) -> Route<'a> {
    let Some(rest) = path.strip_prefix("/datastore/") else {
        return Route::NoMatch;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let ds = segments.first().copied().unwrap_or_default();
    if ds.is_empty() {
        return Route::NoMatch;
    }
    if ds != datastore_id {
        return Route::UnknownDatastore(ds);
    }
    match segments.as_slice() {
        [_, "r4", "metadata"] => Route::Capabilities,
        [_, "r4", t, id] if fhir::is_valid_resource_type(t) && fhir::is_valid_id(id) => {
            Route::Resource {
                resource_type: t,
                id,
            }
        }
        _ => Route::NoMatch,
    }
}

/// The fields of a request the recorder needs, before a response exists.
struct Observed {
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
    fn new(request_id: &str, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Self {
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

/// What the request log says about the credential set a request named.
#[derive(Clone, Debug, Default)]
struct CredentialFacts {
    source: Option<&'static str>,
    expires_at: Option<SystemTime>,
    valid: Option<bool>,
}

/// The credential sets the verifier accepts, and where each came from (`"static"`, `"sts"`,
/// `"imds"`, `"container"`), in the same order.
struct Accepted<'a> {
    credentials: Cow<'a, [Credential]>,
    sources: Vec<&'static str>,
}

impl CredentialFacts {
    /// The facts about `access_key_id` among the accepted sets (the verifier takes the first set
    /// with the key, so does this).
    fn of(accepted: &Accepted<'_>, access_key_id: Option<&str>, now: SystemTime) -> Self {
        let Some(akid) = access_key_id else {
            return CredentialFacts::default();
        };
        match accepted
            .credentials
            .iter()
            .zip(&accepted.sources)
            .find(|(c, _)| c.access_key_id == akid)
        {
            Some((c, source)) => CredentialFacts {
                source: Some(source),
                expires_at: c.expires_at,
                valid: Some(!c.is_expired_at(now)),
            },
            None => CredentialFacts::default(),
        }
    }
}

/// How a request fared, for the request log.
struct Verdict {
    /// The status answered; 0 for a reset.
    status: u16,
    verified: bool,
    access_key_id: Option<String>,
    signed_headers: Option<Vec<String>>,
    error: Option<String>,
    error_code: Option<String>,
    fault: Option<Fault>,
    credential: CredentialFacts,
}

impl Verdict {
    fn new(status: u16, v: &sigv4::Verification, credential: &CredentialFacts) -> Self {
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

/// What the normal handling of a verified request produced.
struct Handled {
    resp: Resp,
    /// For a failure, the diagnostics to record.
    problem: Option<String>,
    /// `Fault::UnsupportedType` when that setting shaped the answer.
    fault: Option<Fault>,
}

impl Handled {
    fn plain((resp, problem): (Resp, Option<String>)) -> Self {
        Handled {
            resp,
            problem,
            fault: None,
        }
    }
}

/// Recorded as the `error` of a request answered with a reset.
const RESET_DIAGNOSTICS: &str = "connection reset without an answer (injected fault)";

/// Waits, without blocking the runtime; no timer for a zero delay.
async fn wait(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn is_inspection(path: &str) -> bool {
    path == "/_emulator" || path.starts_with("/_emulator/")
}

/// The credential endpoints on the main listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    /// `/latest/...`
    Imds,
    /// `/v1/credentials`, `/v2/credentials...`
    Container,
}

/// Which part of the emulator a path belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Surface {
    /// `/_emulator/...`: unsigned, not recorded.
    Inspection,
    /// The IMDS and container endpoints: unsigned, recorded in the credentials call log.
    Credentials(Endpoint),
    /// Everything else: verified, recorded in the request log.
    DataPlane,
}

impl Surface {
    fn of(path: &str) -> Self {
        if is_inspection(path) {
            Surface::Inspection
        } else if imds::is_imds_path(path) {
            Surface::Credentials(Endpoint::Imds)
        } else if container::is_container_path(path) {
            Surface::Credentials(Endpoint::Container)
        } else {
            Surface::DataPlane
        }
    }
}

impl App {
    pub fn new(config: Config) -> Self {
        let state = State {
            faults: FaultInjector::new(config.faults.clone()),
            ..State::default()
        };
        App {
            config,
            state: Mutex::new(state),
            request_counter: AtomicU64::new(0),
            clock_origin: (Instant::now(), SystemTime::now()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written in a way that
        // matters for an emulator, so recover from poisoning instead of failing every request.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        // A random UUID, with the low bits replaced by a counter so ids are unique even if the
        // random source repeats.
        let mut bytes = *uuid::Uuid::new_v4().as_bytes();
        if let Some(tail) = bytes.get_mut(10..16) {
            tail.copy_from_slice(n.to_be_bytes().get(2..8).unwrap_or(&[0; 6]));
        }
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
    }

    /// A snapshot of the request log.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// The exact stored bytes of a resource.
    pub fn stored(&self, resource_type: &str, id: &str) -> Option<Bytes> {
        self.lock()
            .store
            .get(resource_type, id)
            .map(|r| r.body.clone())
    }

    /// The fault settings in force (`next` holding what is left) and the counters.
    pub fn faults(&self) -> faults::FaultStatus {
        self.lock().faults.status()
    }

    /// Records a call through the STS proxy; a successful credential-issuing answer makes its
    /// credential set accepted until its expiration (see [`StsLedger::record`]).
    pub fn record_sts_call(
        &self,
        action: Option<&str>,
        outcome: UpstreamOutcome<'_>,
        now: SystemTime,
    ) -> StsCall {
        self.record_sts_call_with_fault(action, outcome, now, None)
    }

    /// [`App::record_sts_call`] for a call an STS fault was injected into (noted in the call
    /// log's `fault`).
    pub fn record_sts_call_with_fault(
        &self,
        action: Option<&str>,
        outcome: UpstreamOutcome<'_>,
        now: SystemTime,
        fault: Option<&StsFault>,
    ) -> StsCall {
        let notes = CallNotes {
            fault,
            ..CallNotes::default()
        };
        self.record_sts_call_noted(action, outcome, now, notes)
    }

    /// [`App::record_sts_call`] with what the proxy noted about the call (the STS fault
    /// injected, the SHA-256 prefix of a web identity token).
    pub fn record_sts_call_noted(
        &self,
        action: Option<&str>,
        outcome: UpstreamOutcome<'_>,
        now: SystemTime,
        notes: CallNotes<'_>,
    ) -> StsCall {
        let mut state = self.lock();
        if state.frozen {
            // The state was saved: a credential set accepted now would be forgotten by the next
            // start, so the caller gets no set at all (the proxy answers 503).
            let refused = UpstreamOutcome::Failed {
                status: 503,
                error: SHUTTING_DOWN,
            };
            return state.sts.record_noted(action, refused, now, notes);
        }
        state.sts.record_noted(action, outcome, now, notes)
    }

    /// Takes the next STS fault for an `AssumeRole` call on the STS listener (counting it), if
    /// one is queued.
    pub fn take_sts_fault(&self) -> Option<StsFault> {
        self.lock().sts_faults.take()
    }

    /// The STS faults not consumed yet and the counters (`GET /_emulator/sts/faults`).
    pub fn sts_faults(&self) -> StsFaultStatus {
        self.lock().sts_faults.status()
    }

    /// Everything a state file keeps: resources (exact bytes, versions, every version
    /// counter) and the temporary credential sets (issued through the STS proxy, then by the
    /// IMDS and container endpoints).
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        Self::snapshot_of(&state)
    }

    /// Takes the snapshot and, in the same critical section, stops every later change: writes
    /// are answered `503` and STS answers are not accepted, so what was saved is what any
    /// client was told was stored. Used at shutdown.
    pub fn freeze_and_snapshot(&self) -> Snapshot {
        let mut state = self.lock();
        state.frozen = true;
        Self::snapshot_of(&state)
    }

    fn snapshot_of(state: &State) -> Snapshot {
        let resources = state
            .store
            .versions()
            .map(|((t, id), counter)| SavedResource {
                resource_type: t.clone(),
                id: id.clone(),
                version_counter: counter,
                live: state.store.get(t, id).cloned(),
            })
            .collect();
        let sts = state
            .sts
            .issued_sets()
            .map(|(c, expiration)| (c, expiration, IssuedBy::Sts));
        let credentials = sts
            .chain(state.credentials.issued_sets())
            .map(|(c, expiration, source)| SavedCredential {
                credential: c.clone(),
                expiration: expiration.to_string(),
                source,
            })
            .collect();
        Snapshot {
            resources,
            credentials,
        }
    }

    /// Puts back what a state file kept (at start, before serving). Returns how many live
    /// resources and credential sets were restored.
    pub fn restore(&self, snapshot: Snapshot) -> (usize, usize) {
        let mut state = self.lock();
        let mut live = 0;
        for r in snapshot.resources {
            live += usize::from(r.live.is_some());
            state
                .store
                .restore(&r.resource_type, &r.id, r.version_counter, r.live);
        }
        let mut credentials = 0;
        for c in snapshot.credentials {
            let restored = match c.source {
                IssuedBy::Sts => state.sts.restore_issued(c.credential, c.expiration),
                IssuedBy::Imds | IssuedBy::Container => {
                    state
                        .credentials
                        .restore_issued(c.credential, c.expiration, c.source)
                }
            };
            credentials += usize::from(restored);
        }
        (live, credentials)
    }

    /// The STS call log and the issued credential sets, `expired` as of `now`.
    pub fn sts(&self, now: SystemTime) -> StsStatus {
        self.lock().sts.status(now)
    }

    /// Makes every STS-issued credential set that has not expired yet expire at `now`; returns
    /// how many.
    pub fn expire_sts_credentials(&self, now: SystemTime) -> usize {
        self.lock().sts.expire_all(now)
    }

    /// The credential endpoints' call log, issued sets (`expired` as of `now`) and settings
    /// (`GET /_emulator/credentials`).
    pub fn credentials(&self, now: SystemTime) -> CredentialsStatus {
        self.lock().credentials.status(now)
    }

    /// Makes every set the IMDS and container endpoints issued that has not expired yet expire
    /// at `now`; returns how many.
    pub fn expire_issued_credentials(&self, now: SystemTime) -> usize {
        self.lock().credentials.expire_all(now)
    }

    /// Answers a request on the IMDS or container endpoint and records it in the credentials
    /// call log (not in the data-plane request log). The container token file is read before
    /// the state is locked.
    fn credential_endpoint(
        &self,
        endpoint: Endpoint,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Resp {
        let req = EndpointRequest {
            method,
            path: uri.path(),
            headers,
            now,
        };
        let handled = match endpoint {
            Endpoint::Container => {
                let authorization =
                    Authorization::read(self.config.container_token_file.as_deref());
                let mut state = self.lock();
                let frozen = state.frozen;
                container::handle(&mut state.credentials, &req, &authorization, frozen)
            }
            Endpoint::Imds => {
                let mut state = self.lock();
                let frozen = state.frozen;
                imds::handle(&mut state.credentials, &req, &self.config.imds_role, frozen)
            }
        };
        if self.config.log_requests {
            eprintln!(
                "healthlake-emulator: creds {method} {} -> {} {}",
                uri.path(),
                handled.call.status,
                handled.summary
            );
        }
        handled.resp
    }

    /// The credential sets the verifier accepts: the static ones, then those STS issued, then
    /// those the IMDS and container endpoints issued (the verifier takes the first set with a
    /// key id, so a static set wins a clash).
    fn accepted_credentials(&self) -> Accepted<'_> {
        let state = self.lock();
        let mut sources = vec!["static"; self.config.credentials.len()];
        if state.sts.is_empty() && state.credentials.is_empty() {
            return Accepted {
                credentials: Cow::Borrowed(self.config.credentials.as_slice()),
                sources,
            };
        }
        let mut all = self.config.credentials.clone();
        for c in state.sts.credentials() {
            all.push(c.clone());
            sources.push(IssuedBy::Sts.as_str());
        }
        for (c, source) in state.credentials.credentials() {
            all.push(c.clone());
            sources.push(source.as_str());
        }
        Accepted {
            credentials: Cow::Owned(all),
            sources,
        }
    }

    /// A `500` OperationOutcome for a failure of the emulator itself.
    pub fn internal_error(diagnostics: &str) -> Resp {
        outcome_response(StatusCode::INTERNAL_SERVER_ERROR, "exception", diagnostics)
    }

    /// Handles a fully received request at the current time.
    pub async fn handle(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Answer {
        self.handle_with_clocks(
            method,
            uri,
            headers,
            body,
            SystemTime::now(),
            Instant::now(),
        )
        .await
    }

    /// Handles a fully received request as if the clock read `now` when it arrived: the
    /// signature check, the `lastUpdated` of a write and the rate limiter
    /// (`throttle_above_rps`) all see that time, so a test decides how far apart requests are.
    /// Injected delays are waited for (with `tokio::time::sleep`); the normal handling after
    /// them sees the clock moved on by the delay.
    pub async fn handle_at(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
        now: SystemTime,
    ) -> Answer {
        let instant = self.instant_of(now);
        self.handle_with_clocks(method, uri, headers, body, now, instant)
            .await
    }

    /// `now` on the monotonic clock, as measured from when the app was created.
    fn instant_of(&self, now: SystemTime) -> Instant {
        let (origin, wall_origin) = self.clock_origin;
        match now.duration_since(wall_origin) {
            Ok(after) => origin.checked_add(after).unwrap_or(origin),
            Err(before) => origin.checked_sub(before.duration()).unwrap_or(origin),
        }
    }

    async fn handle_with_clocks(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
        now: SystemTime,
        instant: Instant,
    ) -> Answer {
        let surface = Surface::of(uri.path());
        if let Surface::Credentials(endpoint) = surface {
            // Neither HealthLake's request id nor its front end's headers: these answers come
            // from the instance or the container agent.
            return Answer::Respond(self.credential_endpoint(endpoint, method, uri, headers, now));
        }
        let request_id = self.next_request_id();
        let inspection = surface == Surface::Inspection;
        let answer = if inspection {
            let resp = self.inspect(method, uri.path(), &body, now);
            self.log_line(method, uri, resp.status().as_str(), "inspection");
            Answer::Respond(resp)
        } else {
            self.data_plane(method, uri, headers, body, now, instant, &request_id)
                .await
        };
        match answer {
            Answer::Respond(mut resp) => {
                if !inspection {
                    add_front_end_headers(&mut resp, &request_id, now);
                }
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    resp.headers_mut().insert("x-amzn-requestid", v);
                }
                Answer::Respond(resp)
            }
            Answer::Reset => Answer::Reset,
        }
    }

    fn log_line(&self, method: &Method, uri: &Uri, status: &str, what: &str) {
        if self.config.log_requests {
            let query = if uri.query().is_some() { "?…" } else { "" };
            eprintln!(
                "healthlake-emulator: {method} {}{query} -> {status} {what}",
                uri.path(),
            );
        }
    }

    fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> (sigv4::Verification, CredentialFacts) {
        let header_list: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let signed = SignedRequest {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or_default(),
            headers: &header_list,
            body,
        };
        let accepted = self.accepted_credentials();
        let policy = Policy {
            region: &self.config.region,
            service: SERVICE,
            credentials: &accepted.credentials,
            now,
            max_skew: self.config.max_skew,
            normalize_path: true,
        };
        let verification = sigv4::verify(&signed, &policy);
        let facts = CredentialFacts::of(&accepted, verification.access_key_id.as_deref(), now);
        (verification, facts)
    }

    #[allow(clippy::too_many_arguments)]
    async fn data_plane(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
        now: SystemTime,
        instant: Instant,
        request_id: &str,
    ) -> Answer {
        let observed = Observed::new(request_id, method, uri, headers, &body);
        let (verification, credential) = self.verify(method, uri, headers, &body, now);
        // The CapabilityStatement meets only the `metadata` fault: no `next` entry, rate, rate
        // limit or latency.
        let capabilities = matches!(
            route(uri.path(), &self.config.datastore_id),
            Route::Capabilities
        );

        if let Some(e) = verification.error() {
            let resp = if e.reason == sigv4::Reason::ExpiredToken {
                // As AWS answers it: nothing to debug in the signature.
                aws_error_response(
                    StatusCode::FORBIDDEN,
                    e.reason.error_type(),
                    &e.message,
                    None,
                )
            } else {
                let mut body = serde_json::Map::new();
                body.insert("__type".into(), json!(e.reason.error_type()));
                body.insert("message".into(), json!(e.message));
                if let Some(c) = &verification.canonical_request {
                    body.insert("canonicalRequest".into(), json!(redact_token_line(c)));
                }
                if let Some(s) = &verification.string_to_sign {
                    body.insert("stringToSign".into(), json!(s));
                }
                response(
                    StatusCode::FORBIDDEN,
                    &[
                        ("content-type", AWS_JSON.to_string()),
                        ("x-amzn-errortype", e.reason.error_type().to_string()),
                    ],
                    serde_json::to_vec(&body).unwrap_or_default(),
                )
            };
            // A rejected request consumes no fault, but `latency_ms` applies to every answer
            // (but the CapabilityStatement's).
            if !capabilities {
                let latency = self.lock().faults.latency();
                wait(latency).await;
            }
            let reason = e.to_string();
            self.log_line(
                method,
                uri,
                resp.status().as_str(),
                &format!("rejected ({}): {reason}", e.reason.code()),
            );
            self.record(
                observed,
                Verdict {
                    error: Some(reason),
                    error_code: Some(e.reason.code().to_string()),
                    ..Verdict::new(resp.status().as_u16(), &verification, &credential)
                },
            );
            return Answer::Respond(resp);
        }

        let decision = if capabilities {
            Decision {
                fault: None,
                delay: Duration::ZERO,
            }
        } else {
            self.lock().faults.decide(instant)
        };
        wait(decision.delay).await;
        let now = now.checked_add(decision.delay).unwrap_or(now);
        let verified = format!(
            "verified (access key {})",
            verification.access_key_id.as_deref().unwrap_or("-")
        );

        let handled = match decision.fault.map(|f| (f, f.reply())) {
            Some((fault, FaultReply::Reset)) => {
                self.log_line(
                    method,
                    uri,
                    "(no answer)",
                    &format!(
                        "{verified}, injected fault {}: connection reset",
                        fault.kind()
                    ),
                );
                self.record(
                    observed,
                    Verdict {
                        error: Some(RESET_DIAGNOSTICS.to_string()),
                        fault: Some(fault),
                        ..Verdict::new(0, &verification, &credential)
                    },
                );
                return Answer::Reset;
            }
            Some((
                fault,
                FaultReply::Outcome {
                    status,
                    code,
                    diagnostics,
                },
            )) => Handled {
                resp: outcome_response(status, code, &diagnostics),
                problem: Some(diagnostics),
                fault: Some(fault),
            },
            Some((
                fault,
                FaultReply::AwsError {
                    status,
                    error_type,
                    message,
                    retry_after_seconds,
                },
            )) => Handled {
                resp: aws_error_response(status, error_type, message, retry_after_seconds),
                problem: Some(format!("{error_type}: {message}")),
                fault: Some(fault),
            },
            Some((
                fault,
                FaultReply::Raw {
                    status,
                    content_type,
                    body,
                    diagnostics,
                },
            )) => {
                let headers: Vec<(&str, String)> = content_type
                    .map(|t| ("content-type", t.to_string()))
                    .into_iter()
                    .collect();
                Handled {
                    resp: response(status, &headers, body),
                    problem: Some(diagnostics),
                    fault: Some(fault),
                }
            }
            Some((_, FaultReply::Proceed)) | None => {
                let mut handled = self.dispatch(method, uri.path(), headers, &body, now);
                // A delay is recorded unless a fault of the normal handling shaped the answer.
                handled.fault = handled.fault.or(decision.fault);
                handled
            }
        };

        let what = match &handled.fault {
            Some(fault) => format!("{verified}, injected fault {}", fault.kind()),
            None => verified,
        };
        self.log_line(method, uri, handled.resp.status().as_str(), &what);
        self.record(
            observed,
            Verdict {
                error: handled.problem,
                fault: handled.fault,
                ..Verdict::new(handled.resp.status().as_u16(), &verification, &credential)
            },
        );
        Answer::Respond(handled.resp)
    }

    fn record(&self, o: Observed, verdict: Verdict) {
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

    /// Routes a verified data-plane request.
    fn dispatch(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
        now: SystemTime,
    ) -> Handled {
        let fail = |status: StatusCode, code: &str, msg: String| {
            Handled::plain((outcome_response(status, code, &msg), Some(msg)))
        };
        let (resource_type, id) = match route(path, &self.config.datastore_id) {
            Route::Resource { resource_type, id } => (resource_type, id),
            Route::Capabilities => return self.capabilities(method, path, headers, now),
            Route::UnknownDatastore(ds) => {
                return fail(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!(
                        "Datastore {ds} not found (this emulator serves datastore {})",
                        self.config.datastore_id
                    ),
                )
            }
            Route::NoMatch => {
                return fail(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!(
                        "no such endpoint: {path} (expected /datastore/{}/r4/{{Type}}/{{id}})",
                        self.config.datastore_id
                    ),
                )
            }
        };
        let interaction = match *method {
            Method::PUT => Some(Interaction::Update),
            Method::GET => Some(Interaction::Read),
            Method::DELETE => Some(Interaction::Delete),
            _ => None,
        };
        if let Some(interaction) = interaction {
            // The fault setting first: a type it lists is recorded as `unsupported-type` even
            // when the mode would refuse it too.
            if self.lock().faults.is_unsupported(resource_type) {
                let diagnostics = faults::unsupported_type_diagnostics(resource_type);
                return Handled {
                    resp: outcome_response(StatusCode::BAD_REQUEST, "not-supported", &diagnostics),
                    problem: Some(diagnostics),
                    fault: Some(Fault::UnsupportedType),
                };
            }
            if let Some(diagnostics) = self
                .config
                .resource_types
                .refusal(resource_type, interaction)
            {
                return fail(StatusCode::BAD_REQUEST, "not-supported", diagnostics);
            }
        }
        Handled::plain(match *method {
            Method::PUT => self.put(resource_type, id, body, now),
            Method::GET => self.get(resource_type, id),
            Method::DELETE => self.delete(resource_type, id),
            _ => {
                let msg = format!("method {method} is not supported on {resource_type}/{id}; use GET, PUT or DELETE");
                let mut resp =
                    outcome_response(StatusCode::METHOD_NOT_ALLOWED, "not-supported", &msg);
                resp.headers_mut()
                    .insert("allow", HeaderValue::from_static("GET, PUT, DELETE"));
                (resp, Some(msg))
            }
        })
    }

    /// `GET /datastore/{ds}/r4/metadata`: the CapabilityStatement of the types served now (the
    /// mode less `unsupported_types`), unless the `metadata` fault shapes the answer.
    fn capabilities(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Handled {
        if *method != Method::GET {
            let msg = format!("method {method} is not supported on {path}; use GET");
            let mut resp = outcome_response(StatusCode::METHOD_NOT_ALLOWED, "not-supported", &msg);
            resp.headers_mut()
                .insert("allow", HeaderValue::from_static("GET"));
            return Handled::plain((resp, Some(msg)));
        }
        let (form, removed) = {
            let state = self.lock();
            (
                state.faults.metadata(),
                state.faults.unsupported_types().to_vec(),
            )
        };
        let listing = match form {
            None => Listing::Full,
            Some(MetadataFault::Empty) => Listing::NoResources,
            Some(MetadataFault::NoInteractions) => Listing::NoInteractions,
            Some(MetadataFault::ServerError) => {
                let msg = "Internal Server Error (fault injected by the HealthLake emulator)";
                return Handled {
                    resp: outcome_response(StatusCode::INTERNAL_SERVER_ERROR, "exception", msg),
                    problem: Some(msg.to_string()),
                    fault: form.map(Fault::Metadata),
                };
            }
            Some(MetadataFault::Garbage) => {
                return Handled {
                    resp: response(
                        StatusCode::OK,
                        &[("content-type", FHIR_JSON.to_string())],
                        GARBAGE_BODY,
                    ),
                    problem: Some(
                        "200 with a body that is not JSON (fault injected by the HealthLake \
                         emulator)"
                            .to_string(),
                    ),
                    fault: form.map(Fault::Metadata),
                };
            }
        };
        let base_url = self.base_url(headers);
        let statement = capabilities::capability_statement(
            self.config.resource_types,
            &removed,
            base_url.as_deref(),
            now,
            listing,
        );
        Handled {
            resp: response(
                StatusCode::OK,
                &[("content-type", FHIR_JSON.to_string())],
                serde_json::to_vec(&statement).unwrap_or_default(),
            ),
            problem: None,
            fault: form.map(Fault::Metadata),
        }
    }

    /// `http://{Host}/datastore/{ds}/r4/`: where the request says it was sent (the emulator
    /// serves plain HTTP), when its `Host` is a valid authority.
    fn base_url(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers.get("host")?.to_str().ok()?;
        let authority = host.parse::<http::uri::Authority>().ok()?;
        if authority.as_str().contains('@') {
            return None;
        }
        Some(format!(
            "http://{authority}/datastore/{}/r4/",
            self.config.datastore_id
        ))
    }

    fn resource_headers(
        &self,
        resource_type: &str,
        id: &str,
        version: u64,
        at: SystemTime,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("content-type", FHIR_JSON.to_string()),
            ("etag", format!("W/\"{version}\"")),
            (
                "location",
                format!(
                    "/datastore/{}/r4/{resource_type}/{id}/_history/{version}",
                    self.config.datastore_id
                ),
            ),
            ("last-modified", timefmt::format_http_date(at)),
        ]
    }

    fn put(
        &self,
        resource_type: &str,
        id: &str,
        body: &Bytes,
        now: SystemTime,
    ) -> (Resp, Option<String>) {
        let resource = match fhir::validate_put(body, resource_type, id) {
            Ok(r) => r,
            Err(rej) => {
                return (
                    outcome_response(StatusCode::BAD_REQUEST, rej.code, &rej.diagnostics),
                    Some(rej.diagnostics),
                )
            }
        };
        let outcome = {
            let mut state = self.lock();
            if state.frozen {
                return (
                    outcome_response(StatusCode::SERVICE_UNAVAILABLE, "transient", SHUTTING_DOWN),
                    Some(SHUTTING_DOWN.to_string()),
                );
            }
            state.store.put(resource_type, id, body.clone(), now)
        };
        let echoed = fhir::with_meta(
            resource,
            outcome.version,
            &timefmt::format_rfc3339_millis(now),
        );
        let status = if outcome.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let headers = self.resource_headers(resource_type, id, outcome.version, now);
        (response(status, &headers, echoed), None)
    }

    fn get(&self, resource_type: &str, id: &str) -> (Resp, Option<String>) {
        let found = self
            .lock()
            .store
            .get(resource_type, id)
            .map(|r| (r.body.clone(), r.version, r.last_updated));
        match found {
            Some((body, version, at)) => {
                let headers = self.resource_headers(resource_type, id, version, at);
                (response(StatusCode::OK, &headers, body), None)
            }
            None => {
                let msg = format!("Resource {resource_type}/{id} is not known");
                (
                    outcome_response(StatusCode::NOT_FOUND, "not-found", &msg),
                    Some(msg),
                )
            }
        }
    }

    fn delete(&self, resource_type: &str, id: &str) -> (Resp, Option<String>) {
        let deleted = {
            let mut state = self.lock();
            if state.frozen {
                return (
                    outcome_response(StatusCode::SERVICE_UNAVAILABLE, "transient", SHUTTING_DOWN),
                    Some(SHUTTING_DOWN.to_string()),
                );
            }
            state.store.delete(resource_type, id)
        };
        if deleted {
            return (response(StatusCode::NO_CONTENT, &[], Bytes::new()), None);
        }
        if self.config.delete_absent_status == StatusCode::NOT_FOUND {
            let msg = format!("Resource {resource_type}/{id} is not known");
            (
                outcome_response(StatusCode::NOT_FOUND, "not-found", &msg),
                Some(msg),
            )
        } else {
            (
                response(self.config.delete_absent_status, &[], Bytes::new()),
                None,
            )
        }
    }

    /// The unsigned `/_emulator/...` endpoints.
    fn inspect(&self, method: &Method, path: &str, body: &Bytes, now: SystemTime) -> Resp {
        let text = |status: StatusCode, body: &'static str| {
            response(
                status,
                &[("content-type", "text/plain; charset=utf-8".to_string())],
                body,
            )
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let allowed: Vec<Method> = match segments.as_slice() {
            ["_emulator", "health"]
            | ["_emulator", "resources"]
            | ["_emulator", "resources", _, _]
            | ["_emulator", "requests"]
            | ["_emulator", "capabilities"]
            | ["_emulator", "sts"]
            | ["_emulator", "credentials"] => vec![Method::GET],
            ["_emulator", "reset"]
            | ["_emulator", "sts", "expire"]
            | ["_emulator", "credentials", "expire"] => vec![Method::POST],
            ["_emulator", "credentials", "settings"] => vec![Method::GET, Method::PUT],
            ["_emulator", "faults"]
            | ["_emulator", "sts", "faults"]
            | ["_emulator", "credentials", "faults"] => {
                vec![Method::GET, Method::PUT, Method::DELETE]
            }
            _ => {
                return outcome_response(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    &format!("no such emulator endpoint: {path}"),
                )
            }
        };
        if !allowed.contains(method) {
            let allowed: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            let allowed = allowed.join(", ");
            let mut resp = outcome_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "not-supported",
                &format!("{path} only supports {allowed}"),
            );
            if let Ok(v) = HeaderValue::from_str(&allowed) {
                resp.headers_mut().insert("allow", v);
            }
            return resp;
        }
        match (segments.as_slice(), method) {
            (["_emulator", "health"], _) => text(StatusCode::OK, "ok"),
            (["_emulator", "capabilities"], _) => {
                // What GET metadata would say now without a metadata fault: the tests' truth.
                let removed = self.lock().faults.unsupported_types().to_vec();
                let statement = capabilities::capability_statement(
                    self.config.resource_types,
                    &removed,
                    None,
                    now,
                    capabilities::Listing::Full,
                );
                json_response(StatusCode::OK, &statement)
            }
            (["_emulator", "reset"], _) => {
                // The STS ledger is kept: issued credentials stay valid until they expire, as
                // they would at AWS, and a relay caching them goes on using them. So are the
                // sets the credential endpoints issued, their call log and the IMDS sessions;
                // their faults and settings (lifetime, down) go back to the defaults.
                let mut state = self.lock();
                state.store.clear();
                state.requests.clear();
                state.seq = 0;
                state.faults.reset(self.config.faults.clone());
                state.sts_faults.reset();
                state.credentials.reset();
                text(StatusCode::OK, "ok")
            }
            (["_emulator", "credentials"], _) => {
                json_response(StatusCode::OK, &self.credentials(now))
            }
            (["_emulator", "credentials", "expire"], _) => json_response(
                StatusCode::OK,
                &json!({ "expired": self.expire_issued_credentials(now) }),
            ),
            (["_emulator", "credentials", "settings"], &Method::PUT) => {
                match credentials::Settings::from_json(body) {
                    Ok(settings) => {
                        let mut state = self.lock();
                        state.credentials.replace_settings(settings);
                        json_response(StatusCode::OK, &state.credentials.settings())
                    }
                    Err(e) => outcome_response(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        &format!("invalid credentials settings: {e}"),
                    ),
                }
            }
            (["_emulator", "credentials", "settings"], _) => {
                json_response(StatusCode::OK, &self.lock().credentials.settings())
            }
            (["_emulator", "credentials", "faults"], &Method::PUT) => {
                match CredentialFaultSettings::from_json(body) {
                    Ok(settings) => {
                        let mut state = self.lock();
                        state.credentials.replace_faults(settings);
                        json_response(StatusCode::OK, &state.credentials.faults())
                    }
                    Err(e) => outcome_response(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        &format!("invalid credentials fault settings: {e}"),
                    ),
                }
            }
            (["_emulator", "credentials", "faults"], &Method::DELETE) => {
                let mut state = self.lock();
                state.credentials.reset_faults();
                json_response(StatusCode::OK, &state.credentials.faults())
            }
            (["_emulator", "credentials", "faults"], _) => {
                json_response(StatusCode::OK, &self.lock().credentials.faults())
            }
            (["_emulator", "sts"], _) => json_response(StatusCode::OK, &self.sts(now)),
            (["_emulator", "sts", "expire"], _) => json_response(
                StatusCode::OK,
                &json!({ "expired": self.expire_sts_credentials(now) }),
            ),
            (["_emulator", "faults"], &Method::PUT) => match FaultSettings::from_json(body) {
                Ok(settings) => {
                    let mut state = self.lock();
                    state.faults.replace(settings);
                    json_response(StatusCode::OK, &state.faults.status())
                }
                Err(e) => outcome_response(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    &format!("invalid fault settings: {e}"),
                ),
            },
            (["_emulator", "faults"], &Method::DELETE) => {
                let mut state = self.lock();
                state.faults.reset(self.config.faults.clone());
                json_response(StatusCode::OK, &state.faults.status())
            }
            (["_emulator", "faults"], _) => {
                json_response(StatusCode::OK, &self.lock().faults.status())
            }
            (["_emulator", "sts", "faults"], &Method::PUT) => {
                match StsFaultSettings::from_json(body) {
                    Ok(settings) => {
                        let mut state = self.lock();
                        state.sts_faults.replace(settings);
                        json_response(StatusCode::OK, &state.sts_faults.status())
                    }
                    Err(e) => outcome_response(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        &format!("invalid STS fault settings: {e}"),
                    ),
                }
            }
            (["_emulator", "sts", "faults"], &Method::DELETE) => {
                let mut state = self.lock();
                state.sts_faults.reset();
                json_response(StatusCode::OK, &state.sts_faults.status())
            }
            (["_emulator", "sts", "faults"], _) => {
                json_response(StatusCode::OK, &self.sts_faults())
            }
            (["_emulator", "requests"], _) => json_response(StatusCode::OK, &self.lock().requests),
            (["_emulator", "resources"], _) => {
                let state = self.lock();
                let list: Vec<serde_json::Value> = state
                    .store
                    .iter()
                    .map(|((t, id), r)| {
                        json!({
                            "resourceType": t,
                            "id": id,
                            "versionId": r.version.to_string(),
                            "size": r.body.len(),
                            "sha256": sigv4::sha256_hex(&r.body),
                        })
                    })
                    .collect();
                json_response(StatusCode::OK, &list)
            }
            (["_emulator", "resources", t, id], _) => {
                let found = self.lock().store.get(t, id).map(|r| r.body.clone());
                match found {
                    Some(body) => response(
                        StatusCode::OK,
                        &[("content-type", FHIR_JSON.to_string())],
                        body,
                    ),
                    None => outcome_response(
                        StatusCode::NOT_FOUND,
                        "not-found",
                        &format!("Resource {t}/{id} is not stored"),
                    ),
                }
            }
            _ => outcome_response(
                StatusCode::NOT_FOUND,
                "not-found",
                &format!("no such emulator endpoint: {path}"),
            ),
        }
    }

    /// Reads a hyper request's body (bounded) and handles it.
    pub async fn handle_hyper(&self, req: hyper::Request<Incoming>) -> Answer {
        let (parts, body) = req.into_parts();
        match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => {
                self.handle(
                    &parts.method,
                    &parts.uri,
                    &parts.headers,
                    collected.to_bytes(),
                )
                .await
            }
            Err(e) => {
                let too_large = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                let (status, code, msg) = if too_large {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too-costly",
                        format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        format!("could not read the request body: {e}"),
                    )
                };
                self.log_line(&parts.method, &parts.uri, status.as_str(), &msg);
                let surface = Surface::of(parts.uri.path());
                if let Surface::Credentials(_) = surface {
                    // Not a data-plane request: neither recorded there nor dressed as one.
                    return Answer::Respond(response(
                        status,
                        &[("content-type", "text/plain".to_string())],
                        format!("{msg}\n"),
                    ));
                }
                let request_id = self.next_request_id();
                let mut resp = outcome_response(status, code, &msg);
                let data_plane = surface == Surface::DataPlane;
                if data_plane {
                    add_front_end_headers(&mut resp, &request_id, SystemTime::now());
                }
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    resp.headers_mut().insert("x-amzn-requestid", v);
                }
                if data_plane {
                    let observed =
                        Observed::new(&request_id, &parts.method, &parts.uri, &parts.headers, &[]);
                    self.record(
                        observed,
                        Verdict {
                            status: status.as_u16(),
                            verified: false,
                            access_key_id: None,
                            signed_headers: None,
                            error: Some(msg),
                            error_code: Some("body_unreadable".to_string()),
                            fault: None,
                            credential: CredentialFacts::default(),
                        },
                    );
                }
                Answer::Respond(resp)
            }
        }
    }
}
