"""Conditional create, update and delete, including races."""

from __future__ import annotations

import asyncio

import httpx
from fhirdata import MRN_SYSTEM, patient

FHIR = "/fhir"


async def count(client: httpx.AsyncClient, **params: str) -> int:
    r = await client.get(f"{FHIR}/Patient", params={**params, "_summary": "count"})
    assert r.status_code == 200, r.text
    return r.json()["total"]


async def test_if_none_exist_returns_the_existing_resource(client: httpx.AsyncClient):
    cond = {"If-None-Exist": f"identifier={MRN_SYSTEM}|A1"}
    first = await client.post(f"{FHIR}/Patient", json=patient(mrn="A1"), headers=cond)
    assert first.status_code == 201
    second = await client.post(f"{FHIR}/Patient", json=patient(mrn="A1"), headers=cond)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert await count(client, identifier=f"{MRN_SYSTEM}|A1") == 1


async def test_eight_parallel_conditional_creates_leave_one(client: httpx.AsyncClient):
    cond = {"If-None-Exist": f"identifier={MRN_SYSTEM}|RACE"}
    answers = await asyncio.gather(*[
        client.post(f"{FHIR}/Patient", json=patient(mrn="RACE"), headers=cond)
        for _ in range(8)])
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert await count(client, identifier=f"{MRN_SYSTEM}|RACE") == 1


async def test_if_none_exist_matching_two_is_412(client: httpx.AsyncClient):
    await client.post(f"{FHIR}/Patient", json=patient(mrn="D1", family="Li"))
    await client.post(f"{FHIR}/Patient", json=patient(mrn="D2", family="Li"))
    r = await client.post(f"{FHIR}/Patient", json=patient(mrn="D3", family="Li"),
                          headers={"If-None-Exist": "family=Li"})
    assert r.status_code == 412
    assert await count(client, family="Li") == 2


async def test_conditional_update_creates_then_updates(client: httpx.AsyncClient):
    url = f"{FHIR}/Patient?identifier={MRN_SYSTEM}|C1"
    r1 = await client.put(url, json=patient(mrn="C1"))
    assert r1.status_code == 201
    r2 = await client.put(url, json=patient(mrn="C1", gender="male"))
    assert r2.status_code == 200
    assert r2.json()["id"] == r1.json()["id"]
    assert r2.json()["meta"]["versionId"] == "2"
    assert await count(client, identifier=f"{MRN_SYSTEM}|C1") == 1


async def test_parallel_conditional_updates_leave_one(client: httpx.AsyncClient):
    url = f"{FHIR}/Patient?identifier={MRN_SYSTEM}|PU"
    answers = await asyncio.gather(*[client.put(url, json=patient(mrn="PU")) for _ in range(8)])
    assert all(a.status_code in (200, 201) for a in answers)
    assert [a.status_code for a in answers].count(201) == 1
    assert await count(client, identifier=f"{MRN_SYSTEM}|PU") == 1


async def test_conditional_update_matching_two_is_412(client: httpx.AsyncClient):
    await client.post(f"{FHIR}/Patient", json=patient(mrn="M1", family="Zhao"))
    await client.post(f"{FHIR}/Patient", json=patient(mrn="M2", family="Zhao"))
    r = await client.put(f"{FHIR}/Patient?family=Zhao", json=patient(mrn="M3", family="Zhao"))
    assert r.status_code == 412
    assert await count(client, identifier=f"{MRN_SYSTEM}|M3") == 0


async def test_conditional_delete(client: httpx.AsyncClient):
    await client.post(f"{FHIR}/Patient", json=patient(mrn="X1"))
    r = await client.delete(f"{FHIR}/Patient?identifier={MRN_SYSTEM}|X1")
    assert r.status_code == 200
    assert await count(client, identifier=f"{MRN_SYSTEM}|X1") == 0
