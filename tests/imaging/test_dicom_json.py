"""The DICOM JSON model: bulk data as BulkDataURIs at the source, metadata-only
instances from JSON, and the round trip between them."""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import pytest
from imaging_files import SERIES, SOP, STUDY, TEST_FILES, dataset, part10, readable

from imaging.errors import DicomError
from imaging.jsonmodel import tag_of, to_dicom_json, values
from imaging.jsonparse import instance_from_json
from imaging.parse import Instance, Limits, read_instance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

URL = "https://pacs.hospital-a.example/dicomweb/studies/1/series/2/instances/3"
READABLE = readable()


def minimal_json(**extra: dict) -> dict:
    return {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00080018": {"vr": "UI", "Value": [SOP]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "0020000D": {"vr": "UI", "Value": [STUDY]},
        "0020000E": {"vr": "UI", "Value": [SERIES]},
        **extra,
    }


def test_bulk_data_becomes_a_bulk_data_uri_at_the_source() -> None:
    instance = read_instance(TEST_FILES / "CT_small.dcm")
    model = to_dicom_json(instance, instance_url=URL)
    assert model["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{URL}/bulkdata/7FE00010"}
    assert model["00081190"] == {"vr": "UR", "Value": [URL]}
    assert list(model) == sorted(model)
    assert values(model, "00100010") == ["CompressedSamples^CT1"]


def test_without_an_instance_url_bulk_data_is_left_out() -> None:
    model = to_dicom_json(read_instance(TEST_FILES / "CT_small.dcm"))
    assert "7FE00010" not in model
    assert "00081190" not in model
    assert model["0020000D"]["Value"] == ["1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"]


def test_nested_bulk_data_gets_a_uri_in_its_item() -> None:
    model = to_dicom_json(read_instance(TEST_FILES / "examples_overlay.dcm"), instance_url=URL)
    icon = model["00880200"]["Value"][0]
    assert icon["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{URL}/bulkdata/00880200.0.7FE00010"}
    assert "00280010" in icon


def test_compressed_pixel_data_is_ob() -> None:
    model = to_dicom_json(read_instance(TEST_FILES / "JPEG2000.dcm"), instance_url=URL)
    assert model["7FE00010"]["vr"] == "OB"


def test_dicom_json_round_trip_keeps_bulk_data_uris() -> None:
    first = to_dicom_json(read_instance(TEST_FILES / "examples_overlay.dcm"), instance_url=URL)
    again = instance_from_json(copy.deepcopy(first))
    assert again.bulk_uris["7FE00010"] == f"{URL}/bulkdata/7FE00010"
    assert to_dicom_json(again) == first
    # the source's URIs win over a new instance URL
    moved = to_dicom_json(again, instance_url="https://elsewhere/x")
    assert moved["7FE00010"]["BulkDataURI"] == f"{URL}/bulkdata/7FE00010"
    assert moved["00081190"]["Value"] == ["https://elsewhere/x"]


@pytest.mark.parametrize("path", READABLE, ids=lambda p: str(p.relative_to(TEST_FILES)))
def test_every_readable_test_file_survives_the_json_round_trip(path: Path) -> None:
    first = to_dicom_json(read_instance(path), instance_url=URL)
    assert to_dicom_json(instance_from_json(copy.deepcopy(first))) == first


def test_instance_from_json_reads_metadata() -> None:
    instance = instance_from_json(minimal_json())
    assert (instance.study_uid, instance.series_uid, instance.sop_uid) == (STUDY, SERIES, SOP)
    assert instance.transfer_syntax is None
    assert str(instance.dataset.PatientName) == "Doe^Jane"
    assert instance.coerced == []


def test_a_large_inline_binary_is_dropped_and_reported() -> None:
    big = base64.b64encode(bytes(100_000)).decode()
    small = base64.b64encode(b"ok").decode()
    instance = instance_from_json(minimal_json(**{
        "00091010": {"vr": "OB", "InlineBinary": big},
        "00091011": {"vr": "OB", "InlineBinary": small},
    }))
    assert len(instance.coerced) == 1 and instance.coerced[0].startswith("00091010")
    assert 0x00091010 not in instance.dataset
    assert instance.dataset[0x00091011].value == b"ok"


