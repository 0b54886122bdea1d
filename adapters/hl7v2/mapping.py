"""HL7 v2 messages → what goes into the outbox.

ADT A01/A04/A08 → a transaction Bundle with Patient (+ Encounter from PV1);
ORU R01 → a Bundle with Observations and DiagnosticReports (see ``results.py``);
A40 → a ``Parameters`` payload for the exchange's patient merge.

Every entry is a conditional request on the hospital's own identifiers (MRN,
visit number, filler order number), so a re-sent message changes nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from adapters.hl7v2.codes import CodeMaps
from adapters.hl7v2.fhirmap import (
    coding,
    fhir_date,
    fhir_datetime,
    full_url,
    put_entry,
    transaction,
)
from adapters.hl7v2.message import (
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    Hl7Error,
    Message,
    Segment,
)

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.1"
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


@dataclass
class MappingSettings:
    """The hospital's identifier systems and local conventions."""

    mrn_system: str = "urn:hie:hospital:mrn"
    visit_system: str = "urn:hie:hospital:visit"
    order_system: str = "urn:hie:hospital:filler-order"
    observation_system: str = "urn:hie:hospital:observation"
    local_code_system: str = "urn:hie:hospital:local-code"
    resident_id_system: str = RESIDENT_ID_SYSTEM
    #: PID-3 identifier type codes (CX-5) that mean a resident ID number.
    resident_id_types: frozenset[str] = frozenset({"NNCHN"})
    #: PID-3 assigning authorities (CX-4 namespace or universal id) that issue them.
    resident_id_authorities: frozenset[str] = frozenset({"2.16.156.10011.1.1", "CHN"})
    mrn_types: frozenset[str] = frozenset({"MR"})
    tz: str = "+08:00"
    codes: CodeMaps = field(default_factory=CodeMaps.load)


@dataclass
class Outgoing:
    """One outbox message: ``kind`` is ``bundle`` or ``merge``; ``after`` another
    patient whose earlier messages must reach the exchange first (see ``Outbox``)."""

    kind: str
    patient_key: str
    resource: dict[str, Any]
    after: str | None = None

    @property
    def payload(self) -> bytes:
        return json.dumps(self.resource, ensure_ascii=False).encode("utf-8")


ADT_EVENTS = {"A01", "A04", "A08", "A40"}


def map_message(msg: Message, settings: MappingSettings) -> Outgoing:
    """Map a parsed message; unsupported types are rejected (AR), bad content is AE."""
    kind, event = msg.type
    if kind == "ADT":
        if event not in ADT_EVENTS:
            raise Hl7Error(f"unsupported ADT event {event!r}", ack_code="AR",
                           code=UNSUPPORTED_EVENT_CODE, location="MSH^1^9^2")
        return map_merge(msg, settings) if event == "A40" else map_adt(msg, settings)
    if kind == "ORU":
        if event != "R01":
            raise Hl7Error(f"unsupported ORU event {event!r}", ack_code="AR",
                           code=UNSUPPORTED_EVENT_CODE, location="MSH^1^9^2")
        from adapters.hl7v2.results import map_oru  # one noun per module

        return map_oru(msg, settings)
    raise Hl7Error(f"unsupported message type {kind}^{event}", ack_code="AR",
                   code=UNSUPPORTED_MESSAGE_TYPE, location="MSH^1^9")


def required(msg: Message, name: str) -> Segment:
    seg = msg.segment(name)
    if seg is None:
        raise Hl7Error(f"{name} segment missing", code=SEGMENT_SEQUENCE_ERROR, location=name)
    return seg


def mrn(pid: Segment, settings: MappingSettings, field_no: int = 3) -> str:
    """The MRN: the PID-3 repetition typed MR (or the first that is not a resident ID)."""
    reps = pid.repetitions(field_no)
    candidates = [r for r in reps if r and r[0][0] and not _is_resident_id(r, settings)]
    typed = [r for r in candidates if _comp(r, 5) in settings.mrn_types]
    chosen = (typed or candidates or [None])[0]
    if chosen is None:
        raise Hl7Error(f"{pid.name}-{field_no} has no patient identifier",
                       code=REQUIRED_FIELD_MISSING, location=f"{pid.name}^{pid.index}^{field_no}")
    return chosen[0][0]


def patient_key(settings: MappingSettings, value: str) -> str:
    return f"{settings.mrn_system}|{value}"


