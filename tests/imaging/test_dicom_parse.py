"""Reading Part 10 files into metadata: pydicom's own test files, crafted hostile files,
and the memory a large file costs."""

from __future__ import annotations

import gc
import json
import random
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import pydicom
import pytest
from imaging_files import (
    ITEM_END,
    ITEM_START,
    SEQUENCE_END,
    SOP,
    STUDY,
    TEST_FILES,
    damaged,
    dataset,
    implicit,
    nested,
    part10,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from imaging.errors import DicomError
from imaging.parse import DEFAULT_LIMITS, Instance, Limits, check_required, read_instance
from imaging.part10 import PIXEL_TAGS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ALL_FILES = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())

#: pydicom's files that must be refused, and why. Every other file must be read.
REFUSED = {
    # not Part 10: no preamble and 'DICM' prefix, or not DICOM at all
    "ExplVR_BigEndNoMeta.dcm": 0xC000, "ExplVR_LitEndNoMeta.dcm": 0xC000,
    "no_meta.dcm": 0xC000, "rtstruct.dcm": 0xC000, "README.txt": 0xC000, "README": 0xC000,
    "crayons.icc": 0xC000, "rtplan.dump": 0xC000, "rtstruct.dump": 0xC000,
    "test1.json": 0xC000, "test_PN.json": 0xC000, "zipMR.gz": 0xC000,
    # cut short: a value or an item runs past the end of the file
    "MR_truncated.dcm": 0xC000, "rtplan_truncated.dcm": 0xC000,
    "DICOMDIR-nooffset": 0xC000,
    # no SOP Class / Instance, Study or Series UID
    "JPEGLSNearLossless_08.dcm": 0xA900, "JPEGLSNearLossless_16.dcm": 0xA900,
    "SC_rgb_jls_lossy_line.dcm": 0xA900, "SC_rgb_jls_lossy_sample.dcm": 0xA900,
    "UN_sequence.dcm": 0xA900, "empty_charset_LEI.dcm": 0xA900,
    "meta_missing_tsyntax.dcm": 0xA900, "nested_priv_SQ.dcm": 0xA900,
    "no_meta_group_length.dcm": 0xA900, "priv_SQ.dcm": 0xA900,
    "DICOMDIR": 0xA900, "DICOMDIR-bigEnd": 0xA900, "DICOMDIR-empty.dcm": 0xA900,
    "DICOMDIR-implicit": 0xA900, "DICOMDIR-nopatient": 0xA900, "DICOMDIR-reordered": 0xA900,
}


def _id(path: Path) -> str:
    return str(path.relative_to(TEST_FILES))


def test_pydicom_test_files_are_there() -> None:
    assert len(ALL_FILES) > 100
    assert set(REFUSED) <= {p.name for p in ALL_FILES}


