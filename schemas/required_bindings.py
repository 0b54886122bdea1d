"""Required value-set bindings of ``code`` elements, as data.

The ``fhir.resources`` models check a ``code``'s shape but not the value sets
FHIR R4 binds with strength *required* (``Observation.status`` must be one of
registered | preliminary | final | …). These are the top-level ``code``
elements of the served types with a required binding; the FHIR layer refuses
any other value, as a conformant server must.
"""

from __future__ import annotations

_PUBLICATION = frozenset({"draft", "active", "retired", "unknown"})
_REQUEST_STATUS = frozenset({"draft", "active", "on-hold", "revoked", "completed",
                             "entered-in-error", "unknown"})
_REQUEST_INTENT = frozenset({"proposal", "plan", "directive", "order", "original-order",
                             "reflex-order", "filler-order", "instance-order", "option"})
_REQUEST_PRIORITY = frozenset({"routine", "urgent", "asap", "stat"})
_GENDER = frozenset({"male", "female", "other", "unknown"})
_EVENT_STATUS = frozenset({"preparation", "in-progress", "not-done", "on-hold", "stopped",
                           "completed", "entered-in-error", "unknown"})

#: resource type → element → allowed codes
REQUIRED_CODES: dict[str, dict[str, frozenset[str]]] = {
    "Patient": {"gender": _GENDER},
    "Practitioner": {"gender": _GENDER},
    "Observation": {"status": frozenset({"registered", "preliminary", "final", "amended",
                                         "corrected", "cancelled", "entered-in-error",
                                         "unknown"})},
    "Encounter": {"status": frozenset({"planned", "arrived", "triaged", "in-progress",
                                       "onleave", "finished", "cancelled",
                                       "entered-in-error", "unknown"})},
    "Procedure": {"status": _EVENT_STATUS},
    "DiagnosticReport": {"status": frozenset({"registered", "partial", "preliminary", "final",
                                              "amended", "corrected", "appended", "cancelled",
                                              "entered-in-error", "unknown"})},
    "MedicationRequest": {
        "status": frozenset({"active", "on-hold", "cancelled", "completed",
                             "entered-in-error", "stopped", "draft", "unknown"}),
        "intent": frozenset({"proposal", "plan", "order", "original-order", "reflex-order",
                             "filler-order", "instance-order", "option"}),
        "priority": _REQUEST_PRIORITY},
    "AllergyIntolerance": {
        "type": frozenset({"allergy", "intolerance"}),
        "criticality": frozenset({"low", "high", "unable-to-assess"})},
    "Immunization": {"status": frozenset({"completed", "entered-in-error", "not-done"})},
    "DocumentReference": {
        "status": frozenset({"current", "superseded", "entered-in-error"}),
        "docStatus": frozenset({"preliminary", "final", "amended", "entered-in-error"})},
    "ImagingStudy": {"status": frozenset({"registered", "available", "cancelled",
                                          "entered-in-error", "unknown"})},
    "ServiceRequest": {"status": _REQUEST_STATUS, "intent": _REQUEST_INTENT,
                       "priority": _REQUEST_PRIORITY},
    "Task": {
        "status": frozenset({"draft", "requested", "received", "accepted", "rejected",
                             "ready", "cancelled", "in-progress", "on-hold", "failed",
                             "completed", "entered-in-error"}),
        "intent": frozenset({"unknown", "proposal", "plan", "order", "original-order",
                             "reflex-order", "filler-order", "instance-order", "option"}),
        "priority": _REQUEST_PRIORITY},
    "Consent": {"status": frozenset({"draft", "proposed", "active", "rejected", "inactive",
                                     "entered-in-error"})},
    "Provenance": {},
    "Organization": {},
    "Condition": {},
    "AuditEvent": {"action": frozenset({"C", "R", "U", "D", "E"}),
                   "outcome": frozenset({"0", "4", "8", "12"})},
}