def _comp(rep: list[list[str]], n: int, sub: int = 1) -> str:
    try:
        return rep[n - 1][sub - 1]
    except IndexError:
        return ""


def _is_resident_id(rep: list[list[str]], settings: MappingSettings) -> bool:
    authority = {_comp(rep, 4, 1), _comp(rep, 4, 2)} - {""}
    return _comp(rep, 5) in settings.resident_id_types or bool(
        authority & settings.resident_id_authorities)


def patient_resource(pid: Segment, settings: MappingSettings) -> tuple[dict[str, Any], str]:
    """PID → Patient; returns the resource and the MRN."""
    value = mrn(pid, settings)
    loc = f"PID^{pid.index}"
    identifiers: list[dict[str, Any]] = [{
        "use": "usual", "type": {"coding": [coding(V2_0203, "MR")]},
        "system": settings.mrn_system, "value": value}]
    for rep in pid.repetitions(3):
        if rep and rep[0][0] and _is_resident_id(rep, settings):
            identifiers.append({"use": "official", "type": {"coding": [coding(V2_0203, "NI")]},
                                "system": settings.resident_id_system, "value": rep[0][0]})
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers}
    names = [n for n in (_name(rep) for rep in pid.repetitions(5)) if n]
    if names:
        patient["name"] = names
    gender = {"M": "male", "F": "female", "O": "other", "A": "other",
              "U": "unknown", "N": "unknown"}
    sex = pid.get(8)
    if sex:
        if sex not in gender:
            raise Hl7Error(f"unknown administrative sex {sex!r}", code=TABLE_VALUE_NOT_FOUND,
                           location=f"{loc}^8")
        patient["gender"] = gender[sex]
    birth = fhir_date(pid.get(7), f"{loc}^7")
    if birth:
        patient["birthDate"] = birth
    telecom = [t for t in (_telecom(r, "home") for r in pid.repetitions(13)) if t]
    telecom += [t for t in (_telecom(r, "work") for r in pid.repetitions(14)) if t]
    if telecom:
        patient["telecom"] = telecom
    addresses = [a for a in (_address(r) for r in pid.repetitions(11)) if a]
    if addresses:
        patient["address"] = addresses
    return patient, value


def _name(rep: list[list[str]]) -> dict[str, Any] | None:
    family, given, middle = _comp(rep, 1), _comp(rep, 2), _comp(rep, 3)
    prefix, suffix, kind = _comp(rep, 5), _comp(rep, 4), _comp(rep, 7)
    if not (family or given):
        return None
    name: dict[str, Any] = {}
    use = {"L": "official", "D": "usual", "A": "nickname", "N": "nickname", "M": "maiden",
           "B": "old"}.get(kind)
    if use:
        name["use"] = use
    if _CJK.search(family + given):
        # Chinese HIS often put the whole name in XPN.1; the written form has no space.
        name["text"] = family + given
        if given:
            name["family"], name["given"] = family, [given]
    else:
        if family:
            name["family"] = family
        if given or middle:
            name["given"] = [g for g in (given, middle) if g]
        name["text"] = " ".join(p for p in (given, middle, family) if p)
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name


def _telecom(rep: list[list[str]], default_use: str) -> dict[str, Any] | None:
    use_code, equipment = _comp(rep, 2), _comp(rep, 3)
    if equipment in ("Internet", "X.400") and _comp(rep, 4):
        return {"system": "email", "value": _comp(rep, 4)}
    local = _comp(rep, 7)
    value = _comp(rep, 12) or _comp(rep, 1) or (
        "-".join(p for p in (_comp(rep, 6), local) if p) if local else "")
    if not value:
        return None
    out: dict[str, Any] = {"system": "fax" if equipment == "FX" else "phone", "value": value}
    use = "mobile" if equipment == "CP" else {"PRN": "home", "WPN": "work", "ORN": "home",
                                                "VHN": "home", "EMR": "home"}.get(use_code,
                                                                                 default_use)
    out["use"] = use
    return out


def _address(rep: list[list[str]]) -> dict[str, Any] | None:
    street, other, city, state = _comp(rep, 1), _comp(rep, 2), _comp(rep, 3), _comp(rep, 4)
    postal, country, kind, district = _comp(rep, 5), _comp(rep, 6), _comp(rep, 7), _comp(rep, 9)
    if not any((street, other, city, state, postal, country, district)):
        return None
    addr: dict[str, Any] = {}
    use = {"H": "home", "B": "work", "O": "work", "C": "temp", "M": "home"}.get(kind)
    if use:
        addr["use"] = use
    lines = [x for x in (street, other) if x]
    for key, val in (("line", lines), ("city", city), ("district", district),
                     ("state", state), ("postalCode", postal), ("country", country)):
        if val:
            addr[key] = val
    if _CJK.search(state + city + district + street):
        addr["text"] = "".join((state, city, district, *lines))
    return addr


