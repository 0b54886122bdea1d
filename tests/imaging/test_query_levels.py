"""Which attributes belong to the study, series and instance records."""

from __future__ import annotations

import pytest
from imaging_files import TEST_FILES

from imaging.jsonmodel import to_dicom_json
from imaging.levels import (
    INSTANCE_TAGS,
    SERIES_TAGS,
    STUDY_TAGS,
    level_of,
    level_view,
)
from imaging.parse import read_instance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

URL = "https://pacs.example/dicomweb/studies/1/series/2/instances/3"


@pytest.fixture(scope="module")
def ct() -> dict:
    return to_dicom_json(read_instance(TEST_FILES / "CT_small.dcm"), instance_url=URL)


def test_study_view_has_patient_and_study_attributes_only(ct: dict) -> None:
    view = level_view(ct, "study")
    assert {"00100010", "00100020", "0020000D", "00080020", "00080030"} <= set(view)
    assert "00080060" not in view and "0020000E" not in view and "00080018" not in view
    assert set(view) <= STUDY_TAGS


def test_series_view_adds_series_attributes(ct: dict) -> None:
    view = level_view(ct, "series")
    assert {"00100010", "0020000D", "0020000E", "00080060", "00200011"} <= set(view)
    assert "00080018" not in view and "00280010" not in view
    assert set(view) <= STUDY_TAGS | SERIES_TAGS


def test_instance_view_is_the_whole_instance(ct: dict) -> None:
    assert level_view(ct, "instance") == ct


def test_the_instance_retrieve_url_is_not_the_study_or_series_url(ct: dict) -> None:
    assert "00081190" in ct
    assert "00081190" not in level_view(ct, "study")
    assert "00081190" not in level_view(ct, "series")


def test_the_levels_do_not_overlap_except_shared_attributes() -> None:
    shared = {"00080005", "00080201", "00081190", "00080054", "00080056"}
    assert shared >= STUDY_TAGS & SERIES_TAGS
    assert shared >= STUDY_TAGS & INSTANCE_TAGS
    assert shared >= SERIES_TAGS & INSTANCE_TAGS


def test_computed_attributes_have_their_level() -> None:
    for tag in ("00080061", "00080062", "00201206", "00201208"):
        assert level_of(tag) == "study"
    assert level_of("00201209") == "series"
    assert level_of("00180050") == "instance"      # anything unlisted: instance
    assert level_of("00080005") is None


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError):
        level_view({}, "patient")  # type: ignore[arg-type]
