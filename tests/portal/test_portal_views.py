"""How the portal sums up a record in one line."""

from __future__ import annotations

from consent.portal.views import describe, record_date


def test_an_imaging_study_reads_as_its_description_and_modalities() -> None:
    study = {"resourceType": "ImagingStudy", "status": "available", "started": "2025-03-04",
             "description": "CT chest",
             "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                           "code": "CT"},
                          {"system": "http://dicom.nema.org/resources/ontology/DCM",
                           "code": "SR"}]}
    assert describe(study) == "CT chest · CT/SR"
    assert record_date(study) == "2025-03-04"
    assert describe({"resourceType": "ImagingStudy", "status": "available"}) == ""
