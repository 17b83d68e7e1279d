//! FHIR OperationOutcome bodies the relay writes when it answers a request itself.

use serde::Serialize;

/// `application/fhir+json`, the content type of every body the relay writes.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Severity of an OperationOutcome issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    Information,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OperationOutcome<'a> {
    resource_type: &'static str,
    issue: [Issue<'a>; 1],
}

#[derive(Serialize)]
struct Issue<'a> {
    severity: &'static str,
    code: &'a str,
    diagnostics: &'a str,
}

/// A one-issue OperationOutcome as JSON bytes, `resourceType` first as FHIR writes it. `code` is
/// a FHIR issue-type code (`invalid`, `not-supported`, `security`, `transient`, ...).
pub fn body(severity: Severity, code: &str, diagnostics: &str) -> Vec<u8> {
    let outcome = OperationOutcome {
        resource_type: "OperationOutcome",
        issue: [Issue {
            severity: severity.as_str(),
            code,
            diagnostics,
        }],
    };
    serde_json::to_vec(&outcome).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_valid_operation_outcome_with_escaping() {
        let b = body(Severity::Error, "invalid", "bad \"id\" <x>");
        assert!(b.starts_with(br#"{"resourceType":"OperationOutcome","issue":[{"#));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(v["issue"][0]["severity"], "error");
        assert_eq!(v["issue"][0]["code"], "invalid");
        assert_eq!(v["issue"][0]["diagnostics"], "bad \"id\" <x>");
        let w: serde_json::Value =
            serde_json::from_slice(&body(Severity::Warning, "not-supported", "x")).unwrap();
        assert_eq!(w["issue"][0]["severity"], "warning");
    }
}
