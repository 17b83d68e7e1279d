//! The faults the emulator can inject: their names (as written in `next` and as recorded in the
//! request log) and what each one answers.

use std::fmt;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::metadata::MetadataFault;
use crate::sigv4::{Reason, EXPIRED_TOKEN_MESSAGE};

/// The longest delay a `delay:N` entry or `latency_ms` may ask for, in milliseconds.
pub const MAX_DELAY_MS: u64 = 600_000;

/// The size of the body of a `large:NNN` answer, in bytes (more than 64 KiB).
pub const LARGE_BODY_BYTES: usize = 100_000;

/// The body of a `garbled:NNN` answer: the start of an AWS JSON error, then bytes that are not
/// UTF-8 (`0xff 0xfe 0x00`), cut short in the middle of a string and of a UTF-8 sequence. Neither
/// valid UTF-8 nor valid JSON.
pub const GARBLED_BODY: &[u8] =
    b"{\"__type\": \"Thrott\xff\xfe\x00lingException\", \"message\": \"Rate exc\xe2\x82";

/// AWS's message for a signature mismatch.
const INVALID_SIGNATURE_MESSAGE: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";

/// Which of the two forms AWS uses for a throttling error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleForm {
    /// `429 Too Many Requests`.
    TooManyRequests,
    /// `400 Bad Request` (AWS's common-error convention for `ThrottlingException`).
    BadRequest,
}

impl ThrottleForm {
    pub fn status(self) -> StatusCode {
        match self {
            ThrottleForm::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ThrottleForm::BadRequest => StatusCode::BAD_REQUEST,
        }
    }
}

/// One injected fault.
///
/// Written as text (in `next` and in the request log's `fault` field) as `"400"`..`"599"`,
/// `"reset"`, `"throttle-429"`, `"throttle-429-bare"`, `"throttle-400"`, `"expired-token"`,
/// `"invalid-signature"`, `"delay:N"` (recorded as `"delay"`), `"empty:NNN"`, `"large:NNN"`,
/// `"garbled:NNN"` (recorded as `"empty"`, `"large"`, `"garbled"`), `"not-supported-element"`,
/// `"unsupported-type"` and `"metadata-500"`, `"metadata-garbage"`, `"metadata-empty"`,
/// `"metadata-no-interactions"` (recorded only; they come from `unsupported_types` and
/// `metadata`, not from `next`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Fault {
    /// That 4xx or 5xx status with an OperationOutcome (`processing` for 4xx, `exception` for
    /// 5xx); nothing stored.
    ServerError(StatusCode),
    /// The connection is closed without an answer; nothing stored.
    Reset,
    /// A `ThrottlingException`.
    Throttle(ThrottleForm),
    /// A `429` `ThrottlingException` without `retry-after`.
    ThrottleBare,
    /// A 403 `ExpiredTokenException`.
    ExpiredToken,
    /// A 403 `InvalidSignatureException`.
    InvalidSignature,
    /// Wait this many milliseconds, then handle the request normally.
    Delay(u64),
    /// A `400` `not-supported` about one resource's content, not its type (the relay must not
    /// learn the type as unsupported from it).
    NotSupportedElement,
    /// The resource type is configured as not supported.
    UnsupportedType,
    /// The `metadata` setting shaped the CapabilityStatement's answer.
    Metadata(MetadataFault),
    /// That 4xx or 5xx status with an empty body and no content type (a front end that sends no
    /// body).
    Empty(StatusCode),
    /// That 4xx or 5xx status with a `text/html` body of [`LARGE_BODY_BYTES`] bytes (a padded
    /// HTML error page).
    Large(StatusCode),
    /// That 4xx or 5xx status, `application/json`, with [`GARBLED_BODY`].
    Garbled(StatusCode),
}

/// What a fault makes the server answer, before any normal handling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultReply {
    /// A FHIR OperationOutcome error.
    Outcome {
        status: StatusCode,
        code: &'static str,
        diagnostics: String,
    },
    /// An AWS JSON error: `{"__type": error_type, "message": message}` with
    /// `x-amzn-ErrorType: error_type` (and `retry-after` when set).
    AwsError {
        status: StatusCode,
        error_type: &'static str,
        message: &'static str,
        retry_after_seconds: Option<u32>,
    },
    /// An answer whose body is given as bytes, with this content type (none when `None`) and no
    /// `x-amzn-ErrorType`; `diagnostics` is what the request log records as its error.
    Raw {
        status: StatusCode,
        content_type: Option<&'static str>,
        body: Vec<u8>,
        diagnostics: String,
    },
    /// Close the connection without answering.
    Reset,
    /// Handle the request normally.
    Proceed,
}

