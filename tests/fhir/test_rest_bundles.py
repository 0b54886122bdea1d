"""transaction and batch Bundles."""

from __future__ import annotations

import httpx
from fhirdata import MRN_SYSTEM, condition, observation, patient

FHIR = "/fhir"


def entry(resource: dict, full_url: str | None = None, method: str = "POST",
          url: str | None = None, **request: str) -> dict:
    out: dict = {"resource": resource,
                 "request": {"method": method, "url": url or resource["resourceType"], **request}}
    if full_url:
        out["fullUrl"] = full_url
    return out


async def total(client: httpx.AsyncClient, rtype: str) -> int:
    return (await client.get(f"{FHIR}/{rtype}", params={"_summary": "count"})).json()["total"]


async def test_transaction_rewrites_urn_uuid_references(client: httpx.AsyncClient):
    pat = "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(observation(pat)), entry(condition(pat)),
        entry(patient(mrn="T1"), pat, ifNoneExist=f"identifier={MRN_SYSTEM}|T1")]}
    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in resp["entry"]]
    assert statuses == ["201 Created"] * 3
    pid = resp["entry"][2]["response"]["location"].split("/")[1]
    obs = (await client.get(f"{FHIR}/Observation", params={"subject": f"Patient/{pid}"})).json()
    assert obs["total"] == 1
    assert obs["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    # sending the same bundle again matches the patient instead of creating it
    again = (await client.post(FHIR, json=bundle)).json()
    assert again["entry"][2]["response"]["status"] == "200 OK"
    assert await total(client, "Patient") == 1


async def test_transaction_with_one_invalid_entry_stores_nothing(client: httpx.AsyncClient):
    bad = observation("Patient/x") | {"status": "not-a-status"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(patient(mrn="T2")), entry(bad)]}
    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 400
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(e.startswith("Bundle.entry[1]") for i in outcome["issue"]
               for e in i.get("expression", []))
    assert await total(client, "Patient") == 0


async def test_transaction_failing_precondition_rolls_back(client: httpx.AsyncClient):
    created = (await client.post(f"{FHIR}/Patient", json=patient(mrn="T3"))).json()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(patient(mrn="T4")),
        entry(created, method="PUT", url=f"Patient/{created['id']}", ifMatch='W/"9"')]}
    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 412
    assert await total(client, "Patient") == 1


async def test_transaction_conditional_reference(client: httpx.AsyncClient):
    created = (await client.post(f"{FHIR}/Patient", json=patient(mrn="T5"))).json()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(observation(f"Patient?identifier={MRN_SYSTEM}|T5"))]}
    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 200, r.text
    loc = r.json()["entry"][0]["response"]["location"]
    obs = (await client.get(f"{FHIR}/{loc}")).json()
    assert obs["subject"]["reference"] == f"Patient/{created['id']}"
    missing = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(observation(f"Patient?identifier={MRN_SYSTEM}|NOPE"))]}
    r = await client.post(FHIR, json=missing)
    assert r.status_code == 404
    assert await total(client, "Observation") == 1


async def test_transaction_dangling_urn_is_refused(client: httpx.AsyncClient):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(observation("urn:uuid:7f1e1b6e-0000-4000-8000-000000000000"))]}
    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 400
    assert await total(client, "Observation") == 0


async def test_batch_reports_each_entry(client: httpx.AsyncClient):
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        entry(patient(mrn="B1")),
        entry(observation("Patient/x") | {"status": "bogus"}),
        {"request": {"method": "GET", "url": "Patient?identifier=B1"}}]}
    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 200
    resp = r.json()
    assert resp["type"] == "batch-response"
    assert resp["entry"][0]["response"]["status"] == "201 Created"
    assert resp["entry"][1]["response"]["status"] == "400 Bad Request"
    assert resp["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert resp["entry"][2]["resource"]["total"] == 1
    assert await total(client, "Patient") == 1
    assert await total(client, "Observation") == 0


async def test_bundle_of_wrong_type_is_refused(client: httpx.AsyncClient):
    r = await client.post(FHIR, json={"resourceType": "Bundle", "type": "collection"})
    assert r.status_code == 400
    r = await client.post(FHIR, json=patient())
    assert r.status_code == 400
    assert await total(client, "Patient") == 0
