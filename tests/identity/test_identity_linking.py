"""Linking pushed Patients to regional persons, against both store back ends."""

from __future__ import annotations

import orjson
from identity.helpers import Pusher, make_rid, patient

from hie.config import Settings
from hie.identity.admin import list_reviews
from hie.identity.model import LINK, PERSON, REVIEW
from hie.identity.service import (
    follow_links,
    forget_patient,
    linked_patient_ids,
    person_id_of,
)
from hie.store.base import Store, Transaction
from hie.store.query import AnyOf, ReferenceMatch, SearchQuery


async def test_same_resident_id_at_two_hospitals_links_deterministically(
        store: Store, push: Pusher) -> None:
    number = make_rid()
    a = await push(patient(rid=number, hospital="a"), "org-a")
    # another hospital: different phone, address and a pinyin name only
    b = await push(patient(rid=number, hospital="b", name=None, pinyin=("Wang", "Xiuying"),
                           phone="13900000000", address="上海"), "org-b")
    assert a.method == "new"
    assert b.method == "resident-id"
    assert b.person_id == a.person_id
    assert sorted(await linked_patient_ids(store, a.patient_id)) == \
        sorted([a.patient_id, b.patient_id])
    assert (await linked_patient_ids(store, b.patient_id))[0] == b.patient_id
    assert b.events[0].action == "link" and b.events[0].actor == "system"


async def test_fifteen_digit_number_matches_its_eighteen_digit_form(
        store: Store, push: Pusher) -> None:
    a = await push(patient(rid="11010519491231002X", birth="1949-12-31"), "org-a")
    b = await push(patient(rid="110105491231002", birth="1949-12-31", name="张三",
                           phone=None, address=None), "org-b")
    assert b.method == "resident-id" and b.person_id == a.person_id
    assert any("15-digit" in r for r in b.reasons)


async def test_invalid_checksum_is_not_used_and_the_reason_is_recorded(
        store: Store, push: Pusher) -> None:
    number = make_rid()
    broken = number[:-1] + ("0" if number[-1] != "0" else "1")
    a = await push(patient(rid=number, phone=None, address=None), "org-a")
    b = await push(patient(rid=broken, name="赵四", phone=None, address=None), "org-b")
    assert b.person_id != a.person_id
    assert any("check character" in r for r in b.reasons)
    assert all(broken not in r for r in b.reasons)
    stored = await store.read(LINK, b.patient_id)
    assert orjson.loads(stored.body)["residentStatus"] == "invalid"


async def test_invalid_checksum_falls_back_to_demographics(store: Store, push: Pusher) -> None:
    number = make_rid()
    broken = number[:-1] + ("0" if number[-1] != "0" else "1")
    a = await push(patient(rid=number), "org-a")
    b = await push(patient(rid=broken), "org-b")
    assert b.method == "score" and b.person_id == a.person_id


async def test_newborn_under_a_parents_number_is_not_linked_to_the_parent(
        store: Store, push: Pusher) -> None:
    mother = make_rid(birth="19900101", seq="124")
    a = await push(patient(rid=mother, birth="1990-01-01"), "org-a")
    baby = await push(patient(rid=mother, name="王秀英之女", birth="2024-05-06",
                              address=None), "org-b")
    assert baby.person_id != a.person_id
    assert any("birth date" in r for r in baby.reasons)


async def test_demographics_link_patients_without_numbers(store: Store, push: Pusher) -> None:
    a = await push(patient(), "org-a")
    b = await push(patient(hospital="b"), "org-b")
    assert b.method == "score" and b.person_id == a.person_id
    assert b.score is not None and b.score >= 18


async def test_a_later_number_joins_the_person_found_by_demographics(
        store: Store, push: Pusher) -> None:
    number = make_rid()
    a = await push(patient(), "org-a")
    b = await push(patient(rid=number, hospital="b"), "org-b")
    c = await push(patient(rid=number, hospital="c", name="X", phone=None, address=None),
                   "org-c")
    assert a.person_id == b.person_id == c.person_id
    assert c.method == "resident-id"


async def test_doubtful_match_goes_to_the_review_queue(store: Store, push: Pusher) -> None:
    a = await push(patient(phone=None, address=None), "org-a")
    b = await push(patient(phone=None, address=None, hospital="b"), "org-b")
    assert b.person_id != a.person_id
    assert b.review_id is not None
    items, _ = await list_reviews(store)
    assert [i.id for i in items] == [b.review_id]
    item = items[0]
    assert item.patient_id == b.patient_id
    assert item.candidates[0].person_id == a.person_id
    assert item.candidates[0].fields["name"] == "exact"


async def test_clear_non_match_gets_a_new_person_without_review(
        store: Store, push: Pusher) -> None:
    a = await push(patient(name="李明", gender="male"), "org-a")
    b = await push(patient(name="李亮", gender="male"), "org-b")
    assert b.person_id != a.person_id and b.review_id is None
    assert (await list_reviews(store))[0] == []


