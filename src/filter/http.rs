//! One HTTP request through the relay: plan at the headers, hash the body as it arrives, sign at
//! its end; then classify HealthLake's answer (see `response.rs`).

use super::host;
use super::Shared;
use crate::headers::is_removed_before_signing;
use crate::operation_outcome::{self, Severity, FHIR_JSON};
use crate::outcome::{unsupported_body, Outcome, Verdict};
use crate::plan::{plan, Operation, Plan, Target, ALLOWED_METHODS, READ_DIAGNOSTICS};
use crate::signing::{
    sign_request, PayloadHasher, Signed, SigningInput, EMPTY_SHA256, HEALTHLAKE_SERVICE,
};
use crate::unsupported_types;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;
use std::time::SystemTime;

/// Response header carrying the relay's verdict.
pub const OUTCOME_HEADER: &str = "x-healthlake-outcome";

/// Filter-state keys, printed in the access log as `%FILTER_STATE(wasm.<key>:PLAIN)%`.
pub mod state_key {
    pub const PATH: &str = "relay_path";
    pub const UPSTREAM_PATH: &str = "relay_upstream_path";
    pub const RESOURCE_TYPE: &str = "relay_resource_type";
    pub const RESOURCE_ID: &str = "relay_resource_id";
    pub const OUTCOME: &str = "relay_outcome";
    pub const UPSTREAM_STATUS: &str = "relay_upstream_status";
    pub const ERROR_CODE: &str = "relay_error_code";
}

/// A request sent to HealthLake: what the response side needs to classify and explain it.
pub struct Forwarded {
    pub target: Target,
    pub signed: Signed,
}

pub enum Phase {
    /// Headers not seen yet.
    Start,
    /// The relay answered the request itself, or the response is concluded.
    Done,
    /// Holding the headers while the body arrives.
    Receiving {
        target: Target,
        hasher: PayloadHasher,
    },
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

pub struct RelayHttp {
    pub(super) shared: Option<Rc<Shared>>,
    pub(super) phase: Phase,
    /// The resource type, once the request passed planning (for per-type stats).
    pub(super) resource_type: Option<String>,
}

impl RelayHttp {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        RelayHttp {
            shared,
            phase: Phase::Start,
            resource_type: None,
        }
    }

    /// Records the outcome: filter state for the access log, and the stats.
    pub(super) fn record(&self, outcome: Outcome) {
        host::set_filter_state(state_key::OUTCOME, outcome.as_str());
        if let Some(shared) = &self.shared {
            shared.metrics.count(outcome, self.resource_type.as_deref());
        }
    }

    /// Answers the request locally with `body`. Always returns `Pause`: the request goes no
    /// further.
    fn answer_with(
        &mut self,
        status: u16,
        outcome: Outcome,
        body: &[u8],
        extra_headers: &[(&str, &str)],
    ) -> Action {
        self.phase = Phase::Done;
        self.record(outcome);
        let mut headers = vec![
            ("content-type", FHIR_JSON),
            (OUTCOME_HEADER, outcome.as_str()),
        ];
        headers.extend_from_slice(extra_headers);
        if !host::send_local_response(status, headers, body) {
            // Could not even answer: reset rather than let anything through.
            let _ = proxy_wasm::hostcalls::reset_http_request();
        }
        Action::Pause
    }

    /// Answers the request locally with a one-issue OperationOutcome.
    fn answer(
        &mut self,
        status: u16,
        outcome: Outcome,
        severity: Severity,
        issue_code: &str,
        diagnostics: &str,
        extra_headers: &[(&str, &str)],
    ) -> Action {
        let body = operation_outcome::body(severity, issue_code, diagnostics);
        self.answer_with(status, outcome, &body, extra_headers)
    }

    fn internal_error(&mut self, what: &str) -> Action {
        self.answer(
            500,
            Outcome::InvalidRequest,
            Severity::Error,
            "exception",
            &format!("The relay could not process the request ({what}); nothing was forwarded."),
            &[],
        )
    }

