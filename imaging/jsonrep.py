"""The DICOM JSON model (PS3.18 F.2) of a pydicom data set, element by element, exactly as
``Dataset.to_json_dict`` makes it, but without decoding every value first.

pydicom reads a file into raw elements (bytes) and decodes one when it is touched, then
``DataElement.to_json_dict`` turns the decoded value into JSON: some 20 µs an element,
which is most of what reading an instance costs. For the plain cases -- text in a
single-byte, UTF-8 or GB 18030 character set without ISO 2022 escapes, UIDs, codes,
dates, integers and decimals in their usual spelling, binary numbers, inline binary --
:func:`raw_json` writes the JSON straight from the raw bytes, the way pydicom's
converters would decode them. Anything else (sequences, ambiguous VRs, UN, AT, escape
sequences, odd lengths, numbers pydicom would coerce or refuse, a non-default pydicom
configuration or hook) goes through pydicom itself, so the output is the same
(compared over every readable test file and random values of every VR in
``tests/imaging/test_jsonrep.py``).

Raw elements stay raw in the data set: pydicom still decodes them when they are read,
with the same result.

>>> from pydicom.dataset import Dataset
>>> ds = Dataset()
>>> ds.PatientName = "Doe^Jane"
>>> dataset_json(ds)
{'00100010': {'vr': 'PN', 'Value': [{'Alphabetic': 'Doe^Jane'}]}}
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Callable
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.hooks import hooks, raw_element_value, raw_element_vr
from pydicom.tag import _LUT_DESCRIPTOR_TAGS
from pydicom.values import converters

BulkHandler = Callable[[DataElement], str]
#: (character sets, {tag: (raw element, its JSON)}): see :func:`dataset_json`
KnownJson = tuple[list[str], dict[int, tuple[RawDataElement, dict]]]

_NUMBERS = {"US": ("H", 2), "UL": ("L", 4), "SS": ("h", 2), "SL": ("l", 4), "SV": ("q", 8),
            "UV": ("Q", 8), "FL": ("f", 4), "FD": ("d", 8)}
#: How each VR the fast path knows is decoded, after pydicom.values' converters.
_PLAIN_KIND, _UI, _AE, _UR, _BINARY_KIND, _NUMBER, _IS_KIND, _DS_KIND, _PN, _SINGLE, _TEXT = \
    range(11)
_KIND = {
    **dict.fromkeys(("AS", "CS", "DA", "DT", "TM"), _PLAIN_KIND),   # convert_string
    "UI": _UI, "AE": _AE, "UR": _UR,
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW"), _BINARY_KIND),  # not UN: re-typed
    **dict.fromkeys(_NUMBERS, _NUMBER), "IS": _IS_KIND, "DS": _DS_KIND, "PN": _PN,
    **dict.fromkeys(("LT", "ST", "UT"), _SINGLE),                # convert_single_string
    **dict.fromkeys(("LO", "SH", "UC"), _TEXT),                  # convert_text
}
#: Integer and decimal strings as DICOM spells them; others (1.0 as IS, NaN, 1_000, empty
#: values between backslashes) are left to pydicom, which coerces, warns or refuses them.
_IS_ONE = r" *[+-]?[0-9]{1,12} *"
_DS_ONE = r" *[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})? *"
#: Values separated by backslashes. Unambiguous patterns: no backtracking on a 64 KiB value.
_IS = re.compile(rf"{_IS_ONE}(?:\\{_IS_ONE})*")
_DS = re.compile(rf"{_DS_ONE}(?:\\{_DS_ONE})*")
#: pydicom rewrites the first value of these (hooks.raw_element_value): left to it.
_LUT_DESCRIPTORS = frozenset(int(tag) for tag in _LUT_DESCRIPTOR_TAGS)
_STRUCTS: dict[tuple[bool, str, int], Callable[[bytes], tuple]] = {}
_DEFAULT_CONVERTERS = dict(converters)


def fast_path_applies() -> bool:
    """True when pydicom decodes as it does out of the box (what the fast path mirrors)."""
    return (config.settings.reading_validation_mode != config.RAISE
            and not config.datetime_conversion and not config.use_DS_decimal
            and not config.use_DS_numpy and not config.use_IS_numpy
            and not config.use_none_as_empty_text_VR_value
            and config.data_element_callback is None and not hooks.raw_element_kwargs
            and hooks.raw_element_vr is raw_element_vr
            and hooks.raw_element_value is raw_element_value
            and converters == _DEFAULT_CONVERTERS)


def dataset_json(ds: Dataset, bulk_data_element_handler: BulkHandler | None = None,
                 bulk_data_threshold: int = 1024, *,
                 known: KnownJson | None = None) -> dict[str, Any]:
    """``ds.to_json_dict(bulk_data_threshold, bulk_data_element_handler)``, faster.

    ``known``: JSON already made by :func:`raw_json` with these character sets, by tag,
    with the raw element it was made from; an entry is used (and taken out of ``known``,
    so that no two results share it) only if that element is still the one in ``ds``.
    """
    fast = fast_path_applies()
    encodings: list[str] | None = None
    made: dict[int, tuple[RawDataElement, dict]] = {}
    if known is not None and fast:
        encodings = text_encodings(ds)
        if known[0] == encodings:
            made = known[1]
    out: dict[str, Any] = {}
    for tag, elem in list(ds.items()):
        attr = None
        if fast and type(elem) is RawDataElement:
            entry = made.pop(tag, None)
            if entry is not None and entry[0] is elem:
                attr = entry[1]
            else:
                if encodings is None:
                    encodings = text_encodings(ds)
                attr = raw_json(elem, encodings, bulk_data_element_handler,
                                bulk_data_threshold)
        if attr is None:
            attr = element_json(ds[tag], bulk_data_element_handler, bulk_data_threshold)
        out[f"{tag:08X}"] = attr
    return out


def element_json(elem: DataElement, bulk_data_element_handler: BulkHandler | None = None,
                 bulk_data_threshold: int = 1024) -> dict[str, Any]:
    """``elem.to_json_dict(…)`` for a decoded element; sequence items via :func:`dataset_json`."""
    if elem.VR == "SQ":
        return {"vr": "SQ", "Value": [dataset_json(item, bulk_data_element_handler,
                                                   bulk_data_threshold)
                                      for item in elem.value]}
    return elem.to_json_dict(bulk_data_element_handler, bulk_data_threshold)


def text_encodings(ds: Dataset) -> list[str]:
    """The character sets pydicom decodes ``ds``'s raw text with (``Dataset.__getitem__``)."""
    found = ds.original_character_set or ds._character_set
    if not found:
        return ["iso8859"]               # pydicom's default_encoding
    return [found] if isinstance(found, str) else list(found)


