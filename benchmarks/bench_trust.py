"""Cost of authentication and audit per request (issue 3).

The same read and write workloads run against two builds of the same app, on
the same store, in one process and one run, alternating request by request so
that drift (caches, the file growing) hits both alike:

* **trusted** — the app as it ships: the bearer token is verified (ES384
  signature, claims, cache), scopes are checked, every read is queued for the
  batched, hash-chained audit log and every write appends its audit record in
  its own transaction, and usage is metered;
* **bare** — the same reads and writes through the same services and response
  helpers on the same store, with a fixed caller: no token, no scope check, no
  audit record, no metering.

Requests go through the ASGI app in-process (httpx's ASGITransport), so the
figures are the server's own work with no network stack: the overhead shows up
at its largest relative size.

    .venv/bin/python -m benchmarks.bench_trust [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Mount

from benchmarks.common import free_port
from hie import errors
from hie.app import create_app
from hie.auth.context import AuthContext
from hie.auth.tokens import TokenService
from hie.config import Settings
from hie.dependencies import REGISTRY_SOURCE
from hie.fhir import http, searching, service
from hie.fhir.validate import parse_resource
from hie.limits import BodySizeLimit
from hie.metrics import MetricsMiddleware
from hie.store.base import Store
from hie.store.query import Restriction

ORG = "benchhosp"
BASE = "http://bench"


def _patient(i: int) -> dict:
    return {"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01",
            "identifier": [{"system": "urn:oid:1.2.156.1.2", "value": f"MRN{i}"}],
            "name": [{"family": "王", "given": [f"秀英{i}"]}]}


def _observation(pid: str, i: int) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": f"2024-01-{1 + i % 28:02d}T08:00:00+08:00",
            "valueQuantity": {"value": 60 + i % 40, "unit": "/min",
                              "system": "http://unitsofmeasure.org", "code": "/min"}}


def bare_app(trusted: FastAPI) -> FastAPI:
    """The same reads and writes as the FHIR router, through the same services
    and response helpers, on the trusted app's store, without authentication,
    scope checks, audit or metering — the reference the overhead is measured
    against. (Not ``dependency_overrides``: FastAPI re-analyses an overridden
    dependency on every request, which would make the reference the slower one.)"""
    settings = trusted.state.settings
    app = FastAPI()
    # the same middleware as the real app, but for metering (a trust-layer cost)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       too_large=errors.too_large_app)
    app.add_middleware(MetricsMiddleware)
    ctx = AuthContext(organization=ORG, client_id=ORG)
    restriction = Restriction(sources=frozenset({ctx.source, REGISTRY_SOURCE}))

    def options(request: Request) -> searching.SearchOptions:
        return searching.SearchOptions(base=settings.fhir_base,
                                       default_count=settings.default_page_size,
                                       max_count=settings.max_page_size,
                                       restriction=restriction)

    async def get_store() -> Store:  # as cheap as the app's own get_store
        return trusted.state.store

    @app.get("/fhir/{resource_type}/{id}")
    async def read(resource_type: str, id: str,
                   store: Store = Depends(get_store)) -> Response:
        rec = await service.read(store, resource_type=resource_type, id=id,
                                 restriction=restriction)
        return http.resource_response(rec, settings.fhir_base)

    @app.get("/fhir/{resource_type}")
    async def search(resource_type: str, request: Request,
                     store: Store = Depends(get_store)) -> Response:
        out = await searching.search(store, resource_type=resource_type,
                                     params=list(request.query_params.multi_items()),
                                     options=options(request))
        return http.fhir_response(out)

    @app.post("/fhir/{resource_type}", status_code=201)
    async def create(resource_type: str, request: Request,
                     store: Store = Depends(get_store)) -> Response:
        resource = await run_in_threadpool(parse_resource, await request.body(), resource_type)
        result = await service.create(store, ctx, resource=resource,
                                      hooks=trusted.state.write_hooks)
        return http.write_response(result, trusted.state.settings.fhir_base, request)

    return app


def _settings(folder: str, base: str = BASE) -> Settings:
    return Settings(store_url=f"sqlite:///{Path(folder)}/hie.db", base_url=base,
                    var_dir=folder)


def _headers(settings: Settings) -> dict[str, str]:
    token, _, _ = TokenService(settings).issue(client_id=ORG, organization=ORG,
                                               scope="system/*.cruds")
    return {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"}


async def run(requests: int) -> dict[str, float]:
    """Both builds in this process, called through ASGI (no network)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(tmp)
        trusted = create_app(settings)
        bare = bare_app(trusted)
        async with trusted.router.lifespan_context(trusted):
            headers = _headers(settings)
            clients = {
                name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                        base_url=BASE, headers=headers)
                for name, app in (("trusted", trusted), ("bare", bare))}
            try:
                return await _measure(clients, requests)
            finally:
                for c in clients.values():
                    await c.aclose()


