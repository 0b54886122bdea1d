"""Where the SQLite store runs its statements: the small ones of a write
transaction and reads by key on the event loop's thread, a big ``put_many``
on the writer thread (so it does not stall the process's other requests) —
with the same results either way."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from store.conftest import Records

from hie.store.base import Transaction, WriteRecord
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, SearchQuery, TokenMatch
from hie.store.sqlite import SQLiteStore, writes
from hie.store.sqlite import store as store_module


def spy_put_many(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the thread each ``writes.put_many`` call runs on."""
    threads: list[str] = []
    original = writes.put_many

    def spying(*args: object) -> list[int]:
        threads.append(threading.current_thread().name)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(writes, "put_many", spying)
    return threads


def observations(records: Records, n: int, codes: int) -> list[WriteRecord]:
    index = IndexEntries(token=[("code", "http://loinc.org", f"C{i}") for i in range(codes)])
    return [records.record("Observation", f"o{i}", index=index) for i in range(n)]


async def put_all(store: SQLiteStore, batch: list[WriteRecord]) -> list[int]:
    async def run(tx: Transaction) -> list[int]:
        return await tx.put_many(batch)

    return await store.transact(run)


@pytest.mark.parametrize("n, codes, where", [(3, 2, "loop"), (40, 4, "writer")])
async def test_put_many_runs_small_batches_inline_and_big_ones_on_the_writer(
        sqlite_store: SQLiteStore, records: Records, monkeypatch: pytest.MonkeyPatch,
        n: int, codes: int, where: str) -> None:
    threads = spy_put_many(monkeypatch)
    batch = observations(records, n, codes)
    assert (writes.row_count(batch) > store_module.INLINE_ROWS) == (where == "writer")

    seqs = await put_all(sqlite_store, batch)

    on_loop = threads == [threading.current_thread().name]
    assert on_loop == (where == "loop"), threads
    assert len(set(seqs)) == n
    query = SearchQuery("Observation", (AnyOf((TokenMatch("code", f"C{codes - 1}"),)),))
    page = await sqlite_store.search(query, limit=100)
    assert sorted(r.id for r in page.resources) == sorted(f"o{i}" for i in range(n))
    got = await sqlite_store.read("Observation", "o0")
    assert got is not None and got.seq == seqs[0]


async def test_read_by_key_after_close_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "closed.db"))
    await store.open()
    await store.close()
    with pytest.raises(store_module.StoreError):
        await store.read("Patient", "p1")