async def test_same_hospital_look_alike_is_reviewed_not_linked(store: Store, push: Pusher) -> None:
    a = await push(patient(), "org-a")
    b = await push(patient(), "org-a")
    assert b.person_id != a.person_id and b.review_id is not None


async def test_different_valid_numbers_are_never_linked_by_demographics(
        store: Store, push: Pusher) -> None:
    a = await push(patient(rid=make_rid(seq="124")), "org-a")
    b = await push(patient(rid=make_rid(seq="126"), hospital="b"), "org-b")
    assert b.person_id != a.person_id and b.review_id is None


async def test_unchanged_update_writes_nothing_and_changed_update_keeps_the_person(
        store: Store, push: Pusher) -> None:
    p = patient(rid=make_rid())
    first = await push(p, "org-a")
    link_version = (await store.read(LINK, p["id"])).version
    person_version = (await store.read(PERSON, first.person_id)).version
    again = await push(p, "org-a")
    assert again.method == "unchanged" and again.person_id == first.person_id
    assert (await store.read(LINK, p["id"])).version == link_version
    assert (await store.read(PERSON, first.person_id)).version == person_version
    p["telecom"] = [{"system": "phone", "value": "13700000000"}]
    changed = await push(p, "org-a")
    assert changed.person_id == first.person_id
    stored = await store.read(LINK, p["id"])
    assert orjson.loads(stored.body)["demographics"]["phones"] == ["13700000000"]


async def test_number_corrected_on_update_moves_the_patient(store: Store, push: Pusher) -> None:
    right = make_rid(seq="128")
    other = await push(patient(rid=right, name="陈静"), "org-b")
    p = patient(rid=make_rid(seq="130"), phone=None, address=None)
    first = await push(p, "org-a")
    assert first.person_id != other.person_id
    p["identifier"][1]["value"] = right
    moved = await push(p, "org-a")
    assert moved.person_id == other.person_id
    assert moved.events[0].previous_person_id == first.person_id
    assert await store.read(PERSON, first.person_id) is not None  # a tombstone
    assert (await store.read(PERSON, first.person_id)).deleted


async def test_no_resident_number_is_stored_in_clear(store: Store, push: Pusher,
                                                     settings: Settings) -> None:
    number = make_rid()
    a = await push(patient(rid=number), "org-a")
    await push(patient(rid=number, hospital="b", phone=None, address=None), "org-b")
    await push(patient(phone=None, address=None, hospital="c"), "org-c")
    docs = [await store.read(LINK, a.patient_id), await store.read(PERSON, a.person_id)]
    items, _ = await list_reviews(store)
    docs += [await store.read(REVIEW, i.id) for i in items]
    for doc in docs:
        assert doc is not None and number.encode() not in doc.body
        assert number[6:14].encode() not in doc.body or b"1980-03-04" in doc.body
    if hasattr(store, "_writer"):  # SQLite: look at every index row of internal types
        rows = store._writer.execute(
            "SELECT code FROM idx_token WHERE type LIKE '\\_%' ESCAPE '\\'").fetchall()
        assert rows and all(number not in r[0] for r in rows)


async def test_internal_documents_are_invisible_to_restricted_readers(
        store: Store, push: Pusher) -> None:
    from hie.store.query import Restriction

    a = await push(patient(rid=make_rid()), "org-a")
    assert await store.read(LINK, a.patient_id,
                            restriction=Restriction(sources=frozenset({"org-a"}))) is None


async def test_follow_links_widens_patient_references(store: Store, push: Pusher) -> None:
    number = make_rid()
    a = await push(patient(rid=number), "org-a")
    b = await push(patient(rid=number, hospital="b"), "org-b")
    query = SearchQuery("Observation", (AnyOf((ReferenceMatch("subject", a.patient_id,
                                                              "Patient"),)),))
    widened = await follow_links(store, query)
    assert {t.target_id for t in widened.where[0].terms} == {a.patient_id, b.patient_id}
    assert await linked_patient_ids(store, "never-pushed") == ["never-pushed"]


async def test_deleting_a_patient_removes_it_from_its_person(store: Store, push: Pusher) -> None:
    number = make_rid()
    a = await push(patient(rid=number), "org-a")
    b = await push(patient(rid=number, hospital="b"), "org-b")

    async def run(tx: Transaction) -> list:
        return await forget_patient(tx, patient_id=b.patient_id)

    events = await store.transact(run)
    assert events[0].action == "unlink"
    assert await linked_patient_ids(store, a.patient_id) == [a.patient_id]
    assert await person_id_of(store, b.patient_id) is None


async def test_a_deleted_patient_pushed_again_is_linked_again(store: Store, push: Pusher) -> None:
    number = make_rid()
    a = await push(patient(rid=number), "org-a")
    p = patient(rid=number, hospital="b")
    b = await push(p, "org-b")

    async def run(tx: Transaction) -> list:
        return await forget_patient(tx, patient_id=b.patient_id)

    await store.transact(run)
    again = await push(p, "org-b")
    assert again.person_id == a.person_id and again.method == "resident-id"
    assert sorted(await linked_patient_ids(store, a.patient_id)) == \
        sorted([a.patient_id, b.patient_id])
