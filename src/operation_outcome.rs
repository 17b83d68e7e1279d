//! FHIR OperationOutcome bodies the relay writes when it answers a request itself.

use serde_json::json;

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

/// A one-issue OperationOutcome as JSON bytes. `code` is a FHIR issue-type code
/// (`invalid`, `not-supported`, `security`, `transient`, ...).
pub fn body(severity: Severity, code: &str, diagnostics: &str) -> Vec<u8> {
    let value = json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": severity.as_str(),
            "code": code,
            "diagnostics": diagnostics,
        }]
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_valid_operation_outcome_with_escaping() {
        let b = body(Severity::Error, "invalid", "bad \"id\" <x>");
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
