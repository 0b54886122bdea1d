"""Sensitivity labels derived from a resource's codes, added at ingest.

Runs on every write, so it is a handful of dictionary lookups: the code tables
of :mod:`schemas.sensitivity` are expanded once, at import, into
prefix → labels maps. Labels the source already set are kept; derivation only
adds. Nothing is ever removed: a source may know more than the codes say.

>>> obs = {"resourceType": "Observation",
...        "code": {"coding": [{"system": "http://loinc.org", "code": "20447-9"}]}}
>>> apply_labels(obs), [c["code"] for c in obs["meta"]["security"]]
(True, ['HIV'])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from schemas.sensitivity import (
    ATC_PREFIXES,
    ATC_SYSTEMS,
    BY_CODE,
    ICD10_RANGES,
    ICD10_SYSTEMS,
    LABEL_SYSTEM,
    LOINC_CODES,
    LOINC_SYSTEMS,
    normalize_icd10,
)

#: Where each resource type keeps the codes that can make it sensitive
#: (dotted paths to CodeableConcepts; lists are followed at every step).
CODE_PATHS: dict[str, tuple[str, ...]] = {
    "Condition": ("code",),
    "Observation": ("code", "component.code", "valueCodeableConcept"),
    "Procedure": ("code", "reasonCode"),
    "DiagnosticReport": ("code", "conclusionCode"),
    "MedicationRequest": ("medicationCodeableConcept", "reasonCode"),
    "Medication": ("code",),  # contained in a MedicationRequest
    "ServiceRequest": ("code", "reasonCode"),
    "Encounter": ("reasonCode",),
    "DocumentReference": ("type",),
}


def _expand_icd10() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for first, last, label in ICD10_RANGES:
        if len(first) != len(last) or first[:-2] != last[:-2] or first[0] != last[0]:
            raise ValueError(f"bad ICD-10 range {first}-{last}")
        head = first[:-2]  # letter (+ two digits for subcategory ranges)
        for n in range(int(first[-2:]), int(last[-2:]) + 1):
            table.setdefault(f"{head}{n:02d}", set()).add(label)
    return {k: frozenset(v) for k, v in table.items()}


_ICD10 = _expand_icd10()
_ATC_LENGTHS = sorted({len(p) for p in ATC_PREFIXES})


def coding_labels(system: str | None, code: str | None) -> frozenset[str]:
    """The sensitivity labels one coding triggers."""
    if not system or not code:
        return frozenset()
    if system in ICD10_SYSTEMS:
        norm = normalize_icd10(code)
        return _ICD10.get(norm[:3], frozenset()) | _ICD10.get(norm[:4], frozenset())
    if system in LOINC_SYSTEMS:
        return frozenset(LOINC_CODES.get(code.strip(), ()))
    if system in ATC_SYSTEMS:
        norm = code.strip().upper()
        found: set[str] = set()
        for n in _ATC_LENGTHS:
            found.update(ATC_PREFIXES.get(norm[:n], ()))
        return frozenset(found)
    return frozenset()


def _values(node: Any, steps: list[str]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _values(item, steps)
        return
    if not steps:
        yield node
        return
    if isinstance(node, dict) and steps[0] in node:
        yield from _values(node[steps[0]], steps[1:])


def derive_codes(resource: dict[str, Any]) -> frozenset[str]:
    """Every sensitivity label the resource's codes (and its contained
    resources' codes) call for."""
    found: set[str] = set()
    for path in CODE_PATHS.get(resource.get("resourceType", ""), ()):
        for concept in _values(resource, path.split(".")):
            if isinstance(concept, dict):
                for coding in concept.get("coding") or []:
                    if isinstance(coding, dict):
                        found |= coding_labels(coding.get("system"), coding.get("code"))
    for contained in resource.get("contained") or []:
        if isinstance(contained, dict):
            found |= derive_codes(contained)
    return frozenset(found)


def _present(resource: dict[str, Any]) -> set[str]:
    """Label codes already on the resource (a coding without system counts:
    the store matches labels by code)."""
    meta = resource.get("meta")
    security = meta.get("security") if isinstance(meta, dict) else None
    return {c["code"] for c in security or []
            if isinstance(c, dict) and c.get("code") and c.get("system") in (None, LABEL_SYSTEM)}


def derive_labels(resource: dict[str, Any]) -> list[dict[str, str]]:
    """The ``meta.security`` codings to add: derived labels not yet present,
    in a stable order."""
    missing = derive_codes(resource) - _present(resource)
    return [{"system": LABEL_SYSTEM, "code": code, "display": BY_CODE[code].display}
            for code in sorted(missing)]


def apply_labels(resource: dict[str, Any]) -> bool:
    """Add the missing derived labels to ``resource`` in place; whether it changed."""
    add = derive_labels(resource)
    if not add:
        return False
    meta = resource.setdefault("meta", {})
    meta["security"] = [*(meta.get("security") or []), *add]
    return True


def labels_of(resource: dict[str, Any]) -> frozenset[str]:
    """The sensitivity labels a resource carries (set or derived)."""
    return frozenset(_present(resource) | derive_codes(resource))
