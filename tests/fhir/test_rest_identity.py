"""Searches by patient and $everything follow the regional person's links."""

from __future__ import annotations

import httpx
from fhirdata import RESIDENT_ID_SYSTEM, observation, patient

FHIR = "/fhir"
RESIDENT = "11010519491231002X"


async def post(client: httpx.AsyncClient, resource: dict) -> dict:
    r = await client.post(f"{FHIR}/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


def with_resident_id(p: dict, number: str = RESIDENT) -> dict:
    return p | {"identifier": [*p["identifier"],
                               {"system": RESIDENT_ID_SYSTEM, "value": number}]}


async def test_search_by_patient_covers_linked_patients(client: httpx.AsyncClient):
    # two registrations of the same person (same resident ID number)
    # (the number's birth date and sex must agree with the Patient's)
    first = await post(client, with_resident_id(patient(mrn="A1", birth="1949-12-31")))
    second = await post(client, with_resident_id(patient(mrn="A2", birth="1949-12-31")))
    stranger = await post(client, patient(mrn="B1"))
    o1 = await post(client, observation(f"Patient/{first['id']}"))
    o2 = await post(client, observation(f"Patient/{second['id']}"))
    await post(client, observation(f"Patient/{stranger['id']}"))

    found = (await client.get(f"{FHIR}/Observation",
                              params={"subject": f"Patient/{first['id']}"})).json()
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted([o1["id"], o2["id"]])

    everything = (await client.get(f"{FHIR}/Patient/{first['id']}/$everything")).json()
    ids = {e["resource"]["id"] for e in everything["entry"]}
    assert {first["id"], second["id"], o1["id"], o2["id"]} <= ids
    assert stranger["id"] not in ids


async def test_unlinked_patients_stay_apart(client: httpx.AsyncClient):
    one = await post(client, patient(mrn="C1", family="Sun", given="Li"))
    two = await post(client, patient(mrn="C2", family="Qian", given="Hao", gender="male",
                                     birth="2001-01-01"))
    o1 = await post(client, observation(f"Patient/{one['id']}"))
    await post(client, observation(f"Patient/{two['id']}"))
    found = (await client.get(f"{FHIR}/Observation",
                              params={"subject": f"Patient/{one['id']}"})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [o1["id"]]
