//! The plan file (JSON lines, one REST-hook delivery per line, each resource's deliveries in
//! the order Smile CDR made them) and the truth file (what Smile CDR holds at the end).
//!
//! A plan line:
//!
//! ```text
//! {"resource":"Patient/example-1","method":"PUT","version_id":"2","body":"{\"resourceType\":...}"}
//! {"resource":"Patient/example-1","method":"DELETE"}
//! ```
//!
//! `body` is the exact text sent; `body_file` (a path, relative to the plan's directory) may
//! stand instead of it. `version_id` gives the `If-Match: W/"<versionId>"` header (taken from the
//! body's `meta.versionId` when absent). Other keys (`last_updated`, `scenario`) are notes for
//! people and are ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A REST-hook delivery's method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "DELETE")]
    Delete,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        })
    }
}

/// One line of a plan file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanLine {
    /// `Type/id`.
    pub resource: String,
    pub method: Method,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// `meta.lastUpdated` of the version (a note; the body carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_file: Option<String>,
    /// Which history the generator gave the resource (a note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
}

/// A delivery ready to send.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// 1-based line number in the plan.
    pub line: usize,
    /// Index into [`Plan::resources`].
    pub resource: usize,
    pub resource_type: String,
    pub id: String,
    pub method: Method,
    /// For `If-Match: W/"<versionId>"` (PUT only).
    pub version_id: Option<String>,
    /// The exact bytes of a PUT.
    pub body: Option<Arc<[u8]>>,
    /// The plan's note of the resource's history, if any.
    pub scenario: Option<String>,
}

/// A loaded plan.
#[derive(Debug, Default)]
pub struct Plan {
    pub deliveries: Vec<Delivery>,
    /// Every resource (`Type/id`), in order of first appearance.
    pub resources: Vec<String>,
}

/// True for a FHIR resource id: `[A-Za-z0-9-.]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// True for something shaped like a FHIR resource type name.
pub fn is_type_name(t: &str) -> bool {
    let mut bytes = t.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z')) && bytes.all(|b| b.is_ascii_alphabetic())
}

/// Splits `Type/id`, checking both parts.
pub fn split_resource(resource: &str) -> Result<(&str, &str), String> {
    let (t, id) = resource
        .split_once('/')
        .ok_or_else(|| format!("resource {resource:?} is not Type/id"))?;
    if !is_type_name(t) {
        return Err(format!(
            "resource {resource:?}: {t:?} is not a resource type"
        ));
    }
    if !is_valid_id(id) {
        return Err(format!(
            "resource {resource:?}: {id:?} is not a FHIR id ([A-Za-z0-9-.]{{1,64}})"
        ));
    }
    Ok((t, id))
}

/// `meta.versionId` of a JSON resource, if it has one.
fn version_of(body: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    doc.get("meta")?
        .get("versionId")?
        .as_str()
        .map(str::to_string)
}

/// Reads a plan file. Errors name the line.
pub fn load_plan(path: &Path) -> Result<Plan, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the plan {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let mut plan = Plan::default();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let n = n.saturating_add(1);
        let at = |e: String| format!("{} line {n}: {e}", path.display());
        let line = line.map_err(|e| at(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: PlanLine = serde_json::from_str(&line).map_err(|e| at(e.to_string()))?;
        let (t, id) = split_resource(&parsed.resource).map_err(at)?;
        let body: Option<Arc<[u8]>> = match (&parsed.body, &parsed.body_file) {
            (Some(_), Some(_)) => return Err(at("both body and body_file".into())),
            (Some(text), None) => Some(Arc::from(text.as_bytes())),
            (None, Some(file)) => {
                let p = base.join(file);
                let bytes =
                    std::fs::read(&p).map_err(|e| at(format!("body_file {}: {e}", p.display())))?;
                Some(Arc::from(bytes))
            }
            (None, None) => None,
        };
        match (parsed.method, &body) {
            (Method::Put, None) => return Err(at("a PUT needs a body or body_file".into())),
            (Method::Delete, Some(_)) => return Err(at("a DELETE has no body".into())),
            _ => {}
        }
        let version_id = match parsed.method {
            Method::Put => parsed
                .version_id
                .clone()
                .or_else(|| body.as_deref().and_then(version_of)),
            Method::Delete => None,
        };
        let next = plan.resources.len();
        let resource = *index.entry(parsed.resource.clone()).or_insert(next);
        if resource == next {
            plan.resources.push(parsed.resource.clone());
        }
        plan.deliveries.push(Delivery {
            line: n,
            resource,
            resource_type: t.to_string(),
            id: id.to_string(),
            method: parsed.method,
            version_id,
            body,
            scenario: parsed.scenario,
        });
    }
    Ok(plan)
}

/// What Smile CDR holds of one resource at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held<'a> {
    /// The bytes of its last version, and that version's id.
    Present {
        version_id: Option<&'a str>,
        body: &'a [u8],
    },
    Deleted,
}

