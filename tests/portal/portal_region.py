"""The exchange app with the portal mounted, over a SQLite store seeded by
``hie demo``'s seed plus what a portal user has to look at: a consultation
request and accesses in the audit log (one of them break-the-glass)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request

from consent import service
from consent.portal import PortalConfig, portal_router
from hie.app import create_app, write_hooks
from hie.audit.chain import append
from hie.audit.model import AuditRecord, person_ref
from hie.config import Settings
from hie.demo import seed
from hie.gate.data import StoreConsentData
from hie.gate.portal_data import StorePortalData
from hie.identity.service import patient_ids_of_person
from hie.store.base import Store
from schemas.consent import ConsultationScope

REASON = "车祸昏迷送急诊"


def portal_exchange(settings: Settings, config: PortalConfig | None = None) -> FastAPI:
    """The exchange app with the portal included, as the lead wires it."""
    app = create_app(settings)

    def data(request: Request) -> StorePortalData:
        return StorePortalData(request.app.state.store, base_url=settings.base_url)

    app.include_router(portal_router(data, config or PortalConfig(base_url=settings.base_url)))
    return app


async def seed_region(store: Store, settings: Settings) -> dict[str, Any]:
    """Seed the demo region; add a consultation request and three accesses for
    patient1 (王秀英, records at 市第一人民医院 and 市中医院). Returns the credentials."""
    creds = await seed(store, settings, hooks=write_hooks(settings))
    person = creds["patients"][0]["person_id"]
    now = datetime.now(UTC)
    await service.request_consultation(
        StoreConsentData(store), person=person, requester="cityfirst",
        invited_organization="provincial", invited_practitioner="provincial-dr-wu",
        reason="心内科远程会诊", start=now - timedelta(hours=1), end=now + timedelta(days=7),
        scope=ConsultationScope(resource_types=["Condition", "Observation"]))
    refs = tuple(f"Patient/{p}" for p in await patient_ids_of_person(store, person))
    stamp = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%f")

    def access(org: str, doctor: str, purpose: str, outcome: str, **more: Any) -> AuditRecord:
        return AuditRecord(interaction="search-type", outcome=outcome, status=200,
                           organization=org, client_id=org, practitioner=doctor,
                           person=person, patient_refs=refs, resource_type="Condition",
                           purpose_of_use=purpose, recorded=stamp, **more)

    await append(store, [
        access("tcmhosp", "tcmhosp-dr-chen", "TREAT", "deny", count=0),
        access("provincial", "provincial-dr-he", "TREAT", "permit", count=2),
        access("provincial", "provincial-dr-wu", "ETREAT", "permit", count=3, reason=REASON),
    ])
    assert person_ref(person)  # the log is found by the person's references too
    return creds


@contextmanager
def serving(app: FastAPI, port: int) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1:``port`` in a thread; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the portal exchange did not start")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
