"""The search-parameter table: complete for the served types, and every path
and reference target real in the FHIR models (``fhir.resources`` R4B, which
reads the R4 content of these types)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from schemas.resource_types import RESOURCE_TYPES
from schemas.search_parameters import (
    PARAM_TYPES,
    PATIENT_COMPARTMENT,
    SEARCHABLE_TYPES,
    SearchParam,
    get_param,
    params_for,
)

ALL_PARAMS = [(t, p) for t in sorted(RESOURCE_TYPES) for p in params_for(t)]


def test_every_served_type_has_a_table_and_nothing_else_does():
    assert SEARCHABLE_TYPES == RESOURCE_TYPES


@pytest.mark.parametrize("rtype, names", [
    ("Patient", {"name", "family", "given", "birthdate", "gender", "identifier", "phone",
                 "telecom", "address", "address-city", "general-practitioner", "organization",
                 "active", "link", "email"}),
    ("Practitioner", {"name", "family", "given", "identifier", "active", "telecom"}),
    ("Organization", {"name", "identifier", "type", "partof", "active"}),
    ("Observation", {"patient", "subject", "code", "date", "identifier", "status", "category",
                     "value-quantity", "encounter", "performer", "based-on", "value-concept"}),
    ("Encounter", {"patient", "subject", "date", "identifier", "status", "class", "type",
                   "participant", "practitioner", "service-provider"}),
    ("Condition", {"patient", "subject", "code", "identifier", "category", "clinical-status",
                   "onset-date", "encounter"}),
    ("Procedure", {"patient", "subject", "code", "date", "identifier", "status", "category"}),
    ("DiagnosticReport", {"patient", "subject", "code", "date", "identifier", "status",
                          "category", "result", "issued", "based-on"}),
    ("MedicationRequest", {"patient", "subject", "code", "date", "identifier", "status",
                           "category", "authoredon", "intent", "requester"}),
    ("AllergyIntolerance", {"patient", "code", "date", "identifier", "category",
                            "clinical-status"}),
    ("Immunization", {"patient", "date", "identifier", "status", "vaccine-code"}),
    ("DocumentReference", {"patient", "subject", "date", "identifier", "status", "category",
                           "type", "author"}),
    ("ImagingStudy", {"patient", "subject", "identifier", "status", "modality", "started",
                      "endpoint", "series", "bodysite"}),
    ("ServiceRequest", {"patient", "subject", "code", "identifier", "status", "category",
                        "requester", "performer", "authored", "occurrence", "intent",
                        "priority"}),
    ("Task", {"patient", "subject", "code", "identifier", "status", "owner", "requester",
              "focus", "based-on", "business-status", "intent", "authored-on", "period"}),
    ("Consent", {"patient", "identifier", "status", "category", "date", "scope", "action",
                 "actor", "period", "source-reference", "organization"}),
    ("Provenance", {"patient", "target", "agent", "recorded", "entity"}),
])
def test_common_clinical_parameters_are_there(rtype: str, names: set[str]):
    assert names <= {p.name for p in params_for(rtype)}


@pytest.mark.parametrize("rtype", sorted(RESOURCE_TYPES))
def test_meta_parameters_on_every_type_and_id_lastupdated_left_to_the_store(rtype: str):
    by_name = {p.name: p for p in params_for(rtype)}
    assert by_name["_tag"].type == "token"
    assert by_name["_security"].type == "token"
    assert by_name["_profile"].type == "uri"
    assert "_id" not in by_name
    assert "_lastUpdated" not in by_name


@pytest.mark.parametrize("rtype, param", ALL_PARAMS,
                         ids=[f"{t}.{p.name}" for t, p in ALL_PARAMS])
def test_parameter_is_well_formed(rtype: str, param: SearchParam):
    assert param.type in PARAM_TYPES
    assert param.paths and all(p.startswith(rtype + ".") for p in param.paths)
    if param.type != "reference":
        assert param.targets == ()
    assert get_param(rtype, param.name) is param


def _model_field_types(model: Any) -> dict[str, Any]:
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _element(rtype: str, path: str) -> list[Any]:
    """The model fields ``path`` ends on (several for a choice ``x[x]``)."""
    path = re.sub(r"\.where\(.*\)$", "", path)
    steps = path.split(".")[1:]
    model = get_fhir_model_class(rtype)
    for i, step in enumerate(steps):
        fields = _model_field_types(model)
        if step.endswith("[x]"):
            assert i == len(steps) - 1, "choice elements only at the end"
            prefix = step[:-3]
            found = [f for k, f in fields.items()
                     if k.startswith(prefix) and k[len(prefix):][:1].isupper()
                     and not k.endswith("__ext")]
            assert found, f"{model.__name__} has no {step}"
            return found
        assert step in fields, f"{model.__name__} has no element {step}"
        if i < len(steps) - 1:
            type_name = re.search(r"(\w+)Type\b", str(fields[step].annotation))
            assert type_name is not None
            model = get_fhir_model_class(type_name.group(1))
    return [fields[steps[-1]]]


@pytest.mark.parametrize("rtype, param", ALL_PARAMS,
                         ids=[f"{t}.{p.name}" for t, p in ALL_PARAMS])
def test_paths_name_real_elements_and_targets_real_reference_types(rtype: str,
                                                                   param: SearchParam):
    allowed: set[str] = set()
    for path in param.paths:
        for field in _element(rtype, path):
            allowed |= set((field.json_schema_extra or {}).get("enum_reference_types", []))
    if param.type == "reference":
        assert allowed, "a reference parameter must sit on Reference elements"
        if "Resource" not in allowed:
            assert set(param.targets) <= allowed
            assert param.targets, "only Reference(Any) elements have no listed targets"


def test_patient_compartment_follows_the_r4_definition():
    assert set(PATIENT_COMPARTMENT) == RESOURCE_TYPES
    assert PATIENT_COMPARTMENT["Observation"] == ("subject", "performer")
    assert PATIENT_COMPARTMENT["Encounter"] == ("patient",)
    assert PATIENT_COMPARTMENT["Patient"] == ("link",)
    assert PATIENT_COMPARTMENT["AllergyIntolerance"] == ("patient", "recorder", "asserter")
    for outside in ("Practitioner", "Organization", "Task"):
        assert PATIENT_COMPARTMENT[outside] == ()


@pytest.mark.parametrize("rtype", sorted(RESOURCE_TYPES))
def test_compartment_params_are_references_that_can_point_at_a_patient(rtype: str):
    for name in PATIENT_COMPARTMENT[rtype]:
        param = get_param(rtype, name)
        assert param is not None and param.type == "reference"
        assert param.can_target("Patient")


def test_unknown_types_and_names():
    assert params_for("Basic") == []
    assert get_param("Basic", "code") is None
    assert get_param("Patient", "no-such-param") is None


def test_can_target_treats_no_targets_as_any():
    assert get_param("Provenance", "target").can_target("Observation")
    assert not get_param("Observation", "patient").can_target("Group")
