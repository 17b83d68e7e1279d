//! Request planning: from an inbound method and path to what the relay does with it.
//!
//! Pure and host-agnostic: the glue calls [`plan`] once per request, at its headers.

use crate::config::Config;
use crate::fhir;
use crate::outcome::Outcome;

/// The HealthLake write a forwarded request becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Put,
    Delete,
}

impl Operation {
    pub const fn method(self) -> &'static str {
        match self {
            Operation::Put => "PUT",
            Operation::Delete => "DELETE",
        }
    }
}

/// A request to forward: the operation and the resource it addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub op: Operation,
    pub resource_type: String,
    pub id: String,
    /// `/datastore/{id}/r4/{Type}/{id}`: the path sent to, and signed for, HealthLake.
    pub upstream_path: String,
}

/// A request the relay answers itself, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// FHIR issue-type code for the OperationOutcome.
    pub issue_code: &'static str,
    pub diagnostics: String,
    pub outcome: Outcome,
    /// Whether to send `Allow: PUT, DELETE` (for 405 answers).
    pub allow: bool,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A read: answered locally with 405, never forwarded.
    Read,
    /// `GET`/`HEAD [base]/metadata` (any query): the relay's own CapabilityStatement.
    Capabilities,
    /// Answered locally with an error, never forwarded.
    Reject(Rejection),
    /// Signed and forwarded to HealthLake.
    Forward(Target),
    /// `POST /{type}`: forwarded as a PUT of the body's own id, once the body is read.
    Create { resource_type: String },
    /// `POST` to the base (a Subscription without payload, or with payload search criteria):
    /// answered locally once the body says which.
    BasePost,
}

/// The methods the relay forwards, for `Allow` headers.
pub const ALLOWED_METHODS: &str = "PUT, DELETE";

/// Diagnostics of the 405 answer to reads.
pub const READ_DIAGNOSTICS: &str = "The HealthLake relay only carries writes (PUT, DELETE) from \
Smile CDR to Amazon HealthLake; reads and searches are served by Smile CDR.";

fn reject(status: u16, issue_code: &'static str, diagnostics: impl Into<String>) -> Plan {
    Plan::Reject(Rejection {
        status,
        issue_code,
        diagnostics: diagnostics.into(),
        outcome: Outcome::InvalidRequest,
        allow: status == 405,
    })
}

/// Decides what to do with a request line as the bytes received: one that is not UTF-8 cannot
/// be a FHIR write (types, ids and methods are ASCII) and gets `400`.
pub fn plan_request(method: &[u8], path: &[u8], config: &Config) -> Plan {
    match (std::str::from_utf8(method), std::str::from_utf8(path)) {
        (Ok(method), Ok(path)) => plan(method, path, config),
        _ => reject(
            400,
            "invalid",
            "The request's method or path is not valid UTF-8; the relay accepts PUT and DELETE \
             of /{type}/{id} as sent by a Smile CDR REST-hook subscription.",
        ),
    }
}

