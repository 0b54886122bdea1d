"""The common Part 10 file read in one pass: element headers walked and DICOM JSON
written straight from the bytes, with no pydicom raw elements and no ``Dataset``.

The C-STORE SCP reads every instance while the modality waits for the answer, and
most instances are flat data sets of plain values (:func:`imaging.jsonrep.value_json`).
For those, :func:`plain_json` does what :func:`imaging.part10.walk`, the raw data set,
the unrepresentable-value check and :func:`imaging.parse.check_required` do together,
walking a ``bytes`` buffer by offset (``struct.unpack_from``) instead of a stream.

It only *accepts*: anything it does not handle exactly as the general reader would --
a sequence, an undefined length other than encapsulated pixel data, UN, an ambiguous
or unknown VR, a private tag in implicit VR, a value that needs pydicom, a binary value
whose JSON depends on the bulk data handler, a big endian or deflated data set,
elements out of tag order, and every limit or refusal -- raises :class:`NotPlain`, and
the caller reads the file the general way from the start, so that refusals, their
reasons and everything else come from one place. ``tests/imaging/test_part10json.py``
compares both over pydicom's test files, synthetic instances and damaged copies.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.tag import BaseTag
from pydicom.uid import UID

from imaging.jsonrep import value_json
from imaging.part10 import (
    _KNOWN_VRS,
    _LONG_VRS,
    _VR_TEXT,
    ITEM,
    MAX_FRAGMENTS,
    PIXEL_TAGS,
    SEQUENCE_END,
    TRANSFER_SYNTAX_TAG,
    UNDEFINED,
    _dictionary_vr,
    _vr_of_bulk,
)

#: The required UIDs (as in :data:`imaging.parse.REQUIRED_UIDS`), by tag number.
REQUIRED_TAGS = {0x00080016: "00080016", 0x00080018: "00080018", 0x0020000D: "0020000D",
                 0x0020000E: "0020000E"}
#: Binary values longer than this become a BulkDataURI in ``to_dicom_json`` with an
#: instance URL (pydicom's threshold test on base64 size): left to the general reader.
MAX_INLINE = (64 * 1024 // 4) * 3
_CHARSET_TAG = 0x00080005
_HEAD = struct.Struct("<HHL").unpack_from
_LONG = struct.Struct("<L").unpack_from
_SHORT = struct.Struct("<H").unpack_from
#: "0010,0010" keys of tags seen (bounded: tags come from senders)
_KEYS: dict[int, str] = {}


class NotPlain(Exception):  # noqa: N818 - a signal, not an error
    """Not for the one-pass reader: read the file the general way."""


class PlainRead:
    """What :func:`plain_json` found: the data set's DICOM JSON (as ``to_dicom_json``
    would make it of the general reader's data set, before bulk data and RetrieveURL),
    bulk paths and VRs, transfer syntax, and the four required UIDs by tag key (single
    values of VR UI, not checked yet)."""

    __slots__ = ("bulk", "json", "transfer_syntax", "uids")

    def __init__(self, json: dict[str, Any], bulk: list[tuple[str, str]],
                 transfer_syntax: str | None, uids: dict[str, str]) -> None:
        self.json, self.bulk, self.transfer_syntax, self.uids = \
            json, bulk, transfer_syntax, uids


@lru_cache(maxsize=64)
def _byte_order(transfer_syntax: str | None) -> tuple[bool, bool]:
    """(little endian, deflated) as :func:`imaging.part10.walk` takes them."""
    if transfer_syntax:
        uid = UID(transfer_syntax)
        if uid.is_transfer_syntax:
            return uid.is_little_endian, uid.is_deflated
    return True, False


def _meta(body: bytes, size: int) -> tuple[str | None, int, int]:
    """The file meta group (transfer syntax, elements, where the data set starts)."""
    pos, count, transfer_syntax = 132, 0, None
    while pos + 2 <= size and _SHORT(body, pos)[0] == 0x0002:
        if pos + 8 > size:
            raise NotPlain
        _, elem, length = _HEAD(body, pos)
        vr_bytes = body[pos + 4:pos + 6]
        if vr_bytes not in _KNOWN_VRS or vr_bytes == b"SQ":
            raise NotPlain
        if vr_bytes in _LONG_VRS:
            if pos + 12 > size:
                raise NotPlain
            length, pos = _LONG(body, pos + 8)[0], pos + 12
        else:
            length, pos = length >> 16, pos + 8
        count += 1
        if length == UNDEFINED or pos + length > size:
            raise NotPlain
        if 0x00020000 | elem == TRANSFER_SYNTAX_TAG:
            if length > 64:
                raise NotPlain
            transfer_syntax = body[pos:pos + length].decode("ascii", "replace") \
                .strip("\0 ") or None
        pos += length
    if count == 0:
        raise NotPlain
    return transfer_syntax, count, pos


def _fragments(body: bytes, pos: int, size: int) -> int:
    """Skip encapsulated pixel data's items up to its delimiter; where it ends."""
    for _ in range(MAX_FRAGMENTS + 1):
        if pos + 8 > size:
            raise NotPlain
        group, elem, length = _HEAD(body, pos)
        item, pos = group << 16 | elem, pos + 8
        if item == SEQUENCE_END:
            return pos
        if item != ITEM or length == UNDEFINED or pos + length > size:
            raise NotPlain
        pos += length
    raise NotPlain


