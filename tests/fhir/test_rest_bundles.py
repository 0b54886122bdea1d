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


async def test_large_transaction_builds_every_version_in_entry_order(
        client: httpx.AsyncClient):
    """The versions of a Bundle go to the store in one ``put_many``: the
    response, the stored bodies and the Provenance follow the entry order —
    with a delete between creates and a conditional create that matched."""
    n = 8  # a Bundle-sized batch of new versions
    made = (await client.post(f"{FHIR}/Patient", json=patient(mrn="T9"))).json()
    old = (await client.post(f"{FHIR}/Observation",
                             json=observation(f"Patient/{made['id']}"))).json()
    pat = "urn:uuid:5b1f0e53-62a4-4b0b-9d35-0f8f1d0f3f11"
    obs = [entry(observation(pat, value=100 + i)) for i in range(n + 2)]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        obs[0], {"request": {"method": "DELETE", "url": f"Observation/{old['id']}"}},
        *obs[1:], entry(patient(mrn="T9"), pat, ifNoneExist=f"identifier={MRN_SYSTEM}|T9")]}
    r = await client.post(FHIR, json=bundle, headers={"Prefer": "return=representation"})
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert [e["response"]["status"] for e in out] == (
        ["201 Created", "200 OK"] + ["201 Created"] * (n + 1) + ["200 OK"])
    created = [out[0], *out[2:-1]]
    for i, e in enumerate(created):
        body = e["resource"]
        assert e["response"]["location"] == f"Observation/{body['id']}/_history/1"
        assert body["meta"]["versionId"] == "1"
        assert body["subject"]["reference"] == f"Patient/{made['id']}"
        assert body["valueQuantity"]["value"] == 100 + i
        stored = (await client.get(f"{FHIR}/Observation/{body['id']}")).json()
        assert stored == body
    prov = (await client.get(f"{FHIR}/Provenance",
                             params={"target": f"Observation/{created[0]['resource']['id']}"}
                             )).json()
    assert prov["total"] == 1
    targets = [t["reference"] for t in prov["entry"][0]["resource"]["target"]]
    ids = [f"Observation/{e['resource']['id']}" for e in created]
    assert targets == [ids[0], f"Observation/{old['id']}", *ids[1:]]


async def test_conditional_entry_urls_may_carry_url_systems(client: httpx.AsyncClient):
    system = "http://hospital.example.cn/fhir/sid/mrn"
    p = patient(mrn="U1") | {"identifier": [{"system": system, "value": "U1"}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(p, method="PUT", url=f"Patient?identifier={system}|U1")]}
    first = await client.post(FHIR, json=bundle)
    assert first.status_code == 200, first.text
    again = await client.post(FHIR, json=bundle)
    assert again.json()["entry"][0]["response"]["status"] == "200 OK"
    assert await total(client, "Patient") == 1
    elsewhere = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(p, method="PUT", url=f"http://elsewhere.example/fhir/Patient?identifier={system}|U1")]}
    assert (await client.post(FHIR, json=elsewhere)).status_code == 400
