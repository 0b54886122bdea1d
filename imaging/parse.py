"""Instances in: a DICOM Part 10 file becomes an :class:`Instance` holding metadata
only, or is refused with a :class:`DicomError` (one DICOM JSON data set:
:mod:`imaging.jsonparse`).

Pixel data and other bulk values never enter the result: a Part 10 file is first
walked by :func:`imaging.part10.walk` (headers only, limits enforced), then pydicom
decodes only the elements that are not bulk data.

>>> from pydicom.data import get_testdata_file
>>> read_instance(get_testdata_file("CT_small.dcm")).bulk_tags
['7FE00010']
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, BinaryIO

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset
from pydicom.filereader import read_sequence
from pydicom.tag import BaseTag
from pydicom.values import convert_string

from imaging.errors import (
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    DicomError,
)
from imaging.jsonrep import (
    KnownJson,
    element_json,
    fast_path_applies,
    raw_json,
    text_encodings,
)
from imaging.part10 import UNDEFINED, Layout, walk
from imaging.part10json import plain_json


@dataclass(frozen=True)
class Limits:
    """How much of a client's input the parser accepts."""

    max_bytes: int = 64 * 1024 * 1024      # a whole Part 10 file / body part
    max_element_bytes: int = 64 * 1024     # larger non-pixel values are bulk data
    max_depth: int = 8                     # sequence nesting
    max_elements: int = 50_000             # elements in total, nested ones and items included


DEFAULT_LIMITS = Limits()

#: The attributes every stored instance must carry, as (keyword, tag).
REQUIRED_UIDS = (("SOPClassUID", "00080016"), ("SOPInstanceUID", "00080018"),
                 ("StudyInstanceUID", "0020000D"), ("SeriesInstanceUID", "0020000E"))
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


class Pending:
    """An instance's data set not made yet (see :class:`_DatasetField`): what to make it
    of, and the required UIDs, known already."""

    uids: dict[str, str]

    def make(self) -> Dataset:
        raise NotImplementedError


class _DatasetField:
    """``Instance.dataset``, which an instance read from a plain Part 10 file or plain
    DICOM JSON makes only when it is first asked for (a dataclass field with this
    descriptor as its "default"): the C-STORE SCP, STOW-RS and the poller need only
    its JSON and UIDs."""

    def __get__(self, instance: Instance | None, owner: type | None = None) -> Dataset:
        if instance is None:
            raise AttributeError("dataset")  # no default: the field stays required
        found = instance.__dict__["_dataset"]
        if isinstance(found, Pending):
            found = instance.__dict__["_dataset"] = found.make()
        return found

    def __set__(self, instance: Instance, value: Dataset) -> None:
        instance.__dict__["_dataset"] = value


@dataclass
class Instance:
    """One SOP instance's metadata: no PixelData and no bulk values in ``dataset``."""

    dataset: Dataset = _DatasetField()  # type: ignore[assignment]
    bulk_tags: list[str] = field(default_factory=list)   # "7FE00010", "00540016.0.00181072"
    transfer_syntax: str | None = None                   # from the file meta when present
    coerced: list[str] = field(default_factory=list)     # what the parser changed or dropped
    bulk_vrs: dict[str, str] = field(default_factory=dict)   # tag path → VR of each bulk tag
    bulk_uris: dict[str, str] = field(default_factory=dict)  # tag path → BulkDataURI from JSON
    #: the JSON the reader already made, for to_dicom_json to use once: from a Part 10
    #: file read the general way, of raw elements (each entry only while that very
    #: element is still in ``dataset``); from a plain Part 10 file or plain DICOM JSON,
    #: the whole data set's (only while ``dataset`` has not been made, so nothing can
    #: have changed it)
    known_json: KnownJson | dict[str, Any] | None = field(default=None, repr=False,
                                                          compare=False)

    @property
    def dataset_made(self) -> bool:
        """False while an instance read from a plain Part 10 file or DICOM JSON has not
        made its ``dataset``."""
        return not isinstance(self.__dict__["_dataset"], Pending)

    @property
    def study_uid(self) -> str:
        """Study Instance UID."""
        return self._uid("0020000D", "StudyInstanceUID")

    @property
    def series_uid(self) -> str:
        """Series Instance UID."""
        return self._uid("0020000E", "SeriesInstanceUID")

    @property
    def sop_uid(self) -> str:
        """SOP Instance UID."""
        return self._uid("00080018", "SOPInstanceUID")

    @property
    def sop_class_uid(self) -> str:
        """SOP Class UID."""
        return self._uid("00080016", "SOPClassUID")

    def _uid(self, tag: str, keyword: str) -> str:
        pending = self.__dict__["_dataset"]
        if isinstance(pending, Pending):
            return pending.uids[tag]
        return _uid_text(self.dataset, int(tag, 16), keyword)