/// Decides what to do with `method` on `path` (as received, query string included).
pub fn plan(method: &str, path: &str, config: &Config) -> Plan {
    match method {
        "GET" | "HEAD" => {
            let without_query = path.split(['?', '#']).next().unwrap_or_default();
            return match without_query.strip_prefix(config.inbound_base_path.as_str()) {
                Some("/metadata") => Plan::Capabilities,
                _ => Plan::Read,
            };
        }
        "PUT" | "DELETE" | "POST" => {}
        "PATCH" => {
            return reject(
                405,
                "not-supported",
                "PATCH is not supported: the relay mirrors whole resources, which Smile CDR's \
                 REST-hook sends as PUT /{type}/{id}.",
            )
        }
        other => {
            return reject(
                405,
                "not-supported",
                format!(
                    "Method {} is not supported by the HealthLake relay; it accepts PUT and \
                     DELETE of /{{type}}/{{id}} as sent by a Smile CDR REST-hook subscription.",
                    printable(other)
                ),
            )
        }
    }

    if path.contains(['?', '#']) {
        return reject(
            400,
            "not-supported",
            "Query strings (conditional writes, search parameters) are not supported: the relay \
             accepts PUT and DELETE of /{type}/{id} only.",
        );
    }

    let base = config.inbound_base_path.as_str();
    let rest = match path.strip_prefix(base) {
        Some("" | "/") if method == "POST" => return Plan::BasePost,
        Some(r) => r.strip_prefix('/'),
        None => None,
    };
    let Some(rest) = rest else {
        return reject(
            404,
            "not-found",
            format!(
                "Path {} is not under the relay's base path {base}/.",
                printable(path)
            ),
        );
    };

    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.starts_with('$')) {
        return reject(
            400,
            "not-supported",
            "FHIR operations ($...) are not supported by the relay: it mirrors resource writes only.",
        );
    }
    if segments.contains(&"_history") {
        return reject(
            400,
            "not-supported",
            "History and version-specific paths (_history) are not supported: the relay mirrors \
             the latest version with PUT /{type}/{id}.",
        );
    }

    let (resource_type, id) = match (method, segments.as_slice()) {
        ("POST", [t]) if !t.is_empty() => (*t, None),
        ("POST", _) => {
            return reject(
                405,
                "not-supported",
                format!(
                "POST is accepted only to {base}/{{type}} (a create carrying its id); {} is not.",
                printable(path)
            ),
            )
        }
        (_, [t, i]) => (*t, Some(*i)),
        _ => {
            return reject(
                400,
                "invalid",
                format!(
                    "Path {} does not have the form {base}/{{type}}/{{id}}.",
                    printable(path)
                ),
            )
        }
    };

    if !fhir::is_r4_resource_type(resource_type) {
        return reject(
            400,
            "invalid",
            format!(
                "{} is not a FHIR R4 resource type.",
                printable(resource_type)
            ),
        );
    }
    let Some(id) = id else {
        return Plan::Create {
            resource_type: resource_type.to_owned(),
        };
    };
    if !fhir::is_valid_id(id) {
        return reject(
            400,
            "invalid",
            format!(
                "{} is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}}).",
                printable(id)
            ),
        );
    }
    let op = if method == "DELETE" {
        Operation::Delete
    } else {
        Operation::Put
    };
    Plan::Forward(Target::new(op, resource_type, id, config))
}

impl Target {
    /// The target for `op` on `Type/id`, with its upstream path.
    pub fn new(op: Operation, resource_type: &str, id: &str, config: &Config) -> Target {
        Target {
            op,
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            upstream_path: format!("{}/{resource_type}/{id}", config.upstream_prefix),
        }
    }
}

