"""Patient/$merge: a hospital's A40 makes two of its own Patients one person."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fhirdata import MRN_SYSTEM, observation, patient

FHIR = "/fhir"
Make = Callable[..., httpx.AsyncClient]


def merge_body(source: str, target: str) -> dict:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueIdentifier": {"system": MRN_SYSTEM, "value": source}},
        {"name": "target-patient", "valueIdentifier": {"system": MRN_SYSTEM, "value": target}}]}


async def test_merge_links_two_registrations_of_one_hospital(make_client: Make):
    async with make_client("hospa") as a:
        old = (await a.post(f"{FHIR}/Patient", json=patient(mrn="OLD", family="孙"))).json()
        new = (await a.post(f"{FHIR}/Patient", json=patient(mrn="NEW", family="孫",
                                                            birth="1976-01-01"))).json()
        o1 = (await a.post(f"{FHIR}/Observation", json=observation(f"Patient/{old['id']}"))
              ).json()
        before = (await a.get(f"{FHIR}/Observation",
                              params={"subject": f"Patient/{new['id']}"})).json()
        assert before.get("entry", []) == []
        r = await a.post(f"{FHIR}/Patient/$merge", json=merge_body("OLD", "NEW"))
        assert r.status_code == 200, r.text
        after = (await a.get(f"{FHIR}/Observation",
                             params={"subject": f"Patient/{new['id']}"})).json()
        assert [e["resource"]["id"] for e in after["entry"]] == [o1["id"]]
        again = await a.post(f"{FHIR}/Patient/$merge", json=merge_body("OLD", "NEW"))
        assert again.status_code == 200  # a re-sent A40 changes nothing


async def test_merge_of_another_hospitals_patient_is_unknown(make_client: Make):
    async with make_client("hospa") as a, make_client("hospb") as b:
        await a.post(f"{FHIR}/Patient", json=patient(mrn="A-1"))
        await b.post(f"{FHIR}/Patient", json=patient(mrn="B-1"))
        r = await b.post(f"{FHIR}/Patient/$merge", json=merge_body("A-1", "B-1"))
        assert r.status_code == 404
        unknown = await b.post(f"{FHIR}/Patient/$merge", json=merge_body("NOPE", "B-1"))
        assert unknown.status_code == 404
        assert r.json()["issue"][0]["code"] == unknown.json()["issue"][0]["code"]


async def test_merge_needs_both_parameters_and_write_scope(make_client: Make):
    async with make_client("hospa") as a, make_client("hospa", scope="system/*.rs") as ro:
        r = await a.post(f"{FHIR}/Patient/$merge", json={"resourceType": "Parameters"})
        assert r.status_code == 400
        forbidden = await ro.post(f"{FHIR}/Patient/$merge", json=merge_body("X", "Y"))
        assert forbidden.status_code == 403