impl Fault {
    /// Parses a `next` entry.
    pub fn parse(s: &str) -> Result<Fault, String> {
        let expected = "expected \"400\"..\"599\", \"reset\", \"throttle-429\", \
                        \"throttle-429-bare\", \"throttle-400\", \"expired-token\", \
                        \"invalid-signature\", \"not-supported-element\", \"delay:<milliseconds>\", \
                        \"empty:<status>\", \"large:<status>\" or \"garbled:<status>\"";
        match s {
            "reset" => return Ok(Fault::Reset),
            "throttle-429" => return Ok(Fault::Throttle(ThrottleForm::TooManyRequests)),
            "throttle-429-bare" => return Ok(Fault::ThrottleBare),
            "throttle-400" => return Ok(Fault::Throttle(ThrottleForm::BadRequest)),
            "expired-token" => return Ok(Fault::ExpiredToken),
            "invalid-signature" => return Ok(Fault::InvalidSignature),
            "not-supported-element" => return Ok(Fault::NotSupportedElement),
            "unsupported-type" => {
                return Err(
                    "\"unsupported-type\" is not a `next` entry; list the resource types in \
                     `unsupported_types` instead"
                        .to_string(),
                )
            }
            _ => {}
        }
        if s.starts_with("metadata") {
            return Err(format!(
                "\"{s}\" is not a `next` entry; set `metadata` (\"500\", \"garbage\", \"empty\" \
                 or \"no-interactions\") instead"
            ));
        }
        if let Some(ms) = s.strip_prefix("delay:") {
            let ms = parse_digits(ms).ok_or_else(|| {
                format!("\"{s}\": the delay must be a whole number of milliseconds")
            })?;
            if ms > MAX_DELAY_MS {
                return Err(format!(
                    "\"{s}\": the delay must be at most {MAX_DELAY_MS} milliseconds"
                ));
            }
            return Ok(Fault::Delay(ms));
        }
        for (prefix, make) in [
            ("empty:", Fault::Empty as fn(StatusCode) -> Fault),
            ("large:", Fault::Large),
            ("garbled:", Fault::Garbled),
        ] {
            if let Some(digits) = s.strip_prefix(prefix) {
                if digits.len() != 3 || parse_digits(digits).is_none() {
                    return Err(format!(
                        "\"{s}\": expected a status 400..599 after \"{prefix}\", e.g. \"{prefix}503\""
                    ));
                }
                return error_status(s, digits).map(make);
            }
        }
        if s.len() == 3 && parse_digits(s).is_some() {
            return error_status(s, s).map(Fault::ServerError);
        }
        Err(format!("unknown fault \"{s}\": {expected}"))
    }

    /// The kind recorded in the request log and counted: `"503"`, `"reset"`, `"delay"`,
    /// `"empty"`, ... (an entry's name without its parameter, except for `"400"`..`"599"`).
    pub fn kind(&self) -> String {
        match self {
            Fault::Delay(_) => "delay".to_string(),
            Fault::Empty(_) => "empty".to_string(),
            Fault::Large(_) => "large".to_string(),
            Fault::Garbled(_) => "garbled".to_string(),
            other => other.to_string(),
        }
    }

    /// What this fault answers in place of the normal handling.
    pub fn reply(&self) -> FaultReply {
        match *self {
            Fault::ServerError(status) => FaultReply::Outcome {
                status,
                code: if status.is_client_error() {
                    "processing"
                } else {
                    "exception"
                },
                diagnostics: format!(
                    "{} (fault injected by the HealthLake emulator)",
                    status.canonical_reason().unwrap_or("Server error")
                ),
            },
            Fault::Reset => FaultReply::Reset,
            Fault::Throttle(form) => FaultReply::AwsError {
                status: form.status(),
                error_type: "ThrottlingException",
                message: "Rate exceeded",
                retry_after_seconds: Some(1),
            },
            Fault::ThrottleBare => FaultReply::AwsError {
                status: StatusCode::TOO_MANY_REQUESTS,
                error_type: "ThrottlingException",
                message: "Rate exceeded",
                retry_after_seconds: None,
            },
            Fault::Empty(status) => FaultReply::Raw {
                status,
                content_type: None,
                body: Vec::new(),
                diagnostics: format!(
                    "{} with an empty body (fault injected by the HealthLake emulator)",
                    status.as_u16()
                ),
            },
            Fault::Large(status) => FaultReply::Raw {
                status,
                content_type: Some("text/html"),
                body: large_html_page(status),
                diagnostics: format!(
                    "{} with a {LARGE_BODY_BYTES}-byte text/html body (fault injected by the \
                     HealthLake emulator)",
                    status.as_u16()
                ),
            },
            Fault::Garbled(status) => FaultReply::Raw {
                status,
                content_type: Some("application/json"),
                body: GARBLED_BODY.to_vec(),
                diagnostics: format!(
                    "{} with a garbled application/json body (fault injected by the HealthLake \
                     emulator)",
                    status.as_u16()
                ),
            },
            Fault::ExpiredToken => FaultReply::AwsError {
                status: StatusCode::FORBIDDEN,
                error_type: Reason::ExpiredToken.error_type(),
                message: EXPIRED_TOKEN_MESSAGE,
                retry_after_seconds: None,
            },
            Fault::InvalidSignature => FaultReply::AwsError {
                status: StatusCode::FORBIDDEN,
                error_type: "InvalidSignatureException",
                message: INVALID_SIGNATURE_MESSAGE,
                retry_after_seconds: None,
            },
            Fault::NotSupportedElement => FaultReply::Outcome {
                status: StatusCode::BAD_REQUEST,
                code: "not-supported",
                diagnostics: "Element Patient.meta.security is not supported by this data store \
                              (fault injected by the HealthLake emulator)"
                    .to_string(),
            },
            Fault::Delay(_) | Fault::UnsupportedType | Fault::Metadata(_) => FaultReply::Proceed,
        }
    }
}