def test_inline_pixel_data_is_not_kept() -> None:
    instance = instance_from_json(minimal_json(**{
        "7FE00010": {"vr": "OW", "InlineBinary": base64.b64encode(bytes(64)).decode()}}))
    assert "PixelData" not in instance.dataset
    assert instance.coerced and instance.coerced[0].startswith("7FE00010")


@pytest.mark.parametrize("bad", [
    [],
    {"0010": {"vr": "PN"}},
    {"00100010": "Doe"},
    {"00100010": {"Value": ["x"]}},
    {"00091010": {"vr": "OB", "InlineBinary": "not base64!"}},
    {"00100020": {"vr": "LO", "Value": "not a list"}},
    {"00081032": {"vr": "SQ", "Value": {"not": "a list"}}},
], ids=["list", "short-tag", "no-object", "no-vr", "bad-base64", "value-not-list", "bad-sq"])
def test_malformed_dicom_json_is_refused(bad: object) -> None:
    obj = bad if isinstance(bad, list) else minimal_json(**bad)
    with pytest.raises(DicomError) as refused:
        instance_from_json(obj)  # type: ignore[arg-type]
    assert refused.value.failure == 0xC000


def test_dicom_json_without_required_uids_is_refused() -> None:
    obj = minimal_json()
    del obj["0020000E"]
    with pytest.raises(DicomError) as refused:
        instance_from_json(obj)
    assert refused.value.failure == 0xA900
    obj = minimal_json(**{"00080018": {"vr": "UI", "Value": ["../../etc/x"]}})
    with pytest.raises(DicomError) as refused:
        instance_from_json(obj)
    assert refused.value.failure == 0xA900


def test_deep_or_huge_dicom_json_is_refused() -> None:
    item: dict = {"0040A160": {"vr": "UT", "Value": ["leaf"]}}
    for _ in range(100):
        item = {"0040A730": {"vr": "SQ", "Value": [item]}}
    with pytest.raises(DicomError) as refused:
        instance_from_json(minimal_json(**item))
    assert refused.value.failure == 0xA700
    many = {"00081032": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["C"]}}
                                                for _ in range(600)]}}
    with pytest.raises(DicomError) as refused:
        instance_from_json(minimal_json(**many), limits=Limits(max_elements=1000))
    assert refused.value.failure == 0xA700
    assert len(instance_from_json(minimal_json(**many)).dataset.ProcedureCodeSequence) == 600


def test_instance_built_by_hand_gets_uris_for_large_binary_values() -> None:
    ds = dataset()
    ds.add_new(0x00091010, "OB", bytes(100_000))
    ds.add_new(0x00091011, "OB", bytes(2048))
    model = to_dicom_json(Instance(ds), instance_url=URL)
    assert model["00091010"] == {"vr": "OB", "BulkDataURI": f"{URL}/bulkdata/00091010"}
    assert base64.b64decode(model["00091011"]["InlineBinary"]) == bytes(2048)
    # read from a file, the same value never reaches the data set
    read = read_instance(part10(ds))
    assert read.bulk_tags == ["00091010"]
    assert to_dicom_json(read, instance_url=URL)["00091010"]["BulkDataURI"].endswith("00091010")


@pytest.mark.parametrize(("name", "tag"), [
    ("PatientName", "00100010"), ("00100010", "00100010"), ("0010,0010", "00100010"),
    ("(0010,0010)", "00100010"), ("0020000d", "0020000D"), ("StudyInstanceUID", "0020000D"),
])
def test_tag_of_accepts_keywords_and_tags(name: str, tag: str) -> None:
    assert tag_of(name) == tag


def test_tag_of_refuses_unknown_names() -> None:
    with pytest.raises(KeyError):
        tag_of("PatientNmae")
    for bad in ("", "0010", "../etc", "0010,00100"):
        with pytest.raises(ValueError):
            tag_of(bad)


def test_values_reads_the_value_list() -> None:
    model = minimal_json(**{"00080060": {"vr": "CS"}})
    assert values(model, "00100010") == ["Doe^Jane"]
    assert values(model, "Modality") == []
    assert values(model, "00100020") == []
    assert values(model, "0020000D") == [STUDY]
