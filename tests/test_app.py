"""Operational routes: health, metrics, OpenAPI docs, capability statement."""

from __future__ import annotations

import httpx
from fhirdata import patient


async def test_healthz(client: httpx.AsyncClient):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_openapi_docs_are_served(client: httpx.AsyncClient):
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/fhir/{resource_type}/{id}" in spec["paths"]


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient,
                                                        make_client):
    created = (await client.post("/fhir/Patient", json=patient())).json()
    await client.get(f"/fhir/Patient/{created['id']}")
    assert (await client.get("/metrics")).status_code == 403  # a hospital is no admin
    async with make_client("exchange", scope="", roles=["admin"]) as admin:
        answer = await admin.get("/metrics")
    assert answer.status_code == 200
    text = answer.text
    assert 'route="/fhir/{resource_type}/{id}",status="200"' in text
    assert created["id"] not in text  # ids never become labels


async def test_capability_statement_lists_what_works(client: httpx.AsyncClient):
    cs = (await client.get("/fhir/metadata")).json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    types = {r["type"]: r for r in rest["resource"]}
    assert "Observation" in types and "Provenance" in types
    obs_params = {p["name"]: p["type"] for p in types["Observation"]["searchParam"]}
    assert obs_params["code"] == "token"
    assert obs_params["date"] == "date"
    assert obs_params["subject"] == "reference"
    assert obs_params["value-quantity"] == "quantity"
    assert {"code": "transaction"} in rest["interaction"]
    assert types["Patient"]["operation"][0]["name"] == "everything"


async def test_problem_json_outside_fhir(client: httpx.AsyncClient):
    r = await client.get("/nowhere")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_only_the_named_routes_are_public(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as anonymous:
        for path in ("/healthz", "/fhir/metadata", "/fhir/.well-known/smart-configuration",
                     "/auth/jwks"):
            assert (await anonymous.get(path)).status_code == 200, path
        for path in ("/fhir/Patient", "/fhir/Patient/x", "/fhir/_history", "/metrics",
                     "/admin/organizations", "/admin/usage", "/fhir/Patient/x/$everything"):
            r = await anonymous.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = await anonymous.post("/fhir/Patient", json=patient())
        assert r.status_code == 401


async def test_capability_statement_declares_security_and_operations(client: httpx.AsyncClient):
    cs = (await client.get("/fhir/metadata")).json()
    rest = cs["rest"][0]
    assert rest["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    token = rest["security"]["extension"][0]["extension"][0]["valueUri"]
    assert token == "http://testserver/auth/token"
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {o["name"] for o in patient["operation"]} == {"everything", "ihe-pix", "merge"}
    audit = next(r for r in rest["resource"] if r["type"] == "AuditEvent")
    assert {i["code"] for i in audit["interaction"]} == {
        "read", "vread", "history-instance", "history-type", "search-type"}


def test_fhir_routes_come_before_the_routers_outside_fhir(app):
    """Requests are matched against the routes in order, and FHIR requests are
    most of the traffic: every /fhir route must come before the routers
    outside /fhir (the well-known SMART path and PIXm, which the FHIR
    patterns would catch, before the FHIR router itself)."""
    paths = [ctx.path_format if hasattr(ctx, "path_format") else None
             for r in app.routes if hasattr(r, "effective_route_contexts")
             for ctx in r.effective_route_contexts()]
    paths = [p for p in paths if p]
    fhir = [i for i, p in enumerate(paths) if p == "/fhir" or p.startswith("/fhir/")]
    # the operational routes (health, metrics) come first: cheap and few
    outside = [i for i, p in enumerate(paths) if p not in ("/healthz", "/metrics")
               and i not in fhir]
    assert fhir and outside and max(fhir) < min(outside), paths
    assert paths.index("/fhir/.well-known/smart-configuration") \
        < paths.index("/fhir/{resource_type}/{id}")
    assert paths.index("/fhir/Patient/$ihe-pix") < paths.index("/fhir/{resource_type}/{id}")


def test_a_served_app_freezes_its_startup_heap(settings, monkeypatch):
    """``hie serve`` runs ``served_app``: once started, what is alive leaves the
    collector's way (``gc.freeze``); an app built by ``create_app`` alone does not."""
    import gc

    from fastapi.testclient import TestClient

    from hie import app as app_module

    monkeypatch.setattr(app_module, "get_settings", lambda: settings)
    gc.unfreeze()
    try:
        with TestClient(app_module.create_app(settings)):
            assert gc.get_freeze_count() == 0
        with TestClient(app_module.served_app()):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
