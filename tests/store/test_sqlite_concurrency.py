"""SQLite: readers beside an open write, two stores (two workers) on one file,
and a cancelled transaction."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest
from store.conftest import Records

from hie.store.base import Transaction
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, SearchQuery, TokenMatch
from hie.store.sqlite import SQLiteStore

IDENTIFIER = IndexEntries(token=[("identifier", "urn:id", "110")])
BY_IDENTIFIER = SearchQuery("Patient", (AnyOf((TokenMatch("identifier", "110", "urn:id"),)),))



async def test_reads_run_while_a_transaction_is_open(sqlite_store: SQLiteStore,
                                                     records: Records) -> None:
    await records.create(sqlite_store, "Patient", "p1")
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(tx: Transaction) -> None:
        await tx.put(records.record("Patient", "p2"))
        entered.set()
        await release.wait()

    writer = asyncio.create_task(sqlite_store.transact(slow))
    await entered.wait()
    try:
        # the committed state stays readable; the open write is not visible
        assert (await asyncio.wait_for(sqlite_store.read("Patient", "p1"), 5)).version == 1
        assert await asyncio.wait_for(sqlite_store.read("Patient", "p2"), 5) is None
    finally:
        release.set()
        await writer
    assert await sqlite_store.read("Patient", "p2") is not None


async def test_two_stores_on_one_file_create_exactly_once(tmp_path: Path,
                                                          records: Records) -> None:
    """Two uvicorn workers: separate connections to one file, racing
    conditional creates; SQLite's write lock (BEGIN IMMEDIATE) serialises them."""
    path = str(tmp_path / "shared.db")
    workers = [SQLiteStore(path), SQLiteStore(path)]
    for worker in workers:
        await worker.open()
    try:
        async def conditional_create(store: SQLiteStore) -> str:
            async def fn(tx: Transaction) -> str:
                await tx.lock("Patient?identifier=urn:id|110")
                found = await tx.search_keys(BY_IDENTIFIER, 2)
                if found:
                    return found[0][1]
                new_id = str(uuid.uuid4())
                await asyncio.sleep(0.01)  # hold the lock while the other worker tries
                await tx.put(records.record("Patient", new_id, index=IDENTIFIER))
                return new_id

            return await store.transact(fn)

        ids = await asyncio.gather(*[conditional_create(workers[i % 2]) for i in range(8)])
        assert len(set(ids)) == 1
        for worker in workers:
            assert await worker.count(BY_IDENTIFIER) == 1

        # both workers assign distinct, increasing sequence numbers
        seqs = await asyncio.gather(*[records.create(workers[i % 2], "Observation", f"o{i}")
                                      for i in range(10)])
        assert len(set(seqs)) == 10
        assert await workers[0].max_seq() == await workers[1].max_seq() == max(seqs)
    finally:
        for worker in workers:
            await worker.close()


async def test_cancelled_transaction_rolls_back(sqlite_store: SQLiteStore,
                                                records: Records) -> None:
    entered = asyncio.Event()

    async def never_ends(tx: Transaction) -> None:
        await tx.put(records.record("Patient", "p1"))
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(sqlite_store.transact(never_ends))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await sqlite_store.read("Patient", "p1") is None
    await records.create(sqlite_store, "Patient", "p1")  # the write lock was released
    assert (await sqlite_store.read("Patient", "p1")).version == 1


async def test_a_transaction_object_is_dead_after_its_transaction(
        sqlite_store: SQLiteStore, records: Records) -> None:
    from hie.store.base import StoreError

    async def leak(tx: Transaction) -> Transaction:
        return tx

    tx = await sqlite_store.transact(leak)
    with pytest.raises(StoreError):
        await tx.put(records.record("Patient", "p1"))
    assert await sqlite_store.read("Patient", "p1") is None


async def test_transaction_cancelled_while_waiting_for_the_lock(
        sqlite_store: SQLiteStore, records: Records) -> None:
    """Another process holds the write lock; a request gives up waiting. When
    the lock frees, its late BEGIN must not block the next transaction."""
    other = sqlite3.connect(sqlite_store.path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        waiting = asyncio.create_task(records.create(sqlite_store, "Patient", "p1"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        other.execute("COMMIT")
    finally:
        other.close()

    await asyncio.wait_for(records.create(sqlite_store, "Patient", "p2"), 5)
    assert await sqlite_store.read("Patient", "p1") is None
    assert await sqlite_store.read("Patient", "p2") is not None
