//! The response side: classify HealthLake's answer, rewrite it for Smile CDR when the verdict
//! calls for it, and make the verdict visible (header, access log, stats, troubleshooting log).

use super::{signing_input, state_key, Action, Forwarded, Host, Phase, Request, OUTCOME_HEADER};
use crate::operation_outcome::FHIR_JSON;
use crate::outcome::{
    classify_body, classify_headers, AtHeaders, Outcome, Reply, Verdict, MAX_ERROR_BODY_BYTES,
};
use crate::shared_data;
use crate::signing::canonical_request_for_log;
use crate::text::quoted;
use crate::unsupported_types::{Unsupported, TYPE_SUPPORT_HEADER};
use std::time::SystemTime;

impl Request {
    pub fn on_response_headers(&mut self, host: &impl Host, end_of_stream: bool) -> Action {
        let mut forwarded = match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Forwarded(f) => f,
            Phase::AwaitingCredentials => {
                // Signed and resumed by the root context, or answered by it.
                let resumed = self
                    .worker
                    .as_ref()
                    .and_then(|s| s.resumed.try_borrow_mut().ok()?.remove(&self.context_id));
                match resumed {
                    Some(f) => f,
                    None => return Action::Continue,
                }
            }
            other => {
                // A local answer of the relay's own, or a response after a reset: nothing to do.
                self.phase = other;
                return Action::Continue;
            }
        };
        let status = host.response_status();
        // Only an error's type matters: a success costs no host call for it.
        let error_type = if (200..300).contains(&status) {
            None
        } else {
            host.response_header_text("x-amzn-errortype")
        };
        match classify_headers(forwarded.target.op, status, error_type.as_deref()) {
            AtHeaders::Final(verdict) => {
                if matches!(verdict.reply, Reply::Replace { .. }) && !end_of_stream {
                    // HealthLake's body is replaced at its end.
                    self.phase = Phase::Replacing {
                        forwarded,
                        status,
                        verdict,
                    };
                    return Action::Pause;
                }
                self.conclude(host, &mut forwarded, status, verdict, None)
            }
            AtHeaders::NeedBody if end_of_stream => {
                let verdict = self.classify_error_body(&forwarded, status, error_type, b"");
                self.conclude(host, &mut forwarded, status, verdict, None)
            }
            AtHeaders::NeedBody => {
                self.phase = Phase::ReadingError {
                    forwarded,
                    status,
                    error_type,
                };
                Action::Pause
            }
        }
    }

    pub fn on_response_body(
        &mut self,
        host: &impl Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        match &self.phase {
            Phase::ReadingError { .. } | Phase::Replacing { .. } if !end_of_stream => {
                // Envoy keeps buffering; the headers are held.
                return Action::Pause;
            }
            Phase::ReadingError { .. } | Phase::Replacing { .. } => {}
            _ => return Action::Continue,
        }
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::ReadingError {
                mut forwarded,
                status,
                error_type,
            } => {
                let body = host
                    .response_body(0, body_size.min(MAX_ERROR_BODY_BYTES))
                    .unwrap_or_default();
                let verdict = self.classify_error_body(&forwarded, status, error_type, &body);
                self.conclude(host, &mut forwarded, status, verdict, Some(body_size))
            }
            Phase::Replacing {
                mut forwarded,
                status,
                verdict,
            } => self.conclude(host, &mut forwarded, status, verdict, Some(body_size)),
            _ => Action::Continue,
        }
    }

    fn classify_error_body(
        &self,
        forwarded: &Forwarded,
        status: u16,
        error_type: Option<String>,
        body: &[u8],
    ) -> Verdict {
        let target = &forwarded.target;
        classify_body(
            target.op,
            status,
            error_type.as_deref(),
            body,
            &target.resource_type,
            &format!("{}/{}", target.resource_type, target.id),
        )
    }

    /// Applies the verdict to the response Smile CDR receives and records it. `body_size` is the
    /// size of HealthLake's buffered body when the verdict is applied at its end. Pauses only when
    /// the answer had to be sent as a local response (a replacement body for an answer that had
    /// none, which a filter cannot add to a response that already ended).
    fn conclude(
        &mut self,
        host: &impl Host,
        forwarded: &mut Forwarded,
        upstream_status: u16,
        verdict: Verdict,
        body_size: Option<usize>,
    ) -> Action {
        let mut action = Action::Continue;
        match &verdict.reply {
            Reply::PassThrough => {}
            Reply::Status {
                status,
                retry_after: wants_retry_after,
            } => {
                host.set_response_header(":status", &status.to_string());
                if *wants_retry_after && host.response_header("retry-after").is_none() {
                    let seconds = self
                        .worker
                        .as_ref()
                        .map_or(5, |s| s.config.retry_after_seconds);
                    host.set_response_header("retry-after", &seconds.to_string());
                }
            }
            Reply::Replace { status, body } => {
                host.set_response_header(":status", &status.to_string());
                match (body, body_size) {
                    (Some(new), Some(old_len)) => {
                        host.replace_response_body(old_len, new);
                        host.set_response_header("content-type", FHIR_JSON);
                        host.set_response_header("content-length", &new.len().to_string());
                    }
                    (None, old) => {
                        if let Some(old_len) = old {
                            host.replace_response_body(old_len, b"");
                        }
                        host.remove_response_header("content-length");
                        host.remove_response_header("content-type");
                    }
                    // HealthLake sent no body (e.g. a front end's bare 401/403): the answer
                    // with the OperationOutcome is sent as a local response instead, keeping
                    // HealthLake's request id for the access log.
                    (Some(new), None) => {
                        let request_id = host.response_header_text("x-amzn-requestid");
                        let mut headers = vec![
                            ("content-type", FHIR_JSON),
                            (OUTCOME_HEADER, verdict.outcome.as_str()),
                        ];
                        if let Some(id) = request_id.as_deref() {
                            headers.push(("x-amzn-requestid", id));
                        }
                        if verdict.outcome == Outcome::UnsupportedType {
                            headers.push((TYPE_SUPPORT_HEADER, Unsupported::HealthLake.as_str()));
                        }
                        if host.send_local_response(*status, &headers, new) {
                            action = Action::Pause;
                        }
                    }
                }
                host.remove_response_header("etag");
                host.remove_response_header("location");
            }
        }
        host.set_response_header(OUTCOME_HEADER, verdict.outcome.as_str());
        if verdict.outcome == Outcome::UnsupportedType {
            host.set_response_header(TYPE_SUPPORT_HEADER, Unsupported::HealthLake.as_str());
        }
        host.set_filter_state(state_key::UPSTREAM_STATUS, &upstream_status.to_string());
        if let Some(code) = &verdict.error_code {
            host.set_filter_state(state_key::ERROR_CODE, code);
        }
        self.count(host, verdict.outcome);
        self.learn(host, forwarded, &verdict);
        self.log_verdict(host, forwarded, upstream_status, &verdict);
        action
    }

    /// What a verdict teaches beyond this request: the version guard learns what HealthLake now
    /// holds, every worker that HealthLake does not support a type, and an expired token forces
    /// a refresh of the credentials.
    fn learn(&self, host: &impl Host, forwarded: &mut Forwarded, verdict: &Verdict) {
        match verdict.outcome {
            Outcome::UnsupportedType => {
                let diagnostics = verdict
                    .diagnostics
                    .as_deref()
                    .map_or_else(|| "(none)".to_owned(), |d| quoted(d, 500));
                self.learn_unsupported(host, &forwarded.target, &diagnostics);
            }
            Outcome::AuthFailed
                if verdict
                    .error_code
                    .as_deref()
                    .is_some_and(|c| c.starts_with("ExpiredToken")) =>
            {
                if let Some(worker) = &self.worker {
                    if let Ok(mut provider) = worker.credentials.try_borrow_mut() {
                        provider.force_refresh(host, forwarded.generation);
                    }
                }
            }
            _ => {}
        }
        let Some(limits) = self.worker.as_ref().and_then(|s| s.config.version_guard) else {
            return;
        };
        match (verdict.outcome, forwarded.version.as_mut()) {
            (Outcome::Delivered, Some((version, read))) => {
                if let Some(read) = read.take() {
                    shared_data::record_write(host, read, version, forwarded.signed_at, limits)
                }
            }
            (Outcome::Deleted | Outcome::AlreadyAbsent, _) => {
                shared_data::record_delete(host, &forwarded.target, forwarded.signed_at, limits)
            }
            _ => {}
        }
    }

    /// The troubleshooting log line for a verdict (unsupported types are logged as learned).
    fn log_verdict(
        &self,
        host: &impl Host,
        forwarded: &Forwarded,
        upstream_status: u16,
        verdict: &Verdict,
    ) {
        if matches!(
            verdict.outcome,
            Outcome::Delivered | Outcome::Deleted | Outcome::AlreadyAbsent
        ) {
            // The common case logs nothing: no formatting, no host call.
            return;
        }
        let target = &forwarded.target;
        let resource = format!("{}/{}", target.resource_type, target.id);
        let diagnostics = verdict
            .diagnostics
            .as_deref()
            .map_or_else(|| "(none)".to_owned(), |d| quoted(d, 500));
        let code = verdict.error_code.as_deref().unwrap_or("-");
        let request_id = host
            .response_header_text("x-amzn-requestid")
            .unwrap_or_default();
        match verdict.outcome {
            Outcome::AuthFailed => {
                let canonical = self.worker.as_ref().map(|worker| {
                    let input = signing_input(
                        worker,
                        target,
                        &forwarded.signed.payload_sha256,
                        SystemTime::UNIX_EPOCH,
                    );
                    canonical_request_for_log(&input, &forwarded.signed)
                });
                log::warn!(
                    "healthlake-relay: auth-failed {resource}: HealthLake answered {upstream_status} \
                     {code}: {diagnostics} (x-amzn-RequestId {request_id}); answered 503 so Smile CDR \
                     retries. Canonical request signed (x-amz-date {}):\n{}",
                    forwarded.signed.amz_date,
                    canonical.unwrap_or_default()
                );
            }
            Outcome::Rejected => log::warn!(
                "healthlake-relay: rejected {resource}: HealthLake answered {upstream_status} {code}: \
                 {diagnostics} (x-amzn-RequestId {request_id})"
            ),
            Outcome::UpstreamError => log::info!(
                "healthlake-relay: upstream-error {resource}: {upstream_status} {code} \
                 (x-amzn-RequestId {request_id})"
            ),
            Outcome::Throttled => log::debug!(
                "healthlake-relay: throttled {resource}: {upstream_status} {code} \
                 (x-amzn-RequestId {request_id})"
            ),
            _ => {}
        }
    }

    /// Remembers, for every worker, that HealthLake does not support the target's type. The
    /// worker that records it first logs at warn; the others (and repeats) at debug.
    fn learn_unsupported(&self, host: &impl Host, target: &crate::plan::Target, diagnostics: &str) {
        let ttl = self
            .worker
            .as_ref()
            .map_or(3600, |s| s.config.unsupported_type_ttl_seconds);
        let statement_read_at = self.worker.as_ref().and_then(|s| {
            let discovery = s.discovery.try_borrow().ok()?;
            discovery.in_use().map(|u| u.fetched_at_ms / 1000)
        });
        if shared_data::learn_unsupported(host, &target.resource_type, ttl, statement_read_at) {
            log::warn!(
                "healthlake-relay: HealthLake does not support resource type {} (first seen with \
                 {}/{}): {diagnostics}. Writes of this type are answered 200 unsupported-type \
                 without calling HealthLake for the next {ttl} s.",
                target.resource_type,
                target.resource_type,
                target.id
            );
        } else {
            log::debug!(
                "healthlake-relay: unsupported-type {}/{}: {diagnostics}",
                target.resource_type,
                target.id
            );
        }
    }
}
