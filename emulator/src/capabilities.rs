//! Which FHIR resource types the emulator serves, with which interactions, and the
//! CapabilityStatement (`GET /datastore/{id}/r4/metadata`) that says so.
//!
//! In `healthlake` mode (`--resource-types`, the default) the types are those Amazon HealthLake
//! documents: "FHIR R4 supported resource types for HealthLake",
//! <https://docs.aws.amazon.com/healthlake/latest/devguide/reference-fhir-resource-types.html>,
//! retrieved 2026-11-30. Its notes give the exceptions:
//!
//! - "AuditEvent — can be created or read, but it cannot be updated or deleted".
//! - "You cannot make GET or POST requests with FHIR OperationOutcome and Parameters resource
//!   types". That they allow update and delete (and nothing else) is an inference from that
//!   note, not something the page says or this emulator's authors confirmed.
//! - "VerificationResult — only supported for data stores created after December 09, 2023": the
//!   emulator plays a new data store, so it is served.
//!
//! In `all` mode every FHIR R4 type is served with every interaction.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use crate::faults::unsupported_type_diagnostics;
use crate::timefmt;

/// The FHIR R4 resource types HealthLake supports, sorted (see the module documentation for
/// the source).
pub const HEALTHLAKE_TYPES: [&str; 106] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Binary",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "Communication",
    "CommunicationRequest",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MessageHeader",
    "MolecularSequence",
    "NutritionOrder",
    "Observation",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "StructureDefinition",
    "StructureMap",
    "Substance",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// Every FHIR R4 (4.0.1) resource type, sorted (<https://hl7.org/fhir/R4/resourcelist.html>).
pub const R4_TYPES: [&str; 146] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// A type-level RESTful interaction, as a CapabilityStatement names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interaction {
    Read,
    Vread,
    Update,
    Delete,
    HistoryInstance,
    HistoryType,
    Create,
    SearchType,
}

impl Interaction {
    /// The FHIR code: `read`, `vread`, `update`, `history-instance`, ...
    pub fn code(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Delete => "delete",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::Create => "create",
            Interaction::SearchType => "search-type",
        }
    }
}

/// The interactions of an ordinary type: all of them.
const ORDINARY: &[Interaction] = &[
    Interaction::Read,
    Interaction::Vread,
    Interaction::Update,
    Interaction::Delete,
    Interaction::HistoryInstance,
    Interaction::HistoryType,
    Interaction::Create,
    Interaction::SearchType,
];

/// AuditEvent in HealthLake: created or read, never updated or deleted.
const AUDIT_EVENT: &[Interaction] = &[
    Interaction::Read,
    Interaction::Vread,
    Interaction::Create,
    Interaction::SearchType,
    Interaction::HistoryInstance,
    Interaction::HistoryType,
];

/// OperationOutcome and Parameters in HealthLake: no GET and no POST, so (an inference) update
/// and delete only.
const UPDATE_AND_DELETE: &[Interaction] = &[Interaction::Update, Interaction::Delete];

/// The system-level interactions the CapabilityStatement lists.
const SYSTEM_INTERACTIONS: [&str; 4] = ["transaction", "batch", "search-system", "history-system"];

/// Which resource types are served (`--resource-types`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResourceTypes {
    /// [`HEALTHLAKE_TYPES`], with HealthLake's per-type exceptions.
    #[default]
    HealthLake,
    /// [`R4_TYPES`], every interaction.
    All,
}

impl ResourceTypes {
    /// `healthlake` or `all`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "healthlake" => Ok(ResourceTypes::HealthLake),
            "all" => Ok(ResourceTypes::All),
            other => Err(format!("must be healthlake or all, not '{other}'")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceTypes::HealthLake => "healthlake",
            ResourceTypes::All => "all",
        }
    }

    /// The types served, sorted.
    pub fn types(self) -> &'static [&'static str] {
        match self {
            ResourceTypes::HealthLake => &HEALTHLAKE_TYPES,
            ResourceTypes::All => &R4_TYPES,
        }
    }

    /// The interactions served on `resource_type`, or `None` when the type is not served.
    pub fn interactions(self, resource_type: &str) -> Option<&'static [Interaction]> {
        self.types().binary_search(&resource_type).ok()?;
        Some(match (self, resource_type) {
            (ResourceTypes::HealthLake, "AuditEvent") => AUDIT_EVENT,
            (ResourceTypes::HealthLake, "OperationOutcome" | "Parameters") => UPDATE_AND_DELETE,
            _ => ORDINARY,
        })
    }

    /// Why `interaction` on `resource_type` is refused (the diagnostics of HealthLake's `400
    /// not-supported`), or `None` when it is served.
    pub fn refusal(self, resource_type: &str, interaction: Interaction) -> Option<String> {
        match self.interactions(resource_type) {
            None => Some(unsupported_type_diagnostics(resource_type)),
            Some(served) if !served.contains(&interaction) => Some(format!(
                "ResourceType {resource_type} does not support the {} interaction.",
                interaction.code()
            )),
            Some(_) => None,
        }
    }
}

