"""DICOM JSON of a study as a FHIR R4 ImagingStudy that validates."""

from __future__ import annotations

from pathlib import Path

import pytest
from fhir.resources.R4B.imagingstudy import ImagingStudy
from imaging_files import TEST_FILES, readable

from imaging.fhirmap import INSTANCE_TAGS, fhir_datetime, imaging_study
from imaging.jsonmodel import to_dicom_json
from imaging.levels import level_view
from imaging.parse import read_instance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

WADO = "https://pacs.hospital-a.example/dicomweb"

READABLE = readable()


def _study_of(*instances: dict) -> dict:
    by_series: dict[str, tuple[dict, list[dict]]] = {}
    for ds in instances:
        uid = ds["0020000E"]["Value"][0]
        by_series.setdefault(uid, (level_view(ds, "series"), []))[1].append(
            level_view(ds, "instance"))
    return imaging_study(level_view(instances[0], "study"), list(by_series.values()),
                         subject="Patient/p1", endpoint=WADO)


@pytest.mark.parametrize("path", READABLE, ids=lambda p: str(p.relative_to(TEST_FILES)))
def test_every_readable_test_file_maps_to_a_valid_imaging_study(path: Path) -> None:
    ds = to_dicom_json(read_instance(path), instance_url=f"{WADO}/studies/x")
    resource = _study_of(ds)
    ImagingStudy.model_validate(resource)
    without_endpoint = imaging_study(level_view(ds, "study"), [], subject="Patient/p1",
                                     endpoint=None)
    ImagingStudy.model_validate(without_endpoint)
    assert "contained" not in without_endpoint and "endpoint" not in without_endpoint


def test_the_instance_attributes_it_reads_make_the_same_imaging_study() -> None:
    """INSTANCE_TAGS is all imaging_study reads of an instance: the study writer keeps
    just those of a study's instances."""
    made = [to_dicom_json(read_instance(p), instance_url=f"{WADO}/studies/x") for p in READABLE]
    for ds in made:
        trimmed = {tag: ds[tag] for tag in INSTANCE_TAGS if tag in ds}
        whole = imaging_study(level_view(ds, "study"), [(level_view(ds, "series"),
                                                         [level_view(ds, "instance")])],
                              subject="Patient/p1", endpoint=WADO)
        kept = imaging_study(level_view(ds, "study"), [(level_view(ds, "series"), [trimmed])],
                             subject="Patient/p1", endpoint=WADO)
        assert kept == whole
    assert any("title" in s["instance"][0] for ds in made
               for s in _study_of(ds).get("series", []) if s.get("instance"))


def test_the_mapping_of_a_ct_study() -> None:
    ds = to_dicom_json(read_instance(TEST_FILES / "CT_small.dcm"))
    study = _study_of(ds)
    assert study["identifier"][0] == {
        "system": "urn:dicom:uid",
        "value": "urn:oid:1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"}
    assert study["status"] == "available"
    assert study["subject"] == {"reference": "Patient/p1"}
    # CT_small.dcm has Timezone Offset From UTC -0500
    assert study["started"] == "2004-01-19T07:27:30-05:00"
    assert study["modality"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                  "code": "CT"}]
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (1, 1)
    assert study["contained"] == [{
        "resourceType": "Endpoint", "id": "source", "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs"},
        "payloadType": [{"text": "DICOM"}], "address": WADO}]
    assert study["endpoint"] == [{"reference": "#source"}]
    (series,) = study["series"]
    assert series["uid"] == ds["0020000E"]["Value"][0]
    assert series["endpoint"] == [{"reference": "#source"}]
    assert series["modality"]["code"] == "CT"
    (instance,) = series["instance"]
    assert instance["uid"] == ds["00080018"]["Value"][0]
    assert instance["sopClass"] == {"system": "urn:ietf:rfc:3986",
                                    "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}


def test_accession_number_body_site_and_laterality() -> None:
    ds = to_dicom_json(read_instance(TEST_FILES / "CT_small.dcm"))
    ds["00080050"] = {"vr": "SH", "Value": ["A-1"]}
    ds["00180015"] = {"vr": "CS", "Value": ["CHEST"]}
    ds["00200060"] = {"vr": "CS", "Value": ["L"]}
    series_ds = {**ds, "00180015": {"vr": "CS", "Value": ["TOE"]}, "0020000E": {
        "vr": "UI", "Value": ["1.2.3.4"]}}
    study = _study_of(ds, series_ds)
    ImagingStudy.model_validate(study)
    assert study["identifier"][1] == {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                             "code": "ACSN"}]}, "value": "A-1"}
    chest, toe = study["series"]
    assert chest["bodySite"]["system"] == "http://snomed.info/sct"
    assert chest["laterality"]["code"] == "7771000"
    assert toe["bodySite"] == {"display": "TOE"}
    assert study["numberOfSeries"] == 2


def test_a_structured_report_instance_has_a_title() -> None:
    ds = to_dicom_json(read_instance(TEST_FILES / "test-SR.dcm"))
    study = _study_of(ds)
    ImagingStudy.model_validate(study)
    assert study["series"][0]["instance"][0]["title"]


def test_counts_come_from_the_study_record_when_no_series_are_given() -> None:
    ds = to_dicom_json(read_instance(TEST_FILES / "MR_small.dcm"))
    record = {**level_view(ds, "study"), "00201206": {"vr": "IS", "Value": [3]},
              "00201208": {"vr": "IS", "Value": [40]},
              "00080061": {"vr": "CS", "Value": ["MR", "SR"]}}
    study = imaging_study(record, [], subject="Patient/p1", endpoint=None)
    ImagingStudy.model_validate(study)
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (3, 40)
    assert [m["code"] for m in study["modality"]] == ["MR", "SR"]


@pytest.mark.parametrize(("args", "expected"), [
    (("20240315",), "2024-03-15"),
    (("20240315", "1430"), "2024-03-15"),                   # no zone: date only
    (("20240315", "1430", "+0800"), "2024-03-15T14:30:00+08:00"),
    (("20240315", "143015.25", "-0500"), "2024-03-15T14:30:15.25-05:00"),
    (("20241315",), None), (("2024",), None), ((None,), None),
    (("20240315", "2530", "+0800"), "2024-03-15"),
])
def test_fhir_datetime(args: tuple, expected: str | None) -> None:
    assert fhir_datetime(*args) == expected


def test_a_default_time_zone_gives_the_time() -> None:
    ds = to_dicom_json(read_instance(TEST_FILES / "MR_small.dcm"))
    record = {k: v for k, v in level_view(ds, "study").items() if k != "00080201"}
    assert imaging_study(record, [], subject="Patient/p1", endpoint=None)["started"] == \
        "2004-08-26"
    study = imaging_study(record, [], subject="Patient/p1", endpoint=None, default_tz="+08:00")
    ImagingStudy.model_validate(study)
    assert study["started"] == "2004-08-26T18:50:59+08:00"


def test_a_study_without_its_uid_is_refused() -> None:
    with pytest.raises(ValueError):
        imaging_study({}, [], subject="Patient/p1", endpoint=None)