def raw_json(raw: RawDataElement, encodings: list[str],
             bulk_data_element_handler: BulkHandler | None = None,
             bulk_data_threshold: int = 1024) -> dict[str, Any] | None:
    """The JSON of a raw element if it is one of the plain cases, else None (ask pydicom)."""
    vr = raw.VR
    if vr is None:                       # implicit VR: the dictionary's, as pydicom's hook
        if raw.tag.is_private:
            return None                  # private dictionaries need the private creator
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    return value_json(raw.tag, vr, raw.value if raw.length else b"", raw.is_little_endian,
                      encodings, bulk_data_element_handler, bulk_data_threshold)


def value_json(tag: int, vr: str, value: bytes, little: bool, encodings: list[str],
               bulk_data_element_handler: BulkHandler | None = None,
               bulk_data_threshold: int = 1024) -> dict[str, Any] | None:
    """:func:`raw_json` of an element's tag, VR (as pydicom would take it), value bytes
    and byte order: what the Part 10 reader (:mod:`imaging.part10json`) calls straight
    from a file's bytes, without making raw elements first."""
    kind = _KIND.get(vr)
    if kind is None:
        return None
    if not value:
        return {"vr": vr}
    if kind == _PLAIN_KIND:              # convert_string
        items = value.decode("latin_1").rstrip(" \0").split("\\")
    elif kind == _UI:                    # convert_UI, then UID() strips each value
        items = [item.strip() for item in
                 value.decode("latin_1").rstrip("\0 ").rstrip(" \0").split("\\")]
    elif kind == _AE:                    # convert_AE_string
        items = [item.strip() for item in value.decode("latin_1").split("\\")]
    elif kind == _UR:                    # convert_UR_string
        items = [value.decode("latin_1").rstrip()]
    elif kind == _BINARY_KIND:
        if bulk_data_element_handler is not None \
                and len(value) > (bulk_data_threshold // 4) * 3:
            return None                  # the handler takes a DataElement
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    elif kind == _NUMBER:
        code, size = _NUMBERS[vr]
        if len(value) % size or tag in _LUT_DESCRIPTORS:
            return None                  # pydicom refuses or rewrites these
        key = (little, code, len(value) // size)
        unpack = _STRUCTS.get(key)
        if unpack is None:
            unpack = struct.Struct(f"{'<' if key[0] else '>'}{key[2]}{code}").unpack
            if key[2] <= 16:             # a bounded cache: few values is the usual case
                _STRUCTS[key] = unpack
        return {"vr": vr, "Value": list(unpack(value))}     # int or float, as JSON has it
    elif kind == _IS_KIND:
        text = value.decode("latin_1").rstrip(" \0")
        if not _IS.fullmatch(text):
            return None
        return {"vr": vr, "Value": [int(item) for item in text.split("\\")]}
    elif kind == _DS_KIND:
        text = value.decode("latin_1").rstrip(" \0")
        if not _DS.fullmatch(text):
            return None
        floats = [float(item) for item in text.split("\\")]
        if not math.isfinite(sum(floats)):   # 1e999 (or a sum that overflows: harmless)
            return None                  # pydicom's DSfloat decides about infinities
        return {"vr": vr, "Value": floats}
    else:                                # text in the data set's character set
        if b"\x1b" in value:
            return None                  # ISO 2022 escape sequences: pydicom's decoder
        if kind == _PN:
            value = value.rstrip(b"\0 ")
        try:
            text = value.decode(encodings[0])
        except (LookupError, UnicodeError):
            return None                  # pydicom warns and replaces
        if kind == _PN:
            return _person_names(text)
        if kind == _SINGLE:              # convert_single_string
            items = [text.rstrip("\0 ")]
        else:                            # convert_text
            items = [item.rstrip("\0 ") for item in text.split("\\")]
    if len(items) == 1 and not items[0]:
        return {"vr": vr}                # an empty single value: no "Value"
    return {"vr": vr, "Value": items}


def _person_names(text: str) -> dict[str, Any] | None:
    """PN values as pydicom's PersonName splits them: component groups on "=", trailing
    empty groups dropped."""
    if not text:
        return {"vr": "PN"}
    out = []
    for name in text.split("\\"):
        groups = name.split("=")
        while groups and not groups[-1]:
            groups.pop()
        if not groups:
            return None                  # pydicom decides what an empty name is
        out.append(pn_entry(groups))
    return {"vr": "PN", "Value": out}


def pn_entry(groups: list[str]) -> dict[str, str]:
    """One person name's component groups as its DICOM JSON object."""
    entry = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        entry["Ideographic"] = groups[1]
    if len(groups) > 2:
        entry["Phonetic"] = groups[2]
    return entry


__all__ = ["KnownJson", "dataset_json", "element_json", "fast_path_applies", "pn_entry",
           "raw_json", "text_encodings", "value_json"]
