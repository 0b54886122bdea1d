"""Part 10 files for the imaging tests: pydicom's shipped test files, and crafted ones
(written with pydicom, then raw elements appended or bytes changed)."""

from __future__ import annotations

import io
import random
import struct
import warnings
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY, SERIES, SOP = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", \
    "1.2.826.0.1.3680043.8.498.3"


def dataset(**attrs: object) -> Dataset:
    """A small CT data set with the required UIDs (overridable)."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = SOP
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P1"
    ds.Modality = "CT"
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian, *,
           extra: bytes = b"") -> bytes:
    """``ds`` as a Part 10 file, with raw element bytes ``extra`` appended."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", CT_IMAGE)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True,
                     implicit_vr=transfer_syntax == ImplicitVRLittleEndian)
    return buffer.getvalue() + extra


def implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    """One implicit VR little endian element (``length`` overrides the real one)."""
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF,
                       len(value) if length is None else length) + value


ITEM_START = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def nested(depth: int, tag: int = 0x0040A730) -> bytes:
    """Sequences nested ``depth`` deep, all of undefined length, in implicit VR."""
    inner = implicit(0x0040A160, b"leaf")
    for _ in range(depth):
        inner = implicit(tag, b"", 0xFFFFFFFF) + ITEM_START + inner + ITEM_END + SEQUENCE_END
    return inner


def readable() -> list[Path]:
    """pydicom's test files that read_instance accepts."""
    from imaging.errors import DicomError
    from imaging.parse import read_instance

    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
            try:
                read_instance(path)
            except DicomError:
                continue
            found.append(path)
    return found


def damaged(original: bytes, rng: random.Random) -> bytes:
    """``original`` with one to four damages past the preamble: a byte changed, a run of
    0xFF written (a length of 0xFFFFFFFF, often), or up to 40 bytes cut out."""
    data = bytearray(original)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(132, len(data))
        choice = rng.random()
        if choice < 0.5:
            data[at] = rng.randrange(256)
        elif choice < 0.75:
            data[at:at + 4] = b"\xff\xff\xff\xff"
        else:
            del data[at:at + rng.randint(1, 40)]
    return bytes(data)
