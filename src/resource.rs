//! Checks on the resource a write carries, before anything is signed: a JSON object whose
//! `resourceType` and `id` match the path, and the version fields the version guard compares.

use crate::fhir;
use crate::instant::{self, Nanos};
use crate::outcome::Outcome;
use crate::plan::Rejection;
use crate::text::quoted;
use serde::Deserialize;
use std::borrow::Cow;

/// What the relay reads from a resource body. Unknown fields are skipped (but still checked to be
/// well-formed JSON); a repeated `resourceType`, `id` or `meta` is an error, so a body cannot say
/// one id to the relay and another to HealthLake. Strings are borrowed from the body (copied only
/// when they hold escapes), and only checked, bounded values are kept.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    meta: Option<Meta<'a>>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(rename = "lastUpdated", borrow)]
    last_updated: Option<Cow<'a, str>>,
    #[serde(rename = "versionId", borrow)]
    version_id: Option<Cow<'a, str>>,
}

/// The version of a resource as Smile CDR stamped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// `meta.lastUpdated`, if present.
    pub last_updated: Option<Nanos>,
    /// `meta.versionId`, if present.
    pub version_id: Option<String>,
}

/// A body that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub resource_type: String,
    pub id: Option<String>,
    pub version: Version,
}

fn invalid(status: u16, code: &'static str, diagnostics: String) -> Rejection {
    Rejection {
        status,
        issue_code: code,
        diagnostics,
        outcome: Outcome::InvalidRequest,
        allow: false,
    }
}

/// Whether a `Content-Type` is FHIR JSON (`application/fhir+json`, `application/json`, or the
/// DSTU2 `application/json+fhir`), with any parameters (`; charset=UTF-8`).
pub fn is_fhir_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    [
        "application/fhir+json",
        "application/json",
        "application/json+fhir",
    ]
    .iter()
    .any(|m| m.eq_ignore_ascii_case(media))
}

/// The 415 answer to a write whose content type is not FHIR JSON.
pub fn unsupported_media_type(content_type: Option<&str>) -> Rejection {
    invalid(
        415,
        "not-supported",
        format!(
            "Content-Type {} is not supported: send application/fhir+json (set the \
             Subscription's payload to application/fhir+json).",
            content_type.map_or_else(|| "(none)".to_owned(), |c| quoted(c, 80))
        ),
    )
}

/// Deepest JSON nesting accepted (objects and arrays). FHIR resources nest a few dozen levels at
/// most; this refuses hostile bodies before any parser recurses into them.
pub const MAX_JSON_DEPTH: usize = 128;

/// Whether the JSON text nests deeper than `max` (strings and escapes are skipped).
fn nests_deeper_than(text: &[u8], max: usize) -> bool {
    // Every level opens with a bracket: a body with few brackets needs no scan (most resources).
    if memchr::memchr2_iter(b'{', b'[', text).count() <= max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a body: UTF-8 JSON, an object with a FHIR `resourceType` and, if present, a valid `id`
/// and `meta.lastUpdated`.
pub fn parse(body: &[u8]) -> Result<Resource, Rejection> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(invalid(
            400,
            "structure",
            "The body is not UTF-8 text (FHIR JSON is UTF-8).".to_owned(),
        ));
    };
    if nests_deeper_than(body, MAX_JSON_DEPTH) {
        return Err(invalid(
            400,
            "structure",
            format!("The body nests JSON deeper than {MAX_JSON_DEPTH} levels."),
        ));
    }
    let head: Head = match serde_json::from_str(text) {
        Ok(h) => h,
        Err(e) if e.is_data() && body.first() != Some(&b'{') => {
            return Err(invalid(
                400,
                "structure",
                "The body is not a JSON object (a FHIR resource).".to_owned(),
            ))
        }
        Err(e) => {
            return Err(invalid(
                400,
                "structure",
                format!("The body is not a valid FHIR JSON resource: {e}."),
            ))
        }
    };
    let Some(resource_type) = head.resource_type else {
        return Err(invalid(
            400,
            "required",
            "The body has no resourceType.".to_owned(),
        ));
    };
    if !fhir::is_r4_resource_type(&resource_type) {
        return Err(invalid(
            400,
            "invalid",
            format!(
                "The body's resourceType {} is not a FHIR R4 resource type.",
                quoted(&resource_type, 80)
            ),
        ));
    }
    if let Some(id) = &head.id {
        if !fhir::is_valid_id(id) {
            return Err(invalid(
                400,
                "invalid",
                format!(
                    "The body's id {} is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}}).",
                    quoted(id, 80)
                ),
            ));
        }
    }
    let (last_updated, version_id) = match head.meta {
        Some(m) => (m.last_updated, m.version_id),
        None => (None, None),
    };
    // A versionId is a FHIR id; anything else is not compared (nor kept: it would be held for
    // the whole round trip to HealthLake, outside the body budget).
    let version_id = version_id
        .filter(|v| fhir::is_valid_id(v))
        .map(Cow::into_owned);
    let last_updated = match last_updated {
        None => None,
        Some(s) => Some(instant::parse(&s).ok_or_else(|| {
            invalid(
                400,
                "invalid",
                format!("meta.lastUpdated {} is not a FHIR instant.", quoted(&s, 40)),
            )
        })?),
    };
    Ok(Resource {
        resource_type: resource_type.into_owned(),
        id: head.id.map(Cow::into_owned),
        version: Version {
            last_updated,
            version_id,
        },
    })
}

