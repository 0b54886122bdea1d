"""Writes through the FHIR write engine carry their audit records atomically."""

from __future__ import annotations

import orjson
import pytest

from hie.audit.chain import event_id, read_head
from hie.audit.fhir import AUDIT_TYPE
from hie.audit.service import patient_access_log
from hie.audit.verify import verify
from hie.audit.writes import write_hook
from hie.context import RequestContext
from hie.fhir.outcome import FhirError
from hie.fhir.writes import WriteEntry, execute
from hie.store.base import Store

CTX = RequestContext(organization="h1", practitioner="doc-1", purpose_of_use="TREAT")


def observation(patient: str) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"text": "pulse"}, "subject": {"reference": f"Patient/{patient}"}}


async def events(store: Store) -> list[dict]:
    head = await read_head(store)
    found = await store.read_many([(AUDIT_TYPE, event_id(n))
                                   for n in range(1, head.sequence + 1)])
    return [orjson.loads(r.body) for r in found]


def named(event: dict, role: str) -> set[str]:
    """References of the event's entities with this object-role code."""
    return {x["what"]["reference"] for x in event.get("entity", [])
            if x.get("role", {}).get("code") == role and "what" in x}


async def test_a_bundle_of_writes_is_audited_in_groups_per_patient(store: Store) -> None:
    entries = [WriteEntry("PUT", "Patient", id="h1-p1",
                          resource={"resourceType": "Patient", "id": "h1-p1"}),
               *(WriteEntry("POST", "Observation", resource=observation("h1-p1"))
                 for _ in range(3)),
               WriteEntry("POST", "Observation", resource=observation("h1-p2"))]
    results = await execute(store, CTX, entries, hooks=[write_hook(request_id="req-7")])

    audited = await events(store)
    p1 = next(e for e in audited if named(e, "1") == {"Patient/h1-p1"})
    assert {"Patient/h1-p1", *(f"Observation/{r.id}" for r in results[1:4])} <= named(p1, "4")
    assert (p1["action"], p1["subtype"][0]["code"]) == ("C", "create")
    p2 = next(e for e in audited if named(e, "1") == {"Patient/h1-p2"})
    assert named(p2, "4") == {f"Observation/{results[4].id}"}
    # every resource written (the exchange's Provenance too) is named by one event
    everything = [ref for e in audited for ref in named(e, "4")]
    assert len(everything) == len(set(everything)) >= 5
    assert (await verify(store)).intact

    log, _ = await patient_access_log(store, patient_refs=["Patient/h1-p2"], limit=10)
    assert ("create", "doc-1", "TREAT") in [
        (e.interaction, e.practitioner, e.purpose_of_use) for e in log]


async def test_a_refused_write_leaves_no_audit_record_behind(store: Store) -> None:
    await execute(store, CTX, [WriteEntry("PUT", "Patient", id="h1-p1",
                                          resource={"resourceType": "Patient", "id": "h1-p1"})],
                  hooks=[write_hook()])
    before = await read_head(store)
    with pytest.raises(FhirError):
        await execute(store, CTX, [WriteEntry("PUT", "Patient", id="h1-p1", if_match=7,
                                              resource={"resourceType": "Patient",
                                                        "id": "h1-p1"})],
                      hooks=[write_hook()])
    assert await read_head(store) == before
    await execute(store, CTX, [WriteEntry("DELETE", "Patient", id="h1-p1")], hooks=[write_hook()])
    assert "delete" in [e["subtype"][0]["code"] for e in await events(store)]
    assert (await verify(store)).intact
    log, _ = await patient_access_log(store, patient_refs=["Patient/h1-p1"], limit=10)
    assert log[-1].interaction == "create"
