"""Appending to the hash chain and verifying it, on every back end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from audit_records import read_record

from hie.audit.chain import (
    GENESIS,
    HEAD_ID,
    HEAD_TYPE,
    append,
    append_in_tx,
    chain_fields,
    chain_hash,
    event_id,
    read_head,
    without_hash,
)
from hie.audit.fhir import AUDIT_TYPE
from hie.audit.verify import verify
from hie.store import open_store
from hie.store.base import Store, Transaction, WriteRecord
from hie.store.index import IndexEntries


async def events(store: Store, n: int) -> list[dict]:
    found = await store.read_many([(AUDIT_TYPE, event_id(i)) for i in range(1, n + 1)])
    by_id = {r.id: orjson.loads(r.body) for r in found}
    return [by_id[event_id(i)] for i in range(1, n + 1)]


async def test_empty_store_verifies_as_an_intact_empty_chain(store: Store) -> None:
    result = await verify(store)
    assert result.intact and result.count == 0 and result.head_hash == GENESIS


async def test_appended_records_are_consecutive_and_linked(store: Store) -> None:
    await append(store, [read_record(1), read_record(2)])
    await append(store, [read_record(3)])

    stored = await events(store, 3)
    fields = [chain_fields(e) for e in stored]
    assert [f[0] for f in fields] == [1, 2, 3]  # type: ignore[index]
    assert fields[0][1] == GENESIS  # type: ignore[index]
    for prev, cur in zip(fields, fields[1:], strict=False):
        assert cur[1] == prev[2]  # type: ignore[index]
    # the hash is sha256(previous || canonical JSON of the event without its hash)
    assert chain_hash(fields[1][1], without_hash(stored[1])) == fields[1][2]  # type: ignore[index]
    head = await read_head(store)
    assert (head.sequence, head.hash) == (3, fields[2][2])  # type: ignore[index]
    result = await verify(store)
    assert result.intact and result.count == 3 and result.head_sequence == 3


async def test_verify_pages_through_long_chains(store: Store) -> None:
    await append(store, [read_record(i) for i in range(25)])
    result = await verify(store, page=4)
    assert result.intact and result.count == 25


async def test_append_in_tx_commits_with_the_write_or_not_at_all(store: Store) -> None:
    body = orjson.dumps({"resourceType": "Observation", "id": "o1"})

    async def write_and_audit(tx: Transaction) -> None:
        await tx.put(WriteRecord("Observation", "o1", 1, "2026-01-01T00:00:00.000000", body,
                                 index=IndexEntries()))
        await append_in_tx(tx, [read_record(1, interaction="create", status=201)])

    await store.transact(write_and_audit)
    assert (await read_head(store)).sequence == 1

    async def fails(tx: Transaction) -> None:
        await tx.put(WriteRecord("Observation", "o2", 1, "2026-01-01T00:00:00.000000", body,
                                 index=IndexEntries()))
        await append_in_tx(tx, [read_record(2, interaction="create", status=201)])
        raise RuntimeError("the write failed after auditing")

    with pytest.raises(RuntimeError):
        await store.transact(fails)
    assert await store.read("Observation", "o2") is None
    assert await store.read(AUDIT_TYPE, event_id(2)) is None
    assert (await read_head(store)).sequence == 1
    assert (await verify(store)).intact


async def test_many_concurrent_appenders_get_consecutive_sequences(store: Store) -> None:
    await asyncio.gather(*(append(store, [read_record(10 * t + i) for i in range(3)])
                           for t in range(15)))
    result = await verify(store)
    assert result.intact and result.count == 45
    stored = await events(store, 45)
    assert [chain_fields(e)[0] for e in stored] == list(range(1, 46))  # type: ignore[index]
    # every record made it exactly once
    refs = sorted(e["entity"][1]["what"]["reference"] for e in stored)
    assert refs == sorted(f"Observation/o{10 * t + i}" for t in range(15) for i in range(3))


async def test_two_processes_appending_to_one_sqlite_file_serialise(tmp_path: Path) -> None:
    # two store instances on one file stand for two worker processes: they share
    # nothing but SQLite's file lock
    url = f"sqlite:///{tmp_path}/shared.db"
    a, b = open_store(url), open_store(url)
    await a.open()
    await b.open()
    try:
        await asyncio.gather(*(append(s, [read_record(i)])
                               for i in range(20) for s in (a, b)))
        result = await verify(a)
        assert result.intact and result.count == 40
    finally:
        await a.close()
        await b.close()


async def test_write_conflicts_on_mongodb_are_retried_without_a_gap(tmp_path: Path) -> None:
    from store.mongo_double import open_double_store

    store = await open_double_store()
    try:
        await append(store, [read_record(1)])
        store.client.inject_write_conflicts(3)  # type: ignore[attr-defined]
        await append(store, [read_record(2), read_record(3)])
        result = await verify(store)
        assert result.intact and result.count == 3
    finally:
        await store.close()


async def test_a_record_rewritten_through_the_store_is_reported_changed(store: Store) -> None:
    await append(store, [read_record(i) for i in range(5)])
    current = await store.read(AUDIT_TYPE, event_id(3))
    assert current is not None
    event = orjson.loads(current.body)
    event["outcome"] = "4"  # someone turns a permitted access into a denied one
    await store.transact(lambda tx: tx.put(WriteRecord(
        AUDIT_TYPE, event_id(3), 2, current.last_updated, orjson.dumps(event),
        index=IndexEntries())))

    result = await verify(store)
    assert not result.intact
    assert (result.problem, result.sequence, result.count) == ("changed", 3, 2)
    assert result.id == event_id(3)
    assert b'"outcome":"4"' in (result.body or b"")


async def test_a_deleted_record_is_reported_removed(store: Store) -> None:
    await append(store, [read_record(i) for i in range(5)])
    await store.transact(lambda tx: tx.put(WriteRecord(
        AUDIT_TYPE, event_id(2), 2, "2026-01-01T00:00:00.000000", b"", deleted=True)))
    result = await verify(store)
    assert (result.intact, result.problem, result.sequence) == (False, "removed", 2)


async def test_a_rewound_head_is_reported(store: Store) -> None:
    await append(store, [read_record(i) for i in range(4)])
    events_ = await events(store, 4)
    third_hash = chain_fields(events_[2])[2]  # type: ignore[index]
    head = await read_head(store)
    # cut the last record from view by moving the head back one
    await store.transact(lambda tx: tx.put(WriteRecord(
        HEAD_TYPE, HEAD_ID, head.version + 1, "2026-01-01T00:00:00.000000",
        orjson.dumps({"sequence": 3, "hash": third_hash}), index=IndexEntries())))
    result = await verify(store)
    assert (result.intact, result.problem) == (False, "head")
    assert "rewound" in result.message


async def test_an_anchor_catches_a_rewritten_chain(store: Store) -> None:
    await append(store, [read_record(i) for i in range(3)])
    good = await verify(store)
    assert (await verify(store, anchor=(good.head_sequence, good.head_hash))).intact
    result = await verify(store, anchor=(3, "f" * 64))
    assert (result.intact, result.problem, result.sequence) == (False, "changed", 3)
    result = await verify(store, anchor=(9, good.head_hash))
    assert (result.intact, result.problem) == (False, "head")
