"""Instances in: a DICOM Part 10 file or one DICOM JSON data set becomes an
:class:`Instance` holding metadata only, or is refused with a :class:`DicomError`.

Pixel data and other bulk values never enter the result: a Part 10 file is first
walked by :func:`imaging.part10.walk` (headers only, limits enforced), then pydicom
decodes only the elements that are not bulk data.

>>> from pydicom.data import get_testdata_file
>>> read_instance(get_testdata_file("CT_small.dcm")).bulk_tags
['7FE00010']
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import Tag

from imaging.errors import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    DicomError,
)
from imaging.part10 import PIXEL_TAGS, Layout, walk


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
_TAG_KEY = re.compile(r"[0-9A-Fa-f]{8}")


@dataclass
class Instance:
    """One SOP instance's metadata: no PixelData and no bulk values in ``dataset``."""

    dataset: Dataset
    bulk_tags: list[str] = field(default_factory=list)   # "7FE00010", "00540016.0.00181072"
    transfer_syntax: str | None = None                   # from the file meta when present
    coerced: list[str] = field(default_factory=list)     # what the parser changed or dropped
    bulk_vrs: dict[str, str] = field(default_factory=dict)   # tag path → VR of each bulk tag
    bulk_uris: dict[str, str] = field(default_factory=dict)  # tag path → BulkDataURI from JSON

    @property
    def study_uid(self) -> str:
        """Study Instance UID."""
        return str(self.dataset.StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        """Series Instance UID."""
        return str(self.dataset.SeriesInstanceUID)

    @property
    def sop_uid(self) -> str:
        """SOP Instance UID."""
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        """SOP Class UID."""
        return str(self.dataset.SOPClassUID)


def is_valid_uid(value: object) -> bool:
    """True for a syntactically valid UID (PS3.5 9.1): digits and dots, no leading zeros, ≤ 64."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def check_required(ds: Dataset) -> None:
    """Refuse (0xA900) a data set without valid SOP Class/Instance, Study and Series UIDs."""
    for keyword, tag in REQUIRED_UIDS:
        elem = ds.get(keyword)
        value = None if elem is None else elem.value if hasattr(elem, "value") else elem
        if value is None or value == "":
            raise DicomError(f"{keyword} ({tag}) is missing", DOES_NOT_MATCH_SOP_CLASS)
        if not is_valid_uid(value):
            raise DicomError(f"{keyword} ({tag}) is not a valid UID", DOES_NOT_MATCH_SOP_CLASS)


@contextmanager
def _refusing(what: str) -> Iterator[None]:
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
        return _read(lambda: io.BytesIO(data), size, limits)
    try:
        size = os.stat(data).st_size
    except OSError as exc:
        raise DicomError(f"cannot read the file: {exc.strerror}") from None
    _check_size(size, limits)
    return _read(lambda: open(data, "rb"), size, limits)  # noqa: SIM115 - closed by _read


def _check_size(size: int, limits: Limits) -> None:
    if size > limits.max_bytes:
        raise DicomError(f"larger than {limits.max_bytes} bytes", OUT_OF_RESOURCES)
    if size == 0:
        raise DicomError("empty body")


def _read(opener: Any, size: int, limits: Limits) -> Instance:
    with _refusing("not readable as DICOM"), opener() as fp:
        layout = walk(fp, size, max_bytes=limits.max_bytes,
                      max_element_bytes=limits.max_element_bytes,
                      max_depth=limits.max_depth, max_elements=limits.max_elements)
        fp.seek(0)
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=layout.keep)
        if layout.tail_keep and layout.tail_start is not None:
            _read_tail(ds, fp, layout)
    with _refusing("undecodable attribute"):
        for bulk in layout.bulk:             # top-level ones are only here if keep was empty
            _drop(ds, bulk.path)
        metadata = Dataset()
        for elem in ds:                      # decodes every remaining value now
            if elem.tag not in PIXEL_TAGS:
                metadata.add(elem)
    coerced = _drop_unrepresentable(metadata)
    check_required(metadata)
    return Instance(dataset=metadata, bulk_tags=[b.path for b in layout.bulk],
                    transfer_syntax=layout.transfer_syntax, coerced=coerced,
                    bulk_vrs={b.path: b.vr for b in layout.bulk})


def _drop_unrepresentable(ds: Dataset) -> list[str]:
    """Drop the attributes whose value DICOM JSON cannot carry (e.g. IS "1A"); say which."""
    coerced = []
    for tag in list(ds.keys()):
        try:
            ds[tag].to_json_dict(None, 1 << 62)
        except Exception as exc:  # invalid values raise whatever their VR's parser raises
            name = ds[tag].keyword or "private attribute"
            coerced.append(f"{tag:08X} {name}: invalid value dropped ({type(exc).__name__})")
            del ds[tag]
    return coerced


def _read_tail(ds: Dataset, fp: BinaryIO, layout: Layout) -> None:
    """Decode the top-level elements after the pixel data (stop_before_pixels stops there)."""
    stream: BinaryIO = io.BytesIO(layout.inflated) if layout.inflated is not None else fp
    stream.seek(layout.tail_start or 0)
    tail = read_dataset(stream, layout.implicit, layout.little,
                        specific_tags=[Tag(t) for t in layout.tail_keep])
    for tag in list(tail.keys()):        # keys: iterating a Dataset decodes its elements
        ds[tag] = tail.get_item(tag)


def _drop(ds: Dataset, path: str) -> None:
    """Delete the element at a tag path like "00540016.0.00181072"."""
    parts = path.split(".")
    for seq_tag, index in zip(parts[0:-1:2], parts[1:-1:2], strict=True):
        ds = ds[int(seq_tag, 16)].value[int(index)]
    if int(parts[-1], 16) in ds:
        del ds[int(parts[-1], 16)]


# -- DICOM JSON ---------------------------------------------------------------------------

def instance_from_json(obj: dict, *, limits: Limits = DEFAULT_LIMITS) -> Instance:
    """Read one DICOM JSON data set (PS3.18 F.2) for metadata-only STOW; DicomError if bad."""
    if not isinstance(obj, dict):
        raise DicomError("a DICOM JSON data set must be an object")
    state = _JsonState(limits)
    cleaned = state.dataset(obj, 0, "")
    with _refusing("not a valid DICOM JSON data set"):
        ds = Dataset.from_json(cleaned)
        for _ in ds.iterall():               # decode every value now
            pass
    transfer_syntax = None
    if "00020010" in ds:
        transfer_syntax = str(ds[0x00020010].value) or None
    check_required(ds)
    return Instance(dataset=ds, bulk_tags=list(state.uris), transfer_syntax=transfer_syntax,
                    coerced=state.coerced, bulk_vrs=state.vrs, bulk_uris=state.uris)


class _JsonState:
    """Walks a DICOM JSON object: limits, BulkDataURIs set aside, big InlineBinary dropped."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.elements = 0
        self.uris: dict[str, str] = {}
        self.vrs: dict[str, str] = {}
        self.coerced: list[str] = []

    def dataset(self, obj: Any, depth: int, prefix: str) -> dict:
        if not isinstance(obj, dict):
            raise DicomError("a DICOM JSON data set must be an object")
        out: dict[str, Any] = {}
        for key, attr in obj.items():
            self.elements += 1
            if self.elements > self.limits.max_elements:
                raise DicomError(f"more than {self.limits.max_elements} elements",
                                 OUT_OF_RESOURCES)
            if not isinstance(key, str) or not _TAG_KEY.fullmatch(key):
                raise DicomError(f"not a tag: {str(key)[:20]!r}")
            if not isinstance(attr, dict) or not isinstance(attr.get("vr"), str):
                raise DicomError(f"{key}: an attribute needs an object with a 'vr'")
            key, path = key.upper(), f"{prefix}{key.upper()}"
            kept = self.attribute(key, attr, depth, path)
            if kept is not None:
                out[key] = kept
        return out

    def attribute(self, key: str, attr: dict, depth: int, path: str) -> dict | None:
        vr = attr["vr"]
        if "BulkDataURI" in attr:
            uri = attr["BulkDataURI"]
            if not isinstance(uri, str) or len(uri) > 2048:
                raise DicomError(f"{key}: BulkDataURI must be a URI string")
            self.uris[path], self.vrs[path] = uri, vr
            return None
        if "InlineBinary" in attr:
            inline = attr["InlineBinary"]
            size = len(inline) * 3 // 4 if isinstance(inline, str) else 0
            if int(key, 16) in PIXEL_TAGS or size > self.limits.max_element_bytes:
                self.coerced.append(f"{key}: InlineBinary of about {size} bytes dropped "
                                    "(pixel data and bulk data are not kept inline)")
                return None
            if isinstance(inline, str):
                _check_base64(key, inline)
        if vr == "SQ" and "Value" in attr:
            items = attr["Value"]
            if not isinstance(items, list):
                raise DicomError(f"{key}: a sequence Value must be a list")
            if depth + 1 > self.limits.max_depth:
                raise DicomError(f"sequences nested deeper than {self.limits.max_depth}",
                                 OUT_OF_RESOURCES)
            self.elements += len(items)
            return {**attr, "Value": [self.dataset(item, depth + 1, f"{path}.{i}.")
                                      for i, item in enumerate(items)]}
        value = attr.get("Value")
        if value is not None and (not isinstance(value, list)
                                  or len(str(value)) > self.limits.max_element_bytes):
            raise DicomError(f"{key}: Value must be a list within "
                             f"{self.limits.max_element_bytes} bytes", OUT_OF_RESOURCES
                             if isinstance(value, list) else CANNOT_UNDERSTAND)
        return attr


def _check_base64(key: str, text: str) -> None:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        raise DicomError(f"{key}: InlineBinary is not base64") from None
