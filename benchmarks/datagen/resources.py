"""Builders of single FHIR R4 resources as plain dicts (JSON-ready).

Each builder takes what a clinician would know at that moment and returns a
resource without ``id`` (the exchange assigns ids; transaction entries are
linked by their ``urn:uuid:`` full URLs). Timestamps are China Standard Time,
written with an explicit ``+08:00`` offset as hospital systems in the region
send them.
"""

from __future__ import annotations

import random
from datetime import datetime

from benchmarks.datagen.codes import (
    ALLERGY_CLINICAL,
    ALLERGY_VER,
    ATC,
    BP_PANEL,
    CONDITION_CATEGORY,
    CONDITION_CLINICAL,
    CONDITION_VER,
    CVX,
    DIASTOLIC,
    INTERPRETATION,
    LOINC,
    OBS_CATEGORY,
    SNOMED,
    SYSTOLIC,
    UCUM,
    V2_0074,
    Diagnosis,
    Drug,
    Measure,
    Panel,
)

_UNIT_TEXT = {"Cel": "°C", "mm[Hg]": "mmHg", "10*9/L": "×10^9/L", "10*12/L": "×10^12/L",
              "umol/L": "µmol/L", "kg/m2": "kg/m²", "ug": "µg", "{puff}": "吸", "/min": "次/分"}
_TIMES_PER_DAY = {1: "每日一次", 2: "每日两次", 3: "每日三次"}


def ts(moment: datetime) -> str:
    """Format a local (UTC+8) wall-clock time as a FHIR dateTime with offset."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S+08:00")


def ref(url: str) -> dict:
    return {"reference": url}


def quantity(value: float, unit: str) -> dict:
    return {"value": value, "unit": _UNIT_TEXT.get(unit, unit), "system": UCUM, "code": unit}


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict:
    concept: dict = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        concept["text"] = text
    return concept


def draw(rng: random.Random, m: Measure, shift: float = 0.0) -> float | int:
    """Draw a plausible value of ``m`` (never negative, SpO2 never above 100)."""
    value = max(rng.gauss(m.mean + shift, m.sd), m.mean * 0.15)
    if m.unit == "%" and m.code == "59408-5":
        value = min(value, 100.0)
    return int(round(value)) if m.decimals == 0 else round(value, m.decimals)


def _interpretation(m: Measure, value: float) -> dict:
    if m.low is not None and value < m.low:
        code, display = "L", "Low"
    elif m.high is not None and value > m.high:
        code, display = "H", "High"
    else:
        code, display = "N", "Normal"
    return _concept(INTERPRETATION, code, display)


def observation(*, m: Measure, value: float, category: str, patient: str, encounter: str,
                when: datetime, issued: datetime | None = None) -> dict:
    """A quantitative vital sign or lab result with reference range and flag."""
    cat_display = "Vital Signs" if category == "vital-signs" else "Laboratory"
    obs: dict = {
        "resourceType": "Observation",
        "status": "final",
        "category": [_concept(OBS_CATEGORY, category, cat_display)],
        "code": _concept(LOINC, m.code, m.display, m.display),
        "subject": ref(patient),
        "encounter": ref(encounter),
        "effectiveDateTime": ts(when),
        "valueQuantity": quantity(value, m.unit),
    }
    if issued is not None:
        obs["issued"] = ts(issued)
    if m.low is not None or m.high is not None:
        rr: dict = {}
        if m.low is not None:
            rr["low"] = quantity(m.low, m.unit)
        if m.high is not None:
            rr["high"] = quantity(m.high, m.unit)
        obs["referenceRange"] = [rr]
        obs["interpretation"] = [_interpretation(m, value)]
    return obs


def blood_pressure(*, systolic: int, diastolic: int, patient: str, encounter: str,
                   when: datetime) -> dict:
    """The vital-signs blood pressure panel: one Observation, two components."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [_concept(OBS_CATEGORY, "vital-signs", "Vital Signs")],
        "code": _concept(LOINC, BP_PANEL[0], BP_PANEL[1], "血压"),
        "subject": ref(patient),
        "encounter": ref(encounter),
        "effectiveDateTime": ts(when),
        "component": [
            {"code": _concept(LOINC, SYSTOLIC.code, SYSTOLIC.display),
             "valueQuantity": quantity(systolic, SYSTOLIC.unit),
             "interpretation": [_interpretation(SYSTOLIC, systolic)]},
            {"code": _concept(LOINC, DIASTOLIC.code, DIASTOLIC.display),
             "valueQuantity": quantity(diastolic, DIASTOLIC.unit),
             "interpretation": [_interpretation(DIASTOLIC, diastolic)]},
        ],
    }


def diagnostic_report(*, panel: Panel, patient: str, encounter: str, results: list[str],
                      collected: datetime, issued: datetime, lab: str) -> dict:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "category": [_concept(V2_0074, "LAB", "Laboratory")],
        "code": _concept(LOINC, panel.code, panel.display, panel.text),
        "subject": ref(patient),
        "encounter": ref(encounter),
        "effectiveDateTime": ts(collected),
        "issued": ts(issued),
        "performer": [{"display": lab}],
        "result": [ref(u) for u in results],
    }


