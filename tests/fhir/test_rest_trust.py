"""The trust layer on the FHIR API, as attackers would try it: scopes, tenancy,
forged sources, and internal documents. Each refusal also checks that nothing
was written."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from fhirdata import observation, patient

from hie.registry import service as registry

FHIR = "/fhir"
Make = Callable[..., httpx.AsyncClient]


async def total(client: httpx.AsyncClient, rtype: str, **params: str) -> int:
    r = await client.get(f"{FHIR}/{rtype}", params={**params, "_summary": "count"})
    assert r.status_code == 200, r.text
    return r.json()["total"]


def forbidden(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["code"] == "forbidden"


async def test_read_only_token_cannot_write(make_client: Make):
    async with make_client("hospa", scope="system/*.rs") as reader, \
            make_client("hospa") as writer:
        forbidden(await reader.post(f"{FHIR}/Patient", json=patient()))
        forbidden(await reader.put(f"{FHIR}/Patient/hospa-1", json=patient() | {"id": "hospa-1"}))
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}}]}
        forbidden(await reader.post(FHIR, json=bundle))
        assert await total(writer, "Patient") == 0
        created = (await writer.post(f"{FHIR}/Patient", json=patient())).json()
        forbidden(await reader.delete(f"{FHIR}/Patient/{created['id']}"))
        assert (await reader.get(f"{FHIR}/Patient/{created['id']}")).status_code == 200


async def test_token_scoped_to_observation_cannot_read_encounter(make_client: Make):
    async with make_client("hospa", scope="system/Observation.rs") as scoped:
        forbidden(await scoped.get(f"{FHIR}/Encounter"))
        forbidden(await scoped.get(f"{FHIR}/Encounter/x"))
        forbidden(await scoped.get(f"{FHIR}/Patient/x/$everything"))
        assert (await scoped.get(f"{FHIR}/Observation")).status_code == 200


async def test_batch_answers_refused_entries_in_place(make_client: Make):
    async with make_client("hospa", scope="system/Patient.cruds") as c:
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": observation("Patient/x"),
             "request": {"method": "POST", "url": "Observation"}}]}
        r = await c.post(FHIR, json=bundle)
        assert r.status_code == 200
        statuses = [e["response"]["status"] for e in r.json()["entry"]]
        assert statuses == ["201 Created", "403 Forbidden"]


async def test_hospital_cannot_change_another_hospitals_records(make_client: Make):
    async with make_client("hospa") as a, make_client("hospb") as b:
        created = (await a.post(f"{FHIR}/Patient", json=patient())).json()
        pid = created["id"]
        # B cannot see it: the same answer as for an id that does not exist
        assert (await b.get(f"{FHIR}/Patient/{pid}")).status_code == 404
        # B cannot update it, with the same answer as for an unknown id
        taken = await b.put(f"{FHIR}/Patient/{pid}", json=created | {"gender": "male"})
        unknown = await b.put(f"{FHIR}/Patient/{pid[:-1]}0",
                              json=created | {"id": pid[:-1] + "0", "gender": "male"})
        forbidden(taken)
        forbidden(unknown)
        assert taken.json()["issue"][0]["diagnostics"].replace(pid, "ID") == \
            unknown.json()["issue"][0]["diagnostics"].replace(pid[:-1] + "0", "ID")
        # B's delete changes nothing, exactly as deleting an unknown id
        assert (await b.delete(f"{FHIR}/Patient/{pid}")).json() == \
            (await b.delete(f"{FHIR}/Patient/nope")).json()
        still = (await a.get(f"{FHIR}/Patient/{pid}")).json()
        assert still["meta"]["versionId"] == "1"
        assert still["gender"] == "female"
        # B's conditional update does not reach A's record either: it creates B's own
        r = await b.put(f"{FHIR}/Patient?_id={pid}", json=patient())
        assert r.status_code == 201
        assert r.json()["id"] != pid
        assert r.json()["meta"]["source"] == "urn:hie:organization:hospb"


async def test_hospital_cannot_write_as_another(make_client: Make):
    async with make_client("hospa") as a:
        forged = patient() | {"meta": {"source": "urn:hie:organization:hospb"}}
        forbidden(await a.post(f"{FHIR}/Patient", json=forged))
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient(mrn="ok"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": forged, "request": {"method": "POST", "url": "Patient"}}]}
        forbidden(await a.post(FHIR, json=bundle))
        assert await total(a, "Patient") == 0


async def test_ids_never_collide_between_hospitals(make_client: Make):
    async with make_client("hospa") as a, make_client("hospb") as b:
        ra = await a.put(f"{FHIR}/Patient/hospa-7", json=patient() | {"id": "hospa-7"})
        assert ra.status_code == 201
        forbidden(await b.put(f"{FHIR}/Patient/hospa-7", json=patient() | {"id": "hospa-7"}))
        assert (await b.put(f"{FHIR}/Patient/hospb-7",
                            json=patient() | {"id": "hospb-7"})).status_code == 201


async def test_internal_documents_never_leave_through_the_api(app: FastAPI, make_client: Make):
    store = app.state.store
    await registry.create_account(store, username="wang.xiuying", password="s3cret-Passw0rd",
                                  person_id="person-1")
    async with make_client("hospa") as a:
        await a.post(f"{FHIR}/Patient", json=patient())
        history = (await a.get(f"{FHIR}/_history", params={"_count": "1000"})).text
        assert "_Account" not in history
        assert "scrypt" not in history
        assert "_AuditHead" not in history
        assert (await a.get(f"{FHIR}/_Account/wang.xiuying")).status_code == 404


@pytest.mark.parametrize("role, visible", [("privacy-officer", True), (None, False)])
async def test_audit_events_are_for_privacy_officers(app: FastAPI, make_client: Make,
                                                     role: str | None, visible: bool):
    async with make_client("hospa") as a:
        created = (await a.post(f"{FHIR}/Patient", json=patient())).json()
        await a.get(f"{FHIR}/Patient/{created['id']}")
    await app.state.audit_log.flush()
    roles = [role] if role else []
    async with make_client("hospa" if role is None else "exchange",
                           scope="system/AuditEvent.rs", roles=roles) as officer:
        r = await officer.get(f"{FHIR}/AuditEvent",
                              params={"patient": f"Patient/{created['id']}"})
        assert r.status_code == 200
        events = [e["resource"] for e in r.json().get("entry", [])]
        if not visible:
            assert events == []
            return
        actions = sorted(e["action"] for e in events)
        # the create, the read, and the link of the new Patient to a regional person
        assert actions == ["C", "R", "U"]
        link = next(e for e in events if e["action"] == "U")
        assert "link" in str(link["subtype"]) + str(link.get("extension"))
        assert all(e["agent"][0]["who"] for e in events)
