"""The portal over the exchange's own store (``StorePortalData``): demo
accounts log in, see every hospital's records, and what they grant in the
portal is what the consent service decides over the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fhir.resources.R4B.bundle import Bundle
from portal_region import REASON, portal_exchange, seed_region
from portalkit import client_for, csrf_of

from consent import service
from hie.config import Settings
from hie.demo import HOSPITALS
from hie.gate.data import StoreConsentData
from schemas.consent import DecisionRequest

BASE = "http://testserver"


@pytest.fixture
async def region(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, dict[str, Any]]]:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/hie.db", base_url=BASE,
                        var_dir=str(tmp_path))
    app = portal_exchange(settings)
    async with app.router.lifespan_context(app):
        creds = await seed_region(app.state.store, settings)
        yield app, creds


async def login(c: httpx.AsyncClient, patient: dict[str, Any]) -> str:
    page = await c.get("/portal/login")
    r = await c.post("/portal/login", data={"username": patient["username"],
                                            "password": patient["password"],
                                            "csrf": csrf_of(page.text)})
    assert r.status_code == 303, r.text
    return csrf_of((await c.get("/portal/records")).text)


async def test_a_demo_patient_sees_records_of_both_hospitals(region):
    app, creds = region
    wang = creds["patients"][0]
    async with client_for(app) as c:
        await login(c, wang)
        html = (await c.get("/portal/records")).text
    assert wang["name"] in html
    for hospital in HOSPITALS:
        assert (hospital.name.split()[0] in html) == (hospital.id in wang["hospitals"])
    assert "Essential hypertension (I10)" in html and "Glucose" in html
    assert wang["resident_id"] not in html  # only name and birth date are summarised


async def test_grant_in_the_portal_opens_the_store_decision(region):
    app, creds = region
    wang = creds["patients"][0]
    cdata = StoreConsentData(app.state.store)
    ask = DecisionRequest(organization="provincial", practitioner="provincial-dr-wu",
                          purpose="TREAT", person=wang["person_id"])
    orgs = [h.id for h in HOSPITALS]

    async def decide():
        return await service.decide(cdata, ask, now=datetime.now(UTC), break_glass_hours=4,
                                    organizations=orgs)

    assert not (await decide()).permit
    async with client_for(app) as c:
        csrf = await login(c, wang)
        r = await c.post("/portal/consents", data={"csrf": csrf, "grantee": "org:provincial",
                                                   "purpose": "TREAT"})
        assert r.status_code == 303
        opened = await decide()
        assert opened.permit and {"cityfirst", "tcmhosp"} <= set(opened.visible_organizations)
        consent_id = (await service.list_consents(cdata, person=wang["person_id"]))[0]["id"]
        preview = (await c.get("/portal/preview")).text
        assert "省人民医院" in preview
        await c.post(f"/portal/consents/{consent_id}/withdraw", data={"csrf": csrf})
    assert not (await decide()).permit


async def test_consultation_and_access_log_from_the_store(region):
    app, creds = region
    wang = creds["patients"][0]
    async with client_for(app) as c:
        csrf = await login(c, wang)
        page = (await c.get("/portal/consultations")).text
        assert "心内科远程会诊" in page and "吴强 Wu Qiang" in page
        cid = page.split("/portal/consultations/")[1].split("/approve")[0]
        assert (await c.post(f"/portal/consultations/{cid}/approve",
                             data={"csrf": csrf})).status_code == 303
        found = await StoreConsentData(app.state.store).consultation(cid)
        assert found.approved and found.approval == "portal"
        log = (await c.get("/portal/access")).text
    btg = log[log.index('<tr class="btg">'):]
    btg = btg[:btg.index("</tr>")]
    assert "紧急授权（破窗）" in btg and REASON in btg and "吴强 Wu Qiang" in btg
    assert "陈伟 Chen Wei" in log and "已拒绝" in log


async def test_export_is_valid_fhir_with_every_record(region):
    app, creds = region
    wang = creds["patients"][0]
    async with client_for(app) as c:
        await login(c, wang)
        r = await c.get("/portal/export")
    assert r.headers["content-disposition"].startswith("attachment")
    bundle = r.json()
    Bundle.model_validate(bundle)  # fhir.resources validates every entry's resource
    types = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert types.count("Patient") == 2 and "Condition" in types and "Encounter" in types
    assert all(e["fullUrl"].startswith(BASE + "/fhir/") for e in bundle["entry"])
    sources = {e["resource"]["meta"]["source"] for e in bundle["entry"]
               if e["resource"]["resourceType"] == "Patient"}
    assert sources == {f"urn:hie:organization:{h}" for h in wang["hospitals"]}
