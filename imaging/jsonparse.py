"""DICOM JSON in: one data set (PS3.18 F.2) becomes an :class:`~imaging.parse.Instance`
holding metadata only, or is refused with a :class:`~imaging.errors.DicomError`
(:func:`instance_from_json`).

The plain cases are read along :mod:`imaging.jsonread` without pydicom; anything else
goes through ``Dataset.from_json`` with the same limits and the same refusals.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from pydicom.dataset import Dataset

from imaging.errors import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, DicomError
from imaging.jsonread import PN_GROUPS, Unsure, attribute_json, inline_json, kept_as_is
from imaging.jsonrep import fast_path_applies
from imaging.parse import (
    DEFAULT_LIMITS,
    REQUIRED_UIDS,
    Instance,
    Limits,
    Pending,
    check_required,
    check_uid,
    refusing,
)
from imaging.part10 import PIXEL_TAGS


def instance_from_json(obj: dict, *, limits: Limits = DEFAULT_LIMITS) -> Instance:
    """Read one DICOM JSON data set (PS3.18 F.2) for metadata-only STOW; DicomError if bad.

    The plain cases (:mod:`imaging.jsonread`) are read without pydicom: the data set's
    JSON is known at once, and ``Instance.dataset`` is made from ``obj`` only if asked
    for (``obj`` must not change meanwhile). That JSON keeps the very attribute objects
    of ``obj`` that are already what pydicom would write (most of them: copies would
    only be more for the garbage collector to trace), so neither is to be changed in
    place; data sets and sequence items are always new. Anything else goes through
    pydicom's ``Dataset.from_json``, with the same result.
    """
    if not isinstance(obj, dict):
        raise DicomError("a DICOM JSON data set must be an object")
    if fast_path_applies():
        try:
            return _instance_from_plain_json(obj, limits)
        except Unsure:
            pass
    return _instance_through_pydicom(obj, limits)


def _instance_through_pydicom(obj: dict, limits: Limits) -> Instance:
    state = _JsonState(limits)
    cleaned = state.dataset(obj, 0, "")
    with refusing("not a valid DICOM JSON data set"):
        ds = Dataset.from_json(cleaned)
        for _ in ds.iterall():               # decode every value now
            pass
    transfer_syntax = None
    if "00020010" in ds:
        transfer_syntax = str(ds[0x00020010].value) or None
    check_required(ds)
    return Instance(dataset=ds, bulk_tags=list(state.uris), transfer_syntax=transfer_syntax,
                    coerced=state.coerced, bulk_vrs=state.vrs, bulk_uris=state.uris)


def _instance_from_plain_json(obj: dict, limits: Limits) -> Instance:
    """:class:`Unsure` unless every attribute is a plain case; the same checks, in the
    same order, as through pydicom, so a refusal is the same refusal."""
    state = _JsonState(limits, plain=True)
    known = state.dataset(obj, 0, "")
    uids = {}
    for keyword, tag in REQUIRED_UIDS:
        attr = known.get(tag)
        if attr is not None and attr["vr"] != "UI":
            raise Unsure
        found = None if attr is None else attr.get("Value")
        check_uid(keyword, tag, "" if found is None else found[0] if len(found) == 1
                   else found)
        uids[tag] = found[0]
    transfer_syntax = None
    attr = known.get("00020010")
    if attr is not None:
        found = attr.get("Value")
        if attr["vr"] != "UI" or found is not None and len(found) != 1:
            raise Unsure
        transfer_syntax = found[0] if found else None
    return Instance(dataset=_FromJson(obj, limits, uids),  # type: ignore[arg-type]
                    bulk_tags=list(state.uris), transfer_syntax=transfer_syntax,
                    coerced=state.coerced, bulk_vrs=state.vrs, bulk_uris=state.uris,
                    known_json=known)


class _FromJson(Pending):
    """An instance's data set not made yet: the DICOM JSON to make it from."""

    def __init__(self, obj: dict, limits: Limits, uids: dict[str, str]) -> None:
        self.obj, self.limits, self.uids = obj, limits, uids

    def make(self) -> Dataset:
        return _instance_through_pydicom(self.obj, self.limits).dataset


