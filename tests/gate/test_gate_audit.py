"""Consent-service writes are on the audit record, in their own transaction:
consents granted and withdrawn, consultation steps, break-the-glass windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from consent import service
from hie.audit.model import person_ref
from hie.audit.service import search_events
from hie.audit.verify import verify
from hie.gate.data import StoreConsentData
from hie.store import open_store
from schemas.consent import ConsultationScope


async def test_consent_service_writes_are_audited(tmp_path: Path):
    store = open_store(f"sqlite:///{tmp_path}/a.db")
    await store.open()
    try:
        data = StoreConsentData(store)
        granted = await service.grant_consent(data, person="person-1", organization="hospb",
                                              purposes=["TREAT"])
        await service.withdraw_consent(data, person="person-1", consent_id=granted["id"])
        now = datetime.now(UTC)
        await service.request_consultation(
            data, person="person-1", requester="hospa", invited_organization="hospb",
            reason="second opinion", start=now, end=now + timedelta(days=1),
            scope=ConsultationScope())
        records, _ = await search_events(store, patient_refs=[person_ref("person-1")])
        details = sorted(e["outcomeDesc"] for e in (orjson.loads(r.body) for r in records))
        assert any("consent active" in d for d in details)
        assert any("consent inactive" in d for d in details)
        assert any("consultation requested" in d for d in details)
        assert (await verify(store)).intact
    finally:
        await store.close()
