"""Part 10 files read in one pass (``imaging.part10json``) give exactly what the general
reader gives (``imaging.parse._PLAIN_PART10`` off): the same refusals with the same
failure codes and reasons, ``coerced``, bulk paths and VRs, transfer syntax, UIDs, the
same ``to_dicom_json`` bytes with and without an instance URL (before and after the data
set is made) and the same data set when one is asked for -- over every pydicom test
file, synthetic instances, crafted files and damaged copies."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from imaging_files import TEST_FILES, damaged, dataset, part10
from pydicom import config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from imaging import parse
from imaging.errors import DicomError
from imaging.jsonmodel import to_dicom_json
from imaging.parse import Limits, read_instance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

URL = "https://pacs.hospital-a.example/dicomweb/studies/1/series/2/instances/3"
ALL_FILES = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())
BENCH_FILES = Path(__file__).resolve().parents[2] / "benchmarks" / "out" / "dicom" / \
    "data-v2-s20261207-n2000" / "synthetic"
SMALL = Limits(max_element_bytes=300, max_depth=2, max_elements=120)


@contextmanager
def general_reader() -> Iterator[None]:
    """The general reader only (no one-pass read), as before it existed."""
    parse._PLAIN_PART10 = False
    try:
        yield
    finally:
        parse._PLAIN_PART10 = True


def _dataset_state(ds: Dataset) -> tuple:
    """What a data set holds, raw elements as they are (values, offsets, encoding)."""
    elements = []
    for tag, elem in ds.items():
        if type(elem) is RawDataElement:
            elements.append((tag, tuple(elem)))
        else:
            elements.append((tag, type(elem).__name__, elem.VR,
                             orjson.dumps(elem.to_json_dict(None, 1 << 30))))
    return (elements, ds.original_character_set, ds.original_encoding,
            orjson.dumps(ds.to_json_dict(1 << 30)))


def _attempt(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except Exception as error:  # noqa: BLE001 - alike on both sides, whatever it is
        return ("error", type(error).__name__, str(error))


def outcome(data: bytes, limits: Limits = parse.DEFAULT_LIMITS, *,
            dataset_first: bool = False) -> tuple:
    """Everything a caller sees of reading ``data``, or the refusal; plus whether the
    data set had been made by the end of the reading (not compared)."""
    def read() -> parse.Instance:
        return read_instance(data, limits=limits)

    try:
        instance = read()
    except DicomError as refused:
        return ("refused", refused.failure, refused.reason), None
    plain = not instance.dataset_made
    if dataset_first:
        state = _dataset_state(instance.dataset)
    uids = (instance.sop_class_uid, instance.sop_uid, instance.study_uid, instance.series_uid)
    seen = ("read", uids, instance.bulk_tags, instance.bulk_vrs, instance.coerced,
            instance.transfer_syntax,
            _attempt(lambda: orjson.dumps(to_dicom_json(instance, instance_url=URL))),
            _attempt(lambda: orjson.dumps(to_dicom_json(read()))),   # without a URL
            _attempt(lambda: orjson.dumps(to_dicom_json(instance))))  # a second time
    if not dataset_first:
        state = _dataset_state(instance.dataset)
    return (*seen, state, _attempt(lambda: orjson.dumps(to_dicom_json(instance,
                                                                      instance_url=URL)))), \
        plain


def same(data: bytes, limits: Limits = parse.DEFAULT_LIMITS) -> bool | None:
    """Assert that both readers agree on ``data``; whether the one-pass read took it."""
    fast, plain = outcome(data, limits)
    with general_reader():
        slow, made_plain = outcome(data, limits)
    assert made_plain in (None, False)
    assert fast == slow
    return plain


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    from benchmarks.datagen.dicom import generate_instances

    folder = tmp_path_factory.mktemp("synthetic")
    generate_instances(folder, seed=7, instances=40)
    made = sorted(p for p in folder.rglob("*") if p.is_file())
    made += sorted(BENCH_FILES.rglob("*.dcm"))[:400] if BENCH_FILES.exists() else []
    return [p.read_bytes() for p in made]


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.relative_to(TEST_FILES).as_posix())
def test_every_pydicom_test_file_is_read_alike(path: Path) -> None:
    data = path.read_bytes()
    same(data)
    same(data, SMALL)


def test_many_pydicom_test_files_take_the_one_pass_read() -> None:
    taken = sum(bool(same(path.read_bytes())) for path in ALL_FILES)
    assert taken >= 40


def test_synthetic_instances_are_read_alike_and_in_one_pass(synthetic: list[bytes]) -> None:
    taken = sum(bool(same(data)) for data in synthetic)
    assert taken >= 0.9 * len(synthetic)     # not: big endian, ultrasound regions (SQ)
    for data in synthetic[:40]:
        same(data, SMALL)
        same(data, Limits(max_elements=100))


def test_the_data_set_made_first_is_the_general_readers(synthetic: list[bytes]) -> None:
    taken = 0
    for data in synthetic[:10]:
        fast, plain = outcome(data, dataset_first=True)
        with general_reader():
            slow, _ = outcome(data, dataset_first=True)
        assert fast == slow
        taken += bool(plain)
    assert taken


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm",
                                  "JPEG2000.dcm", "SC_rgb_jpeg.dcm", "rtplan.dcm",
                                  "SC_rgb_small_odd.dcm", "MR_small_bigendian.dcm"])
def test_damaged_test_files_are_read_or_refused_alike(name: str) -> None:
    rng = random.Random(name)
    original = (TEST_FILES / name).read_bytes()
    for _ in range(120):
        same(damaged(original, rng))


def test_damaged_synthetic_instances_are_read_or_refused_alike(
        synthetic: list[bytes]) -> None:
    rng = random.Random(5)
    taken = 0
    for original in synthetic[:8]:
        # the meta group and the data set's first elements, where damage changes most
        head = original[:4096]
        for _ in range(100):
            taken += bool(same(damaged(head, rng) + original[4096:]))
        for _ in range(25):
            taken += bool(same(damaged(original, rng)))
    assert taken > 30


def test_truncated_copies_are_refused_alike(synthetic: list[bytes]) -> None:
    original = synthetic[0]
    for cut in [*range(0, 400, 3), *range(400, len(original), 97)]:
        same(original[:cut])


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element."""
    if vr in (b"OB", b"OW", b"UN", b"UT", b"UC", b"UR", b"SQ"):
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _before_charset(data: bytes, element: bytes) -> bytes:
    """``element`` inserted before Specific Character Set."""
    at = data.index(b"\x08\x00\x05\x00CS")
    return data[:at] + element + data[at:]


