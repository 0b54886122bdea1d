"""Contract: writing versions, reading them back, and transactions."""

from __future__ import annotations

import pytest
from store.conftest import Records, ts

from hie.store.base import Store, Transaction, VersionConflict
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, SearchQuery, TokenMatch

CODE_A = IndexEntries(token=[("code", "http://loinc.org", "A")])
CODE_B = IndexEntries(token=[("code", "http://loinc.org", "B")])


def by_code(code: str) -> SearchQuery:
    return SearchQuery("Observation", (AnyOf((TokenMatch("code", code),)),))


async def test_ping_answers_when_open(store: Store) -> None:
    assert await store.ping() is True


async def test_create_then_read_returns_the_stored_bytes(store: Store, records: Records) -> None:
    record = records.record("Patient", "p1", last_updated=ts(5), source="org-a")
    [seq] = await records.put(store, record)

    got = await store.read("Patient", "p1")

    assert got is not None
    assert (got.resource_type, got.id, got.version, got.deleted) == ("Patient", "p1", 1, False)
    assert got.body == record.body
    assert got.last_updated == ts(5)
    assert got.source == "org-a"
    assert got.seq == seq > 0


async def test_read_of_unknown_resource_is_none(store: Store) -> None:
    assert await store.read("Patient", "nope") is None
    assert await store.read_version("Patient", "nope", 1) is None


async def test_seq_is_assigned_at_create_increases_and_never_changes(
        store: Store, records: Records) -> None:
    assert await store.max_seq() == 0
    s1 = await records.create(store, "Patient", "p1")
    s2, s3 = await records.put(store, records.record("Observation", "o1"),
                               records.record("Patient", "p2"))
    assert s1 < s2 < s3
    s1_again = (await records.put(store, records.record("Patient", "p1", version=2)))[0]
    s1_tomb = (await records.put(store, records.record("Patient", "p1", version=3,
                                                       deleted=True)))[0]
    s1_back = (await records.put(store, records.record("Patient", "p1", version=4)))[0]
    assert s1 == s1_again == s1_tomb == s1_back
    assert await store.max_seq() == s3
    assert (await store.read("Patient", "p1")).seq == s1


async def test_update_keeps_every_version(store: Store, records: Records) -> None:
    await records.create(store, "Patient", "p1", source="org-a")
    await records.put(store, records.record("Patient", "p1", version=2, source="org-b"))

    current = await store.read("Patient", "p1")
    v1 = await store.read_version("Patient", "p1", 1)
    v2 = await store.read_version("Patient", "p1", 2)

    assert current.version == 2 and current.source == "org-b"
    assert v1.version == 1 and v1.source == "org-a" and v1.last_updated == ts(1)
    assert v2.body == current.body and v1.body != v2.body
    assert await store.read_version("Patient", "p1", 3) is None


async def test_create_of_existing_resource_is_a_version_conflict(
        store: Store, records: Records) -> None:
    await records.create(store, "Patient", "p1")
    with pytest.raises(VersionConflict):
        await records.put(store, records.record("Patient", "p1", version=1))
    assert (await store.read("Patient", "p1")).version == 1


async def test_update_must_follow_the_current_version(store: Store, records: Records) -> None:
    await records.create(store, "Patient", "p1")
    with pytest.raises(VersionConflict):
        await records.put(store, records.record("Patient", "p1", version=3))
    with pytest.raises(VersionConflict):
        await records.put(store, records.record("Patient", "absent", version=2))
    assert await store.read("Patient", "absent") is None
    assert (await store.read("Patient", "p1")).version == 1


async def test_conflict_rolls_back_the_whole_transaction(store: Store, records: Records) -> None:
    await records.create(store, "Patient", "p1")
    with pytest.raises(VersionConflict):
        await records.put(store, records.record("Patient", "p2"),
                          records.record("Observation", "o1", index=CODE_A),
                          records.record("Patient", "p1", version=1))
    assert await store.read("Patient", "p2") is None
    assert await store.read("Observation", "o1") is None
    assert await records.ids(store, by_code("A")) == []


async def test_exception_in_fn_rolls_back_and_propagates(store: Store, records: Records) -> None:
    await records.create(store, "Patient", "p1")
    before = await store.max_seq()

    async def fn(tx: Transaction) -> None:
        await tx.put(records.record("Observation", "o1", index=CODE_A))
        await tx.put(records.record("Patient", "p1", version=2))
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await store.transact(fn)

    assert await store.read("Observation", "o1") is None
    assert (await store.read("Patient", "p1")).version == 1
    assert await store.read_version("Patient", "p1", 2) is None
    assert await records.ids(store, by_code("A")) == []
    assert await store.count(by_code("A")) == 0
    assert (await store.history(limit=10))[1] == 1
    assert await store.max_seq() == before
    # the store is still usable after the rollback
    await records.create(store, "Observation", "o1", index=CODE_A)
    assert await records.ids(store, by_code("A")) == ["o1"]


