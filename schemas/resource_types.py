"""The FHIR resource types the exchange serves (read, write and search)."""

RESOURCE_TYPES: frozenset[str] = frozenset({
    "Patient", "Practitioner", "Organization", "Encounter", "Observation", "Condition",
    "Procedure", "DiagnosticReport", "MedicationRequest", "AllergyIntolerance",
    "Immunization", "DocumentReference", "ImagingStudy", "ServiceRequest", "Task",
    "Consent", "Provenance",
})