def _encodings(vr: str | None, value: bytes, implicit: bool) -> list[str]:
    """The character sets of Specific Character Set's value, as the general reader takes
    them for the data set's text (``_raw_dataset``, then ``text_encodings``)."""
    raw = RawDataElement(BaseTag(_CHARSET_TAG), vr, len(value),
                         value if value else empty_value_for_VR(vr, raw=True), 0, implicit,
                         True)
    found = convert_encodings(convert_raw_data_element(raw).value)
    if not found:
        raise NotPlain                   # pydicom would look further
    return [found] if isinstance(found, str) else list(found)


def plain_json(body: bytes, *, max_element_bytes: int, max_elements: int) -> PlainRead:
    """Read a Part 10 file in one pass if it is a plain one; :class:`NotPlain` if not."""
    size = len(body)
    if size < 132 or body[128:132] != b"DICM":
        raise NotPlain
    transfer_syntax, count, pos = _meta(body, size)
    little, deflated = _byte_order(transfer_syntax)
    if deflated or not little:
        raise NotPlain
    implicit = pos + 6 <= size and not (0x40 < body[pos + 4] < 0x5B and
                                        0x40 < body[pos + 5] < 0x5B)
    out: dict[str, Any] = {}
    bulk: list[tuple[str, str]] = []
    encodings = ["iso8859"]              # pydicom's default, until (0008,0005)
    last = -1
    found: list[tuple[int, str, bytes]] = []
    keys, known_vrs, long_vrs, vr_text = _KEYS, _KNOWN_VRS, _LONG_VRS, _VR_TEXT
    head, long_length = _HEAD, _LONG
    while pos < size:
        if pos + 8 > size:
            raise NotPlain
        group, elem, length = head(body, pos)
        tag = group << 16 | elem
        if implicit:
            if group & 1 or group == 0xFFFE:
                raise NotPlain           # private: the VR needs the private creator
            vr = _dictionary_vr(tag)
            if vr is None:
                raise NotPlain
            pos += 8
        else:
            vr_bytes = body[pos + 4:pos + 6]
            if vr_bytes not in known_vrs or group == 0xFFFE:
                raise NotPlain
            vr = vr_text[vr_bytes]
            if vr_bytes in long_vrs:
                if pos + 12 > size:
                    raise NotPlain
                length, pos = long_length(body, pos + 8)[0], pos + 12
            else:
                length, pos = length >> 16, pos + 8
        count += 1
        if count > max_elements or vr == "SQ" or vr == "UN":
            raise NotPlain
        if length == UNDEFINED:
            if tag not in PIXEL_TAGS:
                raise NotPlain
            pos = _fragments(body, pos, size)
            bulk.append((f"{tag:08X}", "OB"))
            continue
        end = pos + length
        if end > size:
            raise NotPlain
        if length > max_element_bytes or tag in PIXEL_TAGS:
            bulk.append((f"{tag:08X}", _vr_of_bulk(tag, vr, False)))
            pos = end
            continue
        if group == 0x0002:              # file meta information: not the data set's
            pos = end
            continue
        if tag <= last:
            raise NotPlain               # out of order or twice: the general reader sorts
        last = tag
        found.append((tag, vr, body[pos:end]))
        pos = end
    # the values only once the structure is known to be plain: a file that is not (a
    # sequence, most often) costs the general reader no more than this walk
    for tag, vr, value in found:
        if tag == _CHARSET_TAG:
            encodings = _encodings(None if implicit else vr, value, implicit)
        elif tag < _CHARSET_TAG and vr in ("PN", "LO", "SH", "UC", "LT", "ST", "UT"):
            raise NotPlain               # text before the character set is known
        attr = value_json(tag, vr, value, True, encodings)
        if attr is None or len(value) > MAX_INLINE and "InlineBinary" in attr:
            raise NotPlain
        key = keys.get(tag)
        if key is None:
            key = f"{tag:08X}"
            if len(keys) < 100_000:
                keys[tag] = key
        out[key] = attr
    uids = {}
    for key in REQUIRED_TAGS.values():
        attr = out.get(key)
        uid = None if attr is None or attr["vr"] != "UI" else attr.get("Value")
        if uid is None or len(uid) != 1:
            raise NotPlain               # the general reader refuses it, or asks pydicom
        uids[key] = uid[0]
    return PlainRead(out, bulk, transfer_syntax, uids)


__all__ = ["NotPlain", "PlainRead", "plain_json"]
