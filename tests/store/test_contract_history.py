"""Contract: ``history`` of one resource, one type or everything."""

from __future__ import annotations

import pytest
from store.conftest import Records, ts

from hie.store.base import Store


@pytest.fixture
async def changes(store: Store, records: Records) -> Store:
    """o1 created (t10), o2 created (t20), p1 created (t25), o1 updated (t30),
    o1 deleted (t40)."""
    await records.create(store, "Observation", "o1", last_updated=ts(10))
    await records.create(store, "Observation", "o2", last_updated=ts(20))
    await records.create(store, "Patient", "p1", last_updated=ts(25))
    await records.put(store, records.record("Observation", "o1", version=2, last_updated=ts(30)))
    await records.put(store, records.record("Observation", "o1", version=3, deleted=True,
                                            last_updated=ts(40)))
    return store


def keys(versions: list) -> list[tuple[str, int]]:
    return [(r.id, r.version) for r in versions]


async def test_history_of_one_resource_newest_first(changes: Store) -> None:
    versions, total = await changes.history(resource_type="Observation", id="o1", limit=10)
    assert keys(versions) == [("o1", 3), ("o1", 2), ("o1", 1)]
    assert total == 3
    tomb = versions[0]
    assert tomb.deleted and tomb.body == b"" and tomb.last_updated == ts(40)
    assert not versions[1].deleted and versions[1].body


async def test_history_of_a_type_and_of_everything(changes: Store) -> None:
    versions, total = await changes.history(resource_type="Observation", limit=10)
    assert keys(versions) == [("o1", 3), ("o1", 2), ("o2", 1), ("o1", 1)]
    assert total == 4
    versions, total = await changes.history(limit=10)
    assert keys(versions) == [("o1", 3), ("o1", 2), ("p1", 1), ("o2", 1), ("o1", 1)]
    assert total == 5
    assert [r.resource_type for r in versions] == [
        "Observation", "Observation", "Patient", "Observation", "Observation"]


async def test_history_since_and_before(changes: Store) -> None:
    versions, total = await changes.history(since=ts(20), limit=10)
    assert keys(versions) == [("o1", 3), ("o1", 2), ("p1", 1), ("o2", 1)]
    assert total == 4
    versions, total = await changes.history(before=ts(30), limit=10)
    assert keys(versions) == [("p1", 1), ("o2", 1), ("o1", 1)]
    assert total == 3
    versions, total = await changes.history(resource_type="Observation", since=ts(11),
                                            before=ts(40), limit=10)
    assert keys(versions) == [("o1", 2), ("o2", 1)]
    assert total == 2
    versions, total = await changes.history(resource_type="Observation", id="o1",
                                            since=ts(30), limit=10)
    assert keys(versions) == [("o1", 3), ("o1", 2)]
    assert total == 2


async def test_history_pages_with_limit_and_offset(changes: Store) -> None:
    versions, total = await changes.history(limit=2)
    assert keys(versions) == [("o1", 3), ("o1", 2)] and total == 5
    versions, total = await changes.history(limit=2, offset=2)
    assert keys(versions) == [("p1", 1), ("o2", 1)] and total == 5
    versions, total = await changes.history(limit=2, offset=4)
    assert keys(versions) == [("o1", 1)] and total == 5
    versions, total = await changes.history(limit=2, offset=10)
    assert versions == [] and total == 5


async def test_history_of_unknown_resource_is_empty(changes: Store) -> None:
    assert await changes.history(resource_type="Observation", id="zz", limit=10) == ([], 0)
    assert await changes.history(resource_type="Encounter", limit=10) == ([], 0)


async def test_history_keeps_source_and_seq_of_each_version(
        store: Store, records: Records) -> None:
    seq = await records.create(store, "Patient", "p1", source="org-a")
    await records.put(store, records.record("Patient", "p1", version=2, source="org-b"))
    versions, _ = await store.history(resource_type="Patient", id="p1", limit=10)
    assert [r.source for r in versions] == ["org-b", "org-a"]
    assert [r.seq for r in versions] == [seq, seq]