/// Checks that the body's `resourceType` is the path's.
fn check_type(resource: &Resource, resource_type: &str) -> Result<(), Rejection> {
    if resource.resource_type == resource_type {
        return Ok(());
    }
    Err(invalid(
        400,
        "invalid",
        format!(
            "The body's resourceType {} does not match the path's {resource_type}.",
            quoted(&resource.resource_type, 80)
        ),
    ))
}

/// Checks that the body is the resource the path names: same type and, for an update, same id.
pub fn check_matches(resource: &Resource, resource_type: &str, id: &str) -> Result<(), Rejection> {
    check_type(resource, resource_type)?;
    match &resource.id {
        Some(body_id) if body_id == id => Ok(()),
        Some(body_id) => Err(invalid(
            400,
            "invalid",
            format!(
                "The body's id {} does not match the path's id {}.",
                quoted(body_id, 80),
                quoted(id, 80)
            ),
        )),
        None => Err(invalid(
            400,
            "required",
            format!("The body has no id; an update of {resource_type}/{id} must carry it."),
        )),
    }
}

/// For `POST /{type}`: the id the resource must be stored under. HealthLake would assign a new
/// id to a POST and the mirror would diverge from Smile CDR, so the relay sends it as a PUT of
/// the body's own id, and refuses a body without one.
pub fn id_for_create(resource: &Resource, resource_type: &str) -> Result<String, Rejection> {
    check_type(resource, resource_type)?;
    resource.id.clone().ok_or_else(|| {
        invalid(
            422,
            "required",
            format!(
                "POST /{resource_type} without an id cannot be mirrored: HealthLake would assign \
                 its own id. Send the resource with its Smile CDR id (the REST-hook PUT does)."
            ),
        )
    })
}

