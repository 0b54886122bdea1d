"""ORU R01 → transaction Bundle of Observations (OBX) and DiagnosticReports (OBR).

The Patient is sent as a conditional *create*: a lab system's PID is usually
thinner than the HIS's, and it must not overwrite what an ADT message set.
"""

from __future__ import annotations

import re
from typing import Any

from adapters.hl7v2.codes import LOINC, UCUM
from adapters.hl7v2.fhirmap import (
    coding,
    create_entry,
    fhir_datetime,
    full_url,
    number,
    put_entry,
    transaction,
)
from adapters.hl7v2.mapping import (
    MappingSettings,
    Outgoing,
    patient_key,
    patient_resource,
    required,
)
from adapters.hl7v2.message import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    Hl7Error,
    Message,
    Segment,
)

OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBS_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "R": "preliminary",
              "S": "preliminary", "I": "registered", "X": "cancelled",
              "D": "entered-in-error", "W": "entered-in-error", "U": "final"}
REPORT_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "R": "partial",
                 "S": "partial", "A": "partial", "I": "registered", "O": "registered",
                 "X": "cancelled"}
FLAGS = {"L", "H", "LL", "HH", "N", "A", "AA", "<", ">", "S", "R", "I", "POS", "NEG",
         "U", "D", "B", "W"}
SN_COMPARATORS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "": None, "=": None}
_RANGE = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)\s*(?:-|~|～|—)\s*([-+]?\d+(?:\.\d+)?)\s*\Z")
_BOUND = re.compile(r"\s*(<=|>=|<|>|≤|≥)\s*([-+]?\d+(?:\.\d+)?)\s*\Z")


def map_oru(msg: Message, settings: MappingSettings) -> Outgoing:
    """One Bundle per message: Patient (if absent), then each OBR with its OBX."""
    pid = required(msg, "PID")
    patient, mrn = patient_resource(pid, settings)
    patient_ref = full_url("Patient", f"{settings.mrn_system}|{mrn}")
    entries = [create_entry(patient, settings.mrn_system, mrn)]
    groups: list[tuple[Segment, list[tuple[Segment, list[str]]]]] = []
    for seg in msg.segments:
        if seg.name == "OBR":
            groups.append((seg, []))
        elif seg.name == "OBX":
            if not groups:
                raise Hl7Error("OBX before any OBR", code=SEGMENT_SEQUENCE_ERROR,
                               location=f"OBX^{seg.index}")
            groups[-1][1].append((seg, []))
        elif seg.name == "NTE" and groups and groups[-1][1]:
            groups[-1][1][-1][1].append(seg.get(3))
    if not groups:
        raise Hl7Error("ORU without OBR", code=SEGMENT_SEQUENCE_ERROR, location="OBR")
    for obr, obxs in groups:
        order = obr.get(3) or obr.get(2)
        if not order:
            raise Hl7Error("OBR has neither filler (OBR-3) nor placer (OBR-2) order number",
                           code=REQUIRED_FIELD_MISSING, location=f"OBR^{obr.index}^3")
        when = fhir_datetime(obr.get(7), settings.tz, f"OBR^{obr.index}^7")
        results, statuses = [], []
        for obx, notes in obxs:
            obs, key = _observation(obx, notes, order, patient_ref, when, settings)
            statuses.append(obs["status"])
            entry = put_entry(obs, settings.observation_system, key)
            results.append({"reference": entry["fullUrl"]})
            entries.append(entry)
        entries.append(put_entry(_report(obr, order, patient_ref, when, results, statuses,
                                         settings), settings.order_system, order))
    return Outgoing("bundle", patient_key(settings, mrn), transaction(entries))


def _code(local: str, text: str, system_hint: str, settings: MappingSettings) -> dict[str, Any]:
    codings = []
    if system_hint == "LN":
        codings.append(coding(LOINC, local, text))
    else:
        mapped = settings.codes.lab(local)
        if mapped:
            codings.append(coding(mapped.system, mapped.code, mapped.display))
        codings.append(coding(settings.local_code_system, local, text))
    out: dict[str, Any] = {"coding": codings}
    if text:
        out["text"] = text
    return out


def _report(obr: Segment, order: str, patient_ref: str, when: str | None,
            results: list[dict[str, str]], statuses: list[str],
            settings: MappingSettings) -> dict[str, Any]:
    loc = f"OBR^{obr.index}"
    flag = obr.get(25)
    if flag and flag not in REPORT_STATUS:
        raise Hl7Error(f"unknown result status {flag!r} in OBR-25", code=TABLE_VALUE_NOT_FOUND,
                       location=f"{loc}^25")
    status = REPORT_STATUS.get(flag) or (
        "final" if all(s in ("final", "corrected") for s in statuses) else "preliminary")
    if not obr.get(4):
        raise Hl7Error("OBR-4 universal service id is empty", code=REQUIRED_FIELD_MISSING,
                       location=f"{loc}^4")
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": settings.order_system, "value": order}],
        "status": status,
        "category": [{"coding": [coding(V2_0074, "LAB", "Laboratory")]}],
        "code": _code(obr.get(4, 1), obr.get(4, 2), obr.get(4, 3), settings),
        "subject": {"reference": patient_ref},
    }
    if when:
        report["effectiveDateTime"] = when
    issued = fhir_datetime(obr.get(22), settings.tz, f"{loc}^22")
    if issued and "T" in issued:
        report["issued"] = issued
    if results:
        report["result"] = results
    return report