    fn no_credentials(&mut self, why: &str) -> Action {
        self.answer(
            503,
            Outcome::NoCredentials,
            Severity::Error,
            "transient",
            &format!("The relay has no usable AWS credentials ({why}); nothing was forwarded."),
            &[("retry-after", "30")],
        )
    }

    /// Checks that the request can be signed now, before its body is awaited.
    fn credentials_problem(&self) -> Option<String> {
        let shared = self.shared.as_ref()?;
        match &shared.credentials {
            Err(e) => Some(e.to_string()),
            Ok(c) => match host::now() {
                Some(now) => c.usable_at(now).err().map(|e| e.to_string()),
                None => Some("the host clock is unavailable".to_owned()),
            },
        }
    }

    /// Whether writes of the target's type are to be answered `unsupported-type` without asking
    /// HealthLake: preset in the configuration, or learned from HealthLake and not expired.
    fn known_unsupported(&self, shared: &Shared, resource_type: &str) -> bool {
        if shared.config.is_preset_unsupported(resource_type) {
            return true;
        }
        let (value, _) = host::shared_data(&unsupported_types::shared_key(resource_type));
        is_active_now(value.as_deref())
    }

    fn answer_unsupported(&mut self, target: &Target) -> Action {
        log::debug!(
            "healthlake-relay: {}/{} answered unsupported-type locally (type known unsupported)",
            target.resource_type,
            target.id
        );
        host::set_filter_state(state_key::ERROR_CODE, "not-supported");
        let body = unsupported_body(
            &target.resource_type,
            &format!("{}/{}", target.resource_type, target.id),
        );
        self.answer_with(200, Outcome::UnsupportedType, &body, &[])
    }

    /// Signs the held request with the body hash and lets it continue to HealthLake.
    fn sign_and_forward(&mut self, target: Target, payload_sha256: &str) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.internal_error("the relay is not configured");
        };
        let credentials = match &shared.credentials {
            Ok(c) => c,
            Err(e) => return self.no_credentials(&e.to_string()),
        };
        let Some(now) = host::now() else {
            return self.no_credentials("the host clock is unavailable");
        };
        if let Err(e) = credentials.usable_at(now) {
            return self.no_credentials(&e.to_string());
        }
        let input = signing_input(&shared, &target, payload_sha256, now);
        let headers = match sign_request(&input, credentials) {
            Ok(h) => h,
            Err(e) => {
                host::log_error(&format!("healthlake-relay: {e}"));
                return self.internal_error("signing failed");
            }
        };
        let mut ok = host::set_request_header(":path", Some(&target.upstream_path))
            && host::set_request_header(":authority", Some(&shared.config.healthlake_host))
            && host::set_request_header("content-type", input.content_type);
        for (name, value) in &headers {
            ok = ok && host::set_request_header(name, Some(value));
        }
        if !ok {
            // A half-rewritten request must not leave: answer instead.
            return self.internal_error("could not rewrite the request headers");
        }
        host::set_filter_state(state_key::UPSTREAM_PATH, &target.upstream_path);
        let signed = Signed::from_headers(&headers, payload_sha256);
        self.phase = Phase::Forwarded(Box::new(Forwarded { target, signed }));
        Action::Continue
    }

    /// Hashes the newly buffered body bytes, up to `to`.
    fn hash_body(hasher: &mut PayloadHasher, to: usize) -> bool {
        let from = usize::try_from(hasher.len()).unwrap_or(usize::MAX);
        if to <= from {
            return true;
        }
        match host::request_body(from, to - from) {
            Some(chunk) => {
                hasher.update(&chunk);
                true
            }
            None => false,
        }
    }

    fn end_of_body(&mut self) -> Action {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Receiving { target, hasher } => {
                if target.op == Operation::Put && hasher.is_empty() {
                    return self.empty_put();
                }
                let hash = hasher.finish_hex();
                self.sign_and_forward(target, &hash)
            }
            other => {
                self.phase = other;
                Action::Continue
            }
        }
    }

    fn empty_put(&mut self) -> Action {
        self.answer(
            400,
            Outcome::InvalidRequest,
            Severity::Error,
            "required",
            "A PUT must carry the resource as its body; set the Subscription's payload to \
             application/fhir+json.",
            &[],
        )
    }
}

