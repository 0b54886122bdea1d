"""A real FHIR client (fhirpy, over aiohttp) against the exchange running under
uvicorn: CRUD, conditional operations, bundles, search and paging."""

from __future__ import annotations

import asyncio

import pytest
from exchange_process import Exchange
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import AuthorizationError, OperationOutcome, ResourceNotFound

RESIDENT = "urn:oid:2.16.156.10011.1.1"
MRN = "urn:oid:1.2.156.112604.1.2.1"


@pytest.fixture
def fhir(server: Exchange) -> AsyncFHIRClient:
    return AsyncFHIRClient(f"{server.base}/fhir", authorization=f"Bearer {server.token()}",
                           extra_headers={"Accept": "application/fhir+json"})


async def test_no_token_is_refused(server: Exchange):
    anonymous = AsyncFHIRClient(f"{server.base}/fhir")
    with pytest.raises(AuthorizationError):
        await anonymous.resources("Patient").fetch()


def new_patient(fhir: AsyncFHIRClient, mrn: str, family: str = "张", given: str = "伟"):
    return fhir.resource("Patient", identifier=[{"system": MRN, "value": mrn}],
                         name=[{"family": family, "given": [given]}], gender="male",
                         birthDate="1968-07-02")


async def test_crud_round_trip(fhir: AsyncFHIRClient):
    pat = new_patient(fhir, "FP-1")
    await pat.save()
    assert pat.id and pat["meta"]["versionId"] == "1"
    fetched = await fhir.reference("Patient", pat.id).to_resource()
    assert fetched["name"][0]["family"] == "张"
    pat["gender"] = "other"
    await pat.save()
    assert pat["meta"]["versionId"] == "2"
    assert (await fhir.reference("Patient", pat.id).to_resource())["gender"] == "other"
    await pat.delete()
    with pytest.raises(ResourceNotFound):
        await fhir.reference("Patient", pat.id).to_resource()


async def test_validation_error_surfaces_as_operation_outcome(fhir: AsyncFHIRClient):
    bad = fhir.resource("Patient", gender="sometimes")
    with pytest.raises(OperationOutcome):
        await bad.save()
    assert await fhir.resources("Patient").search(gender="sometimes").count() == 0


async def test_get_or_create_is_conditional(fhir: AsyncFHIRClient):
    search = fhir.resources("Patient").search(identifier=f"{MRN}|FP-2")
    results = await asyncio.gather(*[search.get_or_create(new_patient(fhir, "FP-2"))
                                     for _ in range(8)])
    assert [created for _, created in results].count(True) == 1
    assert len({p.id for p, _ in results}) == 1
    assert await search.count() == 1


async def test_conditional_update(fhir: AsyncFHIRClient):
    search = fhir.resources("Patient").search(identifier=f"{MRN}|FP-3")
    first, created = await search.update(new_patient(fhir, "FP-3"))
    assert created
    second, created = await search.update(new_patient(fhir, "FP-3", given="强"))
    assert not created
    assert second.id == first.id
    assert second["name"][0]["given"] == ["强"]


async def test_transaction_bundle_and_search_with_paging(fhir: AsyncFHIRClient):
    pat_url = "urn:uuid:5b1f7c83-3a0c-4f7e-9d0b-1f7b3f5c0a01"
    entries = [{"fullUrl": pat_url,
                "resource": {"resourceType": "Patient",
                             "identifier": [{"system": MRN, "value": "FP-4"}],
                             "name": [{"family": "Chen", "given": ["Mei"]}]},
                "request": {"method": "POST", "url": "Patient",
                            "ifNoneExist": f"identifier={MRN}|FP-4"}}]
    for i in range(23):
        entries.append({"resource": {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": pat_url},
            "effectiveDateTime": f"2024-02-{i + 1:02d}T08:00:00+08:00",
            "valueQuantity": {"value": 60 + i, "unit": "/min",
                              "system": "http://unitsofmeasure.org", "code": "/min"}},
            "request": {"method": "POST", "url": "Observation"}})
    response = await fhir.execute("", method="post",
                                  data={"resourceType": "Bundle", "type": "transaction",
                                        "entry": entries})
    assert response["type"] == "transaction-response"
    assert all(e["response"]["status"].startswith("201") for e in response["entry"])

    patient = await fhir.resources("Patient").search(identifier=f"{MRN}|FP-4").get()
    obs = fhir.resources("Observation").search(subject=f"Patient/{patient.id}",
                                               code="http://loinc.org|8867-4")
    assert await obs.count() == 23
    everything = await obs.limit(5).fetch_all()  # follows next links page by page
    assert len(everything) == 23
    assert len({o.id for o in everything}) == 23
    window = await obs.search(date__ge="2024-02-10", date__lt="2024-02-15").fetch_all()
    assert len(window) == 5
    newest = await obs.sort("-date").limit(3).fetch()
    assert [o["valueQuantity"]["value"] for o in newest] == [82, 81, 80]
    with_patient = await fhir.resources("Observation").search(
        subject=f"Patient/{patient.id}").include("Observation", "subject").limit(30).fetch_raw()
    kinds = {e["resource"]["resourceType"] for e in with_patient["entry"]}
    assert kinds == {"Observation", "Patient"}
