"""The FHIR resource types the exchange serves."""

#: Types served at ``/fhir`` (read and search; written unless read-only).
RESOURCE_TYPES: frozenset[str] = frozenset({
    "Patient", "Practitioner", "Organization", "Encounter", "Observation", "Condition",
    "Procedure", "DiagnosticReport", "MedicationRequest", "AllergyIntolerance",
    "Immunization", "DocumentReference", "ImagingStudy", "ServiceRequest", "Task",
    "Consent", "Provenance", "AuditEvent",
})

#: Types only the exchange itself writes: the audit log is append-only and
#: nobody writes it through the API.
READ_ONLY_TYPES: frozenset[str] = frozenset({"AuditEvent"})

#: Types that belong to the audit trail rather than the clinical record; left
#: out of ``$everything``.
NON_CLINICAL_TYPES: frozenset[str] = frozenset({"AuditEvent"})
