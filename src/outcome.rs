//! The relay's verdict on each request, and how HealthLake's answers are classified.
//!
//! Every request gets exactly one [`Outcome`], a fixed string used in the access log (`outcome`),
//! the `x-healthlake-outcome` response header and the stats. Smile CDR retries every delivery that
//! does not get a 2xx and never re-sends one that did, so the answer the relay gives Smile CDR
//! decides what is retried: `unsupported-type` and `already-absent` are 2xx (done, nothing to
//! retry), throttling, authentication failures and HealthLake errors are 429/5xx (retry later).

use crate::plan::Operation;
use crate::unsupported_types::Unsupported;

/// Defines [`Outcome`] from one table: each verdict, the fixed string operators see (access
/// log, `x-healthlake-outcome`), and its stat name (`_` for `-`).
macro_rules! outcomes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $stat:literal;)*) => {
        /// Every verdict the relay gives.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Outcome {
            $($(#[$doc])* $variant,)*
        }

        impl Outcome {
            /// Every outcome, for defining one stat each.
            pub const ALL: &'static [Outcome] = &[$(Outcome::$variant,)*];

            /// The fixed string operators see.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Outcome::$variant => $name,)*
                }
            }

            /// The same with `_` for `-`, for stat names.
            pub const fn stat_name(self) -> &'static str {
                match self {
                    $(Outcome::$variant => $stat,)*
                }
            }
        }
    };
}

outcomes! {
    /// HealthLake accepted a PUT.
    Delivered => "delivered", "delivered";
    /// HealthLake accepted a DELETE.
    Deleted => "deleted", "deleted";
    /// HealthLake did not have the resource a DELETE named: the mirror already agrees.
    AlreadyAbsent => "already-absent", "already_absent";
    /// HealthLake does not support the resource type: handled, never retried.
    UnsupportedType => "unsupported-type", "unsupported_type";
    /// Older than the version HealthLake already has: not forwarded.
    StaleVersion => "stale-version", "stale_version";
    /// HealthLake throttled the request.
    Throttled => "throttled", "throttled";
    /// HealthLake refused the signature or the credentials.
    AuthFailed => "auth-failed", "auth_failed";
    /// HealthLake (or the way to it) failed: 5xx, reset, timeout.
    UpstreamError => "upstream-error", "upstream_error";
    /// HealthLake refused the request with another 4xx.
    Rejected => "rejected", "rejected";
    /// A read (GET/HEAD) answered locally: reads are served by Smile CDR.
    ReadDropped => "read-dropped", "read_dropped";
    /// `GET [base]/metadata`: the relay's own CapabilityStatement.
    Capabilities => "capabilities", "capabilities";
    /// No usable credentials: nothing was forwarded.
    NoCredentials => "no-credentials", "no_credentials";
    /// The request was refused before anything was signed.
    InvalidRequest => "invalid-request", "invalid_request";
    /// The caller did not present an accepted credential.
    Unauthorized => "unauthorized", "unauthorized";
    /// The worker holds as many request bodies as its memory budget allows: nothing was
    /// forwarded; Smile CDR retries after `Retry-After`.
    Overloaded => "overloaded", "overloaded";
}

impl Outcome {
    /// Position in [`Outcome::ALL`], for per-outcome tables.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// How much of an error body the relay reads to classify it. HealthLake's error bodies are a few
/// hundred bytes; anything past this is passed on unread.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// What Smile CDR receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// HealthLake's answer, unchanged.
    PassThrough,
    /// HealthLake's body with another status (and `Retry-After` when `retry_after`).
    Status { status: u16, retry_after: bool },
    /// The relay's own answer: this status, and an OperationOutcome unless `body` is `None`
    /// (then no body at all, as for 204).
    Replace { status: u16, body: Option<Vec<u8>> },
}

/// The classification of one HealthLake answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub reply: Reply,
    /// HealthLake's error type (`ThrottlingException`, ...) or OperationOutcome issue code.
    pub error_code: Option<String>,
    /// HealthLake's own explanation (`message` or OperationOutcome diagnostics), for the logs.
    pub diagnostics: Option<String>,
}

impl Verdict {
    fn new(outcome: Outcome, reply: Reply) -> Verdict {
        Verdict {
            outcome,
            reply,
            error_code: None,
            diagnostics: None,
        }
    }
}

