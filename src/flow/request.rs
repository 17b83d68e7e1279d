//! The request side: plan at the headers, hash the body as it arrives, check it, sign at its
//! end (or hold it for credentials); or answer the request locally.

use super::{
    signed_content_type, signing_input, state_key, Action, AsSigned, Forwarded, Host, Pending,
    Phase, Request, SignJob, Waiter, OUTCOME_HEADER,
};
use crate::body_budget::{Body, Refused};
use crate::credentials::provider::ForSigning;
use crate::host_encoding::HeaderPairs;
use crate::inbound_auth::is_loopback_address;
use crate::operation_outcome::{self, Severity, FHIR_JSON};
use crate::outcome::{unsupported_body, Outcome};
use crate::plan::{
    plan_request, Operation, Plan, Rejection, Target, ALLOWED_METHODS, READ_DIAGNOSTICS,
};
use crate::request_head::{logged_path, removed_before_signing, RequestHead};
use crate::resource::{self, Version};
use crate::shared_data::{self, ShardRead};
use crate::signing::{sign_request_cached, PayloadHasher, Signed, EMPTY_SHA256};
use crate::unsupported_types::{self, Listed, Unsupported, TYPE_SUPPORT_HEADER};
use crate::versions::Decision;
use crate::worker::{Inbound, Worker};
use std::time::SystemTime;

/// Answers the current request locally with `body` (a FHIR OperationOutcome) and counts its
/// outcome (the access log reads it from the [`OUTCOME_HEADER`] of the answer).
pub fn send_answer(
    host: &impl Host,
    resource_type: Option<&str>,
    status: u16,
    outcome: Outcome,
    body: &[u8],
    extra_headers: &[(&str, &str)],
) {
    host.count(outcome, resource_type);
    let mut headers = vec![
        ("content-type", FHIR_JSON),
        (OUTCOME_HEADER, outcome.as_str()),
    ];
    headers.extend_from_slice(extra_headers);
    if !host.send_local_response(status, &headers, body) {
        // Could not even answer: reset rather than let anything through.
        host.reset_request();
    }
}

pub(super) fn no_credentials_body(why: &str) -> Vec<u8> {
    operation_outcome::body(
        Severity::Error,
        "transient",
        &format!("The relay has no usable AWS credentials ({why}); nothing was forwarded."),
    )
}

pub(super) const NO_CREDENTIALS_HEADERS: &[(&str, &str)] = &[("retry-after", "30")];