@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_every_pydicom_test_file_is_read_or_refused_with_a_reason(path: Path) -> None:
    if path.name in REFUSED:
        for source in (path, path.read_bytes()):
            with pytest.raises(DicomError) as refused:
                read_instance(source)
            assert refused.value.failure == REFUSED[path.name], refused.value.reason
        return
    from_path, from_bytes = read_instance(path), read_instance(path.read_bytes())
    for instance in (from_path, from_bytes):
        assert "PixelData" not in instance.dataset
        assert not PIXEL_TAGS & set(instance.dataset.keys())
        check_required(instance.dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = pydicom.dcmread(path)
    assert from_path.sop_uid == from_bytes.sop_uid == str(full.SOPInstanceUID)
    assert from_path.study_uid == str(full.StudyInstanceUID)
    assert from_path.series_uid == str(full.SeriesInstanceUID)
    assert from_path.sop_class_uid == str(full.SOPClassUID)
    assert from_path.transfer_syntax == str(full.file_meta.TransferSyntaxUID)
    assert from_path.bulk_tags == from_bytes.bulk_tags
    assert ("7FE00010" in from_path.bulk_tags) == ("PixelData" in full)
    # everything else pydicom sees at the top level is kept, unless dropped as invalid
    dropped = {text.split(" ")[0] for text in from_path.coerced}
    for elem in full:
        key = f"{elem.tag:08X}"
        if key not in from_path.bulk_tags and key not in dropped:
            assert elem.tag in from_path.dataset, key


def test_pixel_data_vr_is_reported_as_in_the_file() -> None:
    assert read_instance(TEST_FILES / "CT_small.dcm").bulk_vrs == {"7FE00010": "OW"}
    # encapsulated (JPEG 2000) pixel data is OB
    assert read_instance(TEST_FILES / "JPEG2000.dcm").bulk_vrs == {"7FE00010": "OB"}
    # implicit VR: Pixel Data is OW (PS3.5 A.1)
    assert read_instance(TEST_FILES / "MR_small_implicit.dcm").bulk_vrs == {"7FE00010": "OW"}


def test_nested_pixel_data_and_large_nested_values_become_bulk_paths() -> None:
    overlay = read_instance(TEST_FILES / "examples_overlay.dcm")
    assert overlay.bulk_tags == ["00880200.0.7FE00010", "7FE00010"]
    assert "PixelData" not in overlay.dataset.IconImageSequence[0]
    assert overlay.dataset.IconImageSequence[0].Rows > 0
    ecg = read_instance(TEST_FILES / "waveform_ecg.dcm", limits=Limits(max_element_bytes=1024))
    assert "54000100.0.54001010" in ecg.bulk_tags
    assert "WaveformData" not in ecg.dataset.WaveformSequence[0]


def test_an_invalid_value_is_dropped_and_reported_not_fatal() -> None:
    instance = read_instance(TEST_FILES / "badVR.dcm")
    assert instance.coerced == ["00280008 NumberOfFrames: invalid value dropped (ValueError)"]
    assert "NumberOfFrames" not in instance.dataset


def test_deflated_file_is_read() -> None:
    instance = read_instance(TEST_FILES / "image_dfl.dcm")
    assert instance.transfer_syntax == DeflatedExplicitVRLittleEndian
    assert instance.bulk_tags == ["7FE00010"]


# -- memory -------------------------------------------------------------------------------

def _read_traced(path: Path) -> tuple[Instance, int]:
    """read_instance(path) and the peak of memory Python allocated meanwhile."""
    tracemalloc.start()
    try:
        instance = read_instance(path)
        return instance, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reading_a_50_mb_file_from_a_path_never_loads_its_pixel_data(tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    ds = dataset(Rows=5120, Columns=5120, BitsAllocated=16, BitsStored=16, HighBit=15,
                 PixelRepresentation=0, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2")
    ds.PixelData = bytes(size)
    path = tmp_path / "big.dcm"
    path.write_bytes(part10(ds))
    del ds
    gc.collect()
    assert path.stat().st_size > size
    instance, peak = _read_traced(path)
    assert instance.bulk_tags == ["7FE00010"]
    assert "PixelData" not in instance.dataset
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte file"


def test_encapsulated_pixel_data_is_skipped_fragment_by_fragment(tmp_path: Path) -> None:
    fragment = bytes(1024 * 1024)
    pixel = (struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
             + struct.pack("<HHL", 0xFFFE, 0xE000, 0)
             + b"".join(struct.pack("<HHL", 0xFFFE, 0xE000, len(fragment)) + fragment
                        for _ in range(20))
             + SEQUENCE_END)
    path = tmp_path / "jpeg.dcm"
    path.write_bytes(part10(dataset(), "1.2.840.10008.1.2.4.50", extra=pixel))
    instance, peak = _read_traced(path)
    assert instance.bulk_vrs == {"7FE00010": "OB"}
    assert peak < 2 * 1024 * 1024


@pytest.mark.parametrize("written", [b"UN", b"SQ"])
def test_pixel_data_written_as_a_sequence_is_not_kept(written: bytes) -> None:
    item = ITEM_START + struct.pack("<HH2sH", 0x0008, 0x0100, b"SH", 4) + b"CODE" + ITEM_END
    pixel = struct.pack("<HH2sHL", 0x7FE0, 0x0010, written, 0, 0xFFFFFFFF) + item + SEQUENCE_END
    instance = read_instance(part10(dataset(), extra=pixel))
    assert "PixelData" not in instance.dataset
    assert not PIXEL_TAGS & set(instance.dataset.keys())


def test_elements_after_the_pixel_data_are_still_read() -> None:
    pixel = implicit(0x7FE00010, bytes(64))
    after = implicit(0xFFFAFFFA, b"") + implicit(0xFFFCFFFC, bytes(100_000))
    instance = read_instance(part10(dataset(), ImplicitVRLittleEndian, extra=pixel + after))
    assert instance.bulk_tags == ["7FE00010", "FFFCFFFC"]
    assert 0xFFFAFFFA in instance.dataset


# -- refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"",
    b"\x89PNG\r\n\x1a\n" + bytes(200),
    json.dumps({"00100010": {"vr": "PN"}}).encode(),
    bytes(128) + b"DICN" + bytes(100),
], ids=["empty", "png", "json", "wrong-prefix"])
def test_a_body_that_is_not_dicom_is_refused(body: bytes) -> None:
    with pytest.raises(DicomError) as refused:
        read_instance(body)
    assert refused.value.failure == 0xC000


def test_a_missing_file_is_refused_not_raised_as_oserror(tmp_path: Path) -> None:
    with pytest.raises(DicomError):
        read_instance(tmp_path / "nothing.dcm")


def test_a_body_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    data = part10(dataset())
    limits = Limits(max_bytes=len(data) - 1)
    with pytest.raises(DicomError) as refused:
        read_instance(data, limits=limits)
    assert refused.value.failure == 0xA700
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    with pytest.raises(DicomError) as refused:
        read_instance(path, limits=limits)
    assert refused.value.failure == 0xA700
    assert DEFAULT_LIMITS.max_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize("cut", [10, 131, 132, 140, 200, -300, -1])
def test_a_truncated_file_is_refused(cut: int) -> None:
    data = (TEST_FILES / "CT_small.dcm").read_bytes()
    with pytest.raises(DicomError) as refused:
        read_instance(data[:cut])
    assert refused.value.failure == 0xC000


def test_an_undefined_length_on_a_plain_element_is_refused() -> None:
    # (0010,4000) Patient Comments, LT, claiming length 0xFFFFFFFF
    bad = implicit(0x00104000, b"no end in sight" + SEQUENCE_END, 0xFFFFFFFF)
    with pytest.raises(DicomError) as refused:
        read_instance(part10(dataset(), ImplicitVRLittleEndian, extra=bad))
    assert refused.value.failure == 0xC000
    assert "undefined length" in refused.value.reason
    explicit = struct.pack("<HH2sHL", 0x0040, 0xA160, b"UT", 0, 0xFFFFFFFF) + b"x" * 8
    with pytest.raises(DicomError, match="undefined length"):
        read_instance(part10(dataset(), extra=explicit))


def test_an_element_longer_than_the_file_is_refused() -> None:
    bad = implicit(0x00104000, b"short", 10_000)
    with pytest.raises(DicomError, match="truncated"):
        read_instance(part10(dataset(), ImplicitVRLittleEndian, extra=bad))


def test_sequences_nested_100_deep_are_refused() -> None:
    data = part10(dataset(), ImplicitVRLittleEndian, extra=nested(100))
    with pytest.raises(DicomError) as refused:
        read_instance(data)
    assert refused.value.failure == 0xA700
    assert "nested" in refused.value.reason


def test_nesting_within_the_limit_is_read() -> None:
    data = part10(dataset(), ImplicitVRLittleEndian, extra=nested(DEFAULT_LIMITS.max_depth))
    instance = read_instance(data)
    item = instance.dataset
    for _ in range(DEFAULT_LIMITS.max_depth):
        item = item.ContentSequence[0]
    assert item.TextValue == "leaf"
    with pytest.raises(DicomError):
        read_instance(part10(dataset(), ImplicitVRLittleEndian,
                             extra=nested(DEFAULT_LIMITS.max_depth + 1)))


def test_too_many_elements_are_refused() -> None:
    items = b"".join(ITEM_START + implicit(0x00080100, b"CODE") + ITEM_END for _ in range(600))
    many = implicit(0x00081032, b"", 0xFFFFFFFF) + items + SEQUENCE_END
    data = part10(dataset(), ImplicitVRLittleEndian, extra=many)
    with pytest.raises(DicomError) as refused:
        read_instance(data, limits=Limits(max_elements=1000))
    assert refused.value.failure == 0xA700
    assert len(read_instance(data).dataset.ProcedureCodeSequence) == 600


def test_a_deflate_bomb_is_refused() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    payload = compressor.compress(bytes(16 * 1024 * 1024)) + compressor.flush()
    head = part10(dataset(), DeflatedExplicitVRLittleEndian)
    meta_end = head.index(b"DICM") + 4
    group_length = struct.unpack("<L", head[meta_end + 8:meta_end + 12])[0]
    start = meta_end + 12 + group_length
    bomb = head[:start] + payload
    assert len(bomb) < 100_000
    with pytest.raises(DicomError) as refused:
        read_instance(bomb, limits=Limits(max_bytes=4 * 1024 * 1024))
    assert refused.value.failure == 0xA700


@pytest.mark.parametrize("uid", ["../../etc/x", "1.2.03", "1.2.", ".1.2", "1..2", "1.2.3a",
                                 "1." + "2" * 70, "1.2/3", "1.2 3"])
def test_an_invalid_sop_instance_uid_is_refused(uid: str) -> None:
    data = part10(dataset(SOPInstanceUID=uid))
    with pytest.raises(DicomError) as refused:
        read_instance(data)
    assert refused.value.failure == 0xA900
    assert "SOPInstanceUID" in refused.value.reason


@pytest.mark.parametrize("keyword", ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                                     "SeriesInstanceUID"])
def test_each_required_uid_must_be_present(keyword: str) -> None:
    ds = dataset()
    delattr(ds, keyword)
    with pytest.raises(DicomError, match=keyword) as refused:
        check_required(ds)
    assert refused.value.failure == 0xA900