/// The classification possible from the status line and headers alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtHeaders {
    Final(Verdict),
    /// The body (at most [`MAX_ERROR_BODY_BYTES`]) decides: call [`classify_body`].
    NeedBody,
}

/// AWS error type without its namespace or suffix: `aws.protocols#ThrottlingException` and
/// `ThrottlingException:http://internal...` both give `ThrottlingException`.
pub fn normalise_error_type(raw: &str) -> &str {
    let raw = raw.trim();
    let raw = raw.rsplit('#').next().unwrap_or(raw);
    raw.split(':').next().unwrap_or(raw).trim()
}

/// Whether an AWS error type means "slow down".
pub fn is_throttling(error_type: &str) -> bool {
    matches!(
        normalise_error_type(error_type),
        "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "ProvisionedThroughputExceededException"
            | "SlowDown"
    )
}

/// The status Smile CDR gets for a HealthLake (or Envoy) 5xx or otherwise unusable answer.
fn gateway_status(status: u16) -> u16 {
    match status {
        503 => 503,
        504 | 408 => 504,
        _ => 502,
    }
}

/// First classification, from the status and HealthLake's `x-amzn-ErrorType` header.
pub fn classify_headers(op: Operation, status: u16, error_type: Option<&str>) -> AtHeaders {
    let throttled_header = error_type.is_some_and(is_throttling);
    let code = error_type.map(|e| normalise_error_type(e).to_owned());
    let verdict = match (status, op) {
        (200..=299, Operation::Put) => Verdict::new(Outcome::Delivered, Reply::PassThrough),
        (200..=299, Operation::Delete) => Verdict::new(Outcome::Deleted, Reply::PassThrough),
        (404 | 410, Operation::Delete) => Verdict::new(
            Outcome::AlreadyAbsent,
            Reply::Replace {
                status: 204,
                body: None,
            },
        ),
        (429, _) => throttled(),
        (_, _) if throttled_header => throttled(),
        (400..=499, _) if status != 408 => return AtHeaders::NeedBody,
        _ => Verdict::new(
            Outcome::UpstreamError,
            Reply::Status {
                status: gateway_status(status),
                retry_after: false,
            },
        ),
    };
    AtHeaders::Final(Verdict {
        error_code: verdict.error_code.or(code),
        ..verdict
    })
}

fn throttled() -> Verdict {
    Verdict::new(
        Outcome::Throttled,
        Reply::Status {
            status: 429,
            retry_after: true,
        },
    )
}

/// What an error body says: AWS JSON (`__type`, `message`) or a FHIR OperationOutcome.
#[derive(Debug, Default, PartialEq, Eq)]
struct ErrorBody {
    aws_type: Option<String>,
    message: Option<String>,
    issue_codes: Vec<String>,
    diagnostics: Option<String>,
    /// The diagnostics of each `not-supported` issue.
    not_supported: Vec<String>,
}

fn parse_error_body(body: &[u8]) -> ErrorBody {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return ErrorBody::default();
    };
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    let mut out = ErrorBody {
        aws_type: text(map.get("__type")).or_else(|| text(map.get("code"))),
        message: text(map.get("message")).or_else(|| text(map.get("Message"))),
        ..ErrorBody::default()
    };
    if map.get("resourceType").and_then(|v| v.as_str()) == Some("OperationOutcome") {
        if let Some(issues) = map.get("issue").and_then(|v| v.as_array()) {
            for issue in issues {
                if let Some(code) = text(issue.get("code")) {
                    if code == "not-supported" {
                        out.not_supported
                            .push(text(issue.get("diagnostics")).unwrap_or_default());
                    }
                    out.issue_codes.push(code);
                }
                if out.diagnostics.is_none() {
                    out.diagnostics = text(issue.get("diagnostics"));
                }
            }
        }
    }
    out
}

/// Whether HealthLake's diagnostics are its answer about the type itself, `ResourceType <type> is
/// not supported.` (the seed's text; the live wording is unconfirmed): only then is a
/// `not-supported` issue remembered for every write of the type. Anything else (an element, an
/// extension, a profile of one resource, even one that names the type) is `rejected`, for that
/// resource alone: a 2xx for a write HealthLake did not store must rest on certainty.
fn about_the_type(diagnostics: &str, resource_type: &str) -> bool {
    let text = diagnostics.trim();
    let text = text.strip_suffix('.').unwrap_or(text);
    !resource_type.is_empty()
        && text
            .strip_prefix("ResourceType ")
            .and_then(|rest| rest.strip_suffix(" is not supported"))
            == Some(resource_type)
}