/// Signs the current (held) request for `job.target` and rewrites it for HealthLake. On an error
/// nothing has been sent and the caller answers instead.
pub fn sign_and_rewrite(
    host: &impl Host,
    worker: &Worker,
    job: SignJob,
    credentials: &crate::credentials::Credentials,
    generation: u64,
    now: SystemTime,
) -> Result<Forwarded, &'static str> {
    let target = job.target;
    let input = signing_input(worker, &target, &job.payload_sha256, now);
    let mut keys = worker
        .signing_keys
        .try_borrow_mut()
        .map_err(|_| "the signing key is in use")?;
    let headers = sign_request_cached(&input, credentials, &mut keys).map_err(|e| {
        log::error!("healthlake-relay: {e}");
        "signing failed"
    })?;
    let mut ok = (job.as_signed.method || host.set_request_header(":method", Some(input.method)))
        && host.set_request_header(":path", Some(&target.upstream_path))
        && host.set_request_header(":authority", Some(&worker.config.healthlake_host))
        && (job.as_signed.content_type
            || host.set_request_header("content-type", input.content_type));
    for (name, value) in &headers {
        ok = ok && host.set_request_header(name, Some(value));
    }
    if !ok {
        return Err("could not rewrite the request headers");
    }
    host.set_filter_state(state_key::UPSTREAM_PATH, &target.upstream_path);
    let signed = Signed::from_headers(&headers, &job.payload_sha256);
    Ok(Forwarded {
        target,
        signed,
        version: job.version,
        generation,
        signed_at: now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

/// Checks the caller; `Some` is why it is refused.
fn authenticate(
    host: &impl Host,
    worker: &Worker,
    authorization: Option<&[u8]>,
) -> Option<&'static str> {
    match &worker.inbound {
        Inbound::Open => {
            // Without authentication the relay serves only connections made to a loopback
            // address, which only this machine can reach: a listener opened to the network by
            // mistake does not become an open signer. (The connection's local address, not the
            // client's: with use_remote_address off, Envoy takes that from X-Forwarded-For.)
            let local = host.property(&["destination", "address"]);
            if local.as_deref().is_some_and(is_loopback_address) {
                None
            } else {
                Some(
                    "Inbound authentication is off (inbound_auth \"none\"), which the relay \
                     allows only for connections to a loopback address.",
                )
            }
        }
        Inbound::Bearer(tokens) => tokens.check(authorization).err().map(|r| r.diagnostics()),
        Inbound::MutualTls => {
            // Envoy's listener verified the client certificate; refuse if it did not (a listener
            // left without TLS must not become an open signer).
            let mtls = host.property(&["connection", "mtls"]);
            match mtls.as_deref() {
                Some([1, ..]) => None,
                _ => Some("A client certificate is required (mutual TLS)."),
            }
        }
    }
}

impl Request {
    /// Answers the request locally with `body`. Always returns `Pause`: the request goes no
    /// further.
    fn answer_with(
        &mut self,
        host: &impl Host,
        status: u16,
        outcome: Outcome,
        body: &[u8],
        extra_headers: &[(&str, &str)],
    ) -> Action {
        self.phase = Phase::Done;
        send_answer(
            host,
            self.resource_type.as_deref(),
            status,
            outcome,
            body,
            extra_headers,
        );
        Action::Pause
    }

    /// Answers the request locally with a one-issue OperationOutcome.
    fn answer(
        &mut self,
        host: &impl Host,
        status: u16,
        outcome: Outcome,
        (severity, issue_code): (Severity, &str),
        diagnostics: &str,
        extra_headers: &[(&str, &str)],
    ) -> Action {
        let body = operation_outcome::body(severity, issue_code, diagnostics);
        self.answer_with(host, status, outcome, &body, extra_headers)
    }

    /// Answers with a rejection from the core's checks.
    fn refuse(&mut self, host: &impl Host, r: &Rejection) -> Action {
        let allow: &[(&str, &str)] = if r.allow {
            &[("allow", ALLOWED_METHODS)]
        } else {
            &[]
        };
        self.answer(
            host,
            r.status,
            r.outcome,
            (Severity::Error, r.issue_code),
            &r.diagnostics,
            allow,
        )
    }

    fn internal_error(&mut self, host: &impl Host, what: &str) -> Action {
        self.answer(
            host,
            500,
            Outcome::InvalidRequest,
            (Severity::Error, "exception"),
            &format!("The relay could not process the request ({what}); nothing was forwarded."),
            &[],
        )
    }

    fn no_credentials(&mut self, host: &impl Host, why: &str) -> Action {
        self.answer_with(
            host,
            503,
            Outcome::NoCredentials,
            &no_credentials_body(why),
            NO_CREDENTIALS_HEADERS,
        )
    }

    /// Fails a write before its body is awaited when no credentials can come at all.
    fn credentials_problem(&self) -> Option<String> {
        let worker = self.worker.as_ref()?;
        match worker.credentials.try_borrow() {
            Ok(c) => c.hopeless(),
            Err(_) => None,
        }
    }

    /// Whether the target is answered `unsupported-type` without asking HealthLake, and on
    /// whose word (see [`unsupported_types::decide`]).
    fn known_unsupported(
        host: &impl Host,
        worker: &Worker,
        target: &Target,
    ) -> Option<Unsupported> {
        let t = target.resource_type.as_str();
        let listed = match worker.discovery.try_borrow_mut() {
            Ok(mut d) => {
                d.catch_up(host);
                d.listed(target.op, t)
            }
            Err(_) => None,
        };
        let ttl = worker.config.unsupported_type_ttl_seconds;
        unsupported_types::decide(worker.config.is_preset_unsupported(t), listed, || {
            shared_data::learned_unsupported_at(host, t, ttl)
        })
    }

    fn answer_unsupported(
        &mut self,
        host: &impl Host,
        target: &Target,
        source: Unsupported,
    ) -> Action {
        log::debug!(
            "healthlake-relay: {}/{} answered unsupported-type locally ({})",
            target.resource_type,
            target.id,
            source.as_str()
        );
        host.set_filter_state(state_key::ERROR_CODE, "not-supported");
        let body = unsupported_body(
            target.op,
            &target.resource_type,
            &format!("{}/{}", target.resource_type, target.id),
            source,
        );
        self.answer_with(
            host,
            200,
            Outcome::UnsupportedType,
            &body,
            &[(TYPE_SUPPORT_HEADER, source.as_str())],
        )
    }

    /// `GET [base]/metadata`: the relay's CapabilityStatement, listing the types it would forward
    /// now. Its `x-healthlake-type-support` says where that comes from.
    fn answer_capabilities(&mut self, host: &impl Host, worker: &Worker) -> Action {
        let now = shared_data::unix_now(host);
        let date = crate::calendar::rfc3339(now);
        let (discovered, enabled) = match worker.discovery.try_borrow_mut() {
            Ok(mut d) => {
                d.catch_up(host);
                (
                    d.in_use().map(|s| (s.supported, s.fetched_at_ms)),
                    d.enabled(),
                )
            }
            Err(_) => (None, true),
        };
        let (support, types_from) = match discovered {
            Some((_, at)) => (
                "capability-statement",
                format!(
                    "those HealthLake's CapabilityStatement lists (read at {})",
                    crate::calendar::rfc3339(at / 1000)
                ),
            ),
            None => (
                "learning",
                format!(
                    "every R4 type but those the relay is configured to drop or HealthLake \
                     answered 400 not-supported recently ({})",
                    if enabled {
                        "HealthLake's CapabilityStatement could not be read"
                    } else {
                        "reading HealthLake's CapabilityStatement is turned off"
                    }
                ),
            ),
        };
        let about = crate::capabilities::RelayStatement {
            date: &date,
            datastore_id: &worker.config.datastore_id,
            region: &worker.config.region,
            types_from: &types_from,
        };
        let ttl = worker.config.unsupported_type_ttl_seconds;
        // One worker-data read per type, not per type and interaction.
        let learned = std::cell::RefCell::new(std::collections::HashMap::new());
        let body = crate::capabilities::relay_statement(&about, |op, t| {
            unsupported_types::decide(
                worker.config.is_preset_unsupported(t),
                discovered.and_then(|(s, at)| {
                    s.says(op, t).map(|allows| Listed {
                        allows,
                        read_at: at / 1000,
                    })
                }),
                || match learned.try_borrow_mut() {
                    Ok(mut seen) => *seen
                        .entry(t.to_owned())
                        .or_insert_with(|| shared_data::learned_unsupported_at(host, t, ttl)),
                    Err(_) => shared_data::learned_unsupported_at(host, t, ttl),
                },
            )
            .is_none()
        });
        self.answer_with(
            host,
            200,
            Outcome::Capabilities,
            &body,
            &[(TYPE_SUPPORT_HEADER, support)],
        )
    }

    /// Signs the held request with the body hash and lets it continue to HealthLake; without
    /// credentials yet, holds it for the root context (see [`Waiter`]).
    /// `now` is the host clock, read by the caller (`None` if unavailable).
    fn sign_and_forward(
        &mut self,
        host: &impl Host,
        target: Target,
        payload_sha256: String,
        version: Option<(Version, Option<ShardRead>)>,
        now: Option<SystemTime>,
    ) -> Action {
        let Some(worker) = self.worker.clone() else {
            return self.internal_error(host, "the relay is not configured");
        };
        let Some(now) = now else {
            return self.no_credentials(host, "the host clock is unavailable");
        };
        let decision = match worker.credentials.try_borrow() {
            Ok(c) => c.for_signing(now),
            Err(_) => ForSigning::Wait,
        };
        let job = SignJob {
            target,
            as_signed: self.as_signed,
            payload_sha256,
            version,
        };
        match decision {
            ForSigning::Ready(creds, generation) => {
                match sign_and_rewrite(host, &worker, job, &creds, generation, now) {
                    Ok(forwarded) => {
                        self.phase = Phase::Forwarded(Box::new(forwarded));
                        Action::Continue
                    }
                    Err(what) => self.internal_error(host, what),
                }
            }
            ForSigning::Fail(why) => self.no_credentials(host, &why),
            ForSigning::Wait => {
                let waiter = Waiter {
                    context_id: self.context_id,
                    job,
                };
                match worker.credentials.try_borrow_mut() {
                    Ok(mut provider) => provider.wait(waiter, now),
                    Err(_) => {
                        return self.no_credentials(host, "the credentials are being updated")
                    }
                }
                self.phase = Phase::AwaitingCredentials;
                Action::Pause
            }
        }
    }

    /// Takes the newly buffered body bytes, up to `to`: room is made within the worker's budget
    /// first, then they are copied in, hashed, and kept for the checks. `most` is what the body
    /// can reach (its Content-Length, or the relay's limit).
    fn receive_body(
        host: &impl Host,
        hasher: &mut PayloadHasher,
        body: &mut Body,
        to: usize,
        most: usize,
    ) -> Result<(), Received> {
        let from = body.len();
        if to <= from {
            return Ok(());
        }
        body.prepare(to, most).map_err(Received::Refused)?;
        let chunk = host
            .request_body(from, to - from)
            .ok_or(Received::HostError)?;
        hasher.update(&chunk);
        body.push(chunk);
        Ok(())
    }

    fn end_of_body(&mut self, host: &impl Host) -> Action {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Receiving {
                pending,
                hasher,
                body,
            } => self.complete(host, pending, hasher, body.as_slice()),
            other => {
                self.phase = other;
                Action::Continue
            }
        }
    }

    /// The whole body has arrived: check the resource, consult the version guard, sign.
    fn complete(
        &mut self,
        host: &impl Host,
        pending: Pending,
        hasher: PayloadHasher,
        body: &[u8],
    ) -> Action {
        let Some(worker) = self.worker.clone() else {
            return self.internal_error(host, "the relay is not configured");
        };
        let (target, parsed) = match pending {
            Pending::BasePost => return self.refuse(host, &resource::base_post_rejection(body)),
            Pending::Write(target) if target.op == Operation::Delete => {
                if !body.is_empty() {
                    return self.delete_with_body(host);
                }
                return self.sign_and_forward(host, target, hasher.finish_hex(), None, host.now());
            }
            _ if body.is_empty() => return self.empty_put(host),
            Pending::Write(target) => match resource::parse(body).and_then(|r| {
                resource::check_matches(&r, &target.resource_type, &target.id).map(|()| r)
            }) {
                Ok(r) => (target, r),
                Err(r) => return self.refuse(host, &r),
            },
            Pending::Create { resource_type } => {
                let (id, r) = match resource::parse(body)
                    .and_then(|r| resource::id_for_create(&r, &resource_type).map(|id| (id, r)))
                {
                    Ok(found) => found,
                    Err(r) => return self.refuse(host, &r),
                };
                host.set_filter_state(state_key::RESOURCE_ID, &id);
                let target = Target::new(Operation::Put, &resource_type, &id, &worker.config);
                if let Some(source) = Self::known_unsupported(host, &worker, &target) {
                    return self.answer_unsupported(host, &target, source);
                }
                (target, r)
            }
        };
        // One clock read for the version guard and the signature.
        let now = host.now();
        let guarded = match worker.config.version_guard {
            Some(limits) => {
                let at = now.map_or(0, |t| crate::credentials::refresh::unix_ms(t) / 1000);
                match shared_data::version_decision(host, &target, &parsed.version, at, limits) {
                    (Decision::Stale, _) => return self.answer_stale(host, &target),
                    (Decision::Forward, read) => Some((parsed.version, Some(read))),
                    (Decision::Unrecorded, _) => {
                        untrusted_last_updated(host, &worker, &target);
                        None
                    }
                }
            }
            None => Some((parsed.version, None)),
        };
        self.sign_and_forward(host, target, hasher.finish_hex(), guarded, now)
    }

    fn answer_stale(&mut self, host: &impl Host, target: &Target) -> Action {
        log::debug!(
            "healthlake-relay: {}/{} is older than the version HealthLake has; not forwarded",
            target.resource_type,
            target.id
        );
        self.answer(
            host,
            200,
            Outcome::StaleVersion,
            (Severity::Information, "informational"),
            &format!(
                "{}/{} was not sent to HealthLake: its meta.lastUpdated/versionId is older than \
                 the version HealthLake already has (or than its deletion). Nothing to retry.",
                target.resource_type, target.id
            ),
            &[],
        )
    }

    /// Holds the headers until the body has arrived (needs allow_on_headers_stop_iteration).
    fn receive(&mut self, host: &impl Host, pending: Pending) -> Action {
        let Some(worker) = self.worker.as_ref() else {
            return self.internal_error(host, "the relay is not configured");
        };
        self.phase = Phase::Receiving {
            pending,
            hasher: PayloadHasher::new(),
            body: Body::new(std::rc::Rc::clone(&worker.body_budget)),
        };
        Action::Pause
    }

    /// What is checked before a write's body is awaited: the content type of a resource, no
    /// body on a DELETE, the declared size, usable credentials, and no client-supplied
    /// credentials or conditionals left in the request. `Some` is the answer that ends the
    /// request.
    fn before_body(
        &mut self,
        host: &impl Host,
        headers: &HeaderPairs,
        head: &RequestHead,
        op: Operation,
    ) -> Option<Action> {
        let content_type = head.content_type_text();
        if op == Operation::Put && !content_type.is_some_and(resource::is_fhir_json) {
            return Some(self.refuse(host, &resource::unsupported_media_type(content_type)));
        }
        let declared = head.declared_length();
        if op == Operation::Delete && declared.is_some_and(|len| len > 0) {
            return Some(self.delete_with_body(host));
        }
        // Refuse a declared oversize body now: once the body streams in, Envoy defers a Wasm
        // local reply and its own buffer limit may answer first, without an OperationOutcome.
        let max = self.worker.as_ref().map_or(0, |s| s.config.max_body_bytes);
        if declared.is_some_and(|len| len > max) {
            return Some(self.too_large(host, max));
        }
        // Within the limit: it caps how far the body's room grows as the bytes arrive.
        self.declared_length = declared.and_then(|len| usize::try_from(len).ok());
        if let Some(why) = self.credentials_problem() {
            return Some(self.no_credentials(host, &why));
        }
        for name in removed_before_signing(headers) {
            if !host.remove_request_header(name) {
                return Some(
                    self.internal_error(host, "could not remove a client-supplied header"),
                );
            }
        }
        None
    }

    /// A DELETE carries no body (HAPI sends none): one that does is refused rather than
    /// forwarded with a body HealthLake has no use for.
    fn delete_with_body(&mut self, host: &impl Host) -> Action {
        self.answer(
            host,
            400,
            Outcome::InvalidRequest,
            (Severity::Error, "invalid"),
            "A DELETE must not carry a body; the relay forwards DELETE /{type}/{id} as sent by a \
             Smile CDR REST-hook subscription, without one.",
            &[],
        )
    }

    /// The worker holds as many bodies as its budget allows (or the VM is out of memory):
    /// nothing is forwarded, and Smile CDR retries later.
    fn overloaded(&mut self, host: &impl Host, why: Refused) -> Action {
        let (retry_after, budget, held) = self.worker.as_ref().map_or((5, 0, 0), |s| {
            (
                s.config.retry_after_seconds,
                s.config.body_budget_bytes,
                s.body_budget.held(),
            )
        });
        let cause = match why {
            Refused::Budget => format!(
                "the request bodies in flight on this worker ({held} bytes) leave no room for \
                 this one within body_budget_bytes ({budget})"
            ),
            Refused::Memory => "the relay's Wasm VM could not allocate room for it".to_owned(),
        };
        log::warn!("healthlake-relay: overloaded: {cause}; answered 503 with Retry-After");
        let retry_after = retry_after.to_string();
        let body = operation_outcome::body(
            Severity::Error,
            "transient",
            &format!("The relay cannot hold this request's body now ({cause}); nothing was forwarded. Retry later."),
        );
        self.answer_with(
            host,
            503,
            Outcome::Overloaded,
            &body,
            &[("retry-after", retry_after.as_str())],
        )
    }

    fn too_large(&mut self, host: &impl Host, max: u64) -> Action {
        self.answer(
            host,
            413,
            Outcome::InvalidRequest,
            (Severity::Error, "too-costly"),
            &format!("The request body is larger than the relay's limit of {max} bytes."),
            &[],
        )
    }

    fn empty_put(&mut self, host: &impl Host) -> Action {
        self.answer(
            host,
            400,
            Outcome::InvalidRequest,
            (Severity::Error, "required"),
            "A PUT must carry the resource as its body; set the Subscription's payload to \
             application/fhir+json.",
            &[],
        )
    }
}