ENCOUNTER_CLASS = {"I": ("IMP", "inpatient encounter"), "O": ("AMB", "ambulatory"),
                   "E": ("EMER", "emergency"), "P": ("PRENC", "pre-admission"),
                   "R": ("AMB", "ambulatory"), "B": ("AMB", "ambulatory")}


def encounter_resource(msg: Message, pv1: Segment, patient_ref: str,
                       settings: MappingSettings) -> tuple[dict[str, Any], str] | None:
    """PV1 (+ DG1 diagnoses) → Encounter; None when there is no visit number (PV1-19)
    to make it idempotent on."""
    visit = pv1.get(19)
    if not visit:
        return None
    loc = f"PV1^{pv1.index}"
    pclass = pv1.get(2)
    if pclass not in ENCOUNTER_CLASS:
        raise Hl7Error(f"unknown patient class {pclass!r} in PV1-2", code=TABLE_VALUE_NOT_FOUND,
                       location=f"{loc}^2")
    code, display = ENCOUNTER_CLASS[pclass]
    start = fhir_datetime(pv1.get(44), settings.tz, f"{loc}^44")
    end = fhir_datetime(pv1.get(45), settings.tz, f"{loc}^45")
    enc: dict[str, Any] = {
        "resourceType": "Encounter",
        "identifier": [{"use": "official", "type": {"coding": [coding(V2_0203, "VN")]},
                        "system": settings.visit_system, "value": visit}],
        "status": "finished" if end else "in-progress",
        "class": coding(ACT_CODE, code, display),
        "subject": {"reference": patient_ref},
    }
    if start or end:
        enc["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    where = [pv1.get(3, c) for c in (1, 2, 3)]
    if any(where):
        enc["location"] = [{"location": {"display": "/".join(p for p in where if p)}}]
    reasons = []
    for dg1 in msg.all("DG1"):
        local, text = dg1.get(3, 1), dg1.get(3, 2) or dg1.get(4)
        if not local:
            continue
        codings = []
        mapped = settings.codes.diagnosis(local)
        if mapped:
            codings.append(coding(mapped.system, mapped.code, mapped.display))
        codings.append(coding(settings.local_code_system, local, text))
        reasons.append({"coding": codings, **({"text": text} if text else {})})
    if reasons:
        enc["reasonCode"] = reasons
    return enc, visit


def map_adt(msg: Message, settings: MappingSettings) -> Outgoing:
    """ADT A01/A04/A08 → transaction Bundle of Patient and, with a visit number, Encounter."""
    pid = required(msg, "PID")
    patient, value = patient_resource(pid, settings)
    entries = [put_entry(patient, settings.mrn_system, value)]
    pv1 = msg.segment("PV1")
    if pv1 is not None:
        ref = full_url("Patient", f"{settings.mrn_system}|{value}")
        mapped = encounter_resource(msg, pv1, ref, settings)
        if mapped:
            enc, visit = mapped
            entries.append(put_entry(enc, settings.visit_system, visit))
    return Outgoing("bundle", patient_key(settings, value), transaction(entries))


def map_merge(msg: Message, settings: MappingSettings) -> Outgoing:
    """ADT A40: PID-3 is the surviving patient, MRG-1 the one merged into it."""
    if len(msg.all("MRG")) > 1:
        raise Hl7Error("only one PID/MRG pair per A40 is supported",
                       code=SEGMENT_SEQUENCE_ERROR, location="MRG")
    pid, mrg = required(msg, "PID"), required(msg, "MRG")
    target = mrn(pid, settings)
    source = mrn(mrg, settings, field_no=1)

    def ident(value: str) -> dict[str, str]:
        return {"system": settings.mrn_system, "value": value}

    params = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueIdentifier": ident(source)},
        {"name": "target-patient", "valueIdentifier": ident(target)}]}
    # keyed to the survivor, and after everything queued for the merged patient: the
    # exchange must know both registrations before it can merge them
    return Outgoing("merge", patient_key(settings, target), params,
                    after=patient_key(settings, source))
