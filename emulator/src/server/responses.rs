//! The shapes of the answers: a response from parts, a FHIR OperationOutcome, an AWS JSON error,
//! a JSON document, and the headers AWS's front end adds to a data-plane answer.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use serde_json::json;

use super::{Resp, AWS_JSON};
use crate::fhir::{self, FHIR_JSON};
use crate::frontend;

/// Builds a response; header values that cannot be represented are skipped (they are all built
/// from validated text, so this does not happen in practice).
pub(super) fn response(
    status: StatusCode,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Resp {
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

pub(super) fn outcome_response(status: StatusCode, code: &str, diagnostics: &str) -> Resp {
    response(
        status,
        &[("content-type", FHIR_JSON.to_string())],
        fhir::operation_outcome(code, diagnostics),
    )
}

/// An AWS JSON error: `{"__type", "message"}` with `x-amzn-ErrorType`.
pub(super) fn aws_error_response(
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
pub(super) fn add_front_end_headers(resp: &mut Resp, request_id: &str, now: SystemTime) {
    for (name, value) in frontend::headers(request_id, now) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
}

pub(super) fn json_response(status: StatusCode, value: &impl Serialize) -> Resp {
    response(
        status,
        &[("content-type", "application/json".to_string())],
        serde_json::to_vec(value).unwrap_or_default(),
    )
}
