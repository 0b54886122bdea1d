"""Contract: ``Transaction.put_many`` writes like ``put`` one record at a time.

The SQLite back end batches the rows of consecutive records (one
``executemany`` per table) and must flush them before an update replaces a
previous version's index rows, so a batch that creates and then updates or
deletes the same resource ends exactly as single puts would.
"""

from __future__ import annotations

import pytest
from store.conftest import Records

from hie.store.base import Store, Transaction, VersionConflict, WriteRecord
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, SearchQuery, TokenMatch

CODE_A = IndexEntries(token=[("code", "http://loinc.org", "A")])
CODE_B = IndexEntries(token=[("code", "http://loinc.org", "B")])


def by_code(code: str) -> SearchQuery:
    return SearchQuery("Observation", (AnyOf((TokenMatch("code", code),)),))


async def put_many(store: Store, records: list[WriteRecord]) -> list[int]:
    async def run(tx: Transaction) -> list[int]:
        return await tx.put_many(records)

    return await store.transact(run)


async def test_put_many_equals_single_puts_with_updates_inside_the_batch(
        store: Store, records: Records) -> None:
    await records.create(store, "Observation", "o1", index=CODE_A)
    batch = [
        records.record("Observation", "o2", index=CODE_A),
        records.record("Observation", "o1", version=2, index=CODE_B),
        records.record("Observation", "o3", index=CODE_B),
        records.record("Observation", "o3", version=2, index=CODE_A),  # same batch
        records.record("Observation", "o2", version=2, deleted=True),
        records.record("Patient", "p1"),
    ]
    seqs = await put_many(store, batch)

    assert len(seqs) == len(batch)
    assert seqs[1] < seqs[0] < seqs[2] < seqs[5]  # o1 keeps the seq of its creation
    assert seqs[2] == seqs[3] and seqs[0] == seqs[4]
    assert await records.ids(store, by_code("A")) == ["o3"]
    assert await records.ids(store, by_code("B")) == ["o1"]
    for rtype, id_, version, deleted in [("Observation", "o1", 2, False),
                                         ("Observation", "o2", 2, True),
                                         ("Observation", "o3", 2, False),
                                         ("Patient", "p1", 1, False)]:
        got = await store.read(rtype, id_)
        assert got is not None and (got.version, got.deleted) == (version, deleted)
    assert (await store.read_version("Observation", "o3", 1)) is not None


async def test_put_many_refuses_a_duplicate_and_writes_nothing(
        store: Store, records: Records) -> None:
    await records.create(store, "Patient", "p1")
    with pytest.raises(VersionConflict):
        await put_many(store, [records.record("Observation", "o1", index=CODE_A),
                               records.record("Patient", "p1")])
    assert await store.read("Observation", "o1") is None
    assert await records.ids(store, by_code("A")) == []


async def test_put_many_of_nothing_writes_nothing(store: Store) -> None:
    assert await put_many(store, []) == []
    assert await store.max_seq() == 0
