"""The consent API mounted on the exchange's own app (in-process mode): a
hospital names the patient by its own Patient id, which the exchange resolves
to the regional person — and only for its own Patients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from hie.app import create_app
from hie.config import Settings
from hie.gate.app import include_consent_routes
from hie.identity.service import person_id_of


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    include_consent_routes(app)
    async with app.router.lifespan_context(app):
        yield app


def body(**kw: object) -> dict:
    now = datetime.now(UTC)
    return {"invited_organization": "h2", "reason": "cardiology opinion",
            "start": now.isoformat(), "end": (now + timedelta(days=1)).isoformat(), **kw}


async def test_a_hospital_names_the_patient_by_its_own_patient_id(
        app: FastAPI, make_client: Callable[..., httpx.AsyncClient]) -> None:
    async with make_client("h1") as h1, make_client("h3") as h3:
        made = await h1.put("/fhir/Patient/h1-pat", json={
            "resourceType": "Patient", "id": "h1-pat", "name": [{"family": "王", "given": ["芳"]}],
            "gender": "female", "birthDate": "1980-02-03"})
        assert made.status_code == 201, made.text
        person = await person_id_of(app.state.store, "h1-pat")
        created = await h1.post("/consent/consultations", json=body(patient="h1-pat"))
        assert created.status_code == 201, created.text
        assert created.json()["person"] == person
        # another hospital cannot use h1's Patient id (same answer as a missing one)
        refused = await h3.post("/consent/consultations", json=body(patient="h1-pat"))
        missing = await h3.post("/consent/consultations", json=body(patient="h3-none"))
        assert refused.status_code == missing.status_code == 404
        assert refused.json()["title"].replace("h1-pat", "X") == \
            missing.json()["title"].replace("h3-none", "X")