/// Final classification of a 4xx from its body (at most [`MAX_ERROR_BODY_BYTES`] of it).
/// `resource` names the resource (`Patient/123`) for the relay's own OperationOutcomes.
pub fn classify_body(
    op: Operation,
    status: u16,
    error_type: Option<&str>,
    body: &[u8],
    resource_type: &str,
    resource: &str,
) -> Verdict {
    let parsed = parse_error_body(body);
    let error_type = error_type
        .map(normalise_error_type)
        .map(str::to_owned)
        .or_else(|| {
            parsed
                .aws_type
                .as_deref()
                .map(normalise_error_type)
                .map(str::to_owned)
        });
    let diagnostics = parsed.diagnostics.clone().or(parsed.message.clone());

    let mut verdict = if error_type.as_deref().is_some_and(is_throttling) {
        throttled()
    } else if status == 400
        && parsed
            .not_supported
            .iter()
            .any(|d| about_the_type(d, resource_type))
    {
        unsupported_verdict(op, resource_type, resource)
    } else if status == 401 || status == 403 {
        Verdict::new(
            Outcome::AuthFailed,
            Reply::Replace {
                status: 503,
                body: Some(crate::operation_outcome::body(
                    crate::operation_outcome::Severity::Error,
                    "transient",
                    &format!(
                        "HealthLake refused the relay's credentials or signature for {resource} \
                         ({}: {}). The relay answers 503 so that Smile CDR retries the delivery; \
                         check the relay's credentials and clock.",
                        error_type.as_deref().unwrap_or("no error type"),
                        diagnostics.as_deref().unwrap_or("no message")
                    ),
                )),
            },
        )
    } else if status == 404 && op == Operation::Delete {
        Verdict::new(
            Outcome::AlreadyAbsent,
            Reply::Replace {
                status: 204,
                body: None,
            },
        )
    } else {
        Verdict::new(Outcome::Rejected, Reply::PassThrough)
    };
    verdict.error_code = error_type.or_else(|| parsed.issue_codes.into_iter().next());
    verdict.diagnostics = diagnostics;
    verdict
}

/// The answer for a resource type HealthLake does not support: 200, so Smile CDR considers the
/// delivery done, with a warning OperationOutcome naming the type.
pub fn unsupported_verdict(op: Operation, resource_type: &str, resource: &str) -> Verdict {
    Verdict {
        outcome: Outcome::UnsupportedType,
        reply: Reply::Replace {
            status: 200,
            body: Some(unsupported_body(
                op,
                resource_type,
                resource,
                Unsupported::HealthLake,
            )),
        },
        error_code: Some("not-supported".to_owned()),
        diagnostics: None,
    }
}

