//! FHIR helpers: OperationOutcome bodies, URL segment validation, the checks HealthLake makes on
//! a `PUT` body, and stamping `meta.versionId` / `meta.lastUpdated` on the echoed resource.

use serde_json::{json, Map, Value};

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";

/// `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":..,"diagnostics":..}]}`
pub fn operation_outcome(code: &str, diagnostics: &str) -> Vec<u8> {
    let v = json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error",
            "code": code,
            "diagnostics": diagnostics,
        }],
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A FHIR resource type name as it may appear in a URL: `[A-Z][A-Za-z]{0,63}`.
pub fn is_valid_resource_type(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphabetic())
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Why a `PUT` body was refused: the OperationOutcome issue code and the diagnostics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub diagnostics: String,
}

fn reject(code: &'static str, diagnostics: impl Into<String>) -> Rejection {
    Rejection {
        code,
        diagnostics: diagnostics.into(),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks a `PUT /{Type}/{id}` body: a JSON object whose `resourceType` is `Type` and whose `id`
/// is `id`. Returns the parsed object (key order preserved).
pub fn validate_put(
    body: &[u8],
    resource_type: &str,
    id: &str,
) -> Result<Map<String, Value>, Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(reject(
            "invalid",
            format!("request body is empty; expected a FHIR {resource_type} resource as JSON"),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| reject("invalid", format!("request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(reject(
            "invalid",
            format!(
                "request body must be a JSON object (a FHIR resource), not {}",
                json_kind(&value)
            ),
        ));
    };
    match obj.get("resourceType") {
        None => {
            return Err(reject(
                "invalid",
                "resource has no resourceType element",
            ))
        }
        Some(Value::String(t)) if t == resource_type => {}
        Some(Value::String(t)) => {
            return Err(reject(
                "processing",
                format!(
                    "resourceType '{t}' in the body does not match the resource type '{resource_type}' in the URL"
                ),
            ))
        }
        Some(other) => {
            return Err(reject(
                "invalid",
                format!("resourceType must be a string, not {}", json_kind(other)),
            ))
        }
    }
    match obj.get("id") {
        None => {
            return Err(reject(
                "processing",
                format!(
                    "resource has no id element; an update (PUT) must carry an id matching the URL id '{id}'"
                ),
            ))
        }
        Some(Value::String(got)) if got == id => {}
        Some(Value::String(got)) => {
            return Err(reject(
                "processing",
                format!("resource id '{got}' in the body does not match the id '{id}' in the URL"),
            ))
        }
        Some(other) => {
            return Err(reject(
                "invalid",
                format!("id must be a string, not {}", json_kind(other)),
            ))
        }
    }
    if let Some(meta) = obj.get("meta") {
        if !meta.is_object() {
            return Err(reject(
                "invalid",
                format!("meta must be a JSON object, not {}", json_kind(meta)),
            ));
        }
    }
    Ok(obj)
}

/// Sets `meta.versionId` and `meta.lastUpdated` (keeping every other key where it was; a new
/// `meta` goes last) and serialises the resource.
pub fn with_meta(mut resource: Map<String, Value>, version: u64, last_updated: &str) -> Vec<u8> {
    let meta = resource
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(m) = meta {
        m.insert("versionId".into(), Value::String(version.to_string()));
        m.insert(
            "lastUpdated".into(),
            Value::String(last_updated.to_string()),
        );
    }
    serde_json::to_vec(&Value::Object(resource)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_put_bodies() {
        let ok = validate_put(br#"{"resourceType":"Patient","id":"a"}"#, "Patient", "a");
        assert!(ok.is_ok());
        let code = |b: &[u8]| validate_put(b, "Patient", "a").unwrap_err().code;
        assert_eq!(code(b""), "invalid");
        assert_eq!(code(b"{"), "invalid");
        assert_eq!(code(b"[]"), "invalid");
        assert_eq!(code(br#"{"id":"a"}"#), "invalid");
        assert_eq!(
            code(br#"{"resourceType":"Observation","id":"a"}"#),
            "processing"
        );
        assert_eq!(code(br#"{"resourceType":"Patient"}"#), "processing");
        assert_eq!(
            code(br#"{"resourceType":"Patient","id":"b"}"#),
            "processing"
        );
        assert_eq!(code(br#"{"resourceType":"Patient","id":1}"#), "invalid");
        assert_eq!(
            code(br#"{"resourceType":"Patient","id":"a","meta":1}"#),
            "invalid"
        );
    }

    #[test]
    fn stamps_meta_preserving_order() {
        let obj = validate_put(
            br#"{"resourceType":"Patient","id":"a","meta":{"source":"x","versionId":"9"},"active":true}"#,
            "Patient",
            "a",
        )
        .unwrap();
        let out = with_meta(obj, 3, "2024-01-01T00:00:00.000Z");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"resourceType":"Patient","id":"a","meta":{"source":"x","versionId":"3","lastUpdated":"2024-01-01T00:00:00.000Z"},"active":true}"#
        );
        let obj = validate_put(
            br#"{"resourceType":"Patient","id":"a","z":1,"b":2}"#,
            "Patient",
            "a",
        )
        .unwrap();
        let out = with_meta(obj, 1, "t");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"resourceType":"Patient","id":"a","z":1,"b":2,"meta":{"versionId":"1","lastUpdated":"t"}}"#
        );
    }

    #[test]
    fn validates_segments() {
        assert!(is_valid_resource_type("Patient"));
        assert!(!is_valid_resource_type("patient"));
        assert!(!is_valid_resource_type("Pat1ent"));
        assert!(is_valid_id("example-1.2"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id(&"a".repeat(65)));
    }
}