/// Why a body chunk was not taken.
enum Received {
    /// No room within the worker's budget, or none the VM could allocate.
    Refused(Refused),
    /// The host would not hand the chunk over.
    HostError,
}

/// A PUT whose `meta.lastUpdated` lies beyond the relay's clock plus the allowance: forwarded,
/// not recorded by the version guard (see [`Decision::Unrecorded`]), and said so.
fn untrusted_last_updated(host: &impl Host, worker: &Worker, target: &Target) {
    host.set_filter_state(state_key::ERROR_CODE, "untrusted-last-updated");
    log::warn!(
        "healthlake-relay: {}/{} has a meta.lastUpdated more than {} s ahead of the relay's clock; \
         forwarded, but the version guard does not record it (check the clocks of Smile CDR and \
         the relay)",
        target.resource_type,
        target.id,
        worker
            .config
            .version_guard
            .map_or(0, |l| l.clock_skew_seconds)
    );
}

/// Envoy's request callbacks.
impl Request {
    pub fn on_request_headers(&mut self, host: &impl Host, end_of_stream: bool) -> Action {
        let Some(worker) = self.worker.clone() else {
            return self.internal_error(host, "the relay is not configured");
        };
        let Some(headers) = host.request_headers() else {
            return self.internal_error(host, "could not read the request headers");
        };
        let head = RequestHead::read(&headers);
        host.set_filter_state(state_key::METHOD, &String::from_utf8_lossy(head.method));
        host.set_filter_state(state_key::PATH, &logged_path(head.path));
        if let Some(diagnostics) = authenticate(host, &worker, head.authorization) {
            return self.answer(
                host,
                401,
                Outcome::Unauthorized,
                (Severity::Error, "login"),
                diagnostics,
                &[("www-authenticate", "Bearer realm=\"healthlake-relay\"")],
            );
        }

        // A repeated content-type is rewritten to the one signed value, never passed on.
        let content_type_as_signed = |op| {
            head.content_types <= 1
                && head.content_type == signed_content_type(op).map(str::as_bytes)
        };
        let target = match plan_request(head.method, head.path, &worker.config) {
            Plan::Read => {
                return self.answer(
                    host,
                    405,
                    Outcome::ReadDropped,
                    (Severity::Information, "not-supported"),
                    READ_DIAGNOSTICS,
                    &[("allow", ALLOWED_METHODS)],
                )
            }
            Plan::Capabilities => return self.answer_capabilities(host, &worker),
            Plan::Reject(r) => return self.refuse(host, &r),
            Plan::BasePost if end_of_stream => {
                return self.refuse(host, &resource::base_post_rejection(b""))
            }
            Plan::BasePost => {
                return self.receive(host, Pending::BasePost);
            }
            Plan::Create { resource_type } => {
                self.as_signed = AsSigned {
                    method: false,
                    content_type: content_type_as_signed(Operation::Put),
                };
                host.set_filter_state(state_key::RESOURCE_TYPE, &resource_type);
                self.resource_type = Some(resource_type.clone());
                if let Some(action) = self.before_body(host, &headers, &head, Operation::Put) {
                    return action;
                }
                if end_of_stream {
                    return self.empty_put(host);
                }
                return self.receive(host, Pending::Create { resource_type });
            }
            Plan::Forward(target) => target,
        };
        self.as_signed = AsSigned {
            method: head.method == target.op.method().as_bytes(),
            content_type: content_type_as_signed(target.op),
        };
        host.set_filter_state(state_key::RESOURCE_TYPE, &target.resource_type);
        host.set_filter_state(state_key::RESOURCE_ID, &target.id);
        self.resource_type = Some(target.resource_type.clone());

        if let Some(source) = Self::known_unsupported(host, &worker, &target) {
            return self.answer_unsupported(host, &target, source);
        }
        if let Some(action) = self.before_body(host, &headers, &head, target.op) {
            return action;
        }
        if end_of_stream {
            return match target.op {
                Operation::Put => self.empty_put(host),
                Operation::Delete => {
                    self.sign_and_forward(host, target, EMPTY_SHA256.to_owned(), None, host.now())
                }
            };
        }
        self.receive(host, Pending::Write(target))
    }

    pub fn on_request_body(
        &mut self,
        host: &impl Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        let max = self.worker.as_ref().map_or(0, |s| s.config.max_body_bytes);
        let Phase::Receiving { hasher, body, .. } = &mut self.phase else {
            return Action::Continue;
        };
        if body_size as u64 > max {
            return self.too_large(host, max);
        }
        let most = self
            .declared_length
            .unwrap_or(usize::try_from(max).unwrap_or(usize::MAX));
        match Self::receive_body(host, hasher, body, body_size, most) {
            Ok(()) => {}
            Err(Received::Refused(why)) => return self.overloaded(host, why),
            Err(Received::HostError) => {
                return self.internal_error(host, "could not read the request body")
            }
        }
        if end_of_stream {
            self.end_of_body(host)
        } else {
            Action::Pause
        }
    }

    pub fn on_request_trailers(&mut self, host: &impl Host) -> Action {
        // With trailers, the end of the body is signalled here instead of in the body callback.
        self.end_of_body(host)
    }
}