async def test_transact_returns_what_fn_returns(store: Store, records: Records) -> None:
    async def fn(tx: Transaction) -> tuple[str, int]:
        seq = await tx.put(records.record("Patient", "p1"))
        return "done", seq

    result, seq = await store.transact(fn)
    assert result == "done"
    assert (await store.read("Patient", "p1")).seq == seq


async def test_reads_inside_a_transaction_see_its_own_writes(
        store: Store, records: Records) -> None:
    await records.create(store, "Observation", "old", index=CODE_A)

    async def fn(tx: Transaction) -> tuple[object, object, list, list]:
        await tx.put(records.record("Observation", "new", index=CODE_A))
        await tx.put(records.record("Observation", "old", version=2, index=CODE_B))
        return (await tx.read("Observation", "new"), await tx.read("Observation", "old"),
                await tx.search_keys(by_code("A"), 10), await tx.search_keys(by_code("B"), 10))

    new, old, code_a, code_b = await store.transact(fn)
    assert new is not None and new.version == 1
    assert old is not None and old.version == 2
    assert code_a == [("Observation", "new")]
    assert code_b == [("Observation", "old")]


async def test_search_keys_honours_the_limit(store: Store, records: Records) -> None:
    await records.put(store, *[records.record("Observation", f"o{i}", index=CODE_A)
                               for i in range(5)])

    async def fn(tx: Transaction) -> list[tuple[str, str]]:
        await tx.lock("Observation?code=A")
        return await tx.search_keys(by_code("A"), 2)

    assert await store.transact(fn) == [("Observation", "o0"), ("Observation", "o1")]


async def test_update_replaces_the_index_entries(store: Store, records: Records) -> None:
    await records.create(store, "Observation", "o1", index=CODE_A)
    await records.put(store, records.record("Observation", "o1", version=2, index=CODE_B))

    assert await records.ids(store, by_code("A")) == []
    assert await records.ids(store, by_code("B")) == ["o1"]
    assert await store.count(by_code("A")) == 0


async def test_tombstone_is_read_but_not_searched(store: Store, records: Records) -> None:
    await records.create(store, "Observation", "o1", index=CODE_A)
    await records.create(store, "Observation", "o2", index=CODE_A)
    await records.put(store, records.record("Observation", "o1", version=2, deleted=True,
                                            last_updated=ts(50)))

    tomb = await store.read("Observation", "o1")
    assert tomb is not None and tomb.deleted and tomb.body == b"" and tomb.version == 2
    assert tomb.last_updated == ts(50)
    assert (await store.read_version("Observation", "o1", 2)).deleted
    assert not (await store.read_version("Observation", "o1", 1)).deleted
    assert await records.ids(store, by_code("A")) == ["o2"]
    assert await records.ids(store, SearchQuery("Observation")) == ["o2"]
    assert await store.count(by_code("A")) == 1
    assert [r.id for r in await store.read_many([("Observation", "o1"),
                                                 ("Observation", "o2")])] == ["o2"]


async def test_resource_deleted_then_recreated_is_found_again(
        store: Store, records: Records) -> None:
    seq = await records.create(store, "Observation", "o1", index=CODE_A)
    await records.put(store, records.record("Observation", "o1", version=2, deleted=True))
    again = await records.put(store, records.record("Observation", "o1", version=3,
                                                    index=CODE_B))
    assert again == [seq]
    assert await records.ids(store, by_code("B")) == ["o1"]
    assert await records.ids(store, by_code("A")) == []


async def test_read_many_returns_existing_current_versions(
        store: Store, records: Records) -> None:
    await records.create(store, "Patient", "p1")
    await records.create(store, "Observation", "o1")
    await records.put(store, records.record("Patient", "p1", version=2))

    got = await store.read_many([("Patient", "p1"), ("Observation", "o1"),
                                 ("Patient", "missing"), ("Patient", "p1"),
                                 ("Observation", "p1")])

    assert sorted((r.resource_type, r.id, r.version) for r in got) == [
        ("Observation", "o1", 1), ("Patient", "p1", 2)]
    assert await store.read_many([]) == []


async def test_read_many_handles_many_keys(store: Store, records: Records) -> None:
    await records.put(store, *[records.record("Observation", f"o{i:04d}") for i in range(1100)])
    keys = [("Observation", f"o{i:04d}") for i in range(0, 1200)]

    got = await store.read_many(iter(keys))

    assert sorted(r.id for r in got) == [f"o{i:04d}" for i in range(1100)]
