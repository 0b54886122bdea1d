"""create, read, vread, update, delete and _history over HTTP."""

from __future__ import annotations

import httpx
from fhirdata import observation, patient

FHIR = "/fhir"


async def create(client: httpx.AsyncClient, resource: dict) -> httpx.Response:
    r = await client.post(f"{FHIR}/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r


async def test_create_assigns_id_and_meta_and_answers_location(client: httpx.AsyncClient):
    body = patient() | {"id": "client-chosen"}
    r = await client.post(f"{FHIR}/Patient", json=body)
    assert r.status_code == 201
    created = r.json()
    assert created["id"] != "client-chosen"
    assert created["meta"]["versionId"] == "1"
    assert created["meta"]["source"] == "urn:hie:organization:local"
    assert created["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["location"] == f"http://testserver/fhir/Patient/{created['id']}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert "last-modified" in r.headers
    assert r.headers["content-type"].startswith("application/fhir+json")


async def test_read_returns_what_was_created(client: httpx.AsyncClient):
    created = (await create(client, patient())).json()
    r = await client.get(f"{FHIR}/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    assert r.headers["etag"] == 'W/"1"'


async def test_read_unknown_is_404_outcome(client: httpx.AsyncClient):
    r = await client.get(f"{FHIR}/Patient/nope")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["code"] == "not-found"


async def test_update_creates_new_version_and_vread_keeps_old(client: httpx.AsyncClient):
    created = (await create(client, patient())).json()
    pid = created["id"]
    changed = created | {"gender": "male"}
    r = await client.put(f"{FHIR}/Patient/{pid}", json=changed)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert r.headers["etag"] == 'W/"2"'
    v1 = await client.get(f"{FHIR}/Patient/{pid}/_history/1")
    v2 = await client.get(f"{FHIR}/Patient/{pid}/_history/2")
    assert v1.json()["gender"] == "female"
    assert v2.json()["gender"] == "male"
    assert (await client.get(f"{FHIR}/Patient/{pid}/_history/3")).status_code == 404


async def test_update_as_create_with_client_id_in_own_namespace(client: httpx.AsyncClient):
    r = await client.put(f"{FHIR}/Patient/local-p42", json=patient() | {"id": "local-p42"})
    assert r.status_code == 201
    assert r.json()["id"] == "local-p42"
    assert (await client.get(f"{FHIR}/Patient/local-p42")).status_code == 200


async def test_update_as_create_outside_own_namespace_is_refused(client: httpx.AsyncClient):
    r = await client.put(f"{FHIR}/Patient/p-42", json=patient() | {"id": "p-42"})
    assert r.status_code == 403
    assert r.json()["issue"][0]["code"] == "forbidden"
    assert (await client.get(f"{FHIR}/Patient/p-42")).status_code == 404


async def test_update_id_mismatch_is_400_and_writes_nothing(client: httpx.AsyncClient):
    r = await client.put(f"{FHIR}/Patient/a", json=patient() | {"id": "b"})
    assert r.status_code == 400
    assert (await client.get(f"{FHIR}/Patient/a")).status_code == 404
    assert (await client.get(f"{FHIR}/Patient/b")).status_code == 404


async def test_if_match_guards_updates(client: httpx.AsyncClient):
    created = (await create(client, patient())).json()
    pid = created["id"]
    stale = await client.put(f"{FHIR}/Patient/{pid}", json=created,
                             headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    ok = await client.put(f"{FHIR}/Patient/{pid}", json=created, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    assert ok.json()["meta"]["versionId"] == "2"


async def test_delete_is_versioned_and_read_is_410(client: httpx.AsyncClient):
    created = (await create(client, patient())).json()
    pid = created["id"]
    r = await client.delete(f"{FHIR}/Patient/{pid}")
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"2"'
    gone = await client.get(f"{FHIR}/Patient/{pid}")
    assert gone.status_code == 410
    assert (await client.get(f"{FHIR}/Patient/{pid}/_history/1")).status_code == 200
    assert (await client.get(f"{FHIR}/Patient/{pid}/_history/2")).status_code == 410
    search = (await client.get(f"{FHIR}/Patient", params={"_id": pid})).json()
    assert search.get("entry", []) == []
    # re-creating a deleted resource by update is answered 201
    again = await client.put(f"{FHIR}/Patient/{pid}", json=created)
    assert again.status_code == 201
    assert again.json()["meta"]["versionId"] == "3"


async def test_instance_and_type_history_newest_first(client: httpx.AsyncClient):
    created = (await create(client, patient())).json()
    pid = created["id"]
    await client.put(f"{FHIR}/Patient/{pid}", json=created | {"gender": "male"})
    await client.delete(f"{FHIR}/Patient/{pid}")
    h = (await client.get(f"{FHIR}/Patient/{pid}/_history")).json()
    assert h["type"] == "history"
    assert h["total"] == 3
    methods = [e["request"]["method"] for e in h["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in h["entry"][0]
    await create(client, observation(f"Patient/{pid}"))
    t = (await client.get(f"{FHIR}/Patient/_history")).json()
    assert t["total"] == 3
    s = (await client.get(f"{FHIR}/_history")).json()
    kinds = [e["request"]["url"].split("/")[0] for e in s["entry"]]
    # four writes, each with its Provenance
    assert s["total"] == 8
    assert kinds.count("Provenance") == 4


async def test_history_pages_with_next_links(client: httpx.AsyncClient):
    created = (await create(client, patient())).json()
    pid = created["id"]
    for g in ("male", "female", "other", "unknown"):
        await client.put(f"{FHIR}/Patient/{pid}", json=created | {"gender": g})
    versions: list[str] = []
    url: str | None = f"{FHIR}/Patient/{pid}/_history?_count=2"
    while url:
        page = (await client.get(url)).json()
        versions += [e["resource"]["meta"]["versionId"] for e in page["entry"]]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert versions == ["5", "4", "3", "2", "1"]


async def test_prefer_return_minimal_and_outcome(client: httpx.AsyncClient):
    r = await client.post(f"{FHIR}/Patient", json=patient(),
                          headers={"Prefer": "return=minimal"})
    assert r.status_code == 201
    assert r.content == b""
    assert r.headers["location"]
    r = await client.post(f"{FHIR}/Patient", json=patient(mrn="2"),
                          headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_every_write_gets_a_provenance(client: httpx.AsyncClient):
    created = (await create(client, patient())).json()
    pid = created["id"]
    await client.put(f"{FHIR}/Patient/{pid}", json=created | {"gender": "male"})
    bundle = (await client.get(f"{FHIR}/Provenance", params={"target": f"Patient/{pid}"})).json()
    assert bundle["total"] == 2
    activities = sorted(e["resource"]["activity"]["coding"][0]["code"] for e in bundle["entry"])
    assert activities == ["CREATE", "UPDATE"]
    agent = bundle["entry"][0]["resource"]["agent"][-1]["who"]["reference"]
    assert agent == "Organization/local"


async def test_body_naming_another_source_is_refused(client: httpx.AsyncClient):
    body = patient() | {"meta": {"source": "urn:hie:organization:other-hospital"}}
    r = await client.post(f"{FHIR}/Patient", json=body)
    assert r.status_code == 403
    assert (await client.get(f"{FHIR}/Patient", params={"_summary": "count"})).json()["total"] == 0
    own = patient() | {"meta": {"source": "urn:hie:organization:local"}}
    assert (await client.post(f"{FHIR}/Patient", json=own)).status_code == 201


async def test_sensitivity_labels_are_derived_at_ingest(client: httpx.AsyncClient):
    created = (await create(client, patient())).json()
    depression = {"resourceType": "Condition",
                  "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                       "code": "F32.1"}]},
                  "subject": {"reference": f"Patient/{created['id']}"}}
    stored = (await create(client, depression)).json()
    labels = {(c["system"], c["code"]) for c in stored["meta"]["security"]}
    assert ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PSY") in labels
    found = await client.get(f"{FHIR}/Condition", params={"_security": "PSY"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [stored["id"]]
    hypertension = (await create(client, {**depression, "code": {"coding": [{
        "system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]}})).json()
    assert "security" not in hypertension["meta"]