/// The OperationOutcome of an `unsupported-type` answer, saying on whose word.
pub fn unsupported_body(
    op: Operation,
    resource_type: &str,
    resource: &str,
    source: Unsupported,
) -> Vec<u8> {
    crate::operation_outcome::body(
        crate::operation_outcome::Severity::Warning,
        "not-supported",
        &format!(
            "Amazon HealthLake does not support resource type {resource_type} ({}): {resource} was \
             not stored in HealthLake. This is expected and will not be retried.",
            source.reason(op)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_NOT_SUPPORTED: &str = r#"{
 "resourceType": "OperationOutcome",
 "issue": [
    {
      "severity": "error",
      "code": "not-supported",
      "diagnostics": "ResourceType Basic is not supported."
    }
  ]
}"#;

    fn at_headers(op: Operation, status: u16, et: Option<&str>) -> Verdict {
        match classify_headers(op, status, et) {
            AtHeaders::Final(v) => v,
            AtHeaders::NeedBody => panic!("{status} {et:?} needs the body"),
        }
    }

    fn body(status: u16, et: Option<&str>, body: &str) -> Verdict {
        classify_body(
            Operation::Put,
            status,
            et,
            body.as_bytes(),
            "Basic",
            "Basic/b1",
        )
    }

    #[test]
    fn strings_are_fixed_and_distinct() {
        let mut names: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Outcome::ALL.len());
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
            assert_eq!(o.stat_name(), o.as_str().replace('-', "_"));
        }
    }

    #[test]
    fn success_passes_through() {
        let v = at_headers(Operation::Put, 201, None);
        assert_eq!(
            (v.outcome, v.reply),
            (Outcome::Delivered, Reply::PassThrough)
        );
        let v = at_headers(Operation::Put, 200, None);
        assert_eq!(v.outcome, Outcome::Delivered);
        let v = at_headers(Operation::Delete, 204, None);
        assert_eq!((v.outcome, v.reply), (Outcome::Deleted, Reply::PassThrough));
    }

    #[test]
    fn delete_of_absent_resource_is_204() {
        for status in [404, 410] {
            let v = at_headers(Operation::Delete, status, None);
            assert_eq!(v.outcome, Outcome::AlreadyAbsent);
            assert_eq!(
                v.reply,
                Reply::Replace {
                    status: 204,
                    body: None
                }
            );
        }
        // A 404 to a PUT is a real problem (e.g. an unknown data store).
        assert_eq!(
            classify_headers(Operation::Put, 404, None),
            AtHeaders::NeedBody
        );
        assert_eq!(
            classify_body(Operation::Put, 404, None, b"{}", "Patient", "Patient/x").outcome,
            Outcome::Rejected
        );
    }

    #[test]
    fn throttling_as_429_or_as_400_with_error_type() {
        let v = at_headers(Operation::Put, 429, None);
        assert_eq!(v.outcome, Outcome::Throttled);
        assert_eq!(
            v.reply,
            Reply::Status {
                status: 429,
                retry_after: true
            }
        );
        let v = at_headers(
            Operation::Put,
            400,
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/"),
        );
        assert_eq!(v.outcome, Outcome::Throttled);
        assert_eq!(v.error_code.as_deref(), Some("ThrottlingException"));
        // Only in the body, as AWS JSON.
        let v = body(
            400,
            None,
            r#"{"__type":"com.amazonaws.healthlake#ThrottlingException","message":"Rate exceeded"}"#,
        );
        assert_eq!(v.outcome, Outcome::Throttled);
        assert_eq!(v.error_code.as_deref(), Some("ThrottlingException"));
        assert_eq!(v.diagnostics.as_deref(), Some("Rate exceeded"));
    }

    #[test]
    fn not_supported_is_handled_with_200_warning() {
        assert_eq!(
            classify_headers(Operation::Put, 400, None),
            AtHeaders::NeedBody
        );
        let v = body(400, None, SEED_NOT_SUPPORTED);
        assert_eq!(v.outcome, Outcome::UnsupportedType);
        assert_eq!(v.error_code.as_deref(), Some("not-supported"));
        assert_eq!(
            v.diagnostics.as_deref(),
            Some("ResourceType Basic is not supported.")
        );
        let Reply::Replace {
            status: 200,
            body: Some(b),
        } = v.reply
        else {
            panic!("{:?}", v.reply)
        };
        let oo: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(oo["issue"][0]["severity"], "warning");
        assert_eq!(oo["issue"][0]["code"], "not-supported");
        assert!(oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("Basic"));
    }

    #[test]
    fn not_supported_needs_status_400_and_the_issue_code() {
        // Another 400: rejected, passed through.
        let v = body(
            400,
            None,
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"bad date"}]}"#,
        );
        assert_eq!(v.outcome, Outcome::Rejected);
        assert_eq!(v.reply, Reply::PassThrough);
        assert_eq!(v.error_code.as_deref(), Some("invalid"));
        assert_eq!(v.diagnostics.as_deref(), Some("bad date"));
        // not-supported on a 422 is not HealthLake's unsupported-type answer.
        assert_eq!(
            body(422, None, SEED_NOT_SUPPORTED).outcome,
            Outcome::Rejected
        );
        // not-supported about something else than the type (one resource's content): rejected,
        // and nothing is learned about the type.
        for other in [
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"Extension http://x/y is not supported."}]}"#,
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported"}]}"#,
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"ResourceType BasicX is not supported."}]}"#,
            // Naming the type is not enough: elements and extension URLs start with it.
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"Element Basic.meta.security is not supported."}]}"#,
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"Extension http://example.org/fhir/StructureDefinition/Basic-x is not supported."}]}"#,
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"Modifier extension on Basic is not supported"}]}"#,
        ] {
            let v = body(400, None, other);
            assert_eq!(v.outcome, Outcome::Rejected, "{other}");
            assert_eq!(v.reply, Reply::PassThrough);
        }
        // Unparseable bodies are rejected, not unsupported.
        assert_eq!(body(400, None, "<html>").outcome, Outcome::Rejected);
        assert_eq!(body(400, None, "").outcome, Outcome::Rejected);
    }

    #[test]
    fn auth_failures_become_503() {
        for (et, b) in [
            (
                Some("ExpiredTokenException"),
                r#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#,
            ),
            (
                None,
                r#"{"__type":"InvalidSignatureException","message":"Signature expired: 20200101T000000Z is now earlier than ..."}"#,
            ),
            (Some("AccessDeniedException"), "{}"),
            (None, ""),
        ] {
            let v = classify_body(
                Operation::Put,
                403,
                et,
                b.as_bytes(),
                "Patient",
                "Patient/p",
            );
            assert_eq!(v.outcome, Outcome::AuthFailed, "{et:?} {b}");
            let Reply::Replace {
                status: 503,
                body: Some(oo),
            } = &v.reply
            else {
                panic!("{:?}", v.reply)
            };
            let oo: serde_json::Value = serde_json::from_slice(oo).unwrap();
            assert_eq!(oo["issue"][0]["code"], "transient");
        }
        let v = body(
            403,
            None,
            r#"{"__type":"ExpiredTokenException","message":"expired"}"#,
        );
        assert_eq!(v.error_code.as_deref(), Some("ExpiredTokenException"));
    }

    #[test]
    fn server_errors_map_to_gateway_statuses() {
        for (upstream, answer) in [
            (500, 502),
            (502, 502),
            (503, 503),
            (504, 504),
            (408, 504),
            (302, 502),
            (0, 502),
        ] {
            let v = at_headers(Operation::Put, upstream, None);
            assert_eq!(v.outcome, Outcome::UpstreamError, "{upstream}");
            assert_eq!(
                v.reply,
                Reply::Status {
                    status: answer,
                    retry_after: false
                },
                "{upstream}"
            );
        }
        let v = at_headers(Operation::Delete, 500, Some("InternalServerException"));
        assert_eq!(v.error_code.as_deref(), Some("InternalServerException"));
    }

    #[test]
    fn other_4xx_are_rejected_and_passed_through() {
        for status in [400, 409, 412, 413, 415, 422] {
            assert_eq!(
                classify_headers(Operation::Put, status, None),
                AtHeaders::NeedBody
            );
            let v = body(
                status,
                None,
                r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"x"}]}"#,
            );
            assert_eq!(v.outcome, Outcome::Rejected);
            assert_eq!(v.reply, Reply::PassThrough);
        }
    }

    #[test]
    fn a_delete_is_already_absent_only_on_404() {
        let delete = |status: u16| {
            classify_body(
                Operation::Delete,
                status,
                None,
                br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"x"}]}"#,
                "Patient",
                "Patient/p",
            )
        };
        let v = delete(404);
        assert_eq!(v.outcome, Outcome::AlreadyAbsent);
        assert_eq!(
            v.reply,
            Reply::Replace {
                status: 204,
                body: None
            }
        );
        for status in [400, 409, 412, 422] {
            let v = delete(status);
            assert_eq!(v.outcome, Outcome::Rejected, "{status}");
            assert_eq!(v.reply, Reply::PassThrough, "{status}");
            assert_eq!(v.error_code.as_deref(), Some("processing"));
        }
        // An expired token on a DELETE is an auth failure like on a PUT.
        assert_eq!(delete(401).outcome, Outcome::AuthFailed);
    }

    #[test]
    fn at_most_64_kib_of_an_error_body_is_read() {
        assert_eq!(MAX_ERROR_BODY_BYTES, 65_536);
    }

    #[test]
    fn error_type_normalisation() {
        assert_eq!(
            normalise_error_type("ThrottlingException"),
            "ThrottlingException"
        );
        assert_eq!(
            normalise_error_type("aws#ThrottlingException"),
            "ThrottlingException"
        );
        assert_eq!(
            normalise_error_type(" ExpiredTokenException:http://x "),
            "ExpiredTokenException"
        );
        assert!(is_throttling("TooManyRequestsException"));
        assert!(!is_throttling("ValidationException"));
    }
}
