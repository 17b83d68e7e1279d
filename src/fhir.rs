//! FHIR R4 vocabulary the relay checks requests against: resource type names and the id rule.

/// Every resource type of FHIR R4 (4.0.1), sorted, so that lookups can use a binary search.
pub const R4_RESOURCE_TYPES: &[&str] = &[
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

/// Whether `name` is a FHIR R4 resource type (case-sensitive, as FHIR is).
pub fn is_r4_resource_type(name: &str) -> bool {
    type_index(name).is_some()
}

/// Position of `name` in [`R4_RESOURCE_TYPES`], for per-type tables.
pub fn type_index(name: &str) -> Option<usize> {
    R4_RESOURCE_TYPES.binary_search(&name).ok()
}

/// The FHIR R4 id rule: `[A-Za-z0-9\-\.]{1,64}`. The dot segments `.` and `..` match the rule's
/// characters but are path traversal, never ids, and are refused too.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && id != "."
        && id != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_list_is_sorted_and_unique() {
        assert!(R4_RESOURCE_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(R4_RESOURCE_TYPES.len(), 146);
    }

    #[test]
    fn known_and_unknown_types() {
        for t in [
            "Patient",
            "Observation",
            "Account",
            "VisionPrescription",
            "Basic",
        ] {
            assert!(is_r4_resource_type(t), "{t}");
        }
        for t in [
            "patient",
            "Patients",
            "",
            "Foo",
            "DomainResource",
            "Resource",
            "Patient ",
        ] {
            assert!(!is_r4_resource_type(t), "{t:?}");
        }
    }

    #[test]
    fn type_index_is_the_position_in_the_list() {
        assert_eq!(type_index("Account"), Some(0));
        assert_eq!(type_index("ActivityDefinition"), Some(1));
        assert_eq!(type_index("VisionPrescription"), Some(145));
        let patient = type_index("Patient").unwrap();
        assert_eq!(R4_RESOURCE_TYPES[patient], "Patient");
        assert_eq!(type_index("Nope"), None);
    }

    #[test]
    fn id_rule() {
        for id in ["example", "a", "1.2.3", "A-b.C", &"x".repeat(64)] {
            assert!(is_valid_id(id), "{id}");
        }
        for id in [
            "",
            ".",
            "..",
            "a b",
            "a/b",
            "a%2Fb",
            "a_b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_id(id), "{id:?}");
        }
    }
}
