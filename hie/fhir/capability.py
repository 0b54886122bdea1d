"""The ``CapabilityStatement`` at ``/fhir/metadata``: generated from the same
tables the server runs on (resource types, search parameters, operations), so
it lists exactly what works."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import hie
from schemas.resource_types import READ_ONLY_TYPES, RESOURCE_TYPES
from schemas.search_parameters import params_for

INTERACTIONS = ["read", "vread", "update", "delete", "history-instance", "history-type",
                "create", "search-type"]
READ_INTERACTIONS = {"read", "vread", "history-instance", "history-type", "search-type"}
COMMON_SEARCH = [
    ("_id", "token", "Logical id of the resource"),
    ("_lastUpdated", "date", "When the resource version last changed"),
]
RESULT_PARAMS = ("_count, _sort (several keys, '-' for descending), _include, _revinclude, "
                 "_summary (true, text, data, count, false), _elements, _total (none, estimate, "
                 "accurate)")


@lru_cache(maxsize=4)
def capability_statement(base: str) -> dict[str, Any]:
    """Return the CapabilityStatement for a server at ``base``."""
    resources = []
    for rtype in sorted(RESOURCE_TYPES):
        search = [{"name": n, "type": t, "documentation": d} for n, t, d in COMMON_SEARCH]
        for p in params_for(rtype):
            if p.name in ("_id", "_lastUpdated"):
                continue
            search.append({"name": p.name, "type": p.type})
        writable = rtype not in READ_ONLY_TYPES
        entry: dict[str, Any] = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": c} for c in INTERACTIONS
                            if rtype not in READ_ONLY_TYPES or c in READ_INTERACTIONS],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": writable,
            "conditionalCreate": writable,
            "conditionalRead": "not-supported",
            "conditionalUpdate": writable,
            "conditionalDelete": "single" if writable else "not-supported",
            "referencePolicy": ["literal", "local"],
            "searchInclude": [f"{rtype}:{p.name}" for p in params_for(rtype)
                              if p.type == "reference"],
            "searchParam": search,
        }
        if rtype == "Patient":
            entry["operation"] = [{
                "name": "everything",
                "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                "documentation": "The patient and their compartment at every hospital (the "
                                 "linked Patients of the regional person); _since, _type, "
                                 "_count, paged",
            }, {
                "name": "ihe-pix",
                "definition": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
                "documentation": "PIXm: the identifiers of the same person at other hospitals "
                                 "(sourceIdentifier, targetSystem)",
            }, {
                "name": "merge",
                "definition": "http://hl7.org/fhir/OperationDefinition/Patient-merge",
                "documentation": "An HL7 A40 from the hospital: source-patient and "
                                 "target-patient (its own identifiers or Patients) become one "
                                 "regional person; records are kept as written",
            }]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-24",
        "publisher": "Regional health-record exchange",
        "kind": "instance",
        "software": {"name": "hie", "version": hie.__version__},
        "implementation": {"description": "Regional health-record exchange", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [{"url": "token",
                                   "valueUri": base.rsplit("/fhir", 1)[0] + "/auth/token"}]}],
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"}]}],
                "description": "SMART Backend Services (private_key_jwt, RS384/ES384) for "
                               "hospital systems; RFC 7523 jwt-bearer assertions for their "
                               "doctors. See .well-known/smart-configuration.",
            },
            "documentation": "Search result parameters: " + RESULT_PARAMS
                             + ". Modifiers: :exact, :contains, :missing, :not, :below, :above, "
                               ":[type]; one level of chaining. Unknown parameters are ignored "
                               "unless Prefer: handling=strict.",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"},
                            {"code": "history-system"}],
        }],
    }