/// How much of the served set the CapabilityStatement lists (the `metadata` fault's `empty`
/// and `no-interactions` leave parts out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Every served type with its interactions.
    Full,
    /// No resource entries at all.
    NoResources,
    /// The served types without their `interaction` arrays.
    NoInteractions,
}

/// The CapabilityStatement of the types `mode` serves, less `removed` (the `unsupported_types`
/// fault), as of `now`. `base_url` is `implementation.url`, left out when `None`.
pub fn capability_statement(
    mode: ResourceTypes,
    removed: &[String],
    base_url: Option<&str>,
    now: SystemTime,
    listing: Listing,
) -> Value {
    let resources: Vec<Value> = mode
        .types()
        .iter()
        .filter(|t| !removed.iter().any(|r| r == *t))
        .filter_map(|t| Some(resource_entry(t, mode.interactions(t)?, listing)))
        .collect();
    let mut rest = Map::new();
    rest.insert("mode".into(), json!("server"));
    if listing != Listing::NoResources {
        rest.insert("resource".into(), Value::Array(resources));
    }
    let system: Vec<Value> = SYSTEM_INTERACTIONS
        .iter()
        .map(|code| json!({ "code": code }))
        .collect();
    rest.insert("interaction".into(), Value::Array(system));

    let mut implementation = Map::new();
    implementation.insert(
        "description".into(),
        json!("Local Amazon HealthLake emulator"),
    );
    if let Some(url) = base_url {
        implementation.insert("url".into(), json!(url));
    }
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": timefmt::format_rfc3339_millis(now),
        "publisher": "healthlake-emulator",
        "kind": "instance",
        "software": {
            "name": "healthlake-emulator",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "implementation": implementation,
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    })
}

