"""DICOM JSON straight from raw elements: always what pydicom's own ``to_json_dict`` makes
of the same data set, or left to pydicom."""

from __future__ import annotations

import copy
import io
import json
import random
import warnings
from pathlib import Path

import pydicom
import pytest
from imaging_files import SOP, STUDY, TEST_FILES, dataset, part10, readable
from pydicom import config
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from imaging.errors import DicomError
from imaging.jsonmodel import to_dicom_json
from imaging.jsonrep import (
    dataset_json,
    fast_path_applies,
    raw_json,
    text_encodings,
)
from imaging.parse import read_instance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

READABLE = readable()
URL = "https://pacs.hospital-a.example/dicomweb/studies/1/series/2/instances/3"

#: One public tag per VR the fast path knows (and a few it leaves to pydicom).
TAGS = {"AE": 0x00080054, "AS": 0x00101010, "CS": 0x00080060, "DA": 0x00080020,
        "DT": 0x0008002A, "TM": 0x00080030, "LO": 0x00100020, "SH": 0x00080050,
        "UC": 0x00080120, "LT": 0x00104000, "ST": 0x00080081, "UT": 0x0040A160,
        "PN": 0x00100010, "UI": 0x0020000D, "UR": 0x00081190, "US": 0x00280010,
        "SS": 0x00189219, "UL": 0x00081161, "SL": 0x00189330, "FL": 0x00189327,
        "FD": 0x00189087, "IS": 0x00200013, "DS": 0x00280030, "OB": 0x00420011,
        "OW": 0x00283006, "SV": 0x0072007E, "UV": 0x0072007F, "AT": 0x00209165,
        "LUT": 0x00283002}