/// The answer to a `POST` to the base: a Subscription without payload (empty body) or with
/// payload search criteria (a transaction Bundle), or anything else; never forwarded.
pub fn base_post_rejection(body: &[u8]) -> Rejection {
    let trimmed = body.iter().all(u8::is_ascii_whitespace);
    let diagnostics = if trimmed {
        "POST to the relay's base with an empty body: the Subscription has no payload. Set \
         Subscription.channel.payload to application/fhir+json so that Smile CDR sends each \
         resource as PUT /{type}/{id}."
            .to_owned()
    } else if parse(body).is_ok_and(|r| r.resource_type == "Bundle") {
        "POST of a Bundle to the relay's base: the Subscription uses payload search criteria. \
         Remove them (and set Subscription.channel.payload to application/fhir+json) so that \
         Smile CDR sends each resource as PUT /{type}/{id}."
            .to_owned()
    } else {
        "POST to the relay's base is not supported: the relay accepts PUT and DELETE of \
         /{type}/{id} as sent by a Smile CDR REST-hook Subscription with payload \
         application/fhir+json."
            .to_owned()
    };
    invalid(400, "not-supported", diagnostics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Resource {
        parse(body.as_bytes()).unwrap()
    }

    fn err(body: &[u8]) -> Rejection {
        parse(body).unwrap_err()
    }

    #[test]
    fn content_types() {
        for ct in [
            "application/fhir+json",
            "application/fhir+json; charset=UTF-8",
            "Application/JSON",
            "application/json+fhir;charset=utf-8",
        ] {
            assert!(is_fhir_json(ct), "{ct}");
        }
        for ct in [
            "application/fhir+xml",
            "text/plain",
            "",
            "application/jsonx",
        ] {
            assert!(!is_fhir_json(ct), "{ct}");
        }
        assert_eq!(unsupported_media_type(Some("text/xml")).status, 415);
        assert!(unsupported_media_type(None).diagnostics.contains("(none)"));
    }

    #[test]
    fn reads_type_id_and_version() {
        let r = ok(
            r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"3","lastUpdated":"2026-01-01T00:00:00Z","source":"x"},"name":[{"family":"A"}]}"#,
        );
        assert_eq!(r.resource_type, "Patient");
        assert_eq!(r.id.as_deref(), Some("p1"));
        assert_eq!(r.version.version_id.as_deref(), Some("3"));
        assert!(r.version.last_updated.is_some());
        // A versionId that is not a FHIR id (an 8 KiB one, escapes) is neither compared nor kept.
        let long = format!(
            r#"{{"resourceType":"Patient","id":"p\u0031","meta":{{"versionId":"{}"}}}}"#,
            "9".repeat(8192)
        );
        let r = ok(&long);
        assert_eq!((r.id.as_deref(), r.version.version_id), (Some("p1"), None));
        let r = ok(r#"{"resourceType":"Patient"}"#);
        assert_eq!(r.id, None);
        assert_eq!(r.version.last_updated, None);
    }

    #[test]
    fn malformed_bodies_are_400() {
        for body in [
            &b""[..],
            b"[]",
            b"null",
            b"\"Patient\"",
            b"{",
            b"{\"resourceType\":\"Patient\",}",
            b"\xff\xfe{}",
            b"{\"resourceType\":\"Patient\",\"x\":\"\xff\"}",
            b"{\"resourceType\":5}",
            b"{\"resourceType\":\"Patient\",\"id\":7}",
        ] {
            let r = err(body);
            assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(body));
            assert_eq!(r.outcome, Outcome::InvalidRequest);
        }
        assert_eq!(err(b"{}").issue_code, "required");
        assert_eq!(err(br#"{"resourceType":"Nope"}"#).issue_code, "invalid");
        assert_eq!(
            err(br#"{"resourceType":"Patient","id":"a b"}"#).issue_code,
            "invalid"
        );
        let r = err(br#"{"resourceType":"Patient","meta":{"lastUpdated":"yesterday"}}"#);
        assert!(r.diagnostics.contains("lastUpdated"));
    }

    #[test]
    fn duplicate_keys_cannot_smuggle_another_id() {
        let r = err(br#"{"resourceType":"Patient","id":"a","id":"b"}"#);
        assert!(
            r.diagnostics.contains("duplicate field"),
            "{}",
            r.diagnostics
        );
        assert_eq!(
            err(br#"{"resourceType":"Patient","resourceType":"Basic"}"#).status,
            400
        );
    }

    #[test]
    fn nesting_depth_skips_strings() {
        assert!(!nests_deeper_than(br#"{"a":"[[[[[[","b":"\"[[["}"#, 2));
        assert!(nests_deeper_than(br#"{"a":[[1]]}"#, 2));
        assert!(!nests_deeper_than(br#"{"a":[[1]]}"#, 3));
    }

    #[test]
    fn nesting_depth_counts_levels_not_brackets() {
        // Closed brackets give their level back: many siblings are not deep.
        assert!(!nests_deeper_than(br#"{"a":[1],"b":[2],"c":{"d":3}}"#, 2));
        assert!(nests_deeper_than(br#"{"a":[1],"b":[[2]]}"#, 2));
        // An escaped quote does not end a string, and the string does end after it.
        assert!(nests_deeper_than(br#"{"a":"x\"y","b":[[1]]}"#, 2));
        assert!(nests_deeper_than(br#"{"a":"x\\","b":[[1]]}"#, 2));
        assert!(!nests_deeper_than(br#"{"a":"x\\\"[[[[","b":[1]}"#, 2));
    }

    #[test]
    fn malformed_bodies_are_explained() {
        for (body, says) in [
            (&b"[]"[..], "is not a JSON object"),
            (b"null", "is not a JSON object"),
            (b"\"Patient\"", "is not a JSON object"),
            (
                b"{\"resourceType\":5}",
                "is not a valid FHIR JSON resource: invalid type",
            ),
            (
                b"{\"resourceType\":\"Patient\",}",
                "is not a valid FHIR JSON resource",
            ),
            (b"nope", "is not a valid FHIR JSON resource"),
            (b"{", "is not a valid FHIR JSON resource"),
            (b"\xff", "is not UTF-8"),
        ] {
            let r = err(body);
            assert!(
                r.diagnostics.contains(says),
                "{:?}: {}",
                String::from_utf8_lossy(body),
                r.diagnostics
            );
            assert_eq!((r.status, r.issue_code), (400, "structure"));
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = format!(
            r#"{{"resourceType":"Basic","x":{}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(err(deep.as_bytes()).status, 400);
    }

    #[test]
    fn body_must_match_the_path() {
        let r = ok(r#"{"resourceType":"Patient","id":"p1"}"#);
        assert!(check_matches(&r, "Patient", "p1").is_ok());
        assert_eq!(check_matches(&r, "Patient", "p2").unwrap_err().status, 400);
        assert_eq!(
            check_matches(&r, "Observation", "p1").unwrap_err().status,
            400
        );
        let r = ok(r#"{"resourceType":"Patient"}"#);
        assert_eq!(
            check_matches(&r, "Patient", "p1").unwrap_err().issue_code,
            "required"
        );
    }

    #[test]
    fn create_needs_an_id() {
        let with = ok(r#"{"resourceType":"Patient","id":"p9"}"#);
        assert_eq!(id_for_create(&with, "Patient").unwrap(), "p9");
        let without = ok(r#"{"resourceType":"Patient"}"#);
        assert_eq!(id_for_create(&without, "Patient").unwrap_err().status, 422);
        assert_eq!(id_for_create(&with, "Basic").unwrap_err().status, 400);
    }

    #[test]
    fn base_posts_explain_the_subscription_setting() {
        assert!(base_post_rejection(b"").diagnostics.contains("no payload"));
        assert!(base_post_rejection(b"  \n")
            .diagnostics
            .contains("no payload"));
        let bundle = br#"{"resourceType":"Bundle","type":"transaction","entry":[]}"#;
        assert!(base_post_rejection(bundle)
            .diagnostics
            .contains("search criteria"));
        assert_eq!(base_post_rejection(b"{}").status, 400);
    }
}
