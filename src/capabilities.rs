//! What HealthLake supports, read from its CapabilityStatement, and what the relay itself
//! accepts, said in its own.
//!
//! - [`Supported::from_statement`] reads the answer to the `capabilities` interaction
//!   (`GET /datastore/{id}/r4/metadata`): the FHIR R4 resource types a server `rest` entry lists,
//!   with the `update` and `delete` interactions each allows. A PUT needs `update`, a DELETE
//!   `delete`. Where the statement says nothing, it decides nothing (the write is forwarded and
//!   HealthLake's answer decides): a type listed without interactions, and every DELETE when no
//!   type lists `delete`. A statement that could not be HealthLake's whole answer (another
//!   resource, no server entry, no interactions declared at all, Patient not updatable, which
//!   every HealthLake data store is: a partial list) is refused as a whole: the relay then keeps
//!   learning from HealthLake's answers instead of dropping writes with a 2xx.
//! - [`relay_statement`] is the relay's answer to `GET [base]/metadata`: update and delete of the
//!   types it would forward now, no read or search, so that a FHIR client that checks a server
//!   before writing works against the relay.

use crate::fhir::{self, R4_RESOURCE_TYPES};
use crate::plan::Operation;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The largest CapabilityStatement read. HealthLake's lists search parameters for every type
/// (a few hundred KiB); past this the answer is not read as one.
pub const MAX_STATEMENT_BYTES: usize = 8 * 1024 * 1024;

const WORDS: usize = R4_RESOURCE_TYPES.len().div_ceil(64);

/// A set of FHIR R4 resource types, one bit per type of [`R4_RESOURCE_TYPES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeSet([u64; WORDS]);

impl TypeSet {
    /// Adds `resource_type`; false when it is not an R4 resource type.
    pub fn insert(&mut self, resource_type: &str) -> bool {
        let Some(i) = fhir::type_index(resource_type) else {
            return false;
        };
        if let Some(word) = self.0.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
        true
    }

    pub fn contains(&self, resource_type: &str) -> bool {
        fhir::type_index(resource_type).is_some_and(|i| {
            self.0
                .get(i / 64)
                .is_some_and(|word| word & (1 << (i % 64)) != 0)
        })
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The types in the set, in [`R4_RESOURCE_TYPES`] order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        R4_RESOURCE_TYPES
            .iter()
            .copied()
            .filter(|t| self.contains(t))
    }
}

/// A type every HealthLake data store stores: a statement that does not list it with `update`
/// is not HealthLake's whole answer.
pub const ANCHOR_TYPE: &str = "Patient";

/// The types HealthLake allows each write interaction on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Supported {
    pub update: TypeSet,
    pub delete: TypeSet,
    /// Types listed without any interaction: the statement does not say what they allow.
    pub undeclared: TypeSet,
}

// The parts of a CapabilityStatement read; everything else is ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    resource_type: String,
    fhir_version: Option<String>,
    #[serde(default)]
    rest: Vec<Rest>,
}

#[derive(Deserialize)]
struct Rest {
    mode: Option<String>,
    #[serde(default)]
    resource: Vec<Resource>,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(rename = "type")]
    resource_type: String,
    interaction: Option<Vec<Interaction>>,
}

#[derive(Deserialize)]
struct Interaction {
    code: String,
}

impl Supported {
    /// Whether the statement allows `op` on `resource_type`; `None` where it says nothing: a
    /// type listed without interactions, a DELETE when no type lists `delete`.
    pub fn says(&self, op: Operation, resource_type: &str) -> Option<bool> {
        if self.undeclared.contains(resource_type) {
            return None;
        }
        match op {
            Operation::Put => Some(self.update.contains(resource_type)),
            Operation::Delete if self.delete.is_empty() => None,
            Operation::Delete => Some(self.delete.contains(resource_type)),
        }
    }

