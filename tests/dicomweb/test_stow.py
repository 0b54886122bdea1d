"""STOW-RS: what a hospital stores, what it is told, and what is left behind."""

from __future__ import annotations

import httpx
import orjson
from dicomkit import DICOMWEB, MRN_SYSTEM, instance, multipart, part10, stow, uids, value
from fastapi import FastAPI
from pydicom.uid import generate_uid

from hie.dicomweb.records import DICOM_TYPES


async def _imaging_studies(app: FastAPI, client: httpx.AsyncClient, study: str) -> list[dict]:
    """The hospital's ImagingStudy of ``study``, once the study writer has run."""
    await app.state.study_writer.flush()
    r = await client.get("/fhir/ImagingStudy",
                         params={"identifier": f"urn:dicom:uid|urn:oid:{study}"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


async def test_stored_instances_are_referenced_and_make_one_imaging_study(
        app: FastAPI, client: httpx.AsyncClient) -> None:
    study, series = generate_uid(), generate_uid()
    sent = [instance(study=study, series=series, number=n) for n in (1, 2, 3)]
    r = await stow(client, sent)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    doc = r.json()
    assert uids(doc["00081199"]["Value"]) == {ds.SOPInstanceUID for ds in sent}
    assert "00081198" not in doc
    assert value(doc, "00081190") == f"http://testserver/dicomweb/studies/{study}"
    [img] = await _imaging_studies(app, client, study)
    assert img["numberOfSeries"] == 1 and img["numberOfInstances"] == 3
    assert {i["uid"] for i in img["series"][0]["instance"]} == {ds.SOPInstanceUID for ds in sent}
    assert img["modality"][0]["code"] == "CT"
    # the study is linked to the hospital's Patient with the PatientID as MRN
    pat = (await client.get(f"/fhir/{img['subject']['reference']}")).json()
    assert {"system": MRN_SYSTEM, "value": "MRN-1"} in pat["identifier"]
    assert pat["gender"] == "female" and pat["birthDate"] == "1975-03-14"


async def test_pixel_data_is_not_kept(client: httpx.AsyncClient) -> None:
    study = generate_uid()
    ds = instance(study=study)
    ds.PixelData = b"\x5a" * (8 * 8 * 2)
    assert (await stow(client, [ds])).status_code == 200
    r = await client.get(f"{DICOMWEB}/studies/{study}/metadata")
    [meta] = r.json()
    assert "7FE00010" not in meta or "InlineBinary" not in meta["7FE00010"]
    assert b"WlpaWlpa" not in r.content  # base64 of the pixel bytes


async def test_a_second_copy_changes_nothing_and_later_instances_are_merged(
        app: FastAPI, client: httpx.AsyncClient) -> None:
    study, series = generate_uid(), generate_uid()
    first = [instance(study=study, series=series, number=n) for n in (1, 2)]
    assert (await stow(client, first)).status_code == 200
    [img] = await _imaging_studies(app, client, study)
    assert (await stow(client, first)).status_code == 200
    [again] = await _imaging_studies(app, client, study)
    assert again["meta"]["versionId"] == img["meta"]["versionId"]
    other = instance(study=study, modality="MR", number=1)
    assert (await stow(client, [other])).status_code == 200
    [merged] = await _imaging_studies(app, client, study)
    assert merged["numberOfSeries"] == 2 and merged["numberOfInstances"] == 3
    assert {m["code"] for m in merged["modality"]} == {"CT", "MR"}
    studies = (await client.get(f"{DICOMWEB}/studies", params={"StudyInstanceUID": study})).json()
    assert value(studies[0], "00201208") == 3 and value(studies[0], "00201206") == 2
    assert set(studies[0]["00080061"]["Value"]) == {"CT", "MR"}


async def test_metadata_only_json_keeps_the_source_retrieve_location(
        app: FastAPI, client: httpx.AsyncClient) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    ds = instance(study=study, series=series, sop=sop, pixels=False)
    source = f"https://pacs.hosp-a.example/dicom-web/studies/{study}/series/{series}" \
             f"/instances/{sop}"
    doc = ds.to_json_dict()
    doc["00081190"] = {"vr": "UR", "Value": [source]}
    doc["7FE00010"] = {"vr": "OW", "BulkDataURI": source + "/bulkdata/7FE00010"}
    r = await client.post(f"{DICOMWEB}/studies", content=orjson.dumps([doc]),
                          headers={"Content-Type": "application/dicom+json"})
    assert r.status_code == 200, r.text
    [meta] = (await client.get(f"{DICOMWEB}/studies/{study}/metadata")).json()
    assert meta["7FE00010"]["BulkDataURI"] == source + "/bulkdata/7FE00010"
    assert value(meta, "00081190") == source
    assert value(meta, "00080056") == "ONLINE"  # at the source PACS
    [found] = (await client.get(f"{DICOMWEB}/studies", params={"StudyInstanceUID": study})).json()
    assert value(found, "00080056") == "ONLINE"
    [img] = await _imaging_studies(app, client, study)
    [endpoint] = img["contained"]
    assert endpoint["resourceType"] == "Endpoint"
    assert endpoint["address"] == "https://pacs.hosp-a.example/dicom-web"
    assert img["endpoint"] == [{"reference": "#source"}]


async def test_refused_instances_are_named_with_a_reason_and_leave_nothing(
        app: FastAPI, client: httpx.AsyncClient) -> None:
    study = generate_uid()
    good = instance(study=study)
    no_patient = instance(study=generate_uid(), patient_id="")
    other_study = instance(study=generate_uid())
    body, ctype = multipart([part10(good), b"not a DICOM file at all", part10(no_patient)])
    r = await client.post(f"{DICOMWEB}/studies/{study}", content=body,
                          headers={"Content-Type": ctype})
    assert r.status_code == 202, r.text
    doc = r.json()
    assert uids(doc["00081199"]["Value"]) == {good.SOPInstanceUID}
    failed = doc["00081198"]["Value"]
    assert len(failed) == 2 and all(f["00081197"]["Value"][0] for f in failed)
    assert no_patient.SOPInstanceUID in uids(failed)
    # an instance of another study than the URL names is refused
    r = await stow(client, [other_study], path=f"/studies/{study}")
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    for ds in (no_patient, other_study):
        found = (await client.get(f"{DICOMWEB}/studies",
                                  params={"StudyInstanceUID": ds.StudyInstanceUID})).json()
        assert found == []
        assert await _imaging_studies(app, client, ds.StudyInstanceUID) == []


async def test_hostile_uids_and_bodies_are_refused(client: httpx.AsyncClient) -> None:
    evil = instance(study=generate_uid())
    evil.SOPInstanceUID = "../../etc/x"
    r = await stow(client, [evil])
    assert r.status_code == 409
    r = await client.post(f"{DICOMWEB}/studies", content=b"{}",
                          headers={"Content-Type": "image/png"})
    assert r.status_code == 415
    r = await client.post(f"{DICOMWEB}/studies", content=b"--x\r\nnever ends",
                          headers={"Content-Type": 'multipart/related; type="application/dicom";'
                                                   " boundary=x"})
    assert r.status_code == 400
    r = await client.post(f"{DICOMWEB}/studies", content=b"[1, 2",
                          headers={"Content-Type": "application/dicom+json"})
    assert r.status_code == 400
    r = await client.get(f"{DICOMWEB}/studies/..%2F..%2Fetc/metadata")
    assert r.status_code in (400, 404)
    assert (await client.get(f"{DICOMWEB}/studies")).json() == []


async def test_too_large_bodies_get_413(client: httpx.AsyncClient) -> None:
    body, ctype = multipart([b"\0" * (9 * 1024 * 1024)])
    r = await client.post(f"{DICOMWEB}/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 413


async def test_storing_needs_a_token_and_a_write_scope(make_client) -> None:
    ds = instance(study=generate_uid())
    async with make_client("") as anonymous:
        assert (await stow(anonymous, [ds])).status_code == 401
    async with make_client("local", scope="system/*.rs") as reader:
        assert (await stow(reader, [ds])).status_code == 403
    async with make_client() as c:
        assert (await c.get(f"{DICOMWEB}/studies",
                            params={"StudyInstanceUID": ds.StudyInstanceUID})).json() == []


async def test_dicom_records_never_appear_on_the_fhir_api(client: httpx.AsyncClient) -> None:
    assert (await stow(client, [instance(study=generate_uid())])).status_code == 200
    history = (await client.get("/fhir/_history", params={"_count": "1000"})).json()
    types = {e["resource"]["resourceType"] for e in history.get("entry", []) if "resource" in e}
    assert types and not types & DICOM_TYPES
    for rtype in DICOM_TYPES:
        assert (await client.get(f"/fhir/{rtype}")).status_code in (400, 404)


async def test_a_request_mixing_studies_is_stored_at_once_and_audited_per_patient(
        app: FastAPI, client: httpx.AsyncClient) -> None:
    """A sender whose files are not in study order mixes studies in every request:
    they are written in one transaction, so either all of them or none, and the
    write is audited once per patient, naming each study."""
    from hie.store.query import SearchQuery

    a1, a2, b1 = generate_uid(), generate_uid(), generate_uid()
    sent = [instance(study=study, patient_id=mrn, number=n)
            for n in (1, 2) for study, mrn in ((a1, "MRN-A"), (b1, "MRN-B"), (a2, "MRN-A"))]
    store = app.state.store
    before = {r.id for r in (await store.search(SearchQuery("AuditEvent", ()),
                                                limit=1000)).resources}

    seen: list[int] = []

    async def broken(tx, ctx, records) -> None:  # fails once it has seen a second study
        seen.append(sum(r.resource_type == "DicomStudy" for r in records))
        if sum(seen) >= 2:
            raise RuntimeError("a hook failing after the first study was written")

    app.state.write_hooks.append(broken)
    try:
        try:
            r = await stow(client, sent)
            assert r.status_code >= 500
        except RuntimeError:
            pass  # raised through the in-process transport: the same for the client
    finally:
        app.state.write_hooks.remove(broken)
    for study in (a1, a2, b1):  # nothing of any study is left behind
        found = await client.get(f"{DICOMWEB}/studies", params={"StudyInstanceUID": study})
        assert found.status_code == 204 or found.json() == [], found.text

    r = await stow(client, sent)
    assert r.status_code == 200, r.text
    for study in (a1, a2, b1):
        [found] = (await client.get(f"{DICOMWEB}/studies",
                                    params={"StudyInstanceUID": study})).json()
        assert value(found, "00201208") == 2
    events = [orjson.loads(e.body) for e in (await store.search(SearchQuery("AuditEvent", ()),
                                                  limit=1000)).resources
              if e.id not in before]
    studies = [e for e in events if any(x.get("what", {}).get("reference", "")
                                        .startswith("DicomStudy/") for x in e["entity"])]
    assert len(studies) == 2  # one per patient, not one per study
    named = sorted(sum(1 for x in e["entity"] if x["what"]["reference"].startswith("DicomStudy/"))
                   for e in studies)
    assert named == [1, 2]