/// What is signed for `target`; rebuilt on the response side for the troubleshooting log.
pub fn signing_input<'a>(
    shared: &'a Shared,
    target: &'a Target,
    payload_sha256: &'a str,
    time: SystemTime,
) -> SigningInput<'a> {
    SigningInput {
        method: target.op.method(),
        host: &shared.config.healthlake_host,
        path: &target.upstream_path,
        content_type: match target.op {
            Operation::Put => Some(FHIR_JSON),
            Operation::Delete => None,
        },
        payload_sha256,
        region: &shared.config.region,
        service: HEALTHLAKE_SERVICE,
        time,
    }
}

/// Unix seconds now, from the host clock (0 if unavailable, which makes entries look current
/// only if they are: no entry expires before 0).
pub fn unix_now() -> u64 {
    host::now()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn is_active_now(value: Option<&[u8]>) -> bool {
    value.is_some() && unsupported_types::is_active(value, unix_now())
}

impl Context for RelayHttp {}

impl HttpContext for RelayHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.internal_error("the relay is not configured");
        };
        let Some(headers) = host::request_headers() else {
            return self.internal_error("could not read the request headers");
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let method = header(":method").unwrap_or("");
        let path = header(":path").unwrap_or("");
        host::set_filter_state(state_key::PATH, path);

        let target = match plan(method, path, &shared.config) {
            Plan::Read => {
                return self.answer(
                    405,
                    Outcome::ReadDropped,
                    Severity::Information,
                    "not-supported",
                    READ_DIAGNOSTICS,
                    &[("allow", ALLOWED_METHODS)],
                )
            }
            Plan::Reject(r) => {
                let allow: &[(&str, &str)] = if r.allow {
                    &[("allow", ALLOWED_METHODS)]
                } else {
                    &[]
                };
                return self.answer(
                    r.status,
                    r.outcome,
                    Severity::Error,
                    r.issue_code,
                    &r.diagnostics,
                    allow,
                );
            }
            Plan::Forward(target) => target,
        };
        host::set_filter_state(state_key::RESOURCE_TYPE, &target.resource_type);
        host::set_filter_state(state_key::RESOURCE_ID, &target.id);
        self.resource_type = Some(target.resource_type.clone());

        if self.known_unsupported(&shared, &target.resource_type) {
            return self.answer_unsupported(&target);
        }
        if let Some(why) = self.credentials_problem() {
            return self.no_credentials(&why);
        }
        for (name, _) in &headers {
            if is_removed_before_signing(name) && !host::set_request_header(name, None) {
                return self.internal_error("could not remove a client-supplied header");
            }
        }

        if end_of_stream {
            return match target.op {
                Operation::Put => self.empty_put(),
                Operation::Delete => self.sign_and_forward(target, EMPTY_SHA256),
            };
        }
        self.phase = Phase::Receiving {
            target,
            hasher: PayloadHasher::new(),
        };
        // Held until the body has arrived (needs allow_on_headers_stop_iteration: true).
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let max = self.shared.as_ref().map_or(0, |s| s.config.max_body_bytes);
        let Phase::Receiving { hasher, .. } = &mut self.phase else {
            return Action::Continue;
        };
        if body_size as u64 > max {
            return self.answer(
                413,
                Outcome::InvalidRequest,
                Severity::Error,
                "too-costly",
                &format!("The request body is larger than the relay's limit of {max} bytes."),
                &[],
            );
        }
        if !Self::hash_body(hasher, body_size) {
            return self.internal_error("could not read the request body");
        }
        if end_of_stream {
            self.end_of_body()
        } else {
            Action::Pause
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // With trailers, the end of the body is signalled here instead of in the body callback.
        self.end_of_body()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.response_headers(end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.response_body(body_size, end_of_stream)
    }
}