    /// Reads a CapabilityStatement (JSON). The error says why it is not used (one line).
    pub fn from_statement(body: &[u8]) -> Result<Supported, String> {
        if body.len() > MAX_STATEMENT_BYTES {
            return Err(format!(
                "the answer is larger than {MAX_STATEMENT_BYTES} bytes"
            ));
        }
        let statement: Statement = serde_json::from_slice(body)
            .map_err(|e| format!("the answer is not a CapabilityStatement in JSON ({e})"))?;
        if statement.resource_type != "CapabilityStatement" {
            return Err(format!(
                "the answer is a {}, not a CapabilityStatement",
                printable(&statement.resource_type)
            ));
        }
        if let Some(v) = statement.fhir_version.as_deref() {
            if !v.starts_with("4.0.") {
                return Err(format!(
                    "it describes FHIR {}, not R4 (4.0.x)",
                    printable(v)
                ));
            }
        }
        let mut servers = statement
            .rest
            .iter()
            .filter(|r| r.mode.as_deref() == Some("server"))
            .peekable();
        if servers.peek().is_none() {
            return Err("it has no rest entry with mode \"server\"".to_owned());
        }
        let mut supported = Supported::default();
        let mut declared = false;
        for resource in servers.flat_map(|r| &r.resource) {
            let Some(interactions) = &resource.interaction else {
                supported.undeclared.insert(&resource.resource_type);
                continue;
            };
            declared = true;
            for interaction in interactions {
                let set = match interaction.code.as_str() {
                    "update" => &mut supported.update,
                    "delete" => &mut supported.delete,
                    _ => continue,
                };
                // A type that is not in R4 cannot be written through the relay anyway.
                set.insert(&resource.resource_type);
            }
        }
        if !declared {
            return Err("it declares no interaction for any resource type".to_owned());
        }
        if !supported.update.contains(ANCHOR_TYPE) || supported.undeclared.contains(ANCHOR_TYPE) {
            return Err(format!(
                "it does not list {ANCHOR_TYPE} with the update interaction, which every \
                 HealthLake data store allows: not trusted as HealthLake's whole list (it would \
                 make the relay drop writes)"
            ));
        }
        Ok(supported)
    }

    /// The shared-data form: `{"update":[types],"delete":[types],"undeclared":[types]}`.
    pub fn encode(&self) -> Value {
        json!({
            "update": self.update.names().collect::<Vec<_>>(),
            "delete": self.delete.names().collect::<Vec<_>>(),
            "undeclared": self.undeclared.names().collect::<Vec<_>>(),
        })
    }

    /// Reads [`Supported::encode`]'s form; `None` when it is not.
    pub fn decode(value: &Value) -> Option<Supported> {
        let set = |key: &str| -> Option<TypeSet> {
            let mut set = TypeSet::default();
            for t in value.get(key)?.as_array()? {
                set.insert(t.as_str()?);
            }
            Some(set)
        };
        Some(Supported {
            update: set("update")?,
            delete: set("delete")?,
            undeclared: set("undeclared")?,
        })
    }
}

/// What the relay's CapabilityStatement says about itself.
pub struct RelayStatement<'a> {
    /// RFC 3339 time of the answer.
    pub date: &'a str,
    pub datastore_id: &'a str,
    pub region: &'a str,
    /// Where the supported types come from, for people reading it.
    pub types_from: &'a str,
}

// The relay's CapabilityStatement, in FHIR's element order (`resourceType` first).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Own<'a> {
    resource_type: &'static str,
    status: &'static str,
    date: &'a str,
    publisher: &'static str,
    kind: &'static str,
    software: Software,
    implementation: Implementation,
    fhir_version: &'static str,
    format: [&'static str; 2],
    rest: [OwnRest; 1],
}

