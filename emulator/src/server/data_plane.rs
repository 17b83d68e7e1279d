//! A data-plane request: verified, then (unless rejected) shaped by the faults in force, handed
//! to its handler ([`App::dispatch`]), logged and recorded.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, StatusCode, Uri};

use super::request_log::{Observed, Verdict, RESET_DIAGNOSTICS};
use super::responses::{aws_error_response, outcome_response, response};
use super::routing::{route, Route};
use super::verification::rejection;
use super::{Answer, App, Resp};
use crate::capabilities::Interaction;
use crate::faults::{self, Decision, Fault, FaultReply};

/// What the normal handling of a verified request produced.
pub(super) struct Handled {
    pub(super) resp: Resp,
    /// For a failure, the diagnostics to record.
    pub(super) problem: Option<String>,
    /// `Fault::UnsupportedType` when that setting shaped the answer.
    pub(super) fault: Option<Fault>,
}

impl Handled {
    pub(super) fn plain((resp, problem): (Resp, Option<String>)) -> Self {
        Handled {
            resp,
            problem,
            fault: None,
        }
    }
}

/// Waits, without blocking the runtime; no timer for a zero delay.
async fn wait(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

impl App {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn data_plane(
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
            let resp = rejection(e, &verification);
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
}