/// The diagnostics HealthLake gives for a resource type it does not support.
pub fn unsupported_type_diagnostics(resource_type: &str) -> String {
    format!("ResourceType {resource_type} is not supported.")
}

/// The status `digits` of the entry `entry`, which must be 400..599.
fn error_status(entry: &str, digits: &str) -> Result<StatusCode, String> {
    parse_digits(digits)
        .and_then(|code| u16::try_from(code).ok())
        .filter(|c| (400..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("\"{entry}\": a status must be 400..599"))
}

/// An HTML error page for `status`, padded (inside a comment) to exactly [`LARGE_BODY_BYTES`].
pub fn large_html_page(status: StatusCode) -> Vec<u8> {
    const FILLER: &str = "This error page is padded to make it large. ";
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let head = format!(
        "<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n<body><h1>{title}</h1>\n\
         <p>The request could not be satisfied (fault injected by the HealthLake emulator).</p>\n\
         <!-- "
    );
    let tail = " -->\n</body></html>\n";
    let room = LARGE_BODY_BYTES.saturating_sub(head.len() + tail.len());
    let mut page = String::with_capacity(LARGE_BODY_BYTES);
    page.push_str(&head);
    page.extend(FILLER.chars().cycle().take(room));
    page.push_str(tail);
    page.into_bytes()
}

/// A non-empty run of ASCII digits as a number (no sign, no spaces).
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The `next` entry form: `"503"`, `"delay:1500"`, ...
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::ServerError(status) => write!(f, "{}", status.as_u16()),
            Fault::Reset => f.write_str("reset"),
            Fault::Throttle(ThrottleForm::TooManyRequests) => f.write_str("throttle-429"),
            Fault::Throttle(ThrottleForm::BadRequest) => f.write_str("throttle-400"),
            Fault::ThrottleBare => f.write_str("throttle-429-bare"),
            Fault::ExpiredToken => f.write_str("expired-token"),
            Fault::InvalidSignature => f.write_str("invalid-signature"),
            Fault::NotSupportedElement => f.write_str("not-supported-element"),
            Fault::Delay(ms) => write!(f, "delay:{ms}"),
            Fault::UnsupportedType => f.write_str("unsupported-type"),
            Fault::Metadata(form) => write!(f, "metadata-{form}"),
            Fault::Empty(status) => write!(f, "empty:{}", status.as_u16()),
            Fault::Large(status) => write!(f, "large:{}", status.as_u16()),
            Fault::Garbled(status) => write!(f, "garbled:{}", status.as_u16()),
        }
    }
}

impl TryFrom<String> for Fault {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Fault::parse(&s)
    }
}