def _observation(obx: Segment, notes: list[str], order: str, patient_ref: str,
                 when: str | None, settings: MappingSettings) -> tuple[dict[str, Any], str]:
    loc = f"OBX^{obx.index}"
    local = obx.get(3, 1)
    if not local:
        raise Hl7Error("OBX-3 observation identifier is empty", code=REQUIRED_FIELD_MISSING,
                       location=f"{loc}^3")
    flag = obx.get(11)
    if flag not in OBS_STATUS:
        raise Hl7Error(f"OBX-11 result status {flag!r} is missing or unknown",
                       code=REQUIRED_FIELD_MISSING if not flag else TABLE_VALUE_NOT_FOUND,
                       location=f"{loc}^11")
    sub_id = obx.get(4)
    key = f"{order}.{local}" + (f".{sub_id}" if sub_id else "")
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": settings.observation_system, "value": key}],
        "status": OBS_STATUS[flag],
        "category": [{"coding": [coding(OBS_CATEGORY, "laboratory", "Laboratory")]}],
        "code": _code(local, obx.get(3, 2), obx.get(3, 3), settings),
        "subject": {"reference": patient_ref},
    }
    effective = fhir_datetime(obx.get(14), settings.tz, f"{loc}^14") or when
    if effective:
        obs["effectiveDateTime"] = effective
    unit = obx.get(6, 1) or obx.get(6, 2)
    ucum = settings.codes.ucum(unit) or (unit if obx.get(6, 3).upper() == "UCUM" else None)
    value = _value(obx, unit, ucum, settings, loc)
    if value:
        obs.update(value)
    ranges = _reference_range(obx.get(7), unit, ucum)
    if ranges:
        obs["referenceRange"] = [ranges]
    flags = [r[0][0] for r in obx.repetitions(8) if r and r[0][0]]
    for f in flags:
        if f not in FLAGS:
            raise Hl7Error(f"unknown abnormal flag {f!r} in OBX-8", code=TABLE_VALUE_NOT_FOUND,
                           location=f"{loc}^8")
    if flags:
        obs["interpretation"] = [{"coding": [coding(INTERPRETATION, f)]} for f in flags]
    if notes:
        obs["note"] = [{"text": n} for n in notes if n]
    return obs, key


def _quantity(value: int | float, unit: str, ucum: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if unit:
        q["unit"] = unit
    if ucum:
        q["system"], q["code"] = UCUM, ucum
    return q


def _value(obx: Segment, unit: str, ucum: str | None, settings: MappingSettings,
           loc: str) -> dict[str, Any] | None:
    kind = obx.get(2)
    reps = obx.repetitions(5)
    if not reps or not any(any(c) for r in reps for c in r):
        return None
    where = f"{loc}^5"
    if kind == "NM":
        return {"valueQuantity": _quantity(number(obx.get(5), where), unit, ucum)}
    if kind in ("ST", "TX", "FT"):
        return {"valueString": "\n".join(_text(r) for r in reps)}
    if kind in ("CE", "CWE", "CNE"):
        code, text, system = obx.get(5, 1), obx.get(5, 2), obx.get(5, 3)
        sys_uri = {"LN": LOINC, "SCT": "http://snomed.info/sct"}.get(
            system, settings.local_code_system)
        cc: dict[str, Any] = {"coding": [coding(sys_uri, code, text)]} if code else {}
        if text:
            cc["text"] = text
        return {"valueCodeableConcept": cc}
    if kind == "SN":
        comp, n1, sep, n2 = (obx.get(5, i) for i in (1, 2, 3, 4))
        if comp not in SN_COMPARATORS:
            raise Hl7Error(f"bad SN comparator {comp!r}", code=DATA_TYPE_ERROR, location=where)
        if sep in ("-", ":", "/") and n2:
            a, b = _quantity(number(n1, where), unit, ucum), _quantity(number(n2, where), unit,
                                                                        ucum)
            if sep == "-":
                return {"valueRange": {"low": a, "high": b}}
            return {"valueRatio": {"numerator": {"value": a["value"]},
                                   "denominator": {"value": b["value"]}}}
        q = _quantity(number(n1, where), unit, ucum)
        if SN_COMPARATORS[comp]:
            q["comparator"] = SN_COMPARATORS[comp]
        return {"valueQuantity": q}
    raise Hl7Error(f"unsupported OBX-2 value type {kind!r}", code=DATA_TYPE_ERROR,
                   location=f"{loc}^2")


def _text(rep: list[list[str]]) -> str:
    """A text repetition: components were not meant as structure in ST/TX/FT."""
    return "^".join("&".join(c) for c in rep)


def _reference_range(text: str, unit: str, ucum: str | None) -> dict[str, Any] | None:
    if not text.strip():
        return None
    m = _RANGE.match(text)
    if m:
        return {"low": _quantity(number(m[1], "OBX-7"), unit, ucum),
                "high": _quantity(number(m[2], "OBX-7"), unit, ucum), "text": text}
    m = _BOUND.match(text)
    if m:
        side = "high" if m[1] in ("<", "<=", "≤") else "low"
        return {side: _quantity(number(m[2], "OBX-7"), unit, ucum), "text": text}
    return {"text": text}
