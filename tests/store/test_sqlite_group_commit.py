"""Group commit in the SQLite store: transactions waiting for the write lock
join the open one, so one fsync commits many — and each caller still returns
only once its writes are committed, and a failing one undoes only its own."""

from __future__ import annotations

import asyncio

from store.conftest import Records

from hie.store.base import Transaction
from hie.store.sqlite import SQLiteStore


def count_commits(store: SQLiteStore) -> list[int]:
    commits = [0]
    original = store._commit

    def counting() -> None:
        commits[0] += 1
        original()

    store._commit = counting  # type: ignore[method-assign]
    return commits


async def test_concurrent_transactions_share_commits(sqlite_store: SQLiteStore,
                                                     records: Records):
    commits = count_commits(sqlite_store)
    seqs = await asyncio.gather(*[records.create(sqlite_store, "Patient", f"p{i}")
                                  for i in range(40)])
    assert len(set(seqs)) == 40
    assert commits[0] < 40  # they were grouped
    found = await sqlite_store.read_many([("Patient", f"p{i}") for i in range(40)])
    assert len(found) == 40


async def test_a_failing_member_undoes_only_its_own_writes(sqlite_store: SQLiteStore,
                                                           records: Records):
    async def failing(tx: Transaction) -> None:
        await tx.put(records.record("Patient", "bad"))
        raise RuntimeError("refused")

    async def fine(i: int) -> int:
        return await records.create(sqlite_store, "Patient", f"ok{i}")

    results = await asyncio.gather(fine(1), sqlite_store.transact(failing), fine(2),
                                   return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert await sqlite_store.read("Patient", "bad") is None
    assert await sqlite_store.read("Patient", "ok1") is not None
    assert await sqlite_store.read("Patient", "ok2") is not None


async def test_a_caller_returns_only_after_its_commit(sqlite_store: SQLiteStore,
                                                      records: Records):
    async def write(i: int) -> None:
        await records.create(sqlite_store, "Patient", f"c{i}")
        # a reader connection sees only committed data
        assert await sqlite_store.read("Patient", f"c{i}") is not None

    await asyncio.gather(*[write(i) for i in range(20)])


async def test_a_failed_commit_fails_every_member(sqlite_store: SQLiteStore, records: Records):
    original = sqlite_store._commit

    def broken() -> None:
        raise OSError("disk full")

    sqlite_store._commit = broken  # type: ignore[method-assign]
    results = await asyncio.gather(*[records.create(sqlite_store, "Patient", f"f{i}")
                                     for i in range(5)], return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    sqlite_store._commit = original  # type: ignore[method-assign]
    assert await sqlite_store.read_many([("Patient", f"f{i}") for i in range(5)]) == []
    await records.create(sqlite_store, "Patient", "after")  # the store still works
    assert await sqlite_store.read("Patient", "after") is not None
