"""The consent gate on DICOMweb: hospital A's study of P, hospital B's doctor.

B's doctor sees A's study only while P's consent (or a consultation that
includes imaging) allows it; otherwise every path answers as for a study that
does not exist. Every access is audited under P's name.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from dicomkit import DICOMWEB, instance, stow, value
from fastapi import FastAPI
from fhirdata import RESIDENT_ID_SYSTEM, patient
from pydicom.uid import generate_uid

from consent import service
from hie.audit.service import search_events
from hie.gate.data import StoreConsentData
from hie.identity.service import person_id_of
from hie.registry import service as registry
from schemas.consent import ConsultationScope

Make = Callable[..., httpx.AsyncClient]
RESIDENT = "11010519491231002X"
DOCTOR = {"practitioner": "hospb-dr-1", "purpose_of_use": "TREAT"}


def _with_resident(p: dict) -> dict:
    return p | {"identifier": [*p["identifier"],
                               {"system": RESIDENT_ID_SYSTEM, "value": RESIDENT}]}


@pytest.fixture
async def region(app: FastAPI, make_client: Make) -> dict:
    for org in ("hospa", "hospb"):
        await registry.create_organization(app.state.store, name=f"Hospital {org}", id=org)
    study, series = generate_uid(), generate_uid()
    async with make_client("hospa") as a, make_client("hospb") as b:
        pa = _with_resident(patient(mrn="PA", birth="1949-12-31"))
        pa["identifier"][0] = {"system": "urn:hie:hospital:mrn", "value": "PA"}
        r = await a.post("/fhir/Patient", json=pa)
        assert r.status_code == 201, r.text
        r = await b.post("/fhir/Patient", json=_with_resident(patient(mrn="PB",
                                                                      birth="1949-12-31")))
        assert r.status_code == 201, r.text
        pb = r.json()["id"]
        ds = instance(study=study, series=series, patient_id="PA")
        ds.OtherPatientIDs = RESIDENT
        assert (await stow(a, [ds])).status_code == 200
    await app.state.study_writer.flush()
    person = await person_id_of(app.state.store, (await _pid(app, "PA")))
    assert person
    return {"study": study, "series": series, "sop": ds.SOPInstanceUID, "person": person,
            "pb": pb}


async def _pid(app: FastAPI, mrn: str) -> str:
    from hie.store.query import AnyOf, SearchQuery, TokenMatch

    page = await app.state.store.search(SearchQuery("Patient", where=(AnyOf((TokenMatch(
        "identifier", mrn),)),)), limit=1)
    return page.resources[0].id


async def _reads(b: httpx.AsyncClient, reg: dict) -> dict[str, object]:
    """What B's doctor gets on every DICOMweb read path."""
    s, se, i = reg["study"], reg["series"], reg["sop"]
    out: dict[str, object] = {}
    for path, params in (("/studies", {"StudyInstanceUID": s}),
                         (f"/studies/{s}/series", {}),
                         (f"/studies/{s}/instances", {}),
                         ("/series", {"SeriesInstanceUID": se}),
                         ("/instances", {"SOPInstanceUID": i}),
                         ("/studies", {"PatientID": "PB"})):
        r = await b.get(DICOMWEB + path, params=params)
        assert r.status_code == 200, r.text
        out[f"{path}?{params}"] = len(r.json())
    for path in (f"/studies/{s}/metadata", f"/studies/{s}/series/{se}/metadata",
                 f"/studies/{s}/series/{se}/instances/{i}/metadata"):
        r = await b.get(DICOMWEB + path)
        out[path] = r.status_code
    # FHIR's ImagingStudy search by B's own registration of the person finds the same study
    r = await b.get("/fhir/ImagingStudy", params={"patient": "Patient/" + reg["pb"]})
    assert r.status_code == 200, r.text
    out["/fhir/ImagingStudy"] = len(r.json().get("entry", []))
    return out


def _hidden(answers: dict[str, object]) -> bool:
    return all(v == 0 or v == 404 for v in answers.values())


def _seen(answers: dict[str, object]) -> bool:
    return all(v == 1 or v == 200 for v in answers.values())


async def test_without_consent_the_study_is_as_if_it_did_not_exist(
        app: FastAPI, make_client: Make, region: dict) -> None:
    async with make_client("hospb", scope="user/*.rs", **DOCTOR) as b:
        answers = await _reads(b, region)
    assert _hidden(answers), answers
    async with make_client("hospb") as system:  # the hospital's own system: own records only
        assert _hidden(await _reads(system, region))


async def test_consent_opens_the_study_and_withdrawal_closes_it_at_once(
        app: FastAPI, make_client: Make, region: dict) -> None:
    data = StoreConsentData(app.state.store)
    granted = await service.grant_consent(data, person=region["person"], organization="hospb",
                                          purposes=["TREAT"])
    async with make_client("hospb", scope="user/*.rs", **DOCTOR) as b:
        answers = await _reads(b, region)
        assert _seen(answers), answers
        [meta] = (await b.get(f"{DICOMWEB}/studies/{region['study']}/metadata")).json()
        # another hospital's resident ID numbers are masked
        assert RESIDENT not in orjson.dumps(meta).decode()
        assert value(meta, "00101000").startswith("110105")
        await service.withdraw_consent(data, person=region["person"], consent_id=granted["id"])
        assert _hidden(await _reads(b, region))
    async with make_client("hospa") as a:  # the hospital that sent it sees it as sent
        [meta] = (await a.get(f"{DICOMWEB}/studies/{region['study']}/metadata")).json()
        assert value(meta, "00101000") == RESIDENT


