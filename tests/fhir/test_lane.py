"""The short route for FHIR search and read (hie/fhir/lane.py): which requests
it takes, and that its answers are the FastAPI routes' answers."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fhirdata import MRN_SYSTEM, observation, patient
from starlette.routing import Match

from hie.fhir import lane
from hie.fhir import router as fhir_routes
from hie.metrics import METRICS

FHIR = "/fhir"


def _scope(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": ""}


@pytest.mark.parametrize(("method", "path", "route"), [
    ("GET", "/fhir/Patient", "/fhir/{resource_type}"),
    ("GET", "/fhir/Observation", "/fhir/{resource_type}"),
    ("GET", "/fhir/Patient/abc-1.2", "/fhir/{resource_type}/{id}"),
    ("GET", "/fhir/metadata", None),
    ("GET", "/fhir/_history", None),
    ("GET", "/fhir/patient", None),  # not a resource type: FastAPI's route answers
    ("GET", "/fhir/.well-known/smart-configuration", None),
    ("GET", "/fhir/Patient/_history", None),
    ("GET", "/fhir/Patient/$everything", None),
    ("GET", "/fhir/Patient/a_b", None),  # not a FHIR id
    ("GET", "/fhir/Patient/" + "x" * 65, None),
    ("GET", "/fhir/Patient/a/_history", None),
    ("HEAD", "/fhir/Patient", None),
    ("POST", "/fhir/Patient", None),
    ("PUT", "/fhir/Patient/abc", None),
    ("DELETE", "/fhir/Patient/abc", None),
])
def test_the_lane_takes_only_get_search_and_read(method: str, path: str, route: str | None):
    taken = [r.path for r in lane.lane_routes()
             if r.matches(_scope(method, path))[0] is Match.FULL]
    assert taken == ([route] if route else [])
    # not even a partial match for other methods (it would answer 405 itself)
    assert all(r.matches(_scope(method, path))[0] is Match.NONE
               for r in lane.lane_routes()) == (route is None)


def test_the_lane_stands_in_front_of_every_route(app: FastAPI):
    routes = app.router.routes
    assert [type(r) for r in routes[:2]] == [lane.LaneRoute, lane.LaneRoute]
    assert not any(isinstance(r, lane.LaneRoute) for r in routes[2:])


async def _exchange(client: httpx.AsyncClient, requests: list[str]) -> list[tuple]:
    out = []
    for url in requests:
        r = await client.get(url)
        body = r.json() if r.content else None
        if isinstance(body, dict):
            body.pop("id", None)
            body.get("meta", {}).pop("lastUpdated", None)
        headers = {k: v for k, v in r.headers.items() if k not in ("date",)}
        out.append((r.status_code, headers, orjson.dumps(body, option=orjson.OPT_SORT_KEYS)))
    return out


async def test_answers_are_those_of_the_fastapi_routes(
        app: FastAPI, client: httpx.AsyncClient,
        make_client: Callable[..., httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch):
    p = (await client.post(f"{FHIR}/Patient", json=patient(mrn="LANE1"))).json()
    await client.post(f"{FHIR}/Observation",
                      json=observation(f"Patient/{p['id']}", "8480-6", 120,
                                       "2024-03-01T08:30:00+08:00"))
    requests = [
        f"{FHIR}/Patient?identifier={MRN_SYSTEM}|LANE1",
        f"{FHIR}/Observation?patient=Patient/{p['id']}&_count=1",
        f"{FHIR}/Patient?identifier={MRN_SYSTEM}|LANE1&_revinclude=Observation:subject",
        f"{FHIR}/Patient?birthdate=notadate",  # 400
        f"{FHIR}/Patient?nonsense=1",
        f"{FHIR}/Patient/{p['id']}",
        f"{FHIR}/Patient/does-not-exist",  # 404
        f"{FHIR}/Nonsense",  # unknown type: 404
        f"{FHIR}/Nonsense/abc",
        f"{FHIR}/AuditEvent",  # not the caller's to read: empty
    ]
    taken: list[str] = []
    search, read = fhir_routes.search, fhir_routes.read

    async def counted_search(*args: object, **kwargs: object):  # the lane's call only
        taken.append("search")
        return await search(*args, **kwargs)  # type: ignore[arg-type]

    async def counted_read(*args: object, **kwargs: object):
        taken.append("read")
        return await read(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fhir_routes, "search", counted_search)
    monkeypatch.setattr(fhir_routes, "read", counted_read)
    denied = [f"{FHIR}/Observation?patient=Patient/{p['id']}",  # 403: scope
              f"{FHIR}/Observation/abc"]
    unauthenticated = [f"{FHIR}/Patient", f"{FHIR}/Patient/{p['id']}"]  # 401
    async with make_client(scope="system/Patient.rs") as narrow, \
            make_client(organization="") as anonymous:
        by_lane = (await _exchange(client, requests) + await _exchange(narrow, denied)
                   + await _exchange(anonymous, unauthenticated))
        # the 401s are refused by access(), before the route functions
        assert taken.count("search") == 8 and taken.count("read") == 4
        app.router.routes[:] = [r for r in app.router.routes
                                if not isinstance(r, lane.LaneRoute)]
        by_fastapi = (await _exchange(client, requests) + await _exchange(narrow, denied)
                      + await _exchange(anonymous, unauthenticated))
    assert len(taken) == 12  # the FastAPI routes answered the second round
    assert [r[0] for r in by_lane] == [200, 200, 200, 400, 200, 200, 404, 404, 404, 200,
                                       403, 403, 401, 401]
    assert by_lane == by_fastapi


async def test_metrics_name_the_lane_like_the_route(client: httpx.AsyncClient):
    before = METRICS.render()
    assert (await client.get(f"{FHIR}/Patient")).status_code == 200
    after = METRICS.render()
    line = [x for x in after.splitlines()
            if 'route="/fhir/{resource_type}"' in x and 'method="GET"' in x
            and x.startswith("hie_http_requests_total")]
    assert line and line != [x for x in before.splitlines() if x in line]
