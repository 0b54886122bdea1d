"""``Patient/$ihe-pix`` (PIXm ITI-83) and the ``/admin/identity`` routes over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from identity.helpers import RID, Pusher, make_rid, patient

from hie import errors
from hie.config import Settings
from hie.dependencies import get_restriction
from hie.identity.router import make_admin_router, pix_router
from hie.store.base import Store
from hie.store.query import AnyOf, SearchQuery, TokenMatch

ADMIN = SimpleNamespace(admin_id="admin-7", organization="region")


def as_admin() -> Any:
    return ADMIN


def nobody() -> Any:
    raise HTTPException(401, "no token")


def build(store: Store, settings: Settings, admin: Any = as_admin) -> FastAPI:
    app = FastAPI()
    app.state.store, app.state.settings = store, settings
    errors.install(app)
    # the caller's consent view is the app's business; here: an unrestricted caller
    app.dependency_overrides[get_restriction] = lambda: None
    app.include_router(pix_router, prefix="/fhir")
    app.include_router(make_admin_router(admin=admin))
    return app


@pytest.fixture
async def client(store: Store, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build(store, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def pix(client: httpx.AsyncClient, source: str, *targets: str) -> httpx.Response:
    params = [("sourceIdentifier", source)] + [("targetSystem", t) for t in targets]
    return await client.get("/fhir/Patient/$ihe-pix", params=params)


async def three_hospitals(push: Pusher) -> tuple[Any, Any, Any, str]:
    number = make_rid()
    a = await push(patient(rid=number, mrn="A-1", hospital="a"), "org-a")
    b = await push(patient(rid=number, mrn="B-1", hospital="b"), "org-b")
    c = await push(patient(name="别人", mrn="C-1", hospital="c"), "org-c")
    return a, b, c, number


async def test_pix_returns_the_identifiers_at_other_hospitals(
        client: httpx.AsyncClient, push: Pusher) -> None:
    a, b, _, number = await three_hospitals(push)
    r = await pix(client, "http://a.example.cn/mrn|A-1")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    params = r.json()["parameter"]
    assert {"name": "targetId", "valueReference": {"reference": f"Patient/{b.patient_id}"}} \
        in params
    idents = [p["valueIdentifier"] for p in params if p["name"] == "targetIdentifier"]
    assert {"system": "http://b.example.cn/mrn", "value": "B-1"} in idents
    # the resident ID number is there once, masked; the source identifier is not repeated
    resident = [i for i in idents if i["system"] == RID]
    assert resident == [{"system": RID, "value": number[:6] + "********" + number[14:]}]
    assert all(i["value"] != "A-1" for i in idents)
    assert number not in r.text
    assert "C-1" not in r.text


async def test_pix_target_system_selects_the_domain(client: httpx.AsyncClient,
                                                    push: Pusher) -> None:
    _, b, _, _ = await three_hospitals(push)
    r = await pix(client, "http://a.example.cn/mrn|A-1", "http://b.example.cn/mrn")
    assert r.json()["parameter"] == [
        {"name": "targetId", "valueReference": {"reference": f"Patient/{b.patient_id}"}},
        {"name": "targetIdentifier",
         "valueIdentifier": {"system": "http://b.example.cn/mrn", "value": "B-1"}}]
    # a known domain where the person has no identifier: 200, nothing
    r = await pix(client, "http://a.example.cn/mrn|A-1", "http://c.example.cn/mrn")
    assert r.status_code == 200 and r.json() == {"resourceType": "Parameters"}


async def test_pix_by_fifteen_digit_resident_number(client: httpx.AsyncClient,
                                                    push: Pusher) -> None:
    a = await push(patient(rid="11010519491231002X", birth="1949-12-31", mrn="A-9"), "org-a")
    await push(patient(rid="110105491231002", birth="1949-12-31", mrn="B-9", hospital="b"),
               "org-b")
    r = await pix(client, f"{RID}|110105491231002", "http://a.example.cn/mrn")
    assert r.status_code == 200
    assert {"name": "targetId", "valueReference": {"reference": f"Patient/{a.patient_id}"}} \
        in r.json()["parameter"]


async def test_pix_failure_cases_follow_iti_83(client: httpx.AsyncClient, push: Pusher) -> None:
    await three_hospitals(push)
    r = await pix(client, "http://a.example.cn/mrn|NOPE")
    assert r.status_code == 404
    assert r.json()["issue"][0]["code"] == "not-found"
    assert r.json()["issue"][0]["diagnostics"] == "sourceIdentifier Patient Identifier not found"
    r = await pix(client, "urn:oid:9.9.9|A-1")
    assert r.status_code == 400
    assert r.json()["issue"][0]["diagnostics"] == "sourceIdentifier Assigning Authority not found"
    r = await pix(client, "http://a.example.cn/mrn|A-1", "urn:oid:9.9.9")
    assert r.status_code == 403
    assert r.json()["issue"][0]["diagnostics"] == "targetSystem not found"
    r = await pix(client, "A-1")
    assert r.status_code == 400
    r = await client.get("/fhir/Patient/$ihe-pix")
    assert r.status_code == 400


async def test_admin_routes_link_unlink_and_audit(client: httpx.AsyncClient, push: Pusher,
                                                  store: Store) -> None:
    a = await push(patient(phone=None, address=None), "org-a")
    b = await push(patient(phone=None, address=None, hospital="b"), "org-b")
    r = await client.get("/admin/identity/reviews")
    assert r.status_code == 200
    [item] = r.json()["items"]
    assert item["patient"] == b.patient_id and item["candidates"][0]["person"] == a.person_id
    r = await client.post(f"/admin/identity/reviews/{item['id']}", json={"decision": "link"})
    assert r.status_code == 200, r.text
    assert r.json()["events"][0]["person"] == a.person_id
    r = await client.get(f"/admin/identity/patients/{b.patient_id}")
    assert sorted(r.json()["patients"]) == sorted([a.patient_id, b.patient_id])
    assert r.json()["method"] == "admin" and r.json()["pinned"] is True
    r = await client.post("/admin/identity/unlink", json={"patient": b.patient_id,
                                                         "reason": "different mothers"})
    assert r.status_code == 200 and r.json()["events"][0]["previousPerson"] == a.person_id
    r = await client.post("/admin/identity/link", json={"patient": b.patient_id,
                                                       "target": a.patient_id})
    assert r.status_code == 200
    # every change went to the audit chain in its transaction
    events = await store.search(SearchQuery("AuditEvent", ()), limit=50)
    assert len(events.resources) == 3
    assert all(b"admin-7" in e.body for e in events.resources)


async def test_admin_route_errors_are_problems(client: httpx.AsyncClient, push: Pusher) -> None:
    a = await push(patient(), "org-a")
    r = await client.post("/admin/identity/unlink", json={"patient": a.patient_id})
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    r = await client.post("/admin/identity/link", json={"patient": "x", "target": "y"})
    assert r.status_code == 404
    r = await client.post("/admin/identity/merge", json={
        "source": "org-z", "prior": a.patient_id, "surviving": a.patient_id})
    assert r.status_code == 409
    r = await client.get("/admin/identity/patients/unknown")
    assert r.status_code == 404


async def test_admin_routes_need_the_admin_dependency(store: Store, settings: Settings) -> None:
    transport = httpx.ASGITransport(app=build(store, settings, admin=nobody))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/admin/identity/reviews")).status_code == 401
        r = await c.post("/admin/identity/link", json={"patient": "a", "target": "b"})
        assert r.status_code == 401


def test_token_query_shape() -> None:
    q = SearchQuery("_Person", (AnyOf((TokenMatch("resident", "h", ""),)),))
    assert q.where[0].terms[0].system == ""