BINARY_NUMBERS = {"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "OB", "OW", "AT", "LUT"}
#: Bytes that make values interesting: separators, padding, signs, exponents, non-ASCII
#: in UTF-8 and GB 18030, an ISO 2022 escape.
ALPHABET = b"0123456789 \\=^.e+-E\x00aZ\xc3\xa9\xe4\xb8\xad\xd6\xd0\x1b$B\t_n"
CHARSETS = [None, b"ISO_IR 100", b"ISO_IR 192", b"GB18030", b"ISO_IR 192\\GB18030",
            b"ISO 2022 IR 58", b"ISO_IR 13", b"ISO 2022 IR 6\\ISO 2022 IR 87", b"NOT A CHARSET"]


def _raw_dataset(elements: dict, charset: bytes | None, implicit: bool,
                 little: bool) -> Dataset:
    ds = Dataset(dict(elements))
    encoding = convert_encodings(charset.decode().split("\\")) if charset else "iso8859"
    ds.set_original_encoding(implicit, little, encoding)
    return ds


def _pydicom_json(ds: Dataset) -> str:
    try:
        return json.dumps(ds.to_json_dict(1024, None), sort_keys=True, default=str)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return type(exc).__name__


def _our_json(ds: Dataset) -> str:
    try:
        return json.dumps(dataset_json(ds), sort_keys=True, default=str)
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__


def test_random_raw_values_give_what_pydicom_gives() -> None:
    rng = random.Random(20261207)
    fast = 0
    for _ in range(4000):
        vr = rng.choice(list(TAGS))
        if vr in BINARY_NUMBERS and rng.random() < 0.7:
            value = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 3, 4, 8, 16])))
        else:
            value = bytes(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
        little, implicit = rng.random() < 0.8, rng.random() < 0.3
        charset = rng.choice(CHARSETS)
        elements = {}
        if charset:
            tag = BaseTag(0x00080005)
            elements[tag] = RawDataElement(tag, None if implicit else "CS", len(charset),
                                           charset, 0, implicit, little)
        tag = BaseTag(TAGS[vr])
        written = "US" if vr == "LUT" else vr      # LUT Descriptor: US, first value rewritten
        elements[tag] = RawDataElement(tag, None if implicit else written, len(value), value,
                                       0, implicit, little)
        ours = _raw_dataset(elements, charset, implicit, little)
        theirs = _raw_dataset(elements, charset, implicit, little)
        fast += raw_json(elements[tag], text_encodings(ours)) is not None
        assert _our_json(ours) == _pydicom_json(theirs), (vr, value, charset, implicit, little)
    assert fast > 2000                   # most values take the fast path


@pytest.mark.parametrize("path", READABLE, ids=lambda p: str(p.relative_to(TEST_FILES)))
def test_every_readable_test_file_gives_what_pydicom_gives(path: Path) -> None:
    instance = read_instance(path)
    theirs = copy.deepcopy(instance.dataset)
    first = to_dicom_json(instance, instance_url=URL)    # with the JSON read_instance made
    assert instance.known_json is None
    assert to_dicom_json(instance, instance_url=URL) == first    # made afresh
    assert _our_json(instance.dataset) == _pydicom_json(theirs)


def test_an_attribute_changed_after_reading_is_what_the_json_says() -> None:
    instance = read_instance(part10(dataset(PatientName="Doe^Jane", StudyDescription="Head")))
    instance.dataset.PatientName = "Roe^Richard"
    del instance.dataset.StudyDescription
    model = to_dicom_json(instance)
    assert model["00100010"]["Value"] == [{"Alphabetic": "Roe^Richard"}]
    assert "00081030" not in model
    assert model["00100020"]["Value"] == ["P1"]


def test_a_multi_valued_uid_in_a_file_is_refused() -> None:
    ds = dataset()
    ds.StudyInstanceUID = [STUDY, SOP]
    with pytest.raises(DicomError, match="StudyInstanceUID") as refused:
        read_instance(part10(ds))
    assert refused.value.failure == 0xA900
    assert read_instance(part10(dataset())).study_uid == STUDY


@pytest.mark.parametrize("path", READABLE, ids=lambda p: str(p.relative_to(TEST_FILES)))
def test_what_is_kept_is_what_a_full_read_decodes(path: Path) -> None:
    instance = read_instance(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = pydicom.dcmread(path)
    for elem in instance.dataset.iterall():  # pydicom decodes every value without error
        assert elem.VR
    nested_bulk = {p.split(".")[0] for p in instance.bulk_tags if "." in p}
    for tag, _ in list(instance.dataset.items()):
        if f"{tag:08X}" in nested_bulk:
            continue
        ours = instance.dataset[tag].to_json_dict(None, 1 << 62)
        assert ours == full[tag].to_json_dict(None, 1 << 62), f"{tag:08X}"


@pytest.mark.parametrize(("charset", "name"), [
    ("ISO_IR 192", "Wang^Xiuying=王^秀英"), ("GB18030", "王^秀英"),
    ("GB18030", "Li^Min=李^敏=li^min"),
    ("ISO_IR 100", "Müller^Jürgen"), ("", "Doe^Jane\\Roe^Richard"), ("ISO_IR 192", "Doe^Jane=="),
])
def test_person_names_in_their_character_set(charset: str, name: str) -> None:
    ds = dataset(PatientName=name, StudyDescription="胸部CT平扫" if charset != "ISO_IR 100" and
                 charset else "Thorax", OperatorsName=[name, name])
    if charset:
        ds.SpecificCharacterSet = charset
    data = part10(ds)
    instance = read_instance(data)
    raw = instance.dataset.get_item(0x00100010)
    assert isinstance(raw, RawDataElement)
    assert raw_json(raw, text_encodings(instance.dataset)) is not None
    assert _our_json(instance.dataset) == _pydicom_json(copy.deepcopy(instance.dataset))
    full = pydicom.dcmread(io.BytesIO(data))
    assert instance.dataset.PatientName == full.PatientName
    assert instance.dataset.OperatorsName == full.OperatorsName


def test_a_changed_pydicom_configuration_goes_through_pydicom() -> None:
    instance = read_instance(TEST_FILES / "CT_small.dcm")
    assert fast_path_applies()
    before = config.datetime_conversion
    config.datetime_conversion = True
    try:
        assert not fast_path_applies()
    finally:
        config.datetime_conversion = before
    assert fast_path_applies()
    assert _our_json(instance.dataset) == _pydicom_json(copy.deepcopy(instance.dataset))
