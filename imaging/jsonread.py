"""A DICOM JSON attribute (PS3.18 F.2) as pydicom reads it and writes it back, without
pydicom: what ``Dataset.from_json`` then ``DataElement.to_json_dict`` make of it.

Reading a data set through pydicom (``Dataset.from_json``) builds a ``DataElement`` per
attribute, some 10 µs each, then writing the JSON back costs as much again: most of what
a metadata-only STOW-RS costs. For the plain cases -- text without backslashes, UIDs
without surrounding spaces, person names as component group objects, attribute tags,
integers and decimals as JSON numbers, inline binary in canonical base64 -- the result
is known without building anything, and :func:`attribute_json` writes it. Anything else
(``null`` values, numbers as strings, a value where pydicom would split, strip, coerce,
warn about or refuse it, UN, an unknown VR, extra keys) raises :class:`Unsure`, and the
caller asks pydicom (:func:`imaging.jsonparse.instance_from_json` reads the whole data set
through pydicom then). Compared with pydicom's own result over every readable test file,
the synthetic instances and malformed variants in ``tests/imaging/test_dicom_json_plain.py``.

>>> attribute_json({"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane", "Ideographic": ""}]})
{'vr': 'PN', 'Value': [{'Alphabetic': 'Doe^Jane'}]}
>>> attribute_json({"vr": "DS", "Value": [1, 2.5]})
{'vr': 'DS', 'Value': [1.0, 2.5]}
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from imaging.jsonrep import pn_entry


class Unsure(Exception):
    """The attribute is not one of the plain cases: pydicom has to read it."""


#: Text VRs whose values pydicom keeps as they are (UI is stripped, PN parsed).
_TEXT = frozenset(["AE", "AS", "CS", "DA", "DT", "TM", "LO", "LT", "SH", "ST", "UC", "UT", "UR"])
#: Of those, the ones whose single value pydicom does not split on backslashes.
_BACKSLASH_ALLOWED = frozenset({"LT", "ST", "UT"})
#: JSON numbers that pydicom turns into int (convert_to_python_number), and into float.
_INTEGERS = frozenset(["IS", "SL", "SS", "SV", "UL", "US", "UV"])
_DECIMALS = frozenset({"DS", "FD", "FL"})
#: Binary VRs carried as InlineBinary; not UN, which pydicom re-types from the dictionary.
BINARY = frozenset(["OB", "OD", "OF", "OL", "OV", "OW"])
#: VRs for which an attribute without a value is just {"vr": …} (SQ gets "Value": []).
_PLAIN_EMPTY = _TEXT | _INTEGERS | _DECIMALS | BINARY | {"UI", "PN", "AT"}
_AT = re.compile(r"[0-9A-F]{8}")
#: The component groups of a person name object.
PN_GROUPS = frozenset({"Alphabetic", "Ideographic", "Phonetic"})


def attribute_json(attr: dict[str, Any]) -> dict[str, Any]:
    """The JSON pydicom writes back for a non-SQ attribute with a "vr" and at most a
    "Value" list (already checked to be a list); :class:`Unsure` if not a plain case.

    ``attr`` itself when that JSON is ``attr`` exactly, key order and value types
    included (the usual case): a copy would only be more objects for the garbage
    collector to trace. The caller must not change ``attr`` afterwards, nor the result."""
    vr = attr["vr"]
    if len(attr) == 1:
        if vr in _PLAIN_EMPTY:
            return attr
        raise Unsure
    values = attr.get("Value")
    if len(attr) != 2 or type(values) is not list:
        raise Unsure
    if not values:
        if vr in _PLAIN_EMPTY:
            return {"vr": vr}
        raise Unsure
    if vr in _TEXT:
        for value in values:
            if not isinstance(value, str):   # str, or pydicom's UID when not from JSON text
                raise Unsure
        if len(values) == 1:
            if "\\" in values[0] and vr not in _BACKSLASH_ALLOWED:
                raise Unsure             # pydicom splits a single value on backslashes
            if not values[0]:
                return {"vr": vr}        # an empty single value: no "Value"
        return _as_is(attr, vr, values)
    if vr == "UI":
        for value in values:             # UID() strips; a single value is split
            if not isinstance(value, str) or "\\" in value or value != value.strip():
                raise Unsure
        if len(values) == 1 and not values[0]:
            return {"vr": vr}
        return _as_is(attr, vr, values)
    if vr in _INTEGERS:
        for value in values:
            if type(value) is not int:   # not bool, not 1.0, not "1"
                raise Unsure
        return _as_is(attr, vr, values)
    if vr in _DECIMALS:
        out = []
        floats = True
        for value in values:
            if type(value) is not float:
                if type(value) is not int:
                    raise Unsure
                floats = False           # written back as a float: 1 becomes 1.0
            try:
                number = float(value)
            except OverflowError:
                raise Unsure from None
            if not math.isfinite(number):
                raise Unsure
            out.append(number)
        return _as_is(attr, vr, values) if floats else {"vr": vr, "Value": out}
    if vr == "PN":
        return _person_names(attr, values)
    if vr == "AT":
        for value in values:
            if not isinstance(value, str) or not _AT.fullmatch(value):
                raise Unsure
        return _as_is(attr, vr, values)
    raise Unsure                         # binary VRs with "Value", UN, SQ, unknown VRs


def kept_as_is(vr: str, values: list, limit: int) -> bool:
    """Whether ``{"vr": vr, "Value": values}`` (``values`` not empty) is within ``limit``
    written out -- the walk's check, :func:`imaging.jsonparse._longer_than` -- and is, as it
    is, the JSON pydicom writes back for it: text it would not split, UIDs it would not
    strip, integers, finite floats. False means "ask :func:`attribute_json`", not
    "refuse"; person names, tags and the rest are left to it."""
    if len(values) == 1:                 # the commonest case by far
        value = values[0]
        kind = type(value)
        if kind is str:
            if not value or 10 * len(value) + 6 > limit:
                return False
            if vr in _TEXT:
                return vr in _BACKSLASH_ALLOWED or "\\" not in value
            return vr == "UI" and "\\" not in value and value == value.strip()
        if kind is int:
            return vr in _INTEGERS and -10**15 < value < 10**15 and limit >= 28
        if kind is float:
            return vr in _DECIMALS and math.isfinite(value) and limit >= 28
        return False
    if vr in _TEXT or vr == "UI":
        total = 2
        for value in values:
            if type(value) is not str or vr == "UI" and ("\\" in value or value != value.strip()):
                return False
            total += 10 * len(value) + 4
        return total <= limit
    if vr in _INTEGERS:
        for value in values:
            if type(value) is not int or not -10**15 < value < 10**15:
                return False
    elif vr in _DECIMALS:
        for value in values:
            if type(value) is not float or not math.isfinite(value):
                return False
    else:
        return False
    return 2 + 26 * len(values) <= limit


def _as_is(attr: dict[str, Any], vr: str, values: list) -> dict[str, Any]:
    """``{"vr": vr, "Value": values}``: ``attr`` itself when its keys come in that order."""
    if next(iter(attr)) == "vr":
        return attr
    return {"vr": vr, "Value": list(values)}


def _person_names(attr: dict[str, Any], values: list) -> dict[str, Any]:
    """PN values as pydicom joins their groups with "=", then splits them again
    (``PersonName``: trailing empty groups dropped); ``attr`` itself when that is what
    it already says, in the same key order."""
    out = []
    same = next(iter(attr)) == "vr"
    for value in values:
        if type(value) is not dict or not value.keys() <= PN_GROUPS:
            raise Unsure
        groups = [value.get("Alphabetic", "")]
        if "Ideographic" in value or "Phonetic" in value:
            groups.append(value.get("Ideographic", ""))
        if "Phonetic" in value:
            groups.append(value["Phonetic"])
        for group in groups:
            if not isinstance(group, str) or "=" in group or "\\" in group:
                raise Unsure
        while groups and not groups[-1]:
            groups.pop()
        if not groups:
            if len(values) == 1:
                return {"vr": "PN"}      # an empty name: no "Value"
            raise Unsure                 # pydicom cannot write an empty name among others
        entry = pn_entry(groups)
        same = same and entry.items() == value.items() and list(entry) == list(value)
        out.append(entry)
    return attr if same else {"vr": "PN", "Value": out}


def inline_json(tag: int, vr: str, text: str, data: bytes, max_inline: int) -> dict[str, Any]:
    """The JSON pydicom writes back for InlineBinary ``text`` (decoded: ``data``);
    :class:`Unsure` over ``max_inline`` bytes, where a bulk data handler would take it."""
    if vr not in BINARY and not (vr == "UN" and _stays_un(tag)) or len(data) > max_inline:
        raise Unsure
    if not data:
        return {"vr": vr}
    if text.endswith("="):
        # only a padded last group can carry stray bits (b64decode ignores them)
        last = text[-4:]
        if base64.b64encode(base64.b64decode(last)).decode("ascii") != last:
            text = base64.b64encode(data).decode("ascii")
    return {"vr": vr, "InlineBinary": text}


def _stays_un(tag: int) -> bool:
    """A private tag that pydicom leaves UN when reading JSON: not a private creator
    (read as LO), whose private dictionary VR it cannot know without one."""
    return bool(tag & 0x10000) and not 0x10 <= tag & 0xFFFF < 0x100


__all__ = ["BINARY", "PN_GROUPS", "Unsure", "attribute_json", "inline_json",
           "kept_as_is"]