class _JsonState:
    """Walks a DICOM JSON object: limits, BulkDataURIs set aside, big InlineBinary dropped.

    Through pydicom (``plain`` false) it returns what ``Dataset.from_json`` is to read;
    ``plain``, the JSON pydicom would write back for it (:mod:`imaging.jsonread`), or
    :class:`Unsure`.
    """

    def __init__(self, limits: Limits, *, plain: bool = False) -> None:
        self.limits = limits
        self.plain = plain
        self.elements = 0
        self.uris: dict[str, str] = {}
        self.vrs: dict[str, str] = {}
        self.coerced: list[str] = []

    def dataset(self, obj: Any, depth: int, prefix: str) -> dict:
        if not isinstance(obj, dict):
            raise DicomError("a DICOM JSON data set must be an object")
        out: dict[str, Any] = {}
        limits, plain = self.limits, self.plain
        size, good = limits.max_element_bytes, _GOOD_KEYS
        for key, attr in obj.items():
            self.elements += 1
            if self.elements > limits.max_elements:
                raise DicomError(f"more than {limits.max_elements} elements",
                                 OUT_OF_RESOURCES)
            if plain and type(attr) is dict and len(attr) == 2 and key in good:
                # the commonest attribute of all, {"vr": …, "Value": […]} that passes
                # every check below and is its own JSON: checked at once
                value = attr.get("Value")
                if type(value) is list and value:
                    vr = attr.get("vr")
                    if type(vr) is str and kept_as_is(vr, value, size) and \
                            next(iter(attr)) == "vr":
                        out[key] = attr
                        continue
            upper = key
            if type(key) is not str or key not in _GOOD_KEYS:
                if not isinstance(key, str) or not _TAG_KEY.fullmatch(key):
                    raise DicomError(f"not a tag: {str(key)[:20]!r}")
                upper = key.upper()
                if upper == key and len(_GOOD_KEYS) < 100_000:
                    _GOOD_KEYS.add(key)
            if not isinstance(attr, dict) or not isinstance(attr.get("vr"), str):
                raise DicomError(f"{key}: an attribute needs an object with a 'vr'")
            if upper != key:
                if plain:
                    raise Unsure             # "0010001a" and "0010001A" may both be there
                key = upper
            if plain and len(attr) == 2 and "Value" in attr and attr["vr"] != "SQ":
                # the usual attribute: what attribute() checks of it, then its JSON
                value = attr["Value"]
                if value is not None:
                    self.check_value(key, value)
                out[key] = attribute_json(attr)
                continue
            kept = self.attribute(key, attr, depth, prefix)
            if kept is not None:
                out[key] = kept
        return out

    def attribute(self, key: str, attr: dict, depth: int, prefix: str) -> dict | None:
        vr = attr["vr"]
        if "BulkDataURI" in attr:
            uri = attr["BulkDataURI"]
            if not isinstance(uri, str) or len(uri) > 2048:
                raise DicomError(f"{key}: BulkDataURI must be a URI string")
            path = prefix + key
            self.uris[path], self.vrs[path] = uri, vr
            return None
        if "InlineBinary" in attr:
            inline = attr["InlineBinary"]
            size = len(inline) * 3 // 4 if isinstance(inline, str) else 0
            tag = int(key, 16)
            if tag in PIXEL_TAGS or size > self.limits.max_element_bytes:
                self.coerced.append(f"{key}: InlineBinary of about {size} bytes dropped "
                                    "(pixel data and bulk data are not kept inline)")
                return None
            if not isinstance(inline, str):
                if self.plain:
                    raise Unsure
            else:
                data = _check_base64(key, inline)
                if self.plain:
                    if len(attr) != 2:
                        raise Unsure
                    return inline_json(tag, vr, inline, data, _MAX_INLINE)
        if vr == "SQ" and "Value" in attr:
            items = attr["Value"]
            if not isinstance(items, list):
                raise DicomError(f"{key}: a sequence Value must be a list")
            if depth + 1 > self.limits.max_depth:
                raise DicomError(f"sequences nested deeper than {self.limits.max_depth}",
                                 OUT_OF_RESOURCES)
            self.elements += len(items)
            path = prefix + key
            walked = [self.dataset(item, depth + 1, f"{path}.{i}.")
                      for i, item in enumerate(items)]
            if self.plain:
                if len(attr) != 2:
                    raise Unsure
                return {"vr": "SQ", "Value": walked}
            return {**attr, "Value": walked}
        value = attr.get("Value")
        if value is not None:
            self.check_value(key, value)
        if self.plain:
            if vr == "SQ":                   # no "Value": pydicom writes an empty one
                if len(attr) != 1:
                    raise Unsure
                return {"vr": "SQ", "Value": []}
            return attribute_json(attr)
        return attr

    def check_value(self, key: str, value: object) -> None:
        """Refuse a "Value" that is not a list, or too long written out."""
        limit = self.limits.max_element_bytes
        if not isinstance(value, list) or _longer_than(value, limit):
            raise DicomError(f"{key}: Value must be a list within {limit} bytes",
                             OUT_OF_RESOURCES if isinstance(value, list)
                             else CANNOT_UNDERSTAND)


#: Tag keys seen valid and in upper case (bounded: keys come from clients).
_TAG_KEY = re.compile(r"[0-9A-Fa-f]{8}")
_GOOD_KEYS: set[str] = set()
#: Binary values longer than this would become bulk data in to_dicom_json's JSON (with
#: an instance URL): left to pydicom, whose JSON writer decides.
_MAX_INLINE = (DEFAULT_LIMITS.max_element_bytes // 4) * 3


def _longer_than(value: list, limit: int) -> bool:
    """``len(str(value)) > limit``, without writing out short values. In ``repr`` a
    character takes at most 10 ("\\\\U000e0001"), a string 2 more for its quotes, an
    int under 10**15 at most 16, a float at most 24, a list item 2 more for ", "; a
    person name object ({'Ideographic': …}) 19 per group besides its characters."""
    total = 2
    for item in value:
        kind = type(item)
        if kind is str:
            total += 10 * len(item) + 4
        elif kind is int and -10**15 < item < 10**15 or kind is float:
            total += 26
        elif kind is dict and item.keys() <= PN_GROUPS:
            total += 4
            for group in item.values():
                if type(group) is not str:
                    return len(str(value)) > limit
                total += 19 + 10 * len(group)
        else:
            return len(str(value)) > limit
    return total > limit and len(str(value)) > limit


def _check_base64(key: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise DicomError(f"{key}: InlineBinary is not base64") from None