def test_a_multi_valued_uid_is_refused() -> None:
    ds = dataset()
    ds.StudyInstanceUID = [STUDY, SOP]
    with pytest.raises(DicomError, match="StudyInstanceUID"):
        check_required(ds)


@pytest.mark.parametrize("transfer_syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_implicit_and_big_endian_files_are_read_alike(transfer_syntax: str) -> None:
    ds = dataset(StudyDescription="x" * 100)
    ds.ReferencedStudySequence = Sequence([Dataset()])
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.3"
    instance = read_instance(part10(ds, transfer_syntax))
    assert instance.dataset.StudyDescription == "x" * 100
    assert instance.dataset.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3"
    assert instance.transfer_syntax == transfer_syntax


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm",
                                  "JPEG2000.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm",
                                  "examples_overlay.dcm", "test-SR.dcm"])
def test_damaged_files_are_read_or_refused_never_crash(name: str) -> None:
    rng = random.Random(name)
    original = (TEST_FILES / name).read_bytes()
    outcomes = set()
    for _ in range(150):
        try:
            read_instance(damaged(original, rng))
            outcomes.add("read")
        except DicomError as refused:
            assert refused.failure in (0xA700, 0xA900, 0xC000)
            outcomes.add("refused")
    assert "refused" in outcomes
