"""Patient/$everything: the compartment, paged, with _since and _type."""

from __future__ import annotations

import httpx
from fhirdata import condition, encounter, observation, patient

FHIR = "/fhir"


async def post(client: httpx.AsyncClient, resource: dict) -> dict:
    r = await client.post(f"{FHIR}/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


async def walk(client: httpx.AsyncClient, url: str) -> tuple[list[dict], int]:
    out: list[dict] = []
    total = -1
    next_url: str | None = url
    while next_url:
        page = (await client.get(next_url.removeprefix("http://testserver"))).json()
        total = page["total"] if total < 0 else total
        out += [e["resource"] for e in page.get("entry", [])]
        next_url = next((link["url"] for link in page["link"]
                         if link["relation"] == "next"), None)
    return out, total


async def test_everything_pages_through_the_whole_compartment(client: httpx.AsyncClient):
    me = await post(client, patient(mrn="E1"))
    other = await post(client, patient(mrn="E2"))
    ref = f"Patient/{me['id']}"
    mine = [me["id"]]
    for i in range(12):
        mine.append((await post(client, observation(ref, value=100 + i)))["id"])
    mine.append((await post(client, condition(ref)))["id"])
    mine.append((await post(client, encounter(ref)))["id"])
    await post(client, observation(f"Patient/{other['id']}"))

    resources, total = await walk(client, f"{FHIR}/Patient/{me['id']}/$everything?_count=4")
    # the compartment also holds the Provenance whose target is the Patient itself
    provenance = [r for r in resources if r["resourceType"] == "Provenance"]
    assert [p["target"] for p in provenance] == [[{"reference": ref}]]
    assert total == len(mine) + 1 == 16
    assert sorted(r["id"] for r in resources if r["resourceType"] != "Provenance") == sorted(mine)
    assert resources[0]["resourceType"] == "Patient"


async def test_everything_type_and_since(client: httpx.AsyncClient):
    me = await post(client, patient(mrn="E3"))
    ref = f"Patient/{me['id']}"
    await post(client, condition(ref))
    obs = await post(client, observation(ref))
    resources, _ = await walk(client, f"{FHIR}/Patient/{me['id']}/$everything?_type=Condition")
    assert [r["resourceType"] for r in resources] == ["Condition"]
    since = obs["meta"]["lastUpdated"]
    resources, total = await walk(
        client, f"{FHIR}/Patient/{me['id']}/$everything?_since={since}")
    assert [r["id"] for r in resources] == [obs["id"]]
    assert total == 1


async def test_everything_unknown_patient_is_404(client: httpx.AsyncClient):
    r = await client.get(f"{FHIR}/Patient/nobody/$everything")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"