/// One `rest.resource` entry.
fn resource_entry(resource_type: &str, interactions: &[Interaction], listing: Listing) -> Value {
    let mut entry = Map::new();
    entry.insert("type".into(), json!(resource_type));
    if listing != Listing::NoInteractions {
        let codes: Vec<Value> = interactions
            .iter()
            .map(|i| json!({ "code": i.code() }))
            .collect();
        entry.insert("interaction".into(), Value::Array(codes));
    }
    entry.insert("versioning".into(), json!("versioned"));
    if interactions.contains(&Interaction::Update) {
        entry.insert("updateCreate".into(), json!(true));
    }
    Value::Object(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strictly_sorted(list: &[&str]) -> bool {
        list.windows(2).all(|w| w[0] < w[1])
    }

    #[test]
    fn the_lists_are_sorted_and_complete() {
        assert!(strictly_sorted(&HEALTHLAKE_TYPES));
        assert!(strictly_sorted(&R4_TYPES));
        assert_eq!(HEALTHLAKE_TYPES.len(), 106);
        assert_eq!(R4_TYPES.len(), 146);
        for t in HEALTHLAKE_TYPES {
            assert!(R4_TYPES.binary_search(&t).is_ok(), "{t} is not an R4 type");
        }
        for t in R4_TYPES {
            assert!(crate::fhir::is_valid_resource_type(t), "{t}");
        }
        for absent in ["Basic", "Subscription", "CodeSystem", "SearchParameter"] {
            assert!(HEALTHLAKE_TYPES.binary_search(&absent).is_err(), "{absent}");
            assert!(R4_TYPES.binary_search(&absent).is_ok(), "{absent}");
        }
    }

    #[test]
    fn interactions_per_mode() {
        let hl = ResourceTypes::HealthLake;
        assert_eq!(hl.interactions("Patient"), Some(ORDINARY));
        assert_eq!(hl.interactions("Basic"), None);
        assert_eq!(hl.interactions("NotAType"), None);
        assert_eq!(hl.refusal("Patient", Interaction::Update), None);
        assert_eq!(
            hl.refusal("Basic", Interaction::Read).as_deref(),
            Some("ResourceType Basic is not supported.")
        );
        assert_eq!(
            hl.refusal("AuditEvent", Interaction::Update).as_deref(),
            Some("ResourceType AuditEvent does not support the update interaction.")
        );
        assert_eq!(
            hl.refusal("AuditEvent", Interaction::Delete).as_deref(),
            Some("ResourceType AuditEvent does not support the delete interaction.")
        );
        assert_eq!(hl.refusal("AuditEvent", Interaction::Read), None);
        for t in ["OperationOutcome", "Parameters"] {
            assert!(hl.refusal(t, Interaction::Read).is_some(), "{t}");
            assert!(hl.refusal(t, Interaction::Create).is_some(), "{t}");
            assert!(hl.refusal(t, Interaction::SearchType).is_some(), "{t}");
            assert_eq!(hl.refusal(t, Interaction::Update), None, "{t}");
            assert_eq!(hl.refusal(t, Interaction::Delete), None, "{t}");
        }
        let all = ResourceTypes::All;
        for t in ["Basic", "AuditEvent", "Parameters", "Subscription"] {
            assert_eq!(all.interactions(t), Some(ORDINARY), "{t}");
        }
        assert_eq!(
            all.refusal("NotAType", Interaction::Read).as_deref(),
            Some("ResourceType NotAType is not supported.")
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!(ResourceTypes::default(), ResourceTypes::HealthLake);
        for mode in [ResourceTypes::HealthLake, ResourceTypes::All] {
            assert_eq!(ResourceTypes::parse(mode.as_str()), Ok(mode));
        }
        let e = ResourceTypes::parse("HealthLake").unwrap_err();
        assert_eq!(e, "must be healthlake or all, not 'HealthLake'");
    }

    fn types_of(statement: &Value) -> Vec<&str> {
        statement["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_capability_statement() {
        let at = timefmt::unix_to_system_time(1_796_000_000);
        let s = capability_statement(
            ResourceTypes::HealthLake,
            &[],
            Some("http://h/datastore/d/r4/"),
            at,
            Listing::Full,
        );
        assert_eq!(s["resourceType"], "CapabilityStatement");
        assert_eq!(s["date"], timefmt::format_rfc3339_millis(at));
        assert_eq!(s["fhirVersion"], "4.0.1");
        assert_eq!(s["kind"], "instance");
        assert_eq!(s["software"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(s["implementation"]["url"], "http://h/datastore/d/r4/");
        assert_eq!(types_of(&s), HEALTHLAKE_TYPES);
        let rest = &s["rest"][0];
        assert_eq!(rest["mode"], "server");
        assert_eq!(
            rest["interaction"],
            json!([{"code": "transaction"}, {"code": "batch"}, {"code": "search-system"},
                   {"code": "history-system"}])
        );
        let entry = |t: &str| {
            rest["resource"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["type"] == t)
                .unwrap()
                .clone()
        };
        assert_eq!(
            entry("Patient"),
            json!({"type": "Patient", "interaction": [
                {"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "delete"},
                {"code": "history-instance"}, {"code": "history-type"}, {"code": "create"},
                {"code": "search-type"}], "versioning": "versioned", "updateCreate": true})
        );
        assert_eq!(
            entry("AuditEvent"),
            json!({"type": "AuditEvent", "interaction": [
                {"code": "read"}, {"code": "vread"}, {"code": "create"}, {"code": "search-type"},
                {"code": "history-instance"}, {"code": "history-type"}],
                "versioning": "versioned"})
        );
        assert_eq!(
            entry("Parameters"),
            json!({"type": "Parameters", "interaction": [{"code": "update"}, {"code": "delete"}],
                   "versioning": "versioned", "updateCreate": true})
        );

        // Without a base URL, no implementation.url; the fault list removes types.
        let removed = ["Patient".to_string(), "Basic".to_string()];
        let s = capability_statement(ResourceTypes::All, &removed, None, at, Listing::Full);
        assert_eq!(
            s["implementation"],
            json!({"description": "Local Amazon HealthLake emulator"})
        );
        let types = types_of(&s);
        assert_eq!(types.len(), R4_TYPES.len() - 2);
        assert!(!types.contains(&"Patient") && !types.contains(&"Basic"));

        let s = capability_statement(ResourceTypes::All, &[], None, at, Listing::NoResources);
        assert!(s["rest"][0].get("resource").is_none());
        assert_eq!(s["rest"][0]["mode"], "server");
        let s = capability_statement(
            ResourceTypes::HealthLake,
            &[],
            None,
            at,
            Listing::NoInteractions,
        );
        assert_eq!(types_of(&s), HEALTHLAKE_TYPES);
        assert!(s["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("interaction").is_none()));
    }
}
