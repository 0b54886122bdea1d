"""The structure of a DICOM Part 10 file (PS3.10 §7, PS3.5 §7), walked element by
element without reading any value.

:func:`walk` is the guard that runs before pydicom decodes anything: it reads only
element headers and seeks over values, so a file is checked for truncation, illegal
undefined lengths, nesting depth and element count in memory that does not grow with
its values. It also tells the reader what to skip (bulk data, Pixel Data) so that
pydicom never reads those values at all, and where each other top-level value is, so
that the reader decodes exactly the elements whose headers were checked. Its reading
of the encoding follows pydicom's own (``pydicom.filereader``), including pydicom's
tolerance for sequence items written in implicit VR inside an explicit VR data set,
so that every file it accepts pydicom reads the same way.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.uid import UID

from imaging.errors import OUT_OF_RESOURCES, DicomError

#: Pixel Data, Float Pixel Data, Double Float Pixel Data: always bulk data.
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
#: Fragments of encapsulated pixel data are skipped, not counted as elements (a long
#: multi-frame series has one per frame), but there is a ceiling on walking them.
MAX_FRAGMENTS = 1_000_000
TRANSFER_SYNTAX_TAG = 0x00020010

# VRs pydicom knows in explicit VR encoding, and those with a 4-byte length (PS3.5 7.1.2).
_KNOWN_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI "
    b"UL UN UR US UT UV".split())
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_VR_NAMES = frozenset(vr.decode() for vr in _KNOWN_VRS)
_VR_TEXT = {vr: vr.decode() for vr in _KNOWN_VRS}


@dataclass
class BulkElement:
    """An element whose value stays where it is: its tag path and VR."""

    path: str
    vr: str


@dataclass
class Layout:
    """What :func:`walk` found: the encoding, where things are, and what to skip."""

    transfer_syntax: str | None = None
    implicit: bool = False
    little: bool = True
    deflated: bool = False
    inflated: bytes | None = None           # the inflated data set of a deflated file
    dataset_start: int = 0                  # offset of the data set in the file
    bulk: list[BulkElement] = field(default_factory=list)
    elements: int = 0
    #: each top-level element that is not bulk data, in file order, before and after the
    #: pixel data: (tag, VR as written or None when read as implicit VR, length, offset of
    #: its value) -- what pydicom's reader yields, for the reader to decode
    headers: list[tuple[int, str | None, int, int]] = field(default_factory=list)


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _vr_of_bulk(tag: int, vr: str | None, undefined: bool) -> str:
    """The VR a bulk element is reported with in DICOM JSON."""
    if vr in _VR_NAMES:
        return vr
    if undefined:
        return "OB"                        # encapsulated pixel data (PS3.5 A.4)
    known = _dictionary_vr(tag)
    if known is None:
        return "UN"
    # implicit VR: "OB or OW" is OW (PS3.5 A.1), "US or SS" the first
    return "OW" if "OW" in known else known.split(" ")[0]


class _Walker:
    def __init__(self, fp: BinaryIO, size: int, *, max_element_bytes: int, max_depth: int,
                 max_elements: int, little: bool) -> None:
        self.fp, self.size = fp, size
        self.max_element_bytes, self.max_depth = max_element_bytes, max_depth
        self.max_elements = max_elements
        endian = "<" if little else ">"
        self._tag_length = struct.Struct(endian + "HHL").unpack
        self._long = struct.Struct(endian + "L").unpack
        self._short = struct.Struct(endian + "H").unpack_from
        self._pair = struct.Struct(endian + "HH").unpack
        self.layout = Layout(little=little)

    # -- low level -----------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        data = self.fp.read(n)
        if len(data) < n:
            raise DicomError("truncated: the file ends inside an element header")
        return data

    def _count(self) -> None:
        self.layout.elements += 1
        if self.layout.elements > self.max_elements:
            raise DicomError(f"more than {self.max_elements} elements", OUT_OF_RESOURCES)

    def _skip(self, length: int, end: int, tag: int) -> None:
        pos = self.fp.tell()
        if pos + length > end:
            raise DicomError(f"truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                             "runs past the end of its data set")
        self.fp.seek(pos + length)

    def _next_tag(self) -> int:
        pos = self.fp.tell()
        group, elem = self._pair(self._read(4))
        self.fp.seek(pos)
        return group << 16 | elem

    def _looks_implicit(self) -> bool:
        """pydicom's test: the two bytes after the first tag are not a VR."""
        pos = self.fp.tell()
        head = self.fp.read(6)
        self.fp.seek(pos)
        if len(head) < 6:
            return False
        return not (0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B)

    def header(self, implicit: bool) -> tuple[int, str | None, int]:
        """Tag, VR as written (None when read as implicit VR) and length of the next element."""
        raw = self.fp.read(8)
        if len(raw) < 8:
            raise DicomError("truncated: the file ends inside an element header")
        group, elem, length = self._tag_length(raw)
        if implicit or group == 0xFFFE:          # items and delimiters have no VR
            return group << 16 | elem, None, length
        vr_bytes = raw[4:6]
        if vr_bytes in _KNOWN_VRS:
            if vr_bytes in _LONG_VRS:
                return group << 16 | elem, vr_bytes.decode(), self._long(self._read(4))[0]
            return group << 16 | elem, vr_bytes.decode(), self._short(raw, 6)[0]
        if b"AA" <= vr_bytes <= b"ZZ":           # unknown VR: pydicom reads a 2-byte length
            return group << 16 | elem, vr_bytes.decode(), self._short(raw, 6)[0]
        return group << 16 | elem, None, length  # pydicom assumes a switch to implicit VR

    # -- structure -----------------------------------------------------------------
    def dataset(self, end: int | None, implicit: bool, depth: int, prefix: str) -> None:
        """Walk one data set: the top level (``depth`` 0) or a sequence item."""
        top = depth == 0
        if top:
            implicit = self.layout.implicit = self._looks_implicit()
        elif not implicit and self._looks_implicit():
            implicit = True                      # PS3.5 6.2.2: items may be implicit VR
        limit = self.size if end is None else end
        fp, lay = self.fp, self.layout
        read, tell, seek, tag_length = fp.read, fp.tell, fp.seek, self._tag_length
        while True:
            pos = tell()
            if top and pos >= self.size:
                return
            if end is not None and pos >= end:
                if pos > end:
                    raise DicomError("malformed: an element crosses the end of its item")
                return
            # the element header, as header() reads it (inlined: this loop is the hot one)
            raw = read(8)
            if len(raw) < 8:
                raise DicomError("truncated: the file ends inside an element header")
            group, elem, length = tag_length(raw)
            tag = group << 16 | elem
            vr = None
            if group == 0xFFFE:
                if tag == ITEM_END:
                    if end is None and not top:
                        return
                    raise DicomError("malformed: an item delimiter outside an item")
                raise DicomError("malformed: an item outside a sequence")
            if not implicit:
                vr_bytes = raw[4:6]
                if vr_bytes in _KNOWN_VRS:
                    vr = _VR_TEXT[vr_bytes]
                    if vr_bytes in _LONG_VRS:
                        length = self._long(self._read(4))[0]
                    else:
                        length = self._short(raw, 6)[0]
                elif b"AA" <= vr_bytes <= b"ZZ":     # unknown VR: pydicom reads 2 bytes
                    vr, length = vr_bytes.decode(), self._short(raw, 6)[0]
                # else pydicom assumes a switch to implicit VR: no VR, 4-byte length
            lay.elements += 1
            if lay.elements > self.max_elements:
                raise DicomError(f"more than {self.max_elements} elements", OUT_OF_RESOURCES)
            value_at = tell()
            known = vr if vr is not None else _dictionary_vr(tag)
            if length != UNDEFINED and known is not None and known != "SQ" and known != "UN":
                # a value to skip: what element() does for it, inlined
                bulk = length > self.max_element_bytes or tag in PIXEL_TAGS
                if bulk:
                    lay.bulk.append(BulkElement(f"{prefix}{tag:08X}",
                                                _vr_of_bulk(tag, known, False)))
                if value_at + length > limit:
                    raise DicomError(f"truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                                     "runs past the end of its data set")
                seek(value_at + length)
            else:
                count = len(lay.bulk)
                self.element(tag, vr, length, limit, implicit, depth, prefix)
                bulk = len(lay.bulk) > count and lay.bulk[-1].path == f"{prefix}{tag:08X}"
            if top and not bulk and tag not in PIXEL_TAGS:   # even if written as a sequence
                lay.headers.append((tag, vr, length, value_at))

    def element(self, tag: int, vr: str | None, length: int, end: int, implicit: bool,
                depth: int, prefix: str) -> None:
        """Walk one element's value: recurse into sequences, skip everything else."""
        if vr is None:
            vr = _dictionary_vr(tag)
        if length == UNDEFINED:
            if vr == "UN":                       # PS3.5 6.2.2: UN of undefined length is SQ
                vr = "SQ"
            elif vr is None and self._next_tag() == ITEM:
                vr = "SQ"                        # a private sequence in implicit VR
            if vr == "SQ":
                self.sequence(None, implicit, depth + 1, f"{prefix}{tag:08X}")
            elif tag in PIXEL_TAGS:
                self.fragments(tag)
                self.layout.bulk.append(BulkElement(f"{prefix}{tag:08X}", "OB"))
            else:
                raise DicomError(f"malformed: undefined length on non-sequence element "
                                 f"({tag >> 16:04X},{tag & 0xFFFF:04X})")
            return
        if vr == "SQ" or (vr == "UN" and _dictionary_vr(tag) == "SQ"):
            start = self.fp.tell()
            if start + length > end:
                raise DicomError(f"truncated: sequence ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                                 "runs past the end of its data set")
            # a UN sequence is implicit VR (PS3.5 6.2.2)
            self.sequence(start + length, implicit or vr == "UN", depth + 1,
                          f"{prefix}{tag:08X}")
            return
        if length > self.max_element_bytes or tag in PIXEL_TAGS:
            self.layout.bulk.append(BulkElement(f"{prefix}{tag:08X}", _vr_of_bulk(tag, vr, False)))
        pos = self.fp.tell()
        if pos + length > end:
            raise DicomError(f"truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                             "runs past the end of its data set")
        self.fp.seek(pos + length)

    def sequence(self, end: int | None, implicit: bool, depth: int, path: str) -> None:
        """Walk the items of a sequence of defined (``end``) or undefined length."""
        if depth > self.max_depth:
            raise DicomError(f"sequences nested deeper than {self.max_depth}", OUT_OF_RESOURCES)
        index = 0
        while True:
            pos = self.fp.tell()
            if end is not None and pos >= end:
                if pos > end:
                    raise DicomError("malformed: an item crosses the end of its sequence")
                return
            tag, _, length = self.header(True)
            if tag == SEQUENCE_END:
                if end is None:
                    return
                raise DicomError("malformed: a sequence delimiter in a defined-length sequence")
            if tag != ITEM:
                raise DicomError("malformed: a sequence holds something other than items")
            self._count()
            prefix = f"{path}.{index}."
            if length == UNDEFINED:
                self.dataset(None, implicit, depth, prefix)
            else:
                item_end = self.fp.tell() + length
                if item_end > (self.size if end is None else end):
                    raise DicomError("truncated: an item runs past the end of its sequence")
                self.dataset(item_end, implicit, depth, prefix)
                self.fp.seek(item_end)
            index += 1

    def fragments(self, tag: int) -> None:
        """Skip the items of encapsulated pixel data (PS3.5 A.4) up to its delimiter."""
        for _ in range(MAX_FRAGMENTS + 1):
            item, _, length = self.header(True)
            if item == SEQUENCE_END:
                return
            if item != ITEM or length == UNDEFINED:
                raise DicomError("malformed: encapsulated pixel data holds a non-item")
            self._skip(length, self.size, tag)
        raise DicomError(f"more than {MAX_FRAGMENTS} pixel data fragments", OUT_OF_RESOURCES)


def _meta(walker: _Walker) -> str | None:
    """Walk the File Meta Information (group 0002, explicit VR little endian)."""
    transfer_syntax = None
    while True:
        pos = walker.fp.tell()
        peek = walker.fp.read(2)
        walker.fp.seek(pos)
        if len(peek) < 2 or struct.unpack("<H", peek)[0] != 0x0002:
            return transfer_syntax
        tag, vr, length = walker.header(False)
        walker._count()
        if length == UNDEFINED or vr == "SQ":
            raise DicomError("malformed: a sequence in the file meta information")
        if tag == TRANSFER_SYNTAX_TAG:
            if length > 64:
                raise DicomError("malformed: the transfer syntax UID is too long")
            raw = walker._read(length)
            transfer_syntax = raw.decode("ascii", "replace").strip("\0 ") or None
        else:
            walker._skip(length, walker.size, tag)


def walk(fp: BinaryIO, size: int, *, max_bytes: int, max_element_bytes: int, max_depth: int,
         max_elements: int) -> Layout:
    """Check the structure of a Part 10 file of ``size`` bytes; raise DicomError if bad."""
    preamble = fp.read(132)
    if len(preamble) < 132 or preamble[128:] != b"DICM":
        raise DicomError("not a DICOM Part 10 file (no 'DICM' prefix)")
    limits = {"max_element_bytes": max_element_bytes, "max_depth": max_depth,
              "max_elements": max_elements}
    meta = _Walker(fp, size, little=True, **limits)
    transfer_syntax = _meta(meta)
    if meta.layout.elements == 0:
        raise DicomError("truncated: no file meta information after the 'DICM' prefix")
    dataset_start = fp.tell()
    little, deflated = True, False
    if transfer_syntax:
        uid = UID(transfer_syntax)
        if uid.is_transfer_syntax:
            little, deflated = uid.is_little_endian, uid.is_deflated
    walker = _Walker(fp, size, little=little, **limits)
    walker.layout.elements = meta.layout.elements
    inflated = None
    if deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            inflated = inflater.decompress(fp.read(size - fp.tell()), max_bytes + 1)
        except zlib.error as exc:
            raise DicomError(f"malformed deflated data set: {exc}") from None
        if len(inflated) > max_bytes or inflater.unconsumed_tail:
            raise DicomError(f"the inflated data set is larger than {max_bytes} bytes",
                             OUT_OF_RESOURCES)
        walker.fp, walker.size = io.BytesIO(inflated), len(inflated)
    walker.dataset(None, False, 0, "")
    layout = walker.layout
    layout.transfer_syntax, layout.little, layout.deflated = transfer_syntax, little, deflated
    layout.inflated, layout.dataset_start = inflated, 0 if deflated else dataset_start
    return layout


__all__ = ["PIXEL_TAGS", "BulkElement", "Layout", "walk"]
