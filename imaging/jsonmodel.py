"""The DICOM JSON model (PS3.18 Annex F) of an instance's metadata, as pydicom's own
``Dataset.to_json_dict`` makes it (through :mod:`imaging.jsonrep`), plus the small helpers
the exchange needs to read it.

>>> tag_of("PatientName"), tag_of("0010,0010"), tag_of("(0008,0020)")
('00100010', '00100010', '00080020')
>>> values({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}}, "PatientName")
['Doe^Jane']
"""

from __future__ import annotations

import re
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement

from imaging.jsonrep import dataset_json
from imaging.parse import DEFAULT_LIMITS, Instance

RETRIEVE_URL = "00081190"
_HEX_TAG = re.compile(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?")


def tag_of(name: str) -> str:
    """"PatientName" / "00100010" / "0010,0010" → "00100010"; KeyError/ValueError if unknown."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"not an attribute: {name!r}")
    found = _HEX_TAG.fullmatch(name.strip())
    if found:
        return (found.group(1) + found.group(2)).upper()
    if not name.isidentifier():
        raise ValueError(f"not an attribute keyword or tag: {name[:64]!r}")
    tag = tag_for_keyword(name)
    if tag is None:
        raise KeyError(name)
    return f"{tag:08X}"


def values(ds_json: dict, tag: str) -> list:
    """The "Value" list of an attribute ([] if absent); PN values as their Alphabetic string."""
    attr = ds_json.get(tag) or ds_json.get(tag_of(tag))
    if not isinstance(attr, dict):
        return []
    found = attr.get("Value") or []
    if attr.get("vr") == "PN":
        return [v.get("Alphabetic", "") if isinstance(v, dict) else v for v in found]
    return list(found)


def to_dicom_json(instance: Instance, *, instance_url: str | None = None) -> dict:
    """The DICOM JSON model of the instance's metadata; bulk data as BulkDataURIs at
    ``instance_url`` (the instance's WADO-RS URL at the source), omitted without it."""

    def bulk_uri(elem: DataElement) -> str:
        # only reached for binary values above the limit, which the parser never keeps;
        # an Instance built by hand gets the same URI scheme as bulk tags
        return f"{instance_url}/bulkdata/{elem.tag:08X}"

    handler = bulk_uri if instance_url else None
    known, instance.known_json = instance.known_json, None     # used once, never shared
    if isinstance(known, dict):          # read from plain DICOM JSON: the whole result
        result = known if not instance.dataset_made else \
            dataset_json(instance.dataset, handler, DEFAULT_LIMITS.max_element_bytes)
    else:
        result = dataset_json(instance.dataset, handler, DEFAULT_LIMITS.max_element_bytes,
                              known=known)
    for path in instance.bulk_tags:
        uri = instance.bulk_uris.get(path)
        if uri is None and instance_url:
            uri = f"{instance_url}/bulkdata/{path}"
        if uri is not None:
            vr = instance.bulk_vrs.get(path, "UN")
            _put(result, path.split("."), {"vr": vr, "BulkDataURI": uri})
    if instance_url:
        result[RETRIEVE_URL] = {"vr": "UR", "Value": [instance_url]}
    return _sorted(result)


def _put(ds_json: dict, parts: list[str], attr: dict) -> None:
    """Set the attribute at a tag path ["00540016", "0", "00181072"], if its item exists."""
    for seq_tag, index in zip(parts[0:-1:2], parts[1:-1:2], strict=True):
        items = ds_json.get(seq_tag, {}).get("Value", [])
        if int(index) >= len(items):
            return
        ds_json = items[int(index)]
    ds_json[parts[-1]] = attr


def _sorted(ds_json: dict[str, Any]) -> dict[str, Any]:
    """Attributes in tag order, in items too (PS3.18 F.2.1.1). ``ds_json`` itself when it
    is in order already (the usual case: JSON from a sender that sorts, as this module
    does), which is made afresh for each call of to_dicom_json anyway."""
    if _in_order(ds_json):
        return ds_json
    out = {}
    for key in sorted(ds_json):
        attr = ds_json[key]
        if attr.get("vr") == "SQ" and isinstance(attr.get("Value"), list):
            attr = {**attr, "Value": [_sorted(item) for item in attr["Value"]]}
        out[key] = attr
    return out


def _in_order(ds_json: dict[str, Any]) -> bool:
    """Whether the attributes are in tag order, in items too."""
    keys = list(ds_json)
    if keys != sorted(keys):
        return False
    for attr in ds_json.values():
        if attr.get("vr") == "SQ" and isinstance(attr.get("Value"), list) and \
                not all(_in_order(item) for item in attr["Value"]):
            return False
    return True
