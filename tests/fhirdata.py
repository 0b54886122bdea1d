"""Small, valid FHIR resources for the API tests."""

from __future__ import annotations

from typing import Any

RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.1"
MRN_SYSTEM = "urn:oid:1.2.156.112604.1.2.1"


def patient(mrn: str = "MRN001", family: str = "王", given: str = "秀英",
            birth: str = "1975-03-14", gender: str = "female") -> dict[str, Any]:
    return {"resourceType": "Patient",
            "identifier": [{"system": MRN_SYSTEM, "value": mrn}],
            "name": [{"family": family, "given": [given], "text": family + given}],
            "gender": gender, "birthDate": birth}


def observation(patient_ref: str, code: str = "8480-6", value: float = 128,
                when: str = "2024-03-01T08:30:00+08:00", unit: str = "mm[Hg]") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": patient_ref},
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit}}


def condition(patient_ref: str, icd: str = "I10", onset: str = "2020-05-01") -> dict[str, Any]:
    return {"resourceType": "Condition",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": icd}]},
            "subject": {"reference": patient_ref}, "onsetDateTime": onset}


def encounter(patient_ref: str, start: str = "2024-03-01T08:00:00+08:00",
              end: str = "2024-03-01T09:00:00+08:00") -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": patient_ref}, "period": {"start": start, "end": end}}
