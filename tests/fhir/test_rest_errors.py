"""Bad input gets a clear OperationOutcome and leaves nothing behind."""

from __future__ import annotations

import httpx
from fhirdata import patient

FHIR = "/fhir"


async def patients(client: httpx.AsyncClient) -> int:
    return (await client.get(f"{FHIR}/Patient", params={"_summary": "count"})).json()["total"]


def assert_outcome(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and body["issue"][0]["diagnostics"]
    return body


async def test_malformed_json(client: httpx.AsyncClient):
    r = await client.post(f"{FHIR}/Patient", content=b'{"resourceType": "Patient",')
    assert_outcome(r, 400)
    assert await patients(client) == 0


async def test_unknown_resource_type(client: httpx.AsyncClient):
    assert_outcome(await client.get(f"{FHIR}/Spaceship"), 404)
    assert_outcome(await client.post(f"{FHIR}/Spaceship", json={"resourceType": "Spaceship"}),
                   404)


async def test_wrong_resource_type_in_body(client: httpx.AsyncClient):
    r = await client.post(f"{FHIR}/Patient", json={"resourceType": "Observation"})
    body = assert_outcome(r, 400)
    assert body["issue"][0]["expression"] == ["resourceType"]
    assert await patients(client) == 0


async def test_invalid_element_names_its_location(client: httpx.AsyncClient):
    bad = patient() | {"gender": 42, "birthDate": "not-a-date"}
    body = assert_outcome(await client.post(f"{FHIR}/Patient", json=bad), 400)
    where = {e for i in body["issue"] for e in i.get("expression", [])}
    assert "Patient.gender" in where
    assert "Patient.birthDate" in where
    assert await patients(client) == 0


async def test_unknown_element_is_refused(client: httpx.AsyncClient):
    body = assert_outcome(await client.post(f"{FHIR}/Patient", json=patient() | {"colour": 1}),
                          400)
    assert any("colour" in e for i in body["issue"] for e in i.get("expression", []))


async def test_over_size_body_is_413(client: httpx.AsyncClient):
    big = patient() | {"text": {"status": "generated",
                                "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">"
                                       + "x" * 300_000 + "</div>"}}
    assert_outcome(await client.post(f"{FHIR}/Patient", json=big), 413)
    assert await patients(client) == 0


async def test_over_size_streamed_body_is_413(client: httpx.AsyncClient):
    async def chunks():
        for _ in range(100):
            yield b"x" * 10_000

    r = await client.post(f"{FHIR}/Patient", content=chunks())
    assert_outcome(r, 413)


async def test_search_values_cannot_smuggle_operators(client: httpx.AsyncClient):
    await client.post(f"{FHIR}/Patient", json=patient())
    for params in ({"identifier[$ne]": "x"}, {"$where": "1"},
                   {"family": '{"$gt": ""}'}, {"identifier": '{"$ne": null}'}):
        r = await client.get(f"{FHIR}/Patient", params=params)
        assert_outcome(r, 400)


async def test_bad_search_values(client: httpx.AsyncClient):
    assert_outcome(await client.get(f"{FHIR}/Patient", params={"birthdate": "yesterday"}), 400)
    assert_outcome(await client.get(f"{FHIR}/Observation",
                                    params={"value-quantity": "lots"}), 400)
    assert_outcome(await client.get(f"{FHIR}/Patient", params={"_count": "-1"}), 400)
    assert_outcome(await client.get(f"{FHIR}/Patient", params={"_sort": "colour"}), 400)
    assert_outcome(await client.get(f"{FHIR}/Patient", params={"_cursor": "%%%"}), 400)


async def test_unknown_parameters_ignored_unless_strict(client: httpx.AsyncClient):
    await client.post(f"{FHIR}/Patient", json=patient())
    lenient = await client.get(f"{FHIR}/Patient", params={"colour": "blue", "gender": "female"})
    assert lenient.status_code == 200
    bundle = lenient.json()
    assert bundle["total"] == 1
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "colour" not in self_link
    assert "gender=female" in self_link
    strict = await client.get(f"{FHIR}/Patient", params={"colour": "blue"},
                              headers={"Prefer": "handling=strict"})
    assert_outcome(strict, 400)


async def test_wrong_content_type_is_415(client: httpx.AsyncClient):
    r = await client.post(f"{FHIR}/Patient", content=b"<Patient/>",
                          headers={"Content-Type": "application/fhir+xml"})
    assert_outcome(r, 415)


async def test_unknown_route_under_fhir_is_outcome(client: httpx.AsyncClient):
    assert_outcome(await client.get(f"{FHIR}/Patient/1/2/3/4"), 404)


async def test_code_outside_required_value_set_is_refused(client: httpx.AsyncClient):
    body = assert_outcome(await client.post(f"{FHIR}/Patient",
                                            json=patient() | {"gender": "sometimes"}), 400)
    assert body["issue"][0]["code"] == "code-invalid"
    assert body["issue"][0]["expression"] == ["Patient.gender"]
    assert await patients(client) == 0


async def test_audit_events_cannot_be_written_through_the_api(client: httpx.AsyncClient):
    event = {"resourceType": "AuditEvent", "recorded": "2024-01-01T00:00:00Z",
             "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
             "agent": [{"requestor": True, "who": {"display": "forger"}}],
             "source": {"observer": {"display": "forger"}}}
    assert_outcome(await client.post(f"{FHIR}/AuditEvent", json=event), 405)
    assert_outcome(await client.put(f"{FHIR}/AuditEvent/local-x", json=event | {"id": "local-x"}),
                   405)
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": event, "request": {"method": "POST", "url": "AuditEvent"}}]}
    assert_outcome(await client.post(FHIR, json=bundle), 405)
    search = await client.get(f"{FHIR}/AuditEvent", params={"_summary": "count"})
    assert search.json()["total"] == 0
