//! The HTTP side of the emulator, one module per part:
//!
//! - this module: the settings ([`Config`]), the shared state, [`App`] and its entry points (the
//!   hyper request, [`App::handle`], [`App::handle_at`]), and the dispatch of a request to the
//!   part its path belongs to;
//! - `routing`: which part a path belongs to, and the data-plane routes;
//! - `data_plane`: a signed HealthLake request, from verification through fault injection to
//!   the answer, and the dispatch to its handler;
//! - `verification`: the SigV4 check of a request against the credential sets accepted;
//! - `resources`: `PUT`, `GET` and `DELETE` of `/datastore/{ds}/r4/{Type}/{id}`;
//! - `metadata`: the CapabilityStatement at `/datastore/{ds}/r4/metadata`;
//! - `request_log`: the record of every data-plane request (`GET /_emulator/requests`);
//! - `control`: the inspection and control endpoints (`/_emulator/...`);
//! - `credential_endpoints`: the IMDSv2 (`/latest/...`) and container (`/v1/credentials`,
//!   `/v2/credentials/...`) credential endpoints;
//! - `sts_ledger`: the STS proxy's calls, the credential sets STS issued and the STS faults;
//! - `snapshot`: what the state file keeps, and putting it back;
//! - `responses`: the answers' shapes (OperationOutcome, AWS JSON error, JSON).

mod control;
mod credential_endpoints;
mod data_plane;
mod metadata;
mod request_log;
mod resources;
mod responses;
mod routing;
mod snapshot;
mod sts_ledger;
mod verification;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::capabilities::ResourceTypes;
use crate::credentials::{imds, Issuer};
use crate::faults::{FaultInjector, FaultSettings};
use crate::sigv4::Credential;
use crate::store::Store;
use crate::sts::faults::StsFaultInjector;
use crate::sts::StsLedger;

pub use request_log::RequestRecord;

use request_log::{Observed, Verdict};
use responses::{add_front_end_headers, outcome_response, response};
use routing::Surface;
use verification::CredentialFacts;

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
