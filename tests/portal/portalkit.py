"""Helpers the portal tests share: an in-memory ``PortalData``, an app that
mounts the portal over it, a clock the tests move, and logging in as a
browser would (fetch the form, echo its CSRF token)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from consent.data import MemoryConsentData
from consent.portal import AccessEntry, PortalConfig, portal_router
from schemas.consent import Consultation, ConsultationScope

BASE = "http://testserver"
PERSON = "p-wang"
OTHER_PERSON = "p-zhang"
SRC = "urn:hie:organization:"
NAMES = {"h1": "市第一人民医院", "h2": "市中医院", "h3": "省人民医院"}
DOCTORS = [{"id": "h2-dr-chen", "name": "陈伟", "organization": "h2"},
           {"id": "h3-dr-wu", "name": "吴强", "organization": "h3"}]


class Clock:
    """A monotonic clock the test moves forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def condition(id_: str, org: str, code: str, display: str, day: str,
              labels: tuple[str, ...] = ()) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": SRC + org}
    if labels:
        meta["security"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                             "code": c} for c in labels]
    return {"resourceType": "Condition", "id": id_, "meta": meta,
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code,
                                 "display": display}]},
            "subject": {"reference": "Patient/pat-" + org}, "recordedDate": day}


def patient(org: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "pat-" + org, "meta": {"source": SRC + org},
            "name": [{"family": "王", "given": ["秀英"], "text": "王秀英"}],
            "gender": "female", "birthDate": "1962-04-17"}


@dataclass
class FakePortalData:
    """``PortalData`` in memory: one person with records at two hospitals."""

    accounts: dict[str, tuple[str, str]] = field(default_factory=lambda: {
        "wang": ("correct horse 1", PERSON), "zhang": ("battery staple", OTHER_PERSON)})
    consents: MemoryConsentData = field(default_factory=MemoryConsentData)
    log: list[AccessEntry] = field(default_factory=list)
    by_person: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {
        PERSON: [patient("h1"), patient("h2"),
                 condition("c1", "h1", "I10", "Essential hypertension", "2026-03-02"),
                 condition("c2", "h2", "E11.9", "Type 2 diabetes mellitus", "2026-05-14"),
                 condition("c3", "h2", "F32.1", "Moderate depressive episode", "2026-05-14",
                           ("PSY",))],
        OTHER_PERSON: [condition("z1", "h3", "J45.909", "Asthma", "2026-01-09")]})
    logins: int = 0

    async def authenticate(self, username: str, password: str) -> str | None:
        self.logins += 1
        found = self.accounts.get(username)
        return found[1] if found and found[0] == password else None

    async def person_name(self, person: str) -> str:
        return "王秀英" if person == PERSON else "张伟"

    async def records(self, person: str) -> list[dict[str, Any]]:
        return list(self.by_person.get(person, []))

    async def organization_names(self) -> dict[str, str]:
        return dict(NAMES)

    async def practitioners(self) -> list[dict[str, Any]]:
        return [dict(d) for d in DOCTORS]

    async def access_log(self, person: str, *, limit: int, cursor: str | None
                         ) -> tuple[list[AccessEntry], str | None]:
        start = int(cursor or 0)
        page = self.log[start:start + limit]
        more = start + limit < len(self.log)
        return page, str(start + limit) if more else None

    async def export_bundle(self, person: str) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "collection",
                "timestamp": "2026-06-01T00:00:00Z",
                "entry": [{"fullUrl": f"{BASE}/fhir/{r['resourceType']}/{r['id']}",
                           "resource": r} for r in await self.records(person)]}

    def consent_data(self) -> MemoryConsentData:
        return self.consents


async def add_consultation(data: FakePortalData, id_: str = "cons-1",
                           person: str = PERSON) -> Consultation:
    now = datetime.now(UTC)
    return await data.consents.save_consultation(Consultation(
        id=id_, person=person, requester="h1", invited_organization="h3",
        invited_practitioner="h3-dr-wu", status="requested", reason="心内科远程会诊",
        start=now - timedelta(hours=1), end=now + timedelta(days=7),
        scope=ConsultationScope(resource_types=["Condition", "Observation"])))


def portal_app(data: Any, config: PortalConfig) -> FastAPI:
    app = FastAPI()
    app.include_router(portal_router(lambda: data, config))
    return app


def client_for(app: FastAPI, base: str = BASE, address: str = "127.0.0.1"
               ) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url=base)


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the (first) form on a page."""
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def login(client: httpx.AsyncClient, username: str = "wang",
                password: str = "correct horse 1") -> httpx.Response:
    page = await client.get("/portal/login")
    return await client.post("/portal/login", data={
        "username": username, "password": password, "csrf": csrf_of(page.text)})


async def logged_in(client: httpx.AsyncClient) -> str:
    """Log in as Wang; return the CSRF token of the session."""
    r = await login(client)
    assert r.status_code == 303, r.text
    page = await client.get("/portal/records")
    assert page.status_code == 200
    return csrf_of(page.text)