def is_valid_uid(value: object) -> bool:
    """True for a syntactically valid UID (PS3.5 9.1): digits and dots, no leading zeros, ≤ 64."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def _raw_uid(ds: Dataset, tag: int) -> str | list[str] | None:
    """A UI attribute's value(s) read from its bytes, as pydicom would decode them, if it
    is still a raw element; None if pydicom has to decode it. Saves decoding the UIDs that
    every caller asks for, which also keeps their JSON from read_instance usable."""
    raw = ds.get_item(tag)
    if type(raw) is not RawDataElement or not fast_path_applies():
        return None
    attr = raw_json(raw, text_encodings(ds))
    if attr is None or attr["vr"] != "UI":
        return None
    found = attr.get("Value", [""])
    return found[0] if len(found) == 1 else found


def _uid_text(ds: Dataset, tag: int, keyword: str) -> str:
    found = _raw_uid(ds, tag)
    return found if isinstance(found, str) else str(getattr(ds, keyword))


def check_required(ds: Dataset) -> None:
    """Refuse (0xA900) a data set without valid SOP Class/Instance, Study and Series UIDs."""
    for keyword, tag in REQUIRED_UIDS:
        value = _raw_uid(ds, int(tag, 16))
        if value is None:
            elem = ds.get(keyword)
            value = None if elem is None else elem.value if hasattr(elem, "value") else elem
        check_uid(keyword, tag, value)


def check_uid(keyword: str, tag: str, value: object) -> None:
    """Refuse a required UID that is missing or not a valid UID."""
    if value is None or value == "":
        raise DicomError(f"{keyword} ({tag}) is missing", DOES_NOT_MATCH_SOP_CLASS)
    if not is_valid_uid(value):
        raise DicomError(f"{keyword} ({tag}) is not a valid UID", DOES_NOT_MATCH_SOP_CLASS)


@contextmanager
def refusing(what: str) -> Iterator[None]:
    """Turn anything pydicom raises into a DicomError (0xC000)."""
    try:
        yield
    except DicomError:
        raise
    except (MemoryError, RecursionError):
        raise DicomError(f"{what}: too complex to decode", OUT_OF_RESOURCES) from None
    except Exception as exc:  # pydicom raises many types for bad input
        raise DicomError(f"{what}: {type(exc).__name__}: {str(exc)[:200]}") from None


def read_instance(data: bytes | str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS) -> Instance:
    """Read a Part 10 file (bytes or a path) into metadata; refuse bad input with DicomError."""
    if isinstance(data, bytes | bytearray | memoryview):
        size = len(data)
        _check_size(size, limits)
        body = bytes(data)
        if _PLAIN_PART10 and fast_path_applies():
            found = _read_plain(body, limits)
            if found is not None:
                return found
        return _read_bytes(body, limits)
    try:
        size = os.stat(data).st_size
    except OSError as exc:
        raise DicomError(f"cannot read the file: {exc.strerror}") from None
    _check_size(size, limits)
    return _read(lambda: open(data, "rb"), size, limits)  # noqa: SIM115 - closed by _read


def _read_bytes(body: bytes, limits: Limits) -> Instance:
    return _read(lambda: io.BytesIO(body), len(body), limits, body)


#: Whether :func:`read_instance` tries :mod:`imaging.part10json` first (tests turn it off
#: to compare with the general reader).
_PLAIN_PART10 = True


def _read_plain(body: bytes, limits: Limits) -> Instance | None:
    """The instance of a plain Part 10 file read in one pass (its data set made from
    ``body`` by the general reader if asked for), or None: read it the general way."""
    try:
        found = plain_json(body, max_element_bytes=limits.max_element_bytes,
                           max_elements=limits.max_elements)
    except Exception:  # NotPlain, or whatever pydicom raised on the character set
        return None
    uids = found.uids
    if not all(is_valid_uid(uid) for uid in uids.values()):
        return None                      # refused, by the general reader
    return Instance(dataset=_FromPart10(body, limits, uids),  # type: ignore[arg-type]
                    bulk_tags=[path for path, _ in found.bulk],
                    transfer_syntax=found.transfer_syntax,
                    bulk_vrs=dict(found.bulk), known_json=found.json)


class _FromPart10(Pending):
    """A plain Part 10 file's data set not made yet: the file (``bytes``: the instance
    keeps it alive until then), read again the general way when asked for."""

    def __init__(self, body: bytes, limits: Limits, uids: dict[str, str]) -> None:
        self.body, self.limits, self.uids = body, limits, uids

    def make(self) -> Dataset:
        return _read_bytes(self.body, self.limits).dataset


def _check_size(size: int, limits: Limits) -> None:
    if size > limits.max_bytes:
        raise DicomError(f"larger than {limits.max_bytes} bytes", OUT_OF_RESOURCES)
    if size == 0:
        raise DicomError("empty body")


def _read(opener: Any, size: int, limits: Limits, body: bytes | None = None) -> Instance:
    with refusing("not readable as DICOM"), opener() as fp:
        layout = walk(fp, size, max_bytes=limits.max_bytes,
                      max_element_bytes=limits.max_element_bytes,
                      max_depth=limits.max_depth, max_elements=limits.max_elements)
        ds = _raw_dataset(layout, fp, body)
    with refusing("undecodable attribute"):
        for bulk in layout.bulk:             # nested ones; top-level ones were never read
            if "." in bulk.path:
                _drop(ds, bulk.path)
    coerced, known = _drop_unrepresentable(ds)
    check_required(ds)
    return Instance(dataset=ds, bulk_tags=[b.path for b in layout.bulk],
                    transfer_syntax=layout.transfer_syntax, coerced=coerced,
                    bulk_vrs={b.path: b.vr for b in layout.bulk}, known_json=known)


def _raw_dataset(layout: Layout, fp: BinaryIO, body: bytes | None) -> Dataset:
    """The data set pydicom's reader would make of the elements the walk kept: raw
    elements (decoded when touched), sequences of undefined length read as sequences.

    Values are taken where the walk found them, so the file is not parsed twice; nothing
    the walk did not keep (pixel data, bulk data, the file meta group) is read.
    """
    if layout.inflated is not None:
        body = layout.inflated
        stream: BinaryIO = io.BytesIO(body)
    else:
        stream = fp
    implicit, little = layout.implicit, layout.little
    encoding: str | list[str] = default_encoding
    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    for number, vr, length, at in sorted(layout.headers, key=itemgetter(0)):   # tag order
        if number >> 16 == 0x0002:
            continue                         # file meta information, not the data set's
        tag = BaseTag(number)
        if length == UNDEFINED:              # the walk only keeps sequences of this kind
            stream.seek(at)
            sequence = read_sequence(stream, implicit, little, length, encoding)
            elements[tag] = DataElement(tag, "SQ", sequence, at, is_undefined_length=True)
            continue
        if length == 0:
            value = empty_value_for_VR(vr, raw=True)
        elif body is not None:
            value = body[at:at + length]
        else:
            stream.seek(at)
            value = stream.read(length)
        if number == 0x00080005:             # as pydicom's reader: for sequences after it
            encoding = convert_encodings(convert_string(value or b"", little))
        elements[tag] = RawDataElement(tag, vr, length, value, at, implicit, little)
    ds = Dataset(elements)
    charset = elements.get(BaseTag(0x00080005))
    if charset is not None:
        value = charset.value if isinstance(charset, DataElement) \
            else convert_raw_data_element(charset).value
        ds.set_original_encoding(implicit, little, convert_encodings(value))
    else:
        ds.set_original_encoding(implicit, little, default_encoding)
    return ds


def _drop_unrepresentable(ds: Dataset) -> tuple[list[str], KnownJson | None]:
    """Drop the attributes whose value DICOM JSON cannot carry (e.g. IS "1A"); say which.

    Plain values are turned into JSON from their bytes (:func:`imaging.jsonrep.raw_json`),
    which is kept for :func:`imaging.jsonmodel.to_dicom_json`; the others are decoded by
    pydicom now, so that a value pydicom cannot decode refuses the instance here rather
    than failing later in a caller.
    """
    coerced = []
    fast = fast_path_applies()
    encodings = text_encodings(ds) if fast else []
    known: dict[int, tuple[RawDataElement, dict]] = {}
    for tag, elem in list(ds.items()):
        if fast and type(elem) is RawDataElement:
            attr = raw_json(elem, encodings)
            if attr is not None:
                if "InlineBinary" not in attr:   # its JSON depends on the bulk data handler
                    known[tag] = (elem, attr)
                continue
        with refusing("undecodable attribute"):
            elem = ds[tag]
        try:
            element_json(elem, None, 1 << 62)
        except Exception as exc:  # invalid values raise whatever their VR's parser raises
            name = elem.keyword or "private attribute"
            coerced.append(f"{tag:08X} {name}: invalid value dropped ({type(exc).__name__})")
            del ds[tag]
    return coerced, (encodings, known) if fast else None


def _drop(ds: Dataset, path: str) -> None:
    """Delete the element at a tag path like "00540016.0.00181072"."""
    parts = path.split(".")
    for seq_tag, index in zip(parts[0:-1:2], parts[1:-1:2], strict=True):
        ds = ds[int(seq_tag, 16)].value[int(index)]
    if int(parts[-1], 16) in ds:
        del ds[int(parts[-1], 16)]
