"""The metering middleware counting real requests, and ``GET /admin/usage``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException, Request

from hie.metering.counters import MeteringMiddleware, UsageMeter, note_usage
from hie.metering.router import usage_router
from hie.metering.service import Usage, add_usage
from hie.store.base import Store

BASE = "http://testserver"


async def require_admin(x_test_admin: str | None = Header(None)) -> str:
    """Stands in for the trust layer's administrator dependency."""
    if x_test_admin != "yes":
        raise HTTPException(401, "administrator token required")
    return "admin"


@pytest.fixture
async def app(store: Store) -> AsyncIterator[FastAPI]:
    app = FastAPI()
    app.state.store = store
    app.state.usage_meter = UsageMeter(store)
    app.add_middleware(MeteringMiddleware)
    app.include_router(usage_router(require_admin))

    @app.post("/fhir/Observation")
    async def create(request: Request) -> dict[str, str]:
        await request.body()
        note_usage(request, organization="h1", resources_written=1)  # as the routes will
        return {"resourceType": "Observation", "id": "o1"}

    @app.get("/fhir/Observation")
    async def search(request: Request) -> dict[str, object]:
        note_usage(request, organization="h2")
        note_usage(request, resources_read=3)
        return {"resourceType": "Bundle", "entry": [{}, {}, {}]}

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


async def test_requests_are_counted_per_organisation_with_their_bytes(
        app: FastAPI, client: httpx.AsyncClient) -> None:
    body = b'{"resourceType": "Observation", "status": "final"}'
    r = await client.post("/fhir/Observation", content=body)
    assert r.status_code == 200
    await client.get("/fhir/Observation")
    await client.get("/fhir/Observation")
    await client.get("/healthz")  # public, charged to no one

    pending = app.state.usage_meter.pending()
    today = datetime.now(UTC).date()
    assert set(pending) == {("h1", today), ("h2", today)}
    h1, h2 = pending[("h1", today)], pending[("h2", today)]
    assert (h1.requests, h1.resources_written, h1.bytes_in) == (1, 1, len(body))
    assert h1.bytes_out == len(r.content)
    assert (h2.requests, h2.resources_read, h2.bytes_in) == (2, 6, 0)


async def test_usage_needs_an_administrator(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/usage")).status_code == 401


async def test_usage_by_organisation_and_day(app: FastAPI, client: httpx.AsyncClient,
                                             store: Store) -> None:
    await add_usage(store, {
        ("h1", date(2026, 11, 1)): Usage(requests=3, resources_read=10, bytes_out=500),
        ("h1", date(2026, 11, 2)): Usage(requests=1, resources_written=2, bytes_in=40),
        ("h2", date(2026, 11, 2)): Usage(requests=7),
        ("h2", date(2026, 10, 1)): Usage(requests=100),
    }, "2026-11-02T00:00:00.000000")
    admin = {"X-Test-Admin": "yes"}

    r = await client.get("/admin/usage", params={"from": "2026-11-01", "to": "2026-11-30"},
                         headers=admin)
    assert r.status_code == 200
    doc = r.json()
    assert [(d["organization"], d["date"]) for d in doc["days"]] == [
        ("h1", "2026-11-01"), ("h1", "2026-11-02"), ("h2", "2026-11-02")]
    assert doc["totals"]["h1"] == {"requests": 4, "resources_read": 10, "resources_written": 2,
                                   "bytes_in": 40, "bytes_out": 500}
    assert doc["totals"]["h2"]["requests"] == 7

    r = await client.get("/admin/usage", headers=admin,
                         params={"organization": "h2", "from": "2026-10-01", "to": "2026-11-30"})
    assert r.json()["totals"] == {"h2": {"requests": 107, "resources_read": 0,
                                         "resources_written": 0, "bytes_in": 0, "bytes_out": 0}}

    # the live counts show up once the meter flushes
    app.state.usage_meter.count("h3", resources_read=1)
    await app.state.usage_meter.flush()
    r = await client.get("/admin/usage", params={"organization": "h3"}, headers=admin)
    assert r.json()["totals"]["h3"]["resources_read"] == 1


@pytest.mark.parametrize("params", [
    {"from": "2026-13-01"}, {"to": "yesterday"},
    {"from": "2026-11-02", "to": "2026-11-01"}, {"from": "2024-01-01", "to": "2026-01-01"},
])
async def test_bad_ranges_are_refused(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    r = await client.get("/admin/usage", params=params, headers={"X-Test-Admin": "yes"})
    assert r.status_code == 400