CRAFTED = {
    "plain": part10(dataset()),
    "implicit VR": part10(dataset(StudyDescription="x"), ImplicitVRLittleEndian),
    "implicit private": part10(dataset(), ImplicitVRLittleEndian,
                               extra=struct.pack("<HHL", 0x0009, 0x0010, 4) + b"ACME"),
    "big endian": part10(dataset(), ExplicitVRBigEndian),
    "UTF-8": part10(dataset(SpecificCharacterSet="ISO_IR 192", PatientName="Дое^Жане")),
    "Latin-1": part10(dataset(SpecificCharacterSet="ISO_IR 100", PatientName="Müller")),
    "ISO 2022": part10(dataset(SpecificCharacterSet=["", "ISO 2022 IR 87"],
                               PatientName=b"\x1b$B%5%H%&\x1b(B")),
    "unknown charset": part10(dataset(SpecificCharacterSet="ISO_IR 999")),
    "empty charset": part10(dataset(SpecificCharacterSet="")),
    "odd IS": part10(dataset(), extra=_explicit(0x00200013, b"IS", b"1A")),
    "odd DS": part10(dataset(), extra=_explicit(0x00281050, b"DS", b"1.0.0 ")),
    "unknown VR": part10(dataset(), extra=_explicit(0x00291010, b"ZZ", b"ab")),
    "UN": part10(dataset(), extra=_explicit(0x00291010, b"UN", b"ab")),
    "binary under the handler's threshold": part10(
        dataset(), extra=_explicit(0x00291010, b"OB", b"\1" * 49_152)),
    "binary over the handler's threshold": part10(
        dataset(), extra=_explicit(0x00291010, b"OB", b"\1" * 49_154)),
    "bulk": part10(dataset(), extra=_explicit(0x00291010, b"OB", b"\1" * 70_000)),
    "pixel data and after it": part10(
        dataset(), extra=_explicit(0x7FE00010, b"OW", b"\0" * 64) +
        _explicit(0xFFFCFFFC, b"OB", b"\0" * 4)),
    "encapsulated": part10(
        dataset(), JPEGBaseline8Bit,
        extra=struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) +
        struct.pack("<HHL", 0xFFFE, 0xE000, 0) + struct.pack("<HHL", 0xFFFE, 0xE000, 4) +
        b"\xff\xd8\xff\xd9" + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)),
    "out of order": part10(dataset(), extra=_explicit(0x00100020, b"LO", b"P2")),
    "twice": part10(dataset(), extra=_explicit(0x00100020, b"LO", b"P2") +
                    _explicit(0x00100020, b"LO", b"P3")),
    "file meta in the data set": part10(dataset(), extra=_explicit(0x00020010, b"UI", b"1.2")),
    "LUT descriptor": part10(dataset(), extra=_explicit(0x00283002, b"US", b"\0\1\0\0\x10\0")),
    "text before the character set": _before_charset(
        part10(dataset(SpecificCharacterSet="ISO_IR 192")),
        _explicit(0x00080001, b"LO", "Ä".encode())),
    "multi-valued UID": part10(dataset(StudyInstanceUID=["1.2", "1.3"])),
    "invalid UID": part10(dataset(SOPInstanceUID="1.02")),
    "UID as LO": part10(dataset()).replace(b"\x08\x00\x18\x00UI", b"\x08\x00\x18\x00LO"),
    "no UID": part10(dataset(SeriesInstanceUID="")),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_files_are_read_alike(name: str) -> None:
    same(CRAFTED[name])
    same(CRAFTED[name], SMALL)


def test_what_the_one_pass_read_takes_and_leaves() -> None:
    taken = {name for name, data in CRAFTED.items() if same(data)}
    assert {"plain", "implicit VR", "UTF-8", "Latin-1", "pixel data and after it",
            "encapsulated", "binary under the handler's threshold", "bulk",
            "file meta in the data set"} <= taken
    assert not taken & {"implicit private", "big endian", "ISO 2022", "odd IS", "UN",
                        "text before the character set", "UID as LO",
                        "binary over the handler's threshold", "out of order", "twice",
                        "multi-valued UID", "invalid UID", "no UID"}


def test_a_non_default_pydicom_configuration_reads_the_general_way(
        synthetic: list[bytes]) -> None:
    config.use_DS_decimal = True
    try:
        assert not same(synthetic[0])
    finally:
        config.use_DS_decimal = False
