"""A study's DICOM JSON as a FHIR R4 ImagingStudy (following the DICOM to FHIR mapping
of the ImagingStudy resource page), pointing at the source PACS's WADO-RS endpoint.

FHIR requires a time zone whenever a dateTime has a time: ``started`` carries the study
time only when the data set has Timezone Offset From UTC (0008,0201) or the caller
passes ``default_tz``; otherwise it is the date alone.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from typing import Any

from imaging.jsonmodel import values

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
RFC3986 = "urn:ietf:rfc:3986"
DICOM_UID = "urn:dicom:uid"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
ENDPOINT_ID = "source"
#: The attributes of an instance's DICOM JSON that :func:`imaging_study` reads (UIDs,
#: Instance Number, the title's sources): a caller holding a whole study's instances
#: may keep just these.
INSTANCE_TAGS = ("00080016", "00080018", "00200013", "00420010", "00700080", "0040A043")

#: Body Part Examined (0018,0015) defined terms → SNOMED CT (PS3.16 Annex L), the common ones.
BODY_PARTS: dict[str, tuple[str, str]] = {
    "HEAD": ("69536005", "Head structure"),
    "BRAIN": ("12738006", "Brain structure"),
    "NECK": ("45048000", "Neck structure"),
    "CHEST": ("51185008", "Thoracic structure"),
    "BREAST": ("76752008", "Breast structure"),
    "HEART": ("80891009", "Heart structure"),
    "ABDOMEN": ("113345001", "Abdominal structure"),
    "LIVER": ("10200004", "Liver structure"),
    "PELVIS": ("12921003", "Pelvic structure"),
    "KNEE": ("72696002", "Knee region structure"),
}
LATERALITY: dict[str, tuple[str, str]] = {
    "R": ("24028007", "Right"),
    "L": ("7771000", "Left"),
}
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})")


def _first(ds_json: dict, tag: str) -> Any:
    found = values(ds_json, tag)
    return found[0] if found and found[0] not in ("", None) else None


def _unsigned(value: Any) -> int | None:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def fhir_datetime(date: Any, time: Any = None, offset: str | None = None) -> str | None:
    """DICOM DA (+ TM, + "+0800" offset) as a FHIR dateTime; the date alone without a zone."""
    if not isinstance(date, str) or not re.fullmatch(r"\d{8}", date):
        return None
    try:
        datetime.date(int(date[:4]), int(date[4:6]), int(date[6:8]))
    except ValueError:
        return None
    day = f"{date[:4]}-{date[4:6]}-{date[6:8]}"
    zone = _OFFSET.fullmatch(offset or "")
    if not isinstance(time, str) or zone is None:
        return day
    found = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?", time.replace(":", ""))
    if not found:
        return day
    hours, minutes, seconds, fraction = found.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 59:
        return day
    return (f"{day}T{hours}:{minutes or '00'}:{seconds or '00'}{fraction or ''}"
            f"{zone.group(1)}{zone.group(2)}:{zone.group(3)}")


def _started(ds_json: dict, date_tag: str, time_tag: str, default_tz: str | None) -> str | None:
    offset = _first(ds_json, "00080201") or default_tz
    return fhir_datetime(_first(ds_json, date_tag), _first(ds_json, time_tag),
                         offset.replace(":", "") if isinstance(offset, str) else None)


def _modality(code: str) -> dict:
    return {"system": DCM, "code": code}


def _coding(table: dict[str, tuple[str, str]], value: str) -> dict:
    known = table.get(value.upper())
    if known is None:
        return {"display": value}
    return {"system": SNOMED, "code": known[0], "display": known[1]}


def imaging_study(study: dict, series: Sequence[tuple[dict, Sequence[dict]]], *, subject: str,
                  endpoint: str | None, default_tz: str | None = None) -> dict:
    """FHIR R4 ImagingStudy from study-level DICOM JSON and (series JSON, instances JSON)."""
    study_uid = _first(study, "0020000D")
    if not study_uid:
        raise ValueError("the study has no StudyInstanceUID")
    result: dict[str, Any] = {"resourceType": "ImagingStudy"}
    if endpoint:
        result["contained"] = [{
            "resourceType": "Endpoint", "id": ENDPOINT_ID, "status": "active",
            "connectionType": {"system": CONNECTION_TYPE, "code": "dicom-wado-rs"},
            "payloadType": [{"text": "DICOM"}], "address": endpoint,
        }]
    result["identifier"] = [{"system": DICOM_UID, "value": f"urn:oid:{study_uid}"}]
    accession = _first(study, "00080050")
    if accession:
        result["identifier"].append(_accession(study, str(accession)))
    result["status"] = "available"
    series_out = [_series(s, insts, endpoint, default_tz) for s, insts in series]
    series_out = [s for s in series_out if s is not None]
    modalities = list(dict.fromkeys(
        [str(m) for m in values(study, "00080061") if m]
        + [s["modality"]["code"] for s in series_out]))
    if modalities:
        result["modality"] = [_modality(code) for code in modalities]
    result["subject"] = {"reference": subject}
    started = _started(study, "00080020", "00080030", default_tz)
    if started:
        result["started"] = started
    if endpoint:
        result["endpoint"] = [{"reference": f"#{ENDPOINT_ID}"}]
    counted_series = len(series_out) or _unsigned(_first(study, "00201206"))
    counted = sum(s.get("numberOfInstances", 0) for s in series_out) or _unsigned(
        _first(study, "00201208"))
    if counted_series:
        result["numberOfSeries"] = counted_series
    if counted:
        result["numberOfInstances"] = counted
    description = _first(study, "00081030")
    if description:
        result["description"] = str(description)
    if series_out:
        result["series"] = series_out
    return result


def _accession(study: dict, accession: str) -> dict:
    identifier: dict[str, Any] = {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                                  "value": accession}
    for issuer in values(study, "00080051")[:1]:
        universal = _first(issuer, "00400032")
        if universal and _first(issuer, "00400033") == "ISO":
            identifier["system"] = f"urn:oid:{universal}"
    return identifier


def _series(ds_json: dict, instances: Sequence[dict], endpoint: str | None,
            default_tz: str | None) -> dict | None:
    uid = _first(ds_json, "0020000E")
    if not uid:
        return None
    out: dict[str, Any] = {"uid": str(uid)}
    number = _unsigned(_first(ds_json, "00200011"))
    if number is not None:
        out["number"] = number
    # modality is required in R4: "OT" (other) when the series does not say
    out["modality"] = _modality(str(_first(ds_json, "00080060") or "OT"))
    description = _first(ds_json, "0008103E")
    if description:
        out["description"] = str(description)
    instances_out = [i for i in (_instance(inst) for inst in instances) if i is not None]
    count = len(instances_out) or _unsigned(_first(ds_json, "00201209"))
    if count:
        out["numberOfInstances"] = count
    if endpoint:
        out["endpoint"] = [{"reference": f"#{ENDPOINT_ID}"}]
    body_part = _first(ds_json, "00180015")
    if body_part:
        out["bodySite"] = _coding(BODY_PARTS, str(body_part))
    laterality = _first(ds_json, "00200060")
    if laterality:
        out["laterality"] = _coding(LATERALITY, str(laterality))
    started = _started(ds_json, "00080021", "00080031", default_tz)
    if started:
        out["started"] = started
    if instances_out:
        out["instance"] = instances_out
    return out


def _instance(ds_json: dict) -> dict | None:
    uid, sop_class = _first(ds_json, "00080018"), _first(ds_json, "00080016")
    if not uid or not sop_class:
        return None
    out: dict[str, Any] = {"uid": str(uid),
                           "sopClass": {"system": RFC3986, "code": f"urn:oid:{sop_class}"}}
    number = _unsigned(_first(ds_json, "00200013"))
    if number is not None:
        out["number"] = number
    title = _title(ds_json)
    if title:
        out["title"] = title
    return out


def _title(ds_json: dict) -> str | None:
    """Document Title, Content Label, or the SR's concept name."""
    for tag in ("00420010", "00700080"):
        text = _first(ds_json, tag)
        if text:
            return str(text)
    for concept in values(ds_json, "0040A043")[:1]:
        meaning = _first(concept, "00080104")
        if meaning:
            return str(meaning)
    return None
