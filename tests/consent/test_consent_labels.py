"""Sensitivity labels derived at ingest: each category from its codes, nothing
from ordinary codes, and what the source set is kept."""

from __future__ import annotations

from typing import Any

import pytest

from consent.labels import apply_labels, coding_labels, derive_codes, derive_labels, labels_of

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def condition(code: str, system: str = ICD10) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": "c1", "code": cc(system, code),
            "subject": {"reference": "Patient/1"}}


@pytest.mark.parametrize("code, expected", [
    ("F32.9", {"PSY"}),        # depressive episode
    ("F20.0", {"PSY"}),        # paranoid schizophrenia
    ("F03", {"PSY"}),          # dementia
    ("F32.900", {"PSY"}),      # Chinese national edition extension of F32.9
    ("f41.1", {"PSY"}),        # case and dots do not matter
    ("X71.0", {"PSY"}),        # intentional self-harm
    ("F10.2", {"ETH"}),        # alcohol dependence: substance use, not PSY
    ("F17.2", {"ETH"}),
    ("Z71.4", {"ETH"}),
    ("B20.1", {"HIV"}),
    ("B24", {"HIV"}),
    ("Z21", {"HIV"}),
    ("R75", {"HIV"}),
    ("A54.9", {"STD"}),        # gonococcal infection
    ("A51.0", {"STD"}),        # primary genital syphilis
    ("O80", {"SEX"}),          # single spontaneous delivery
    ("O04.9", {"SEX"}),        # medical abortion
    ("Z30.0", {"SEX"}),        # contraceptive management
    ("N97.9", {"SEX"}),        # female infertility
    ("O98.7", {"HIV", "SEX"}),  # HIV complicating pregnancy: both
    ("Q90.9", {"GDIS"}),       # Down syndrome
    ("Q96.9", {"GDIS"}),       # Turner syndrome
    ("I10", set()),            # hypertension
    ("J18.9", set()),          # pneumonia
    ("A49.9", set()),          # bacterial infection: just before the STI block
    ("F", set()),
    ("", set()),
])
def test_condition_icd10_codes_give_their_category(code, expected):
    assert derive_codes(condition(code)) == expected


def test_icd10_cm_and_oid_systems_count_too():
    assert derive_codes(condition("F32.A", "http://hl7.org/fhir/sid/icd-10-cm")) == {"PSY"}
    assert derive_codes(condition("B20", "urn:oid:2.16.840.1.113883.6.3")) == {"HIV"}


def test_a_code_in_an_unknown_system_is_not_guessed():
    assert derive_codes(condition("F32.9", "http://example.org/local-codes")) == set()
    assert coding_labels(None, "F32.9") == frozenset()


@pytest.mark.parametrize("rtype, loinc, expected", [
    ("Observation", "20447-9", {"HIV"}),   # HIV 1 RNA viral load
    ("Observation", "56888-1", {"HIV"}),   # HIV 1+2 Ab + p24 Ag
    ("Observation", "21613-5", {"STD"}),   # Chlamydia DNA
    ("Observation", "20507-0", {"STD"}),   # RPR
    ("Observation", "19359-9", {"ETH"}),   # cocaine urine screen
    ("Observation", "44261-6", {"PSY"}),   # PHQ-9 total score
    ("DiagnosticReport", "51969-4", {"GDIS"}),  # genetic analysis report
    ("Observation", "4548-4", set()),      # HbA1c
])
def test_lab_codes_give_their_category(rtype, loinc, expected):
    resource = {"resourceType": rtype, "status": "final", "code": cc(LOINC, loinc)}
    assert derive_codes(resource) == expected


def test_observation_component_codes_count():
    obs = {"resourceType": "Observation", "code": cc(LOINC, "24323-8"),
           "component": [{"code": cc(LOINC, "4548-4")}, {"code": cc(LOINC, "7917-8")}]}
    assert derive_codes(obs) == {"HIV"}


@pytest.mark.parametrize("atc, expected", [
    ("J05AR03", {"HIV"}),   # tenofovir disoproxil + emtricitabine
    ("J05AG03", {"HIV"}),   # efavirenz
    ("N07BC02", {"ETH"}),   # methadone (opioid dependence)
    ("N05AN01", {"PSY"}),   # lithium
    ("G03AA07", {"SEX"}),   # levonorgestrel + ethinylestradiol
    ("N06AB06", set()),     # sertraline: not labelled by itself (see schemas.sensitivity)
    ("J05AF07", set()),     # tenofovir alone: also treats hepatitis B
    ("C09AA02", set()),     # enalapril
])
def test_medication_atc_codes(atc, expected):
    mr = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
          "medicationCodeableConcept": cc(ATC, atc)}
    assert derive_codes(mr) == expected


def test_a_prescription_takes_the_label_of_its_reason():
    mr = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
          "medicationCodeableConcept": cc(ATC, "N06AB06"),
          "reasonCode": [cc(ICD10, "F32.1")]}
    assert derive_codes(mr) == {"PSY"}


def test_a_contained_medication_counts():
    mr = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
          "contained": [{"resourceType": "Medication", "id": "m",
                         "code": cc(ATC, "J05AR20")}],
          "medicationReference": {"reference": "#m"}}
    assert derive_codes(mr) == {"HIV"}


def test_procedure_encounter_and_service_request_reasons():
    assert derive_codes({"resourceType": "Procedure", "code": cc(ICD10, "Z30.1")}) == {"SEX"}
    assert derive_codes({"resourceType": "Encounter",
                         "reasonCode": [cc(ICD10, "F10.2")]}) == {"ETH"}
    assert derive_codes({"resourceType": "ServiceRequest", "code": cc(LOINC, "4548-4"),
                         "reasonCode": [cc(ICD10, "Q90.0")]}) == {"GDIS"}


def test_types_without_sensitive_codes_are_left_alone():
    patient = {"resourceType": "Patient", "id": "1", "name": [{"family": "王"}]}
    assert derive_labels(patient) == []
    assert apply_labels(patient) is False
    assert "meta" not in patient


def test_apply_labels_adds_missing_labels_in_place():
    resource = condition("B20")
    assert apply_labels(resource) is True
    assert resource["meta"]["security"] == [
        {"system": ACTCODE, "code": "HIV", "display": "HIV/AIDS information sensitivity"}]
    assert apply_labels(resource) is False  # idempotent


def test_labels_the_source_set_are_kept_and_not_duplicated():
    resource = condition("O98.7")
    resource["meta"] = {"security": [
        {"system": ACTCODE, "code": "HIV"},
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}
    assert [c["code"] for c in derive_labels(resource)] == ["SEX"]
    assert apply_labels(resource) is True
    assert [c["code"] for c in resource["meta"]["security"]] == ["HIV", "R", "SEX"]


def test_a_source_label_without_system_counts_as_present():
    resource = condition("F32.9")
    resource["meta"] = {"security": [{"code": "PSY"}]}
    assert derive_labels(resource) == []


def test_source_labels_stand_even_when_the_codes_say_nothing():
    resource = condition("I10")
    resource["meta"] = {"security": label_list("GDIS")}
    assert apply_labels(resource) is False
    assert labels_of(resource) == {"GDIS"}


def label_list(*codes: str) -> list[dict[str, str]]:
    return [{"system": ACTCODE, "code": c} for c in codes]


def test_malformed_shapes_do_not_raise():
    odd = {"resourceType": "Condition", "code": {"coding": ["F32", None, {"code": "F32"}]},
           "contained": ["x"], "meta": {"security": [None]}}
    assert derive_codes(odd) == set()
    assert apply_labels(odd) is False
