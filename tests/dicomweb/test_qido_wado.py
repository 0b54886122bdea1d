"""QIDO-RS and WADO-RS metadata over what hospitals stored."""

from __future__ import annotations

import httpx
import pytest
from dicomkit import DICOMWEB, instance, stow, value
from pydicom.uid import generate_uid


@pytest.fixture
async def region(client: httpx.AsyncClient) -> dict[str, list]:
    """Two patients: one with a CT study of two series, one with an MR study."""
    ct, mr = generate_uid(), generate_uid()
    s1, s2 = generate_uid(), generate_uid()
    ct_instances = [instance(study=ct, series=s1, number=1),
                    instance(study=ct, series=s1, number=2),
                    instance(study=ct, series=s2, number=1)]
    mr_instances = [instance(study=mr, patient_id="MRN-2", name="Zhang^San", modality="MR",
                             study_date="20230105", accession="ACC-2", sex="M")]
    assert (await stow(client, ct_instances)).status_code == 200
    assert (await stow(client, mr_instances)).status_code == 200
    return {"ct": ct_instances, "mr": mr_instances}


async def _get(client: httpx.AsyncClient, path: str, **params: str) -> list[dict]:
    r = await client.get(DICOMWEB + path, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    return r.json()


async def test_study_level_queries_match_and_return_the_required_attributes(
        client: httpx.AsyncClient, region: dict) -> None:
    ct = region["ct"][0]
    every = await _get(client, "/studies")
    assert len(every) == 2
    [found] = await _get(client, "/studies", PatientID="MRN-1")
    assert value(found, "0020000D") == ct.StudyInstanceUID
    for tag in ("00080020", "00080050", "00100010", "00100020", "00201206", "00201208",
                "00081190"):
        assert tag in found, tag
    assert value(found, "00201208") == 3 and value(found, "00201206") == 2
    assert value(found, "00081190") == f"http://testserver/dicomweb/studies/{ct.StudyInstanceUID}"
    by_date = {"20240101-": ["MRN-1"], "-20231231": ["MRN-2"], "20230105": ["MRN-2"],
               "20230101-20231231": ["MRN-2"], "-20221231": [], "20230106-20240229": []}
    for dates, expected in by_date.items():
        found_ids = [value(s, "00100020") for s in await _get(client, "/studies",
                                                               StudyDate=dates)]
        assert found_ids == expected, dates
    assert [value(s, "00100020") for s in await _get(client, "/studies", PatientName="zhang*")] \
        == ["MRN-2"]
    assert len(await _get(client, "/studies", PatientName="Wang^Xiu?ing")) == 1
    assert len(await _get(client, "/studies", ModalitiesInStudy="MR")) == 1
    both = f"{ct.StudyInstanceUID},{region['mr'][0].StudyInstanceUID}"
    assert len(await _get(client, "/studies", StudyInstanceUID=both)) == 2


async def test_series_and_instance_levels_and_relative_queries(
        client: httpx.AsyncClient, region: dict) -> None:
    ct = region["ct"]
    study = ct[0].StudyInstanceUID
    series = await _get(client, f"/studies/{study}/series")
    assert {value(s, "0020000E") for s in series} == {ct[0].SeriesInstanceUID,
                                                     ct[2].SeriesInstanceUID}
    assert all(value(s, "00080060") == "CT" for s in series)
    counts = {value(s, "0020000E"): value(s, "00201209") for s in series}
    assert counts[ct[0].SeriesInstanceUID] == 2
    [mr_series] = await _get(client, "/series", Modality="MR")
    # a query not scoped to one study returns the study's attributes too
    assert value(mr_series, "00201208") == 1 and value(mr_series, "00201206") == 1
    assert mr_series["00080061"]["Value"] == ["MR"]
    [inst] = await _get(client, "/instances", SOPInstanceUID=ct[0].SOPInstanceUID)
    assert value(inst, "00201209") == 2 and value(inst, "00201208") == 3
    # Part 10 uploads leave no source for the pixels: not retrievable
    assert value(inst, "00080056") == "UNAVAILABLE"
    insts = await _get(client, f"/studies/{study}/series/{ct[0].SeriesInstanceUID}/instances")
    assert {value(i, "00080018") for i in insts} == {ct[0].SOPInstanceUID, ct[1].SOPInstanceUID}
    assert all("00080016" in i for i in insts)
    assert len(await _get(client, f"/studies/{study}/instances")) == 3
    assert len(await _get(client, "/instances", SOPInstanceUID=ct[2].SOPInstanceUID)) == 1


async def test_paging_includefield_and_fuzzy_matching(client: httpx.AsyncClient,
                                                      region: dict) -> None:
    first = await _get(client, "/instances", limit="2")
    rest = await _get(client, "/instances", limit="2", offset="2")
    assert len(first) == 2 and len(rest) == 2
    assert not {value(i, "00080018") for i in first} & {value(i, "00080018") for i in rest}
    [study] = await _get(client, "/studies", PatientID="MRN-2", includefield="StudyDescription")
    assert value(study, "00081030") == "Chest"
    r = await client.get(f"{DICOMWEB}/studies", params={"PatientName": "zang", "fuzzymatching":
                                                        "true"})
    assert r.status_code == 200 and "fuzzy" in r.headers.get("warning", "").lower()


async def test_bad_queries_get_400_and_wrong_accept_406(client: httpx.AsyncClient) -> None:
    for params in ({"NoSuchKeyword": "x"}, {"limit": "-1"}, {"StudyDate": "2024-03"}):
        r = await client.get(f"{DICOMWEB}/studies", params=params)
        assert r.status_code == 400, params
    r = await client.get(f"{DICOMWEB}/studies", headers={"Accept": "application/dicom+xml"})
    assert r.status_code == 406


async def test_metadata_of_a_study_series_and_instance(client: httpx.AsyncClient,
                                                       region: dict) -> None:
    ct = region["ct"]
    study, series = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID
    assert len(await _get(client, f"/studies/{study}/metadata")) == 3
    assert len(await _get(client, f"/studies/{study}/series/{series}/metadata")) == 2
    [one] = await _get(client, f"/studies/{study}/series/{series}/instances/"
                               f"{ct[1].SOPInstanceUID}/metadata")
    assert value(one, "00200013") == 2 and value(one, "00100020") == "MRN-1"
    r = await client.get(f"{DICOMWEB}/studies/{generate_uid()}/metadata")
    assert r.status_code == 404


async def test_queries_need_a_token_and_a_read_scope(make_client, region: dict) -> None:
    async with make_client("") as anonymous:
        assert (await anonymous.get(f"{DICOMWEB}/studies")).status_code == 401
    async with make_client("local", scope="system/Observation.rs") as narrow:
        assert (await narrow.get(f"{DICOMWEB}/studies")).status_code == 403
