"""Counting usage in memory and adding it to the store: sums stay right across
flushes, failures and several worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from hie.metering.counters import UsageMeter
from hie.metering.service import USAGE_TYPE, Usage, add_usage, list_usage, totals, usage_id
from hie.store import open_store
from hie.store.base import Store, StoreUnavailable, Transaction

DAY = date(2026, 11, 25)


async def stored(store: Store, org: str, day: date = DAY) -> dict[str, Any] | None:
    found = await store.read(USAGE_TYPE, usage_id(org, day))
    return None if found is None else orjson.loads(found.body)


async def test_counting_touches_nothing_until_a_flush(store: Store) -> None:
    meter = UsageMeter(store, today=lambda: DAY)
    meter.count("h1", resources_read=3, bytes_in=100, bytes_out=2000)
    meter.count("h1", resources_written=2, bytes_in=50)
    meter.count("h2", resources_read=1)
    assert await stored(store, "h1") is None
    assert meter.pending()[("h1", DAY)] == Usage(2, 3, 2, 150, 2000)

    await meter.flush()
    assert meter.pending() == {}
    assert await stored(store, "h1") == {
        "organization": "h1", "date": "2026-11-25", "requests": 2, "resources_read": 3,
        "resources_written": 2, "bytes_in": 150, "bytes_out": 2000}

    meter.count("h1", resources_read=10)
    await meter.flush()
    assert (await stored(store, "h1"))["resources_read"] == 13  # type: ignore[index]
    assert (await stored(store, "h1"))["requests"] == 3  # type: ignore[index]


async def test_two_processes_add_up(store: Store) -> None:
    # two meters on one store: two worker processes flushing the same days
    a = UsageMeter(store, today=lambda: DAY)
    b = UsageMeter(store, today=lambda: DAY)
    for round_ in range(5):
        for _ in range(10):
            a.count("h1", resources_read=1, bytes_out=10)
            b.count("h1", resources_read=2, bytes_out=20)
        b.count("h2", resources_written=round_)
        await asyncio.gather(a.flush(), b.flush())
    h1 = await stored(store, "h1")
    assert h1 is not None
    assert (h1["requests"], h1["resources_read"], h1["bytes_out"]) == (100, 150, 1500)
    assert (await stored(store, "h2"))["resources_written"] == 10  # type: ignore[index]


async def test_two_sqlite_processes_on_one_file_add_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    s1, s2 = open_store(url), open_store(url)
    await s1.open()
    await s2.open()
    try:
        adds = [add_usage(s, {("h1", DAY): Usage(requests=1, bytes_in=7)},
                          "2026-11-25T00:00:00.000000")
                for _ in range(15) for s in (s1, s2)]
        await asyncio.gather(*adds)
        doc = await stored(s1, "h1")
        assert doc is not None and (doc["requests"], doc["bytes_in"]) == (30, 210)
    finally:
        await s1.close()
        await s2.close()


async def test_write_conflicts_on_mongodb_are_retried_without_losing_counts() -> None:
    from store.mongo_double import open_double_store

    store = await open_double_store()
    try:
        meter = UsageMeter(store, today=lambda: DAY)
        meter.count("h1", resources_read=4)
        store.client.inject_write_conflicts(2)  # type: ignore[attr-defined]
        await meter.flush()
        assert (await stored(store, "h1"))["resources_read"] == 4  # type: ignore[index]
    finally:
        await store.close()


class FailingStore:
    """A store whose transactions fail while ``down`` is set."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = True

    async def transact(self, fn: Callable[[Transaction], Awaitable[Any]]) -> Any:
        if self.down:
            raise StoreUnavailable("down (test)")
        return await self.inner.transact(fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_failed_flush_keeps_the_counts_for_the_next(store: Store) -> None:
    failing = FailingStore(store)
    meter = UsageMeter(failing, today=lambda: DAY)  # type: ignore[arg-type]
    meter.count("h1", resources_read=5)
    with pytest.raises(StoreUnavailable):
        await meter.flush()
    meter.count("h1", resources_read=1)  # counted while the store was down
    failing.down = False
    await meter.flush()
    doc = await stored(store, "h1")
    assert doc is not None and (doc["requests"], doc["resources_read"]) == (2, 6)


async def test_the_periodic_flush_and_close(store: Store) -> None:
    meter = UsageMeter(store, interval=0.02, today=lambda: DAY)
    await meter.start()
    meter.count("h1")
    for _ in range(200):
        if await stored(store, "h1"):
            break
        await asyncio.sleep(0.01)
    assert (await stored(store, "h1"))["requests"] == 1  # type: ignore[index]
    meter.count("h1", bytes_out=9)
    await meter.close()  # shutdown flushes what is left
    assert (await stored(store, "h1"))["bytes_out"] == 9  # type: ignore[index]


async def test_listing_by_organisation_and_range(store: Store) -> None:
    counts = {(org, date(2026, 11, d)): Usage(requests=d)
              for org in ("h1", "h2") for d in (1, 2, 3, 30)}
    await add_usage(store, counts, "2026-11-30T00:00:00.000000")
    rows = await list_usage(store, organization=None, start=date(2026, 11, 2),
                            end=date(2026, 11, 3), page=3)
    assert [(r.organization, r.date) for r in rows] == [
        ("h1", "2026-11-02"), ("h1", "2026-11-03"), ("h2", "2026-11-02"), ("h2", "2026-11-03")]
    rows = await list_usage(store, organization="h2", start=date(2026, 11, 1),
                            end=date(2026, 11, 30))
    assert [r.date for r in rows] == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-30"]
    assert totals(rows)["h2"].requests == 36
