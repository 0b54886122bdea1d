"""Contract: transactions that race stay correct."""

from __future__ import annotations

import asyncio
import uuid

from store.conftest import Records

from hie.store.base import Store, Transaction, VersionConflict
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, SearchQuery, TokenMatch

IDENTIFIER = IndexEntries(token=[("identifier", "urn:id", "110")])
BY_IDENTIFIER = SearchQuery("Patient", (AnyOf((TokenMatch("identifier", "110", "urn:id"),)),))


async def conditional_create(store: Store, records: Records) -> str:
    """What ``If-None-Exist`` does: lock the condition, search, create if none."""

    async def fn(tx: Transaction) -> str:
        await tx.lock("Patient?identifier=urn:id|110")
        found = await tx.search_keys(BY_IDENTIFIER, 2)
        if found:
            return found[0][1]
        new_id = str(uuid.uuid4())
        await asyncio.sleep(0)  # give the other requests every chance to interleave
        await tx.put(records.record("Patient", new_id, index=IDENTIFIER))
        return new_id

    return await store.transact(fn)


async def test_parallel_conditional_creates_leave_exactly_one(
        store: Store, records: Records) -> None:
    ids = await asyncio.gather(*[conditional_create(store, records) for _ in range(8)])

    assert len(set(ids)) == 1
    assert await store.count(BY_IDENTIFIER) == 1
    assert (await store.history(resource_type="Patient", limit=20))[1] == 1


async def test_parallel_updates_of_one_version_let_one_win(
        store: Store, records: Records) -> None:
    await records.create(store, "Patient", "p1")

    async def update(n: int) -> bool:
        try:
            await records.put(store, records.record("Patient", "p1", version=2,
                                                    source=f"org-{n}"))
        except VersionConflict:
            return False
        return True

    outcomes = await asyncio.gather(*[update(n) for n in range(6)])

    assert outcomes.count(True) == 1
    assert (await store.read("Patient", "p1")).version == 2
    assert (await store.history(resource_type="Patient", id="p1", limit=10))[1] == 2

