"""The DICOM generator writes readable, distinct, deterministic Part 10 instances."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pydicom
import pytest

from benchmarks.datagen.dicom import generate_instances, readable_test_files


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> list:
    return generate_instances(tmp_path_factory.mktemp("dicom"), seed=7, instances=400)


def test_writes_the_number_of_instances_asked_for_as_readable_files(made: list) -> None:
    assert len(made) == 400
    for inst in made:
        ds = pydicom.dcmread(inst.path)  # a Part 10 file: preamble, DICM, File Meta
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == inst.sop_uid
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == inst.sop_class
        assert ds.StudyInstanceUID == inst.study_uid
        assert ds.SeriesInstanceUID == inst.series_uid
        assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex) == (
            inst.patient_id, inst.patient_name, inst.birth_date, inst.sex)
        assert (ds.Modality, ds.StudyDate, ds.InstanceNumber) == (
            inst.modality, inst.study_date, inst.instance_number)
        assert str(ds.file_meta.TransferSyntaxUID) == inst.transfer_syntax


def test_uids_are_unique_and_valid(made: list) -> None:
    sops = [i.sop_uid for i in made]
    assert len(set(sops)) == len(sops)
    series_of = {i.series_uid: i.study_uid for i in made}
    studies = {i.study_uid for i in made}
    assert not studies & set(series_of) and not studies & set(sops)
    assert all(pydicom.uid.UID(u).is_valid for u in [*sops, *series_of, *studies])
    # a series belongs to one study, and there are several of each
    assert len({(i.series_uid, i.study_uid) for i in made}) == len(series_of)
    assert len(studies) >= 3
    assert max(Counter(series_of.values()).values()) >= 2  # a study with several series
    assert max(Counter(i.series_uid for i in made).values()) >= 2


def test_patients_names_modalities_and_dates_vary(tmp_path: Path) -> None:
    made = generate_instances(tmp_path, seed=3, instances=800)
    names = {i.patient_name for i in made}
    assert any("=" in n for n in names)  # alphabetic=ideographic
    assert any(n.isascii() and "=" not in n for n in names)  # Latin only
    assert any(not n.isascii() and "=" not in n for n in names)  # Chinese only
    assert len({i.patient_id for i in made}) >= 10
    assert {i.sex for i in made} >= {"M", "F"}
    assert {i.modality for i in made} >= {"CT", "MR", "CR", "DX", "US"}
    assert len({i.study_date for i in made}) >= 10
    assert len({i.transfer_syntax for i in made}) >= 3
    # a GB 18030 file decodes to the same name
    gb = [i for i in made if pydicom.dcmread(i.path, stop_before_pixels=True)
          .SpecificCharacterSet == "GB18030"]
    assert gb and str(pydicom.dcmread(gb[0].path).PatientName) == gb[0].patient_name


def test_same_seed_same_files(tmp_path: Path) -> None:
    a = generate_instances(tmp_path / "a", seed=5, instances=60)
    b = generate_instances(tmp_path / "b", seed=5, instances=60)
    c = generate_instances(tmp_path / "c", seed=6, instances=60)
    assert [x.path.read_bytes() for x in a] == [x.path.read_bytes() for x in b]
    assert not {x.sop_uid for x in a} & {x.sop_uid for x in c}


def test_readable_test_files_are_distinct_instances() -> None:
    files = readable_test_files()
    assert len(files) > 50
    sops = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    assert len(set(sops)) == len(sops)
