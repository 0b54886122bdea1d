"""Every token the exchange issues or refuses is on the audit record — a
break-the-glass token above all, with its reason."""

from __future__ import annotations

import httpx
import orjson
from auth.trustkit import Hospital, get_token
from fastapi import FastAPI

from hie.audit.service import search_events


async def events(app: FastAPI) -> list[dict]:
    await app.state.audit_log.flush()
    records, _ = await search_events(app.state.store, limit=100)
    return [orjson.loads(r.body) for r in records]


async def test_issued_and_refused_tokens_are_audited(trust_app: FastAPI,
                                                     http: httpx.AsyncClient,
                                                     hospital: Hospital):
    doctor = hospital.practitioners[0].id
    await get_token(http, hospital.doctor_form(doctor, purpose="ETREAT",
                                               reason="unconscious, allergy status unknown"))
    refused = await http.post("/auth/token", data=hospital.form(
        client_assertion=hospital.client_assertion(aud="https://elsewhere/token")))
    assert refused.status_code == 401
    logins = [e for e in await events(trust_app)
              if "login" in str(e.get("subtype")) + str(e.get("extension"))]
    assert len(logins) == 2
    text = str(logins)
    assert "ETREAT" in text
    assert "unconscious, allergy status unknown" in text
    assert f"Practitioner/{doctor}" in text
    assert any(e["outcome"] != "0" for e in logins)  # the refusal
