"""The batched writer: records go out in few transactions, nothing is dropped,
flush and close drain, a full queue makes callers wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from audit_records import read_record

from hie.audit.chain import event_id, read_head
from hie.audit.fhir import AUDIT_TYPE
from hie.audit.log import AuditLog, AuditLogClosed
from hie.audit.verify import verify
from hie.store.base import Store, StoreUnavailable, Transaction


class CountingStore:
    """Delegates to a real store; counts transactions, can hold them at a gate
    or fail the next few."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.transactions = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = 0

    async def transact(self, fn: Callable[[Transaction], Awaitable[Any]]) -> Any:
        await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailable("the store is down (test)")
        self.transactions += 1
        return await self.inner.transact(fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_records_are_written_in_batches_and_flush_waits_for_them(store: Store) -> None:
    counting = CountingStore(store)
    log = AuditLog(counting, interval=0.05, batch_size=1000)  # type: ignore[arg-type]
    for i in range(40):
        await log.record(read_record(i))
    assert log.pending > 0  # nothing waited for the store
    await log.flush()
    assert log.pending == 0 and log.written == 40
    assert counting.transactions <= 3  # one per batching interval, not one per record
    assert (await read_head(store)).sequence == 40
    result = await verify(store)
    assert result.intact and result.count == 40
    await log.close()


async def test_a_full_batch_is_written_before_the_interval_ends(store: Store) -> None:
    log = AuditLog(store, interval=30.0, batch_size=5)
    for i in range(5):
        await log.record(read_record(i))
    # far less than the 30 s interval: the full batch went out at once
    for _ in range(200):
        if log.written == 5:
            break
        await asyncio.sleep(0.01)
    assert log.written == 5
    await log.close()


async def test_close_drains_the_queue_and_refuses_more(store: Store) -> None:
    log = AuditLog(store, interval=10.0, batch_size=7)
    for i in range(23):
        await log.record(read_record(i))
    await log.close()
    assert log.written == 23
    assert (await verify(store)).count == 23
    with pytest.raises(AuditLogClosed):
        await log.record(read_record(99))


async def test_a_full_queue_makes_record_wait_instead_of_dropping(store: Store) -> None:
    counting = CountingStore(store)
    counting.gate.clear()  # the store stalls
    log = AuditLog(counting, interval=0.0, batch_size=2, max_queue=2)  # type: ignore[arg-type]
    for i in range(4):  # the writer holds one batch of 2; the queue holds 2 more
        await asyncio.wait_for(log.record(read_record(i)), 1)
    blocked = asyncio.create_task(log.record(read_record(4)))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    counting.gate.set()  # the store is back
    await asyncio.wait_for(blocked, 2)
    await log.close()
    assert log.written == 5
    assert (await verify(store)).count == 5


async def test_failed_appends_are_retried_in_order(store: Store) -> None:
    counting = CountingStore(store)
    counting.fail_next = 2
    log = AuditLog(counting, interval=0.0, batch_size=3)  # type: ignore[arg-type]
    for i in range(6):
        await log.record(read_record(i))
    await asyncio.wait_for(log.close(), 5)
    assert log.failures == 2 and log.written == 6
    result = await verify(store)
    assert result.intact and result.count == 6
    found = await store.read_many([(AUDIT_TYPE, event_id(n)) for n in range(1, 7)])
    order = {r.id: orjson.loads(r.body)["entity"][1]["what"]["reference"] for r in found}
    assert [order[event_id(n)] for n in range(1, 7)] == [f"Observation/o{i}" for i in range(6)]


async def test_flush_returns_while_records_keep_arriving(store: Store) -> None:
    log = AuditLog(store, interval=0.01, batch_size=4)
    stop = asyncio.Event()

    async def busy_reader() -> None:
        n = 0
        while not stop.is_set():
            await log.record(read_record(n))
            n += 1
            await asyncio.sleep(0.001)

    reader = asyncio.create_task(busy_reader())
    await asyncio.sleep(0.02)
    await asyncio.wait_for(log.flush(), 5)  # not starved by the newer records
    stop.set()
    await reader
    await log.close()
    assert log.pending == 0 and (await verify(store)).intact


async def test_close_can_give_up_on_a_dead_store(store: Store,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    counting = CountingStore(store)
    counting.fail_next = 10**9  # never comes back
    log = AuditLog(counting, interval=0.0, max_backoff=0.01)  # type: ignore[arg-type]
    await log.record(read_record(1))
    await log.close(give_up_after=0.1)
    assert log.pending == 1
    assert "1 records not written" in caplog.text