#[derive(Serialize)]
struct Software {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Implementation {
    description: String,
}

#[derive(Serialize)]
struct OwnRest {
    mode: &'static str,
    documentation: String,
    resource: Vec<OwnResource>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OwnResource {
    #[serde(rename = "type")]
    resource_type: &'static str,
    interaction: Vec<Code>,
    versioning: &'static str,
    update_create: bool,
    conditional_update: bool,
    conditional_delete: &'static str,
}

#[derive(Serialize)]
struct Code {
    code: &'static str,
}

/// The relay's CapabilityStatement: `update` and `delete` of each R4 type `accepts` allows, no
/// read, search or history; FHIR JSON only.
pub fn relay_statement(
    about: &RelayStatement<'_>,
    accepts: impl Fn(Operation, &str) -> bool,
) -> Vec<u8> {
    let resource = R4_RESOURCE_TYPES
        .iter()
        .filter_map(|t| {
            let update = accepts(Operation::Put, t);
            let interaction: Vec<Code> = [
                (update, "update"),
                (accepts(Operation::Delete, t), "delete"),
            ]
            .into_iter()
            .filter_map(|(allowed, code)| allowed.then_some(Code { code }))
            .collect();
            (!interaction.is_empty()).then_some(OwnResource {
                resource_type: t,
                interaction,
                versioning: "no-version",
                update_create: update,
                conditional_update: false,
                conditional_delete: "not-supported",
            })
        })
        .collect();
    let statement = Own {
        resource_type: "CapabilityStatement",
        status: "active",
        date: about.date,
        publisher: "HealthLake relay",
        kind: "instance",
        software: Software {
            name: "healthlake-relay",
            version: env!("CARGO_PKG_VERSION"),
        },
        implementation: Implementation {
            description: format!(
                "HealthLake relay: carries FHIR writes to Amazon HealthLake data store {} in {}",
                about.datastore_id, about.region
            ),
        },
        fhir_version: "4.0.1",
        format: ["application/fhir+json", "json"],
        rest: [OwnRest {
            mode: "server",
            documentation: format!(
                "Accepts update (PUT [base]/{{type}}/{{id}}) and delete (DELETE [base]/{{type}}/{{id}}) \
                 of the resource types listed, and forwards them to HealthLake, signed. Reads and \
                 searches are not served: they are answered 405. Supported types: {}.",
                about.types_from
            ),
            resource,
        }],
    };
    serde_json::to_vec(&statement).unwrap_or_default()
}

/// Text from an answer, safe in a log line: at most 64 printable characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(resources: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "resourceType": "CapabilityStatement",
            "fhirVersion": "4.0.1",
            "rest": [{ "mode": "server", "resource": resources }],
        }))
        .unwrap()
    }

    fn with(t: &str, codes: &[&str]) -> Value {
        json!({
            "type": t,
            "interaction": codes.iter().map(|c| json!({ "code": c })).collect::<Vec<_>>(),
            "searchParam": [{ "name": "_id", "type": "token" }],
        })
    }

    #[test]
    fn reads_update_and_delete_per_type() {
        let s = Supported::from_statement(&statement(json!([
            with("Patient", &["read", "update", "delete", "search-type"]),
            with("AuditEvent", &["read", "create"]),
            with("Observation", &["update"]),
            with("NotAType", &["update", "delete"]),
        ])))
        .unwrap();
        assert_eq!(s.says(Operation::Put, "Patient"), Some(true));
        assert_eq!(s.says(Operation::Delete, "Patient"), Some(true));
        assert_eq!(s.says(Operation::Put, "AuditEvent"), Some(false));
        assert_eq!(s.says(Operation::Delete, "AuditEvent"), Some(false));
        assert_eq!(s.says(Operation::Put, "Observation"), Some(true));
        assert_eq!(s.says(Operation::Delete, "Observation"), Some(false));
        assert_eq!(s.says(Operation::Put, "Basic"), Some(false));
        assert_eq!(
            s.update.names().collect::<Vec<_>>(),
            ["Observation", "Patient"]
        );
        assert_eq!(s.delete.names().collect::<Vec<_>>(), ["Patient"]);
        assert_eq!((s.update.len(), s.delete.len()), (2, 1));
    }

    #[test]
    fn only_server_entries_count() {
        let body = serde_json::to_vec(&json!({
            "resourceType": "CapabilityStatement",
            "rest": [
                { "mode": "client", "resource": [with("Basic", &["update"])] },
                { "mode": "server", "resource": [with("Patient", &["update"])] },
            ],
        }))
        .unwrap();
        let s = Supported::from_statement(&body).unwrap();
        assert_eq!(s.says(Operation::Put, "Patient"), Some(true));
        assert_eq!(s.says(Operation::Put, "Basic"), Some(false));
    }

    #[test]
    fn refuses_what_cannot_be_meant() {
        let refused = |body: &[u8]| Supported::from_statement(body).unwrap_err();
        assert!(refused(b"<html>maintenance</html>").contains("not a CapabilityStatement in JSON"));
        assert!(refused(b"").contains("not a CapabilityStatement in JSON"));
        assert!(
            refused(br#"{"resourceType":"OperationOutcome","issue":[]}"#)
                .contains("a OperationOutcome, not a CapabilityStatement")
        );
        assert!(
            refused(br#"{"resourceType":"CapabilityStatement","rest":"x"}"#)
                .contains("not a CapabilityStatement in JSON")
        );
        assert!(refused(br#"{"resourceType":"CapabilityStatement"}"#).contains("no rest entry"));
        assert!(refused(
            br#"{"resourceType":"CapabilityStatement","fhirVersion":"5.0.0","rest":[{"mode":"server"}]}"#
        )
        .contains("not R4"));
        // Types listed without any interaction: nothing says what may be written.
        assert!(refused(&statement(
            json!([{ "type": "Patient" }, { "type": "Basic" }])
        ))
        .contains("declares no interaction"));
        assert!(refused(&statement(json!([]))).contains("declares no interaction"));
        // Interactions, but Patient not updatable: a partial list, it would drop writes.
        assert!(
            refused(&statement(json!([with("Patient", &["read", "delete"])])))
                .contains("does not list Patient with the update interaction")
        );
        assert!(
            refused(&statement(json!([with("Observation", &["update"])])))
                .contains("does not list Patient")
        );
        assert!(refused(&statement(json!([
            with("Observation", &["update"]),
            { "type": "Patient" },
        ])))
        .contains("does not list Patient"));
        let big = vec![b' '; MAX_STATEMENT_BYTES + 1];
        assert!(refused(&big).contains("larger than"));
        // Control characters from the answer never reach a log line.
        assert!(!refused(br#"{"resourceType":"A\nB"}"#).contains('\n'));
    }

    #[test]
    fn where_the_statement_says_nothing_it_decides_nothing() {
        // A type listed without interactions, and DELETEs when no type lists delete.
        let s = Supported::from_statement(&statement(json!([
            with("Patient", &["update"]),
            { "type": "Basic" },
        ])))
        .unwrap();
        assert_eq!(s.says(Operation::Put, "Basic"), None);
        assert_eq!(s.says(Operation::Delete, "Basic"), None);
        assert_eq!(s.says(Operation::Delete, "Patient"), None);
        assert_eq!(s.says(Operation::Put, "Observation"), Some(false));
        assert_eq!(Supported::decode(&s.encode()), Some(s));
    }

    #[test]
    fn shared_data_form_round_trips() {
        let mut s = Supported::default();
        s.update.insert("Patient");
        s.update.insert("ValueSet");
        s.delete.insert("Account");
        let v = s.encode();
        assert_eq!(v["update"], json!(["Patient", "ValueSet"]));
        assert_eq!(Supported::decode(&v), Some(s));
        assert_eq!(Supported::decode(&json!({ "update": [] })), None);
        assert_eq!(
            Supported::decode(&json!({ "update": [1], "delete": [] })),
            None
        );
        // Every R4 type fits, the last one included.
        let mut all = TypeSet::default();
        for t in R4_RESOURCE_TYPES {
            assert!(all.insert(t));
        }
        assert_eq!(all.len(), R4_RESOURCE_TYPES.len());
        assert!(!all.insert("NotAType"));
        assert!(!all.contains("NotAType"));
    }

    #[test]
    fn the_relay_statement_lists_what_it_accepts() {
        let about = RelayStatement {
            date: "2026-11-30T06:40:00Z",
            datastore_id: "d1",
            region: "eu-west-1",
            types_from: "HealthLake's CapabilityStatement",
        };
        let body = relay_statement(&about, |op, t| {
            t == "Patient" || (t == "Observation" && op == Operation::Put)
        });
        assert!(body.starts_with(br#"{"resourceType":"CapabilityStatement","#));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "instance");
        assert_eq!(v["fhirVersion"], "4.0.1");
        assert_eq!(v["date"], "2026-11-30T06:40:00Z");
        let resources = v["rest"][0]["resource"].as_array().unwrap();
        assert_eq!(resources.len(), 2);
        assert_eq!(resources[0]["type"], "Observation");
        assert_eq!(resources[0]["interaction"], json!([{ "code": "update" }]));
        assert_eq!(resources[1]["type"], "Patient");
        assert_eq!(
            resources[1]["interaction"],
            json!([{ "code": "update" }, { "code": "delete" }])
        );
        assert!(v["implementation"]["description"]
            .as_str()
            .unwrap()
            .contains("d1"));
        // It reads back as what it says.
        let s = Supported::from_statement(&body).unwrap();
        assert_eq!(s.says(Operation::Put, "Observation"), Some(true));
        assert_eq!(s.says(Operation::Delete, "Observation"), Some(false));
    }
}
