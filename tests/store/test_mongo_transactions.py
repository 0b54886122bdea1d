"""Transactions of the Mongo back end: rollback, retries on write conflicts, locks,
and the concerns production relies on (majority + journal, snapshot reads)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from pymongo.errors import InvalidOperation
from store.mongo_double import DoubleClient, open_double_store

from hie.store.base import Transaction, VersionConflict, WriteRecord
from hie.store.index import IndexEntries
from hie.store.mongo import MongoStore, transaction
from hie.store.mongo.transaction import MAX_ATTEMPTS
from hie.store.query import AnyOf, SearchQuery, TokenMatch

T0 = "2024-05-01T08:00:00.000000"


def _patient(id: str, version: int = 1, identifier: str = "110101199003077777") -> WriteRecord:
    index = IndexEntries(token=[("identifier", "urn:resident", identifier)])
    return WriteRecord("Patient", id, version, T0, b'{"resourceType":"Patient"}',
                       source="Organization/h1", index=index)


async def _store() -> tuple[MongoStore, DoubleClient]:
    store = await open_double_store()
    assert isinstance(store, MongoStore)
    return store, store.client


async def _counts(client: DoubleClient, db_name: str) -> dict[str, int]:
    db = client.get_database(db_name)
    return {name: await db.get_collection(name).count_documents({})
            for name in ("resources", "versions", "counters", "locks")}


class Boom(Exception):
    pass


async def test_failed_transaction_leaves_nothing_behind() -> None:
    store, client = await _store()

    async def fn(tx: Transaction) -> None:
        await tx.lock("Patient?identifier=x")
        await tx.put(_patient("p1"))
        await tx.put(_patient("p2"))
        assert (await tx.read("Patient", "p1")) is not None  # sees its own writes
        raise Boom

    with pytest.raises(Boom):
        await store.transact(fn)
    assert await _counts(client, store.db_name) == {
        "resources": 0, "versions": 0, "counters": 1, "locks": 0}
    assert await store.max_seq() == 0
    assert await store.read("Patient", "p1") is None
    await store.close()


async def test_rollback_keeps_earlier_committed_data_intact() -> None:
    store, client = await _store()
    await store.transact(lambda tx: tx.put(_patient("p1")))

    async def fn(tx: Transaction) -> None:
        await tx.put(_patient("p1", version=2, identifier="changed"))
        await tx.put(_patient("p2"))
        raise Boom

    with pytest.raises(Boom):
        await store.transact(fn)
    current = await store.read("Patient", "p1")
    assert current is not None and current.version == 1
    query = SearchQuery("Patient", where=(AnyOf((TokenMatch("identifier", "changed"),)),))
    assert await store.count(query) == 0
    assert await _counts(client, store.db_name) == {
        "resources": 1, "versions": 1, "counters": 1, "locks": 0}
    await store.close()


@pytest.mark.parametrize("inject", ["write", "commit"])
async def test_transient_conflicts_rerun_fn_until_it_commits(inject: str) -> None:
    store, client = await _store()
    if inject == "write":
        client.inject_write_conflicts(3)
    else:
        client.inject_commit_conflicts(3)
    runs = 0

    async def fn(tx: Transaction) -> int:
        nonlocal runs
        runs += 1
        return await tx.put(_patient("p1"))

    seq = await store.transact(fn)
    assert runs == 4
    assert seq == 1  # the aborted attempts' counter increments were rolled back
    assert await _counts(client, store.db_name) == {
        "resources": 1, "versions": 1, "counters": 1, "locks": 0}
    assert client.commits == 1
    await store.close()


async def test_endless_conflicts_end_in_version_conflict(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transaction, "_backoff", lambda attempt: 0.0)
    store, client = await _store()
    client.inject_commit_conflicts(MAX_ATTEMPTS)
    with pytest.raises(VersionConflict):
        await store.transact(lambda tx: tx.put(_patient("p1")))
    assert await store.read("Patient", "p1") is None
    await store.close()


async def test_put_refuses_a_stale_version_and_writes_nothing() -> None:
    store, client = await _store()
    await store.transact(lambda tx: tx.put(_patient("p1")))
    with pytest.raises(VersionConflict):
        await store.transact(lambda tx: tx.put(_patient("p1")))  # version 1 again
    with pytest.raises(VersionConflict):
        await store.transact(lambda tx: tx.put(_patient("p1", version=3)))
    assert (await _counts(client, store.db_name))["versions"] == 1
    await store.close()


async def test_parallel_conditional_creates_conflict_on_the_lock_and_retry() -> None:
    store, client = await _store()
    query = SearchQuery("Patient", where=(AnyOf((TokenMatch("identifier", "42"),)),))
    runs = 0

    async def create(n: int) -> bool:
        async def fn(tx: Transaction) -> bool:
            nonlocal runs
            runs += 1
            await tx.lock("Patient?identifier=42")
            if await tx.search_keys(query, 2):
                return False
            await asyncio.sleep(0)  # let the others interleave
            await tx.put(_patient(f"p{n}", identifier="42"))
            return True

        return await store.transact(fn)

    created = await asyncio.gather(*(create(n) for n in range(8)))
    assert created.count(True) == 1
    assert await store.count(query) == 1
    # they really ran concurrently: the losers hit the lock's write conflict and re-ran
    assert client.aborts > 0 and runs > 8
    await store.close()


@pytest.mark.parametrize(("keys", "conflicts"), [(("a", "a"), True), (("a", "b"), False)])
async def test_only_transactions_locking_the_same_key_conflict(
        keys: tuple[str, str], conflicts: bool) -> None:
    store, client = await _store()
    both_locked = asyncio.Event()
    locked = 0

    async def hold(key: str) -> None:
        async def fn(tx: Transaction) -> None:
            nonlocal locked
            await tx.lock(key)
            locked += 1
            if locked == 2:
                both_locked.set()
            # wait (bounded) until the other one holds its lock too
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(both_locked.wait(), 0.05)

        await store.transact(fn)

    await asyncio.gather(hold(keys[0]), hold(keys[1]))
    assert (client.aborts > 0) is conflicts
    await store.close()


async def test_others_never_see_uncommitted_writes() -> None:
    store, _client = await _store()

    async def fn(tx: Transaction) -> Any:
        await tx.put(_patient("p1"))
        # another request, running while this transaction is open
        return await asyncio.create_task(store.read("Patient", "p1"))

    assert await store.transact(fn) is None
    assert await store.read("Patient", "p1") is not None
    await store.close()


async def test_writes_use_majority_journaled_concern_and_snapshot_transactions() -> None:
    store, client = await _store()
    db = client.get_database(store.db_name)
    seen: dict[str, Any] = {}
    original = client.start_session

    def spy_session(**kwargs: Any) -> Any:
        session = original(**kwargs)
        seen["session"] = session
        return session

    client.start_session = spy_session  # type: ignore[method-assign]
    await store.transact(lambda tx: tx.put(_patient("p1")))
    session = seen["session"]
    assert session.read_concern.level == "snapshot"
    assert session.write_concern.document == {"w": "majority", "j": True}
    cols = store._cols  # the collections the store reads and writes through
    for col in (cols.resources, cols.versions, cols.counters, cols.locks):
        assert col.write_concern.document == {"w": "majority", "j": True}
        assert col.read_concern.level == "majority"
    assert db.name == store.db_name
    await store.close()


async def test_double_rejects_an_operation_that_forgot_its_session() -> None:
    store, client = await _store()

    async def fn(tx: Transaction) -> None:
        await store.read("Patient", "p1")  # not through tx: outside the transaction

    with pytest.raises(InvalidOperation):
        await store.transact(fn)
    # ... and the failed transaction released the double's lock
    assert await store.read("Patient", "p1") is None
    await store.close()


async def test_lock_writes_one_document_per_key_so_lockers_of_a_key_conflict() -> None:
    store, client = await _store()
    for key in ("Patient?identifier=1", "Patient?identifier=1", "Patient?identifier=2"):
        await store.transact(lambda tx, key=key: tx.lock(key))
    locks = await client.get_database(store.db_name).get_collection("locks").find({}).to_list()
    assert sorted(d["n"] for d in locks) == [1, 2]  # same key: the same document, written twice
    assert all(len(d["_id"]) == 64 for d in locks)  # hashed: any key length is fine
    await store.close()