def serve(port: int, folder: str) -> None:
    """Run both builds in one uvicorn server: the app at /, the bare one at /bare."""
    import uvicorn

    trusted = create_app(_settings(folder, f"http://127.0.0.1:{port}"))
    # first in the route list, so a /bare request is not first tried against every
    # route of the app (which would charge the reference for routing it does not need)
    trusted.router.routes.insert(0, Mount("/bare", app=bare_app(trusted)))
    uvicorn.run(trusted, host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


def run_http(requests: int) -> dict[str, float]:
    """Both builds behind one uvicorn server in another process, over HTTP."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_trust", "--serve",
                                 str(port), "--dir", tmp], cwd=Path(__file__).parent.parent)
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            headers = _headers(_settings(tmp, base))

            async def measure() -> dict[str, float]:
                clients = {"trusted": httpx.AsyncClient(base_url=base, headers=headers),
                           "bare": httpx.AsyncClient(base_url=base + "/bare",
                                                     headers=headers)}
                try:
                    return await _measure(clients, requests)
                finally:
                    for c in clients.values():
                        await c.aclose()

            return asyncio.run(measure())
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def _measure(clients: dict[str, httpx.AsyncClient], requests: int) -> dict[str, float]:
    seed = clients["trusted"]
    pids = []
    for i in range(50):
        r = await seed.post("/fhir/Patient", json=_patient(i))
        pids.append(r.json()["id"])
        for j in range(10):
            await seed.post("/fhir/Observation", json=_observation(pids[-1], j))
    times: dict[tuple[str, str], list[float]] = {}

    async def timed(kind: str, name: str, call) -> None:  # noqa: ANN001
        start = time.perf_counter()
        r = await call(clients[name])
        elapsed = time.perf_counter() - start
        assert r.status_code in (200, 201), r.text
        times.setdefault((kind, name), []).append(elapsed)

    for i in range(requests):
        pid = pids[i % len(pids)]
        order = ("trusted", "bare") if i % 2 == 0 else ("bare", "trusted")
        for name in order:
            await timed("read", name, lambda c, pid=pid: c.get(f"/fhir/Patient/{pid}"))
            await timed("search", name, lambda c, pid=pid: c.get(
                "/fhir/Observation", params={"subject": f"Patient/{pid}", "code": "8867-4"}))
            if i % 4 == 0:
                await timed("write", name, lambda c, pid=pid, i=i: c.post(
                    "/fhir/Observation", json=_observation(pid, i)))
    out: dict[str, float] = {}
    for kind in ("read", "search", "write"):
        t = statistics.median(times[(kind, "trusted")]) * 1e6
        b = statistics.median(times[(kind, "bare")]) * 1e6
        out[f"{kind}_trusted_us"], out[f"{kind}_bare_us"] = t, b
        out[f"{kind}_overhead_us"] = t - b
        out[f"{kind}_overhead_pct"] = (t / b - 1) * 100
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.dir)
        return
    for label, runner in (("in-process (ASGI, no network)",
                           lambda n: asyncio.run(run(n))),
                          ("over HTTP (uvicorn, one worker)", run_http)):
        figures = runner(args.requests)
        print(f"\n{label}, {args.requests} rounds")
        print(f"{'workload':<8} {'trusted p50':>12} {'bare p50':>10} {'overhead':>10} "
              f"{'ratio':>7}")
        for kind in ("read", "search", "write"):
            print(f"{kind:<8} {figures[f'{kind}_trusted_us']:>10.0f}µs "
                  f"{figures[f'{kind}_bare_us']:>8.0f}µs "
                  f"{figures[f'{kind}_overhead_us']:>8.0f}µs "
                  f"{figures[f'{kind}_overhead_pct']:>6.1f}%")


if __name__ == "__main__":
    main()