impl From<Fault> for String {
    fn from(f: Fault) -> String {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_next_entries() {
        for s in [
            "500",
            "503",
            "599",
            "reset",
            "throttle-429",
            "throttle-429-bare",
            "throttle-400",
            "expired-token",
            "invalid-signature",
            "not-supported-element",
            "delay:0",
            "delay:1500",
            "empty:400",
            "empty:401",
            "large:503",
            "garbled:599",
        ] {
            assert_eq!(Fault::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            Fault::parse("throttle-429-bare").unwrap(),
            Fault::ThrottleBare
        );
        assert_eq!(
            Fault::parse("throttle-429-bare").unwrap().kind(),
            "throttle-429-bare"
        );
        for (s, fault, kind) in [
            ("empty:403", Fault::Empty(StatusCode::FORBIDDEN), "empty"),
            ("large:502", Fault::Large(StatusCode::BAD_GATEWAY), "large"),
            (
                "garbled:429",
                Fault::Garbled(StatusCode::TOO_MANY_REQUESTS),
                "garbled",
            ),
        ] {
            assert_eq!(Fault::parse(s).unwrap(), fault);
            assert_eq!(fault.kind(), kind);
        }
        assert_eq!(
            Fault::parse("503").unwrap(),
            Fault::ServerError(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(Fault::parse("delay:1500").unwrap(), Fault::Delay(1500));
        assert_eq!(Fault::parse("delay:1500").unwrap().kind(), "delay");
        assert_eq!(Fault::parse("throttle-400").unwrap().kind(), "throttle-400");
        assert_eq!(
            Fault::parse(&format!("delay:{MAX_DELAY_MS}")).unwrap(),
            Fault::Delay(MAX_DELAY_MS)
        );
    }

    #[test]
    fn rejects_bad_next_entries() {
        for (s, needle) in [
            ("399", "400..599"),
            ("600", "400..599"),
            ("5030", "unknown fault"),
            ("50", "unknown fault"),
            ("+50", "unknown fault"),
            ("", "unknown fault"),
            ("RESET", "unknown fault"),
            ("throttle", "unknown fault"),
            ("delay:", "whole number"),
            ("delay:-1", "whole number"),
            ("delay:1.5", "whole number"),
            ("delay: 5", "whole number"),
            ("delay:600001", "at most 600000"),
            ("delay:99999999999999999999999", "whole number"),
            ("unsupported-type", "unsupported_types"),
            ("metadata-500", "set `metadata`"),
            ("metadata", "set `metadata`"),
            ("throttle-429-BARE", "unknown fault"),
            ("empty", "unknown fault"),
            ("empty:", "a status 400..599 after \"empty:\""),
            ("empty:4O1", "a status 400..599 after"),
            ("empty:4010", "a status 400..599 after"),
            ("empty: 401", "a status 400..599 after"),
            ("empty:200", "a status must be 400..599"),
            ("large:600", "a status must be 400..599"),
            ("large:399", "a status must be 400..599"),
            ("garbled:", "after \"garbled:\""),
            ("garbled:-500", "after \"garbled:\""),
            ("GARBLED:500", "unknown fault"),
        ] {
            let e = Fault::parse(s).unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn replies() {
        assert_eq!(
            Fault::ServerError(StatusCode::SERVICE_UNAVAILABLE).reply(),
            FaultReply::Outcome {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "exception",
                diagnostics: "Service Unavailable (fault injected by the HealthLake emulator)"
                    .into(),
            }
        );
        assert!(matches!(
            Fault::Throttle(ThrottleForm::BadRequest).reply(),
            FaultReply::AwsError {
                status: StatusCode::BAD_REQUEST,
                error_type: "ThrottlingException",
                retry_after_seconds: Some(1),
                ..
            }
        ));
        assert!(matches!(
            Fault::ThrottleBare.reply(),
            FaultReply::AwsError {
                status: StatusCode::TOO_MANY_REQUESTS,
                error_type: "ThrottlingException",
                message: "Rate exceeded",
                retry_after_seconds: None,
            }
        ));
        assert_eq!(Fault::Reset.reply(), FaultReply::Reset);
        assert_eq!(Fault::Delay(5).reply(), FaultReply::Proceed);
        let metadata = Fault::Metadata(MetadataFault::NoInteractions);
        assert_eq!(metadata.reply(), FaultReply::Proceed);
        assert_eq!(metadata.kind(), "metadata-no-interactions");
        let FaultReply::Raw {
            status,
            content_type,
            body,
            ..
        } = Fault::Empty(StatusCode::UNAUTHORIZED).reply()
        else {
            panic!("not raw")
        };
        assert_eq!(
            (status, content_type, body.len()),
            (StatusCode::UNAUTHORIZED, None, 0)
        );
        let FaultReply::Raw {
            status,
            content_type,
            body,
            ..
        } = Fault::Large(StatusCode::SERVICE_UNAVAILABLE).reply()
        else {
            panic!("not raw")
        };
        assert_eq!(
            (status, content_type, body.len()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("text/html"),
                LARGE_BODY_BYTES
            )
        );
        let page = String::from_utf8(body).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"), "{page:.80}");
        assert!(page.contains("<title>503 Service Unavailable</title>"));
        assert!(page.ends_with("</body></html>\n"));
        assert!(serde_json::from_str::<serde_json::Value>(&page).is_err());
        let FaultReply::Raw {
            content_type, body, ..
        } = Fault::Garbled(StatusCode::INTERNAL_SERVER_ERROR).reply()
        else {
            panic!("not raw")
        };
        assert_eq!(content_type, Some("application/json"));
        assert!(body.starts_with(b"{\"__type\": \"Thrott\xff\xfe\x00"));
        assert!(std::str::from_utf8(&body).is_err());
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
        assert_eq!(
            unsupported_type_diagnostics("Basic"),
            "ResourceType Basic is not supported."
        );
    }
}
