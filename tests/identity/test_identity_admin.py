"""Administrative link, unlink, HL7 merge and review decisions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from identity.helpers import Pusher, make_rid, patient

from hie.identity import admin
from hie.identity.model import PERSON, LinkEvent
from hie.identity.service import (
    IdentityError,
    IdentityNotFound,
    linked_patient_ids,
    load_link,
    person_id_of,
)
from hie.store.base import Store, Transaction


async def tx_run(store: Store, fn: Callable[[Transaction], Awaitable[Any]]) -> Any:
    return await store.transact(fn)


async def test_admin_link_merges_the_two_persons(store: Store, push: Pusher) -> None:
    number = make_rid()
    a = await push(patient(rid=number), "org-a")
    b = await push(patient(rid=number, hospital="b"), "org-b")
    c = await push(patient(name="刘洋", gender="male", birth="1970-01-01", phone=None,
                           address=None), "org-c")
    events: list[LinkEvent] = await tx_run(store, lambda tx: admin.link_patients(
        tx, patient_id=a.patient_id, target_patient_id=c.patient_id, actor="admin-1",
        reason="same person, confirmed by phone"))
    assert {e.patient_id for e in events} == {a.patient_id, b.patient_id}
    assert all(e.actor == "admin-1" and e.previous_person_id == a.person_id for e in events)
    assert sorted(await linked_patient_ids(store, b.patient_id)) == \
        sorted([a.patient_id, b.patient_id, c.patient_id])
    # the absorbed person forwards to the survivor
    assert await person_id_of(store, a.patient_id) == c.person_id
    old = await store.read(PERSON, a.person_id)
    assert old is not None and not old.deleted
    # the number now finds the merged person
    d = await push(patient(rid=number, hospital="d"), "org-d")
    assert d.person_id == c.person_id
    record = events[0].to_audit_record(organization="region")
    assert record.interaction == "link" and record.person == c.person_id


async def test_unlink_splits_off_and_keeps_the_number_with_the_original(
        store: Store, push: Pusher) -> None:
    number = make_rid()
    a = await push(patient(rid=number), "org-a")
    b = await push(patient(rid=number, hospital="b"), "org-b")
    events = await tx_run(store, lambda tx: admin.unlink_patient(
        tx, patient_id=b.patient_id, actor="admin-1", reason="wrong number typed"))
    assert events[0].action == "unlink" and events[0].previous_person_id == a.person_id
    assert await linked_patient_ids(store, a.patient_id) == [a.patient_id]
    assert await linked_patient_ids(store, b.patient_id) == [b.patient_id]
    # a new Patient with the number still goes to the original person
    c = await push(patient(rid=number, hospital="c"), "org-c")
    assert c.person_id == a.person_id
    # the split-off Patient stays where the administrator put it on updates
    again = await push({**(await _body(store, b.patient_id)), "gender": "female",
                        "telecom": [{"system": "phone", "value": "13000000000"}]}, "org-b")
    assert again.person_id == events[0].person_id and again.method == "kept"
    assert record_is_audit(events[0].to_audit_record())


def record_is_audit(record: Any) -> bool:
    return record.interaction == "unlink" and record.client_id == "admin-1"


async def _body(store: Store, patient_id: str) -> dict:
    import orjson

    stored = await store.read("Patient", patient_id)
    return orjson.loads(stored.body)


async def test_unlinking_the_only_patient_is_refused(store: Store, push: Pusher) -> None:
    a = await push(patient(), "org-a")
    with pytest.raises(IdentityError):
        await tx_run(store, lambda tx: admin.unlink_patient(tx, patient_id=a.patient_id,
                                                            actor="x"))
    with pytest.raises(IdentityNotFound):
        await tx_run(store, lambda tx: admin.unlink_patient(tx, patient_id="nope", actor="x"))


async def test_hl7_merge_within_one_hospital(store: Store, push: Pusher) -> None:
    prior = await push(patient(mrn="OLD1", name="周杰", gender="male", phone=None,
                               address=None), "org-h")
    surviving = await push(patient(mrn="NEW1", name="周杰", gender="male",
                                   rid=make_rid(seq="125")), "org-h")
    other = await push(patient(name="周杰", gender="male", rid=make_rid(seq="125"),
                               hospital="x"), "org-x")
    assert other.person_id == surviving.person_id

    async def run(tx: Transaction) -> list[LinkEvent]:
        old = await admin.find_patient_id(tx, source="org-h", system="http://a.example.cn/mrn",
                                          value="OLD1")
        new = await admin.find_patient_id(tx, source="org-h", system="http://a.example.cn/mrn",
                                          value="NEW1")
        assert (old, new) == (prior.patient_id, surviving.patient_id)
        return await admin.merge(tx, source="org-h", prior_patient_id=old,
                                 surviving_patient_id=new)

    events = await tx_run(store, run)
    assert events[-1].action == "merge" and events[-1].replaced_by == surviving.patient_id
    assert events[-1].actor == "hl7v2:A40"
    link = await load_link(store, prior.patient_id)
    assert link.replaced_by == surviving.patient_id and link.pinned
    assert sorted(await linked_patient_ids(store, other.patient_id)) == \
        sorted([prior.patient_id, surviving.patient_id, other.patient_id])


async def test_merge_across_hospitals_is_refused(store: Store, push: Pusher) -> None:
    a = await push(patient(), "org-a")
    b = await push(patient(name="孙丽"), "org-b")
    with pytest.raises(IdentityError):
        await tx_run(store, lambda tx: admin.merge(tx, source="org-a",
                                                   prior_patient_id=a.patient_id,
                                                   surviving_patient_id=b.patient_id))


async def test_review_decided_as_link(store: Store, push: Pusher) -> None:
    a = await push(patient(phone=None, address=None), "org-a")
    b = await push(patient(phone=None, address=None, hospital="b"), "org-b")
    events = await tx_run(store, lambda tx: admin.resolve_review(
        tx, review_id=b.review_id, decision="link", actor="admin-2"))
    assert events and events[0].person_id == a.person_id
    assert (await admin.list_reviews(store))[0] == []
    closed, _ = await admin.list_reviews(store, status="linked")
    assert closed[0].resolved_by == "admin-2"
    with pytest.raises(IdentityError):
        await tx_run(store, lambda tx: admin.resolve_review(
            tx, review_id=b.review_id, decision="link", actor="admin-2"))


async def test_review_decided_as_separate_pins_the_patient(store: Store, push: Pusher) -> None:
    a = await push(patient(phone=None, address=None), "org-a")
    b = await push(patient(phone=None, address=None, hospital="b"), "org-b")
    await tx_run(store, lambda tx: admin.resolve_review(
        tx, review_id=b.review_id, decision="separate", actor="admin-2"))
    link = await load_link(store, b.patient_id)
    assert link.pinned and link.person_id != a.person_id
    assert (await admin.list_reviews(store, status="separate"))[0][0].patient_id == b.patient_id


async def test_review_queue_pages(store: Store, push: Pusher) -> None:
    await push(patient(phone=None, address=None), "org-a")
    for h in "bcd":
        await push(patient(phone=None, address=None, hospital=h), f"org-{h}")
    first, after = await admin.list_reviews(store, limit=2)
    assert len(first) == 2 and after is not None
    rest, end = await admin.list_reviews(store, limit=2, after=after)
    assert len(rest) >= 1 and end is None
    assert not {i.id for i in first} & {i.id for i in rest}
