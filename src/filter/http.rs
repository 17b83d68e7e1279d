//! One HTTP request through the relay: plan at the headers, hash the body as it arrives, sign at
//! its end, classify HealthLake's answer.

use super::host;
use super::Shared;
use crate::headers::is_removed_before_signing;
use crate::operation_outcome::{self, Severity, FHIR_JSON};
use crate::outcome::{classify, Outcome};
use crate::plan::{plan, Operation, Plan, Target, ALLOWED_METHODS, READ_DIAGNOSTICS};
use crate::signing::{sign_request, PayloadHasher, SigningInput, EMPTY_SHA256, HEALTHLAKE_SERVICE};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// Response header carrying the relay's verdict.
pub const OUTCOME_HEADER: &str = "x-healthlake-outcome";

/// Filter-state keys, printed in the access log as `%FILTER_STATE(wasm.<key>:PLAIN)%`.
mod state_key {
    pub const PATH: &str = "relay_path";
    pub const UPSTREAM_PATH: &str = "relay_upstream_path";
    pub const RESOURCE_TYPE: &str = "relay_resource_type";
    pub const RESOURCE_ID: &str = "relay_resource_id";
    pub const OUTCOME: &str = "relay_outcome";
    pub const UPSTREAM_STATUS: &str = "relay_upstream_status";
}

enum Phase {
    /// Headers not seen yet.
    Start,
    /// The relay answered the request itself.
    Answered,
    /// Holding the headers while the body arrives.
    Receiving {
        target: Target,
        hasher: PayloadHasher,
    },
    /// Signed and sent to HealthLake.
    Forwarded { op: Operation },
}

pub struct RelayHttp {
    shared: Option<Rc<Shared>>,
    phase: Phase,
}

impl RelayHttp {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        RelayHttp {
            shared,
            phase: Phase::Start,
        }
    }

    fn count(&self, outcome: Outcome) {
        if let Some(shared) = &self.shared {
            shared.metrics.count(outcome);
        }
    }

    /// Answers the request locally with a FHIR OperationOutcome. Always returns `Pause`: the
    /// request goes no further.
    fn answer(
        &mut self,
        status: u16,
        outcome: Outcome,
        severity: Severity,
        issue_code: &str,
        diagnostics: &str,
        allow: bool,
    ) -> Action {
        self.phase = Phase::Answered;
        host::set_filter_state(state_key::OUTCOME, outcome.as_str());
        self.count(outcome);
        let body = operation_outcome::body(severity, issue_code, diagnostics);
        let mut headers = vec![
            ("content-type", FHIR_JSON),
            (OUTCOME_HEADER, outcome.as_str()),
        ];
        if allow {
            headers.push(("allow", ALLOWED_METHODS));
        }
        if outcome == Outcome::NoCredentials {
            headers.push(("retry-after", "30"));
        }
        if !host::send_local_response(status, headers, &body) {
            // Could not even answer: reset rather than let anything through.
            let _ = proxy_wasm::hostcalls::reset_http_request();
        }
        Action::Pause
    }

    fn internal_error(&mut self, what: &str) -> Action {
        self.answer(
            500,
            Outcome::InvalidRequest,
            Severity::Error,
            "exception",
            &format!("The relay could not process the request ({what}); nothing was forwarded."),
            false,
        )
    }

    fn no_credentials(&mut self, why: &str) -> Action {
        self.answer(
            503,
            Outcome::NoCredentials,
            Severity::Error,
            "transient",
            &format!("The relay has no usable AWS credentials ({why}); nothing was forwarded."),
            false,
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
        let config = &shared.config;
        let content_type = match target.op {
            Operation::Put => Some(FHIR_JSON),
            Operation::Delete => None,
        };
        let input = SigningInput {
            method: target.op.method(),
            host: &config.healthlake_host,
            path: &target.upstream_path,
            content_type,
            payload_sha256,
            region: &config.region,
            service: HEALTHLAKE_SERVICE,
            time: now,
        };
        let signed = match sign_request(&input, credentials) {
            Ok(h) => h,
            Err(e) => {
                host::log_error(&format!("healthlake-relay: {e}"));
                return self.internal_error("signing failed");
            }
        };
        let mut ok = host::set_request_header(":path", Some(&target.upstream_path))
            && host::set_request_header(":authority", Some(&config.healthlake_host))
            && host::set_request_header("content-type", content_type);
        for (name, value) in &signed {
            ok = ok && host::set_request_header(name, Some(value));
        }
        if !ok {
            // A half-rewritten request must not leave: answer instead.
            return self.internal_error("could not rewrite the request headers");
        }
        host::set_filter_state(state_key::UPSTREAM_PATH, &target.upstream_path);
        self.phase = Phase::Forwarded { op: target.op };
        Action::Continue
    }

    /// Hashes body bytes `from..to` of the buffered body.
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
        match std::mem::replace(&mut self.phase, Phase::Answered) {
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
            false,
        )
    }
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
                    true,
                )
            }
            Plan::Reject(r) => {
                return self.answer(
                    r.status,
                    r.outcome,
                    Severity::Error,
                    r.issue_code,
                    &r.diagnostics,
                    r.allow,
                )
            }
            Plan::Forward(target) => target,
        };
        host::set_filter_state(state_key::RESOURCE_TYPE, &target.resource_type);
        host::set_filter_state(state_key::RESOURCE_ID, &target.id);

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
                false,
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

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Phase::Forwarded { op } = self.phase else {
            return Action::Continue;
        };
        let status = host::response_header(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let outcome = classify(op, status);
        host::set_response_header(OUTCOME_HEADER, outcome.as_str());
        host::set_filter_state(state_key::OUTCOME, outcome.as_str());
        host::set_filter_state(state_key::UPSTREAM_STATUS, &status.to_string());
        self.count(outcome);
        Action::Continue
    }
}