/// Each resource's final state: its last delivery decides (Smile CDR's own store, whatever
/// became of the deliveries). Sorted by `Type/id`.
pub fn truth(plan: &Plan) -> BTreeMap<&str, Held<'_>> {
    let mut out = BTreeMap::new();
    for d in &plan.deliveries {
        let Some(name) = plan.resources.get(d.resource) else {
            continue;
        };
        let held = match (&d.method, &d.body) {
            (Method::Put, Some(body)) => Held::Present {
                version_id: d.version_id.as_deref(),
                body,
            },
            _ => Held::Deleted,
        };
        out.insert(name.as_str(), held);
    }
    out
}

#[derive(Serialize)]
struct TruthLine<'a> {
    resource: &'a str,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    /// For a body that is not UTF-8 (not a JSON resource): its bytes in lower-case hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_hex: Option<String>,
}

/// Writes the truth file: one JSON line per resource, sorted,
/// `{"resource","state":"present","version_id","body"}` or `{"resource","state":"deleted"}`.
pub fn write_truth(plan: &Plan, path: &Path) -> Result<usize, String> {
    let err = |e: std::io::Error| format!("cannot write the truth file {}: {e}", path.display());
    let file = std::fs::File::create(path).map_err(err)?;
    let mut out = BufWriter::new(file);
    let truth = truth(plan);
    for (resource, held) in &truth {
        let line = match held {
            Held::Present { version_id, body } => {
                let text = std::str::from_utf8(body).ok();
                TruthLine {
                    resource,
                    state: "present",
                    version_id: *version_id,
                    body: text,
                    body_hex: match text {
                        Some(_) => None,
                        None => Some(body.iter().map(|b| format!("{b:02x}")).collect()),
                    },
                }
            }
            Held::Deleted => TruthLine {
                resource,
                state: "deleted",
                version_id: None,
                body: None,
                body_hex: None,
            },
        };
        serde_json::to_writer(&mut out, &line).map_err(|e| err(e.into()))?;
        out.write_all(b"\n").map_err(err)?;
    }
    out.flush().map_err(err)?;
    Ok(truth.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_types() {
        assert!(is_valid_id("a-b.C9"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a_b"));
        assert!(is_type_name("Patient"));
        assert!(!is_type_name("patient"));
        assert!(!is_type_name("Pat1ent"));
        assert_eq!(split_resource("Patient/a").unwrap(), ("Patient", "a"));
        assert!(split_resource("Patient").is_err());
        assert!(split_resource("Patient/a/b").is_err());
    }

    #[test]
    fn loads_a_plan_and_derives_the_truth() {
        let dir = std::env::temp_dir().join(format!("standin-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("b.json"),
            br#"{"resourceType":"Patient","id":"b"}"#,
        )
        .unwrap();
        let plan_path = dir.join("plan.jsonl");
        std::fs::write(
            &plan_path,
            concat!(
                r#"{"resource":"Patient/a","method":"PUT","body":"{\"resourceType\":\"Patient\",\"id\":\"a\",\"meta\":{\"versionId\":\"1\"}}"}"#, "\n",
                r#"{"resource":"Patient/b","method":"PUT","version_id":"7","body_file":"b.json"}"#, "\n",
                "\n",
                r#"{"resource":"Patient/a","method":"DELETE"}"#, "\n",
                r#"{"resource":"Patient/c","method":"DELETE","scenario":"x"}"#, "\n",
            ),
        )
        .unwrap();
        let plan = load_plan(&plan_path).unwrap();
        assert_eq!(plan.resources, ["Patient/a", "Patient/b", "Patient/c"]);
        assert_eq!(plan.deliveries.len(), 4);
        assert_eq!(plan.deliveries[0].version_id.as_deref(), Some("1"));
        assert_eq!(plan.deliveries[1].version_id.as_deref(), Some("7"));
        assert_eq!(plan.deliveries[2].line, 4);
        assert_eq!(plan.deliveries[2].resource, 0);
        let t = truth(&plan);
        assert_eq!(t["Patient/a"], Held::Deleted);
        assert_eq!(
            t["Patient/b"],
            Held::Present {
                version_id: Some("7"),
                body: br#"{"resourceType":"Patient","id":"b"}"#
            }
        );
        assert_eq!(t["Patient/c"], Held::Deleted);

        let truth_path = dir.join("truth.jsonl");
        assert_eq!(write_truth(&plan, &truth_path).unwrap(), 3);
        let text = std::fs::read_to_string(&truth_path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["state"], "deleted");
        assert_eq!(lines[1]["body"], r#"{"resourceType":"Patient","id":"b"}"#);

        for (bad, expected) in [
            (r#"{"resource":"Patient/a","method":"PUT"}"#, "needs a body"),
            (
                r#"{"resource":"Patient/a","method":"DELETE","body":"{}"}"#,
                "has no body",
            ),
            (
                r#"{"resource":"Patient/a_b","method":"DELETE"}"#,
                "not a FHIR id",
            ),
            (r#"{"resource":"Patient/a","method":"POST"}"#, "line 1"),
        ] {
            std::fs::write(&plan_path, bad).unwrap();
            let e = load_plan(&plan_path).unwrap_err();
            assert!(e.contains(expected), "{bad}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
