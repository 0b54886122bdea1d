"""Small HL7 v2 → FHIR datatype conversions shared by the ADT and ORU mappings."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import quote

from adapters.hl7v2.message import DATA_TYPE_ERROR, Hl7Error

_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?\Z")
_NAMESPACE = uuid.UUID("9b1f4c1e-3f0e-4a51-9a0c-7d1b2f6b0c11")


def fhir_datetime(value: str, tz: str, location: str) -> str | None:
    """HL7 DTM → FHIR dateTime; a time without an offset gets the hospital's ``tz``
    because FHIR requires an offset once there is a time."""
    value = value.strip()
    if not value:
        return None
    m = _DTM.match(value)
    if not m:
        raise Hl7Error(f"bad date/time {value!r} in {location}", code=DATA_TYPE_ERROR,
                       location=location)
    y, mo, d, h, mi, s, off = m.groups()
    if h is None:
        return "-".join(p for p in (y, mo, d) if p)
    if d is None:
        raise Hl7Error(f"bad date/time {value!r} in {location}", location=location)
    offset = f"{off[:3]}:{off[3:]}" if off else tz
    return f"{y}-{mo}-{d}T{h}:{mi or '00'}:{s or '00'}{offset}"


def fhir_date(value: str, location: str) -> str | None:
    """HL7 DT/DTM → FHIR date (a birth time keeps only its date)."""
    full = fhir_datetime(value, "+00:00", location)
    return full[:10] if full else None


def full_url(kind: str, key: str) -> str:
    """A deterministic ``urn:uuid`` so that a re-sent message yields the same Bundle."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, kind + '|' + key)}"


def query(system: str, value: str) -> str:
    """``identifier=system|value`` for a conditional request URL."""
    return "identifier=" + quote(f"{system}|{value}", safe=":/")


def put_entry(resource: dict[str, Any], system: str, value: str) -> dict[str, Any]:
    """A transaction entry that creates or updates the resource by its hospital identifier."""
    kind = resource["resourceType"]
    return {"fullUrl": full_url(kind, f"{system}|{value}"), "resource": resource,
            "request": {"method": "PUT", "url": f"{kind}?{query(system, value)}"}}


def create_entry(resource: dict[str, Any], system: str, value: str) -> dict[str, Any]:
    """A conditional create: make the resource only if the exchange has none yet."""
    kind = resource["resourceType"]
    return {"fullUrl": full_url(kind, f"{system}|{value}"), "resource": resource,
            "request": {"method": "POST", "url": kind, "ifNoneExist": query(system, value)}}


def transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def coding(system: str, code: str, display: str = "") -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def number(text: str, location: str) -> int | float:
    """A decimal as JSON number; raises AE when it is not one."""
    t = text.strip()
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", t):
        raise Hl7Error(f"not a number: {text!r} in {location}", code=DATA_TYPE_ERROR,
                       location=location)
    f = float(t)
    return int(f) if "." not in t and f.is_integer() else f
