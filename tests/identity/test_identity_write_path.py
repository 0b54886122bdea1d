"""The write hook links Patients written through the FHIR write engine."""

from __future__ import annotations

import pytest
from identity.helpers import make_rid, patient

from hie.config import Settings
from hie.context import RequestContext
from hie.fhir.writes import WriteEntry, execute
from hie.identity.hooks import identity_write_hook
from hie.identity.model import LINK, PERSON, LinkEvent
from hie.identity.service import linked_patient_ids, person_id_of
from hie.store.base import Store, Transaction
from hie.store.query import SearchQuery


async def test_creates_bundles_and_deletes_keep_the_index_in_step(
        store: Store, settings: Settings) -> None:
    seen: list[LinkEvent] = []

    async def sink(tx: Transaction, events: list[LinkEvent], ctx: object) -> None:
        seen.extend(events)

    hook = identity_write_hook(settings, sink=sink)
    number = make_rid()
    a_body, b_body = patient(rid=number), patient(rid=number, hospital="b")
    del a_body["id"], b_body["id"]
    [a] = await execute(store, RequestContext("org-a"),
                        [WriteEntry("POST", "Patient", resource=a_body)], hooks=[hook])
    # a Bundle-like write of two entries: the Patient and something else
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"text": "x"}, "subject": {"reference": "urn:uuid:p"}}
    b, _ = await execute(store, RequestContext("org-b"), [
        WriteEntry("POST", "Patient", resource=b_body, full_url="urn:uuid:p"),
        WriteEntry("POST", "Observation", resource=obs)], hooks=[hook])
    assert sorted(await linked_patient_ids(store, a.id)) == sorted([a.id, b.id])
    assert [e.action for e in seen] == ["link", "link"]

    await execute(store, RequestContext("org-b"), [WriteEntry("DELETE", "Patient", id=b.id)],
                  hooks=[hook])
    assert await linked_patient_ids(store, a.id) == [a.id]
    assert await person_id_of(store, b.id) is None
    assert seen[-1].action == "unlink"


async def test_a_failed_write_leaves_no_link(store: Store, settings: Settings) -> None:
    async def later_failure(tx: Transaction, ctx: object, records: list) -> None:
        raise RuntimeError("something after the link failed")

    body = patient(rid=make_rid())
    del body["id"]
    with pytest.raises(RuntimeError):
        await execute(store, RequestContext("org-a"),
                      [WriteEntry("POST", "Patient", resource=body)],
                      hooks=[identity_write_hook(settings), later_failure])
    for rtype in ("Patient", PERSON, LINK):
        assert (await store.search(SearchQuery(rtype), limit=5)).resources == []