async def test_a_consultation_opens_imaging_only_when_its_scope_includes_it(
        app: FastAPI, make_client: Make, region: dict) -> None:
    data = StoreConsentData(app.state.store)
    now = datetime.now(UTC)
    scopes = {"imaging": ["Patient", "ImagingStudy"], "labs": ["Patient", "Observation"]}
    for name, types in scopes.items():
        c = await service.request_consultation(
            data, person=region["person"], requester="hospa", invited_organization="hospb",
            reason="second opinion", start=now - timedelta(hours=1), end=now + timedelta(days=1),
            scope=ConsultationScope(resource_types=types))
        await service.approve_consultation(data, person=region["person"], id=c.id)
        await service.accept_consultation(data, organization="hospb", id=c.id)
        async with make_client("hospb", scope="user/*.rs", consultation=c.id, **DOCTOR) as b:
            answers = await _reads(b, region)
        assert (_seen if name == "imaging" else _hidden)(answers), (name, answers)


async def test_every_dicom_access_is_audited_under_the_patient(
        app: FastAPI, make_client: Make, region: dict) -> None:
    data = StoreConsentData(app.state.store)
    await service.grant_consent(data, person=region["person"], organization="hospb",
                                purposes=["TREAT"])
    async with make_client("hospb", scope="user/*.rs", **DOCTOR) as b:
        r = await b.get(f"{DICOMWEB}/studies/{region['study']}/metadata")
        assert r.status_code == 200
    await app.state.audit_log.flush()
    pa = await _pid(app, "PA")
    events, _ = await search_events(app.state.store, patient_refs=[f"Patient/{pa}"])
    reads = [orjson.loads(e.body) for e in events]
    assert any(e.get("outcome") == "0" and any(
        a.get("who", {}).get("identifier", {}).get("value") == "hospb-dr-1"
        or "hospb-dr-1" in orjson.dumps(a).decode() for a in e.get("agent", []))
        for e in reads), reads


async def test_break_the_glass_opens_the_study_for_the_emergency(
        app: FastAPI, make_client: Make, region: dict) -> None:
    emergency = {"practitioner": "hospb-dr-1", "purpose_of_use": "ETREAT",
                 "reason": "unconscious on arrival"}
    async with make_client("hospb", scope="user/*.rs", **emergency) as b:
        answers = await _reads(b, region)
    assert _seen(answers), answers


async def test_a_study_labelled_sensitive_stays_hidden_unless_its_category_is_opened(
        app: FastAPI, make_client: Make, region: dict) -> None:
    study = generate_uid()
    async with make_client("hospa") as a:
        # the hospital labels the study (mental health) through FHIR, then sends its images
        r = await a.put("/fhir/ImagingStudy", params={
            "identifier": f"urn:dicom:uid|urn:oid:{study}"}, json={
            "resourceType": "ImagingStudy", "status": "available",
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "PSY"}]},
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study}"}],
            "subject": {"reference": "Patient/" + await _pid(app, "PA")}})
        assert r.status_code == 201, r.text
        assert (await stow(a, [instance(study=study, patient_id="PA")])).status_code == 200
        await app.state.study_writer.flush()
        [img] = (await a.get("/fhir/ImagingStudy", params={
            "identifier": f"urn:dicom:uid|urn:oid:{study}"})).json()["entry"]
        assert img["resource"]["meta"]["security"][0]["code"] == "PSY"
        assert img["resource"]["numberOfInstances"] == 1
    data = StoreConsentData(app.state.store)
    for opened, visible in (([], 0), (["PSY"], 1)):
        granted = await service.grant_consent(data, person=region["person"],
                                              organization="hospb", purposes=["TREAT"],
                                              open_labels=opened)
        async with make_client("hospb", scope="user/*.rs", **DOCTOR) as b:
            found = (await b.get(f"{DICOMWEB}/studies", params={"StudyInstanceUID": study}))
            assert len(found.json()) == visible, opened
            meta = await b.get(f"{DICOMWEB}/studies/{study}/metadata")
            assert meta.status_code == (200 if visible else 404)
            # the unlabelled study of the same patient is visible either way
            other = await b.get(f"{DICOMWEB}/studies",
                                params={"StudyInstanceUID": region["study"]})
            assert len(other.json()) == 1
        await service.withdraw_consent(data, person=region["person"], consent_id=granted["id"])


async def test_labelling_a_study_after_its_images_arrived_hides_them_too(
        app: FastAPI, make_client: Make, region: dict) -> None:
    data = StoreConsentData(app.state.store)
    await service.grant_consent(data, person=region["person"], organization="hospb",
                                purposes=["TREAT"])
    study = region["study"]
    async with make_client("hospb", scope="user/*.rs", **DOCTOR) as b:
        assert _seen(await _reads(b, region))
    async with make_client("hospa") as a:
        query = {"identifier": f"urn:dicom:uid|urn:oid:{study}"}
        [entry] = (await a.get("/fhir/ImagingStudy", params=query)).json()["entry"]
        img = entry["resource"]
        img["meta"] = {"security": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}
        r = await a.put(f"/fhir/ImagingStudy/{img['id']}", json=img)
        assert r.status_code == 200, r.text
        # the hospital still sees its own study on DICOMweb
        assert len((await a.get(f"{DICOMWEB}/studies/{study}/metadata")).json()) == 1
    async with make_client("hospb", scope="user/*.rs", **DOCTOR) as b:
        answers = await _reads(b, region)
    assert _hidden(answers), answers
    # later instances of the study keep the label
    async with make_client("hospa") as a:
        assert (await stow(a, [instance(study=study, patient_id="PA")])).status_code == 200
    async with make_client("hospb", scope="user/*.rs", **DOCTOR) as b:
        assert _hidden(await _reads(b, region))
        r = await b.get(f"{DICOMWEB}/studies/{study}/instances")
        assert r.json() == []