def condition(*, dx: Diagnosis, patient: str, encounter: str, onset: datetime,
              recorded: datetime, abated: datetime | None) -> dict:
    """A chronic problem-list item (active) or an acute encounter diagnosis
    (resolved once ``abated``)."""
    cat = ("problem-list-item", "Problem List Item") if dx.chronic else \
          ("encounter-diagnosis", "Encounter Diagnosis")
    status = ("resolved", "Resolved") if abated is not None else ("active", "Active")
    res: dict = {
        "resourceType": "Condition",
        "clinicalStatus": _concept(CONDITION_CLINICAL, *status),
        "verificationStatus": _concept(CONDITION_VER, "confirmed", "Confirmed"),
        "category": [_concept(CONDITION_CATEGORY, *cat)],
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": dx.code,
                             "display": dx.display}], "text": dx.text},
        "subject": ref(patient),
        "encounter": ref(encounter),
        "onsetDateTime": ts(onset),
        "recordedDate": ts(recorded),
    }
    if abated is not None:
        res["abatementDateTime"] = ts(abated)
    return res


def medication_request(*, drug: Drug, dx: Diagnosis, dx_url: str | None, patient: str,
                       encounter: str, authored: datetime, active: bool, doctor: str,
                       days: int) -> dict:
    """An outpatient or ward prescription coded with ATC, with its dosage."""
    route_code, route_display, route_text = drug.route
    amount = f"{drug.dose:g}{_UNIT_TEXT.get(drug.unit, drug.unit)}"
    dosage: dict = {
        "route": _concept(SNOMED, route_code, route_display, route_text),
        "doseAndRate": [{"doseQuantity": quantity(drug.dose, drug.unit)}],
    }
    if drug.per_day:
        dosage["text"] = f"{route_text} {amount} {_TIMES_PER_DAY[drug.per_day]}"
        dosage["timing"] = {"repeat": {"frequency": drug.per_day, "period": 1,
                                       "periodUnit": "d"}}
    else:
        dosage["text"] = f"必要时{route_text} {amount}"
        dosage["asNeededBoolean"] = True
    res: dict = {
        "resourceType": "MedicationRequest",
        "status": "active" if active else "completed",
        "intent": "order",
        "medicationCodeableConcept": _concept(ATC, drug.atc, drug.display, drug.text),
        "subject": ref(patient),
        "encounter": ref(encounter),
        "authoredOn": ts(authored),
        "requester": {"display": doctor},
        "dosageInstruction": [dosage],
        "dispenseRequest": {"expectedSupplyDuration": {"value": days, "unit": "天",
                                                       "system": UCUM, "code": "d"}},
    }
    if dx_url is not None:
        res["reasonReference"] = [ref(dx_url)]
    else:
        res["reasonCode"] = [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                          "code": dx.code, "display": dx.display}],
                              "text": dx.text}]
    return res


def encounter(*, cls: str, cls_display: str, department: str, patient: str,
              start: datetime, end: datetime, hospital: str,
              diagnoses: list[str]) -> dict:
    res: dict = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls,
                  "display": cls_display},
        "type": [{"text": department}],
        "subject": ref(patient),
        "period": {"start": ts(start), "end": ts(end)},
        "serviceProvider": {"display": hospital},
    }
    if diagnoses:
        res["diagnosis"] = [{"condition": ref(u), "rank": i + 1}
                            for i, u in enumerate(diagnoses)]
    if cls == "IMP":
        res["hospitalization"] = {"dischargeDisposition": _concept(
            "http://terminology.hl7.org/CodeSystem/discharge-disposition", "home", "Home",
            "出院回家")}
    return res


def procedure(*, code: tuple[str, str, str], patient: str, encounter: str, when: datetime,
              reason: str | None) -> dict:
    res: dict = {
        "resourceType": "Procedure",
        "status": "completed",
        "code": _concept(SNOMED, code[0], code[1], code[2]),
        "subject": ref(patient),
        "encounter": ref(encounter),
        "performedDateTime": ts(when),
    }
    if reason is not None:
        res["reasonReference"] = [ref(reason)]
    return res


def immunization(*, vaccine: tuple[str, str, str], patient: str, encounter: str,
                 when: datetime, lot: str) -> dict:
    return {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": _concept(CVX, vaccine[0], vaccine[1], vaccine[2]),
        "patient": ref(patient),
        "encounter": ref(encounter),
        "occurrenceDateTime": ts(when),
        "primarySource": True,
        "lotNumber": lot,
    }


def allergy(*, allergen: tuple[str, str, str, str, str], reaction: tuple[str, str, str],
            patient: str, recorded: datetime) -> dict:
    code, display, text, category, criticality = allergen
    return {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": _concept(ALLERGY_CLINICAL, "active", "Active"),
        "verificationStatus": _concept(ALLERGY_VER, "confirmed", "Confirmed"),
        "type": "allergy",
        "category": [category],
        "criticality": criticality,
        "code": _concept(SNOMED, code, display, text),
        "patient": ref(patient),
        "recordedDate": ts(recorded),
        "reaction": [{"manifestation": [_concept(SNOMED, *reaction)],
                      "severity": "severe" if reaction[0] == "39579001" else "mild"}],
    }
