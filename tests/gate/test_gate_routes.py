"""The consent API over HTTP (httpx ASGITransport) with real access tokens: who
may call what, the decision API, consultations and the break-the-glass queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from gatekit import Region, start_region

from consent import service
from schemas.consent import DecisionResponse


@pytest.fixture
async def region(tmp_path: Path) -> AsyncIterator[Region]:
    async for r in start_region(tmp_path):
        yield r


def ask(org: str = "h2", **kw: object) -> dict:
    return {"organization": org, "practitioner": f"{org}-dr0", "purpose": "TREAT",
            "person": "p-1", **kw}


def is_problem(response, status: int) -> bool:
    return (response.status_code == status
            and response.headers["content-type"].startswith("application/problem+json")
            and response.json()["status"] == status)


async def test_health_is_public(region):
    async with region.client(None) as c:
        assert (await c.get("/healthz")).json()["status"] == "ok"


async def test_only_the_exchange_may_ask_for_decisions(region):
    for token, status in ((None, 401), ("not-a-jwt", 401),
                          (region.hospital_token("h2"), 403),
                          (region.hospital_token("h2", "h2-dr0"), 403),
                          (region.admin_token(), 403), (region.officer_token(), 403),
                          (region.forged_service_token(), 403)):
        async with region.client(token) as c:
            assert is_problem(await c.post("/consent/decide", json=ask()), status), token


async def test_the_decision_api_answers_from_current_consents(region):
    async with region.client(region.service_token()) as c:
        denied = DecisionResponse.model_validate((await c.post("/consent/decide",
                                                               json=ask())).json())
        assert not denied.permit and denied.visible_organizations == ["h2"]
        grant = await service.grant_consent(region.data, person="p-1", organization="h2",
                                            purposes=["TREAT"])
        allowed = DecisionResponse.model_validate((await c.post("/consent/decide",
                                                                json=ask())).json())
        assert allowed.permit and allowed.all_organizations
        assert allowed.visible_organizations == ["h2", "h1", "h3"]
        await service.withdraw_consent(region.data, person="p-1", consent_id=grant["id"])
        again = (await c.post("/consent/decide", json=ask())).json()
        assert again["permit"] is False


async def test_a_malformed_decision_request_is_a_problem(region):
    async with region.client(region.service_token()) as c:
        assert is_problem(await c.post("/consent/decide", json={"organization": "h2"}), 400)
        assert is_problem(await c.post("/consent/decide", content=b"{"), 400)


def new_consultation(**kw: object) -> dict:
    now = datetime.now(UTC)
    body = {"person": "p-1", "invited_organization": "h2", "invited_practitioner": "h2-dr0",
            "reason": "second opinion on CT", "start": (now - timedelta(hours=1)).isoformat(),
            "end": (now + timedelta(days=1)).isoformat(),
            "scope": {"resource_types": ["ImagingStudy", "DiagnosticReport"]}}
    body.update(kw)
    return body


async def test_the_consultation_lifecycle_over_http(region):
    h1, h2, h3 = (region.client(region.hospital_token(o)) for o in ("h1", "h2", "h3"))
    doctor = region.client(region.hospital_token("h2", "h2-dr0"))
    exchange = region.client(region.service_token())
    async with h1, h2, h3, doctor, exchange:
        created = await h1.post("/consent/consultations", json=new_consultation())
        assert created.status_code == 201, created.text
        c = created.json()
        assert (c["requester"], c["status"], c["approved"]) == ("h1", "requested", False)
        cid = c["id"]
        assert (await h2.get(f"/consent/consultations/{cid}")).json()["id"] == cid
        assert is_problem(await h3.get(f"/consent/consultations/{cid}"), 404)
        assert is_problem(await h3.get("/consent/consultations/unknown"), 404)
        assert is_problem(await h1.post(f"/consent/consultations/{cid}/accept"), 403)
        assert is_problem(await h2.post(f"/consent/consultations/{cid}/paper-consent"), 403)
        assert (await doctor.post(f"/consent/consultations/{cid}/accept")).json()["status"] \
            == "accepted"
        assert is_problem(await h2.post(f"/consent/consultations/{cid}/accept"), 409)
        paper = (await h1.post(f"/consent/consultations/{cid}/paper-consent")).json()
        assert paper["approval"] == "paper"
        decision = (await exchange.post("/consent/decide", json=ask(consultation=cid))).json()
        assert decision["permit"] and decision["resource_types"] == ["DiagnosticReport",
                                                                     "ImagingStudy"]
        assert (await h2.post(f"/consent/consultations/{cid}/complete")).json()["status"] \
            == "completed"
        decision = (await exchange.post("/consent/decide", json=ask(consultation=cid))).json()
        assert decision["permit"] is False
        assert is_problem(await h1.post(f"/consent/consultations/{cid}/cancel"), 409)


@pytest.mark.parametrize("change", [
    {"reason": ""}, {"invited_organization": "h1"}, {"end": "2020-01-01T00:00:00+08:00"},
    {"start": "2026-01-01T00:00:00"},  # no timezone
    {"scope": {"labels": ["NOPE"]}}, {"unexpected": 1},
    {"patient": "h1-pat"},  # person and patient both
])
async def test_a_bad_consultation_request_is_refused_and_stores_nothing(region, change):
    async with region.client(region.hospital_token("h1")) as h1:
        assert is_problem(await h1.post("/consent/consultations",
                                        json=new_consultation(**change)), 400)
    assert await region.data.consultations("p-1") == []


async def test_the_exchanges_own_tokens_do_not_handle_consultations(region):
    async with region.client(region.admin_token()) as admin:
        assert is_problem(await admin.post("/consent/consultations",
                                           json=new_consultation()), 403)


async def test_break_glass_review_queue_for_privacy_officers(region):
    emergency = ask("h3", purpose="ETREAT", reason="unconscious in ED")
    exchange = region.client(region.service_token())
    officer = region.client(region.officer_token())
    hospital = region.client(region.hospital_token("h3"))
    async with exchange, officer, hospital:
        first = (await exchange.post("/consent/decide", json=emergency)).json()
        again = (await exchange.post("/consent/decide", json=emergency)).json()
        assert first["break_the_glass"] and first["expires"] == again["expires"]
        assert is_problem(await hospital.get("/consent/break-glass"), 403)
        [session] = (await officer.get("/consent/break-glass")).json()
        assert (session["organization"], session["reason"]) == ("h3", "unconscious in ED")
        assert (await officer.get("/consent/break-glass?reviewed=true")).json() == []
        assert is_problem(await officer.post(f"/consent/break-glass/{session['id']}/review",
                                             json={"note": ""}), 400)
        reviewed = await officer.post(f"/consent/break-glass/{session['id']}/review",
                                      json={"note": "trauma; justified"})
        assert reviewed.json()["reviewer"] == "officer-1" and reviewed.json()["reviewed"]
        assert (await officer.get("/consent/break-glass")).json() == []
        assert is_problem(await officer.post(f"/consent/break-glass/{session['id']}/review",
                                             json={"note": "again"}), 409)
        assert is_problem(await officer.post("/consent/break-glass/nope/review",
                                             json={"note": "x"}), 404)
