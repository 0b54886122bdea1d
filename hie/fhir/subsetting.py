"""``_summary`` and ``_elements``: returning part of each resource.

A subsetted resource is marked with the ``SUBSETTED`` tag, as FHIR requires, so
a client never mistakes it for the whole resource.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED", "display": "Resource encoded in summary mode"}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """The elements FHIR marks ``isSummary`` for this type (JSON names)."""
    model = get_fhir_model_class(resource_type)
    names = set(_ALWAYS)
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            names.add(info.alias or name)
            names.add("_" + (info.alias or name))
    return frozenset(names)


@cache
def required_elements(resource_type: str) -> frozenset[str]:
    model = get_fhir_model_class(resource_type)
    out = {"resourceType"}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if info.is_required() or (isinstance(extra, dict) and extra.get("element_required")):
            out.add(info.alias or name)
    return frozenset(out)


def subset(body: bytes, resource_type: str, *, summary: str | None,
           elements: list[str] | None) -> bytes:
    """Return the stored JSON reduced by ``_summary`` / ``_elements``."""
    if (summary in (None, "false")) and not elements:
        return body
    resource: dict[str, Any] = orjson.loads(body)
    if elements:
        keep = set(_ALWAYS) | set(elements) | {"_" + e for e in elements}
        keep |= required_elements(resource_type)
    elif summary == "true":
        keep = summary_elements(resource_type)
    elif summary == "text":
        keep = set(_ALWAYS) | {"text"} | required_elements(resource_type)
    elif summary == "data":
        keep = set(resource) - {"text"}
    else:
        return body
    out = {k: v for k, v in resource.items() if k in keep}
    meta = dict(out.get("meta") or {})
    tags = list(meta.get("tag") or [])
    tags.append(SUBSETTED)
    meta["tag"] = tags
    out["meta"] = meta
    return orjson.dumps(out)