/// Quotes untrusted text for a diagnostics message.
fn printable(s: &str) -> String {
    crate::text::quoted(s, 80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base: &str) -> Config {
        Config::from_json(
            format!(
                r#"{{"region":"us-east-1","datastore_id":"ds1","healthlake_host":"h","inbound_base_path":"{base}"}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn rejected(p: Plan) -> Rejection {
        match p {
            Plan::Reject(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn put_and_delete_map_to_datastore_paths() {
        let c = config("");
        assert_eq!(
            plan("PUT", "/Patient/example", &c),
            Plan::Forward(Target {
                op: Operation::Put,
                resource_type: "Patient".into(),
                id: "example".into(),
                upstream_path: "/datastore/ds1/r4/Patient/example".into(),
            })
        );
        match plan("DELETE", "/Observation/a.b-1", &c) {
            Plan::Forward(t) => {
                assert_eq!(t.op, Operation::Delete);
                assert_eq!(t.upstream_path, "/datastore/ds1/r4/Observation/a.b-1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn base_path_is_required_and_stripped() {
        let c = config("/fhir");
        match plan("PUT", "/fhir/Patient/p1", &c) {
            Plan::Forward(t) => assert_eq!(t.upstream_path, "/datastore/ds1/r4/Patient/p1"),
            other => panic!("{other:?}"),
        }
        for p in ["/Patient/p1", "/fhirX/Patient/p1", "/fhir"] {
            let r = rejected(plan("PUT", p, &c));
            assert_eq!((r.status, r.issue_code), (404, "not-found"), "{p}");
            assert!(r.diagnostics.contains("base path /fhir/"), "{r:?}");
        }
    }

    #[test]
    fn reads_are_never_forwarded() {
        let c = config("");
        assert_eq!(plan("GET", "/Patient/example", &c), Plan::Read);
        assert_eq!(plan("HEAD", "/anything?x=1", &c), Plan::Read);
    }

    #[test]
    fn metadata_under_the_base_is_the_relays_capability_statement() {
        let c = config("");
        for p in [
            "/metadata",
            "/metadata?_format=json",
            "/metadata?mode=full#x",
        ] {
            assert_eq!(plan("GET", p, &c), Plan::Capabilities, "{p}");
        }
        assert_eq!(plan("HEAD", "/metadata", &c), Plan::Capabilities);
        for p in [
            "/metadata/",
            "/Patient/metadata",
            "/metadataX",
            "/fhir/metadata",
        ] {
            assert_eq!(plan("GET", p, &c), Plan::Read, "{p}");
        }
        let f = config("/fhir");
        assert_eq!(plan("GET", "/fhir/metadata", &f), Plan::Capabilities);
        assert_eq!(plan("GET", "/metadata", &f), Plan::Read);
        // Only reads: a write to /metadata is an ordinary (refused) write.
        assert_ne!(plan("PUT", "/metadata", &c), Plan::Capabilities);
        assert_ne!(plan("POST", "/metadata", &c), Plan::Capabilities);
    }

    #[test]
    fn post_to_a_type_is_a_create_and_to_the_base_is_explained() {
        let c = config("");
        assert_eq!(
            plan("POST", "/Patient", &c),
            Plan::Create {
                resource_type: "Patient".into()
            }
        );
        assert_eq!(plan("POST", "/", &c), Plan::BasePost);
        assert_eq!(plan("POST", "", &c), Plan::BasePost);
        let f = config("/fhir");
        assert_eq!(plan("POST", "/fhir", &f), Plan::BasePost);
        assert_eq!(plan("POST", "/fhir/", &f), Plan::BasePost);
        for (p, status, code) in [
            ("/Patient/x", 405, "not-supported"),
            ("//", 405, "not-supported"),
            ("/NotAType", 400, "invalid"),
            ("/Patient?name=x", 400, "not-supported"),
        ] {
            let r = rejected(plan("POST", p, &c));
            assert_eq!((r.status, r.issue_code), (status, code), "{p}");
            assert_eq!(r.allow, status == 405, "{p}");
            assert_eq!(r.outcome, Outcome::InvalidRequest, "{p}");
        }
        let r = rejected(plan("POST", "/Patient/x", &c));
        assert!(
            r.diagnostics.contains("POST is accepted only to /{type}"),
            "{r:?}"
        );
    }

    #[test]
    fn operations_history_and_patch_are_explained() {
        let c = config("");
        let r = rejected(plan("POST", "/Patient/$validate", &c));
        assert!(r.diagnostics.contains("operations"), "{r:?}");
        let r = rejected(plan("PUT", "/Patient/x/_history/2", &c));
        assert!(r.diagnostics.contains("_history"), "{r:?}");
        let r = rejected(plan("PATCH", "/Patient/x", &c));
        assert_eq!(r.status, 405);
        assert!(r.diagnostics.contains("PATCH"));
        let r = rejected(plan("PUT", "/Patient?identifier=x", &c));
        assert!(r.diagnostics.contains("conditional"));
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let c = config("");
        for m in ["PATCH", "OPTIONS", "TRACE", "put", "CONNECT"] {
            let r = rejected(plan(m, "/Patient/example", &c));
            assert_eq!(r.status, 405, "{m}");
            assert!(r.allow);
            assert_eq!(r.outcome, Outcome::InvalidRequest);
        }
    }

    #[test]
    fn malformed_paths_are_rejected_before_signing() {
        let c = config("");
        let long = format!("/Patient/{}", "x".repeat(65));
        // (path, status, issue code, what the diagnostics say)
        for (p, status, code, says) in [
            ("/Patient", 400, "invalid", "does not have the form"),
            ("/Patient/", 400, "invalid", "\"\" is not a valid FHIR id"),
            ("/Patient//x", 400, "invalid", "does not have the form"),
            ("//Patient/x", 400, "invalid", "does not have the form"),
            ("/Patient/x/y", 400, "invalid", "does not have the form"),
            ("/", 400, "invalid", "does not have the form"),
            ("/Patient/x/_history/1", 400, "not-supported", "_history"),
            (
                "/Patient/..",
                400,
                "invalid",
                "\"..\" is not a valid FHIR id",
            ),
            ("/Patient/.", 400, "invalid", "\".\" is not a valid FHIR id"),
            (
                "/Patient/a%2Fb",
                400,
                "invalid",
                "\"a%2Fb\" is not a valid FHIR id",
            ),
            (&long, 400, "invalid", "is not a valid FHIR id"),
            ("/Patient/a?b=c", 400, "not-supported", "Query strings"),
            ("/Patient/a#b", 400, "not-supported", "Query strings"),
            (
                "/Patient?identifier=x",
                400,
                "not-supported",
                "Query strings",
            ),
            ("/patient/x", 400, "invalid", "\"patient\" is not a FHIR R4"),
            (
                "/NotAType/x",
                400,
                "invalid",
                "\"NotAType\" is not a FHIR R4",
            ),
            ("/Patient/$validate", 400, "not-supported", "operations"),
            ("/$meta", 400, "not-supported", "operations"),
            ("/../Patient/x", 400, "invalid", "does not have the form"),
            ("", 404, "not-found", "is not under the relay's base path"),
            (
                "Patient/x",
                404,
                "not-found",
                "is not under the relay's base path",
            ),
        ] {
            let r = rejected(plan("PUT", p, &c));
            assert_eq!((r.status, r.issue_code), (status, code), "{p}: {r:?}");
            assert!(r.diagnostics.contains(says), "{p}: {r:?}");
            assert_eq!(r.outcome, Outcome::InvalidRequest, "{p}");
            assert!(!r.allow, "{p}");
        }
        // The same for a DELETE.
        let r = rejected(plan("DELETE", "/Patient", &c));
        assert_eq!((r.status, r.issue_code), (400, "invalid"));
    }

    #[test]
    fn operations_name_their_http_method() {
        assert_eq!(Operation::Put.method(), "PUT");
        assert_eq!(Operation::Delete.method(), "DELETE");
    }

    #[test]
    fn only_a_post_may_address_the_base_itself() {
        let c = config("");
        for m in ["PUT", "DELETE"] {
            let r = rejected(plan(m, "/", &c));
            assert_eq!((r.status, r.issue_code), (400, "invalid"), "{m}");
        }
        let f = config("/fhir");
        for (m, p, status) in [
            ("PUT", "/fhir/", 400),
            ("DELETE", "/fhir", 404),
            ("PUT", "/fhir", 404),
        ] {
            assert_eq!(rejected(plan(m, p, &f)).status, status, "{m} {p}");
        }
    }

    #[test]
    fn diagnostics_quote_untrusted_text_safely() {
        let c = config("");
        let r = rejected(plan("PUT", "/Pat\nient/x", &c));
        assert!(r.diagnostics.contains("\\n"), "{}", r.diagnostics);
        let r = rejected(plan("PUT", &format!("/{}/x", "A".repeat(500)), &c));
        assert!(r.diagnostics.len() < 200);
    }

    #[test]
    fn a_request_line_that_is_not_utf8_is_a_400() {
        let c = config("");
        for (method, path) in [
            (&b"PUT"[..], &b"/Patient/caf\xe9"[..]),
            (b"PUT", b"/Pat\xffient/x"),
            (b"P\xffT", b"/Patient/x"),
        ] {
            let r = rejected(plan_request(method, path, &c));
            assert_eq!((r.status, r.issue_code), (400, "invalid"));
            assert!(r.diagnostics.contains("UTF-8"), "{}", r.diagnostics);
        }
        assert_eq!(
            plan_request(b"PUT", b"/Patient/x", &c),
            plan("PUT", "/Patient/x", &c)
        );
    }
}
