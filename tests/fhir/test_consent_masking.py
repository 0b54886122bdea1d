"""Masking obligations on records another hospital opened through consent:
the resident ID number always, contact details when the consent says so."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from fhirdata import RESIDENT_ID_SYSTEM, patient

from consent import service
from hie.gate.data import StoreConsentData
from hie.identity.service import person_id_of
from hie.registry import service as registry

FHIR = "/fhir"
RESIDENT = "11010519491231002X"
MASKED = "110105********002X"
Make = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def shared(app: FastAPI, make_client: Make) -> dict:
    for org in ("hospa", "hospb"):
        await registry.create_organization(app.state.store, name=org, id=org)
    p = patient(mrn="M1", birth="1949-12-31") | {
        "telecom": [{"system": "phone", "value": "13800138000"}],
        "address": [{"city": "北京市", "line": ["朝阳区建国路1号"]}]}
    p["identifier"].append({"system": RESIDENT_ID_SYSTEM, "value": RESIDENT})
    async with make_client("hospa") as a, make_client("hospb") as b:
        at_a = (await a.post(f"{FHIR}/Patient", json=p)).json()
        at_b = (await b.post(f"{FHIR}/Patient", json=p | {"identifier": [
            {"system": "urn:oid:1.2.3.4", "value": "B1"},
            {"system": RESIDENT_ID_SYSTEM, "value": RESIDENT}]})).json()
    person = await person_id_of(app.state.store, at_a["id"])
    return {"a": at_a, "b": at_b, "person": person}


def doctor(make_client: Make) -> httpx.AsyncClient:
    return make_client("hospb", scope="user/*.rs", practitioner="hospb-dr",
                       purpose_of_use="TREAT")


@pytest.mark.parametrize("masks, gone", [([], set()), (["telecom"], {"telecom"}),
                                         (["telecom", "address"], {"telecom", "address"})])
async def test_other_hospitals_records_are_masked(app: FastAPI, make_client: Make,
                                                  shared: dict, masks: list[str],
                                                  gone: set[str]):
    await service.grant_consent(StoreConsentData(app.state.store), person=shared["person"],
                                organization="hospb", purposes=["TREAT"], masks=masks)
    async with doctor(make_client) as b:
        read = (await b.get(f"{FHIR}/Patient/{shared['a']['id']}")).json()
        everything = (await b.get(f"{FHIR}/Patient/{shared['b']['id']}/$everything")).json()
    from_a = [e["resource"] for e in everything["entry"] if e["resource"]["id"] ==
              shared["a"]["id"]]
    assert len(from_a) == 1
    for seen in (read, from_a[0]):
        text = str(seen)
        assert RESIDENT not in text
        assert MASKED in text
        for key in ("telecom", "address"):
            assert (key in seen) == (key not in gone)
    # the doctor's own hospital's record of the patient is not masked
    own = [e["resource"] for e in everything["entry"] if e["resource"]["id"] ==
           shared["b"]["id"]]
    assert RESIDENT in str(own[0])
