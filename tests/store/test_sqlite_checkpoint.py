"""SQLite: WAL checkpoints run on the store's own thread, not in commits."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from hie.store.base import Transaction, WriteRecord
from hie.store.index import IndexEntries
from hie.store.sqlite import SQLiteStore
from hie.store.sqlite.checkpoint import BACKSTOP_PAGES, Checkpointer

#: Enough rows of ~4 KiB bodies to write well over SQLite's default automatic
#: checkpoint (1,000 pages) in one commit.
ROWS = 1500



async def _write_pages(store: SQLiteStore, prefix: str) -> None:
    body = b'{"x":"' + os.urandom(2000).hex().encode() + b'"}'

    async def run(tx: Transaction) -> None:
        await tx.put_many([WriteRecord("Binary", f"{prefix}{i}", 1, "2024-01-01T00:00:00",
                                       body, source="urn:test", index=IndexEntries())
                           for i in range(ROWS)])

    await store.transact(run)


def _wal_pages(path: str) -> int:
    wal = Path(path + "-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


async def test_a_commit_leaves_the_checkpoint_to_the_thread(sqlite_store: SQLiteStore):
    writer = sqlite_store._writer
    assert writer is not None
    assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
    checkpointer = sqlite_store._checkpointer
    assert checkpointer is not None
    await asyncio.to_thread(checkpointer.stop)  # nobody checkpoints now but commits
    await _write_pages(sqlite_store, "a")
    await _write_pages(sqlite_store, "b")
    # with SQLite's default the second commit would have checkpointed and
    # started the WAL over (~1,500 pages); here it holds both commits
    assert _wal_pages(sqlite_store.path) > 2 * ROWS
    conn = sqlite3.connect(sqlite_store.path)
    try:
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    assert (busy, copied) == (0, frames) and frames > 2 * ROWS


async def test_the_thread_checkpoints_soon_after_commits(sqlite_store: SQLiteStore):
    checkpointer = sqlite_store._checkpointer
    assert checkpointer is not None
    runs = checkpointer.runs
    await _write_pages(sqlite_store, "a")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        last = checkpointer.last
        if checkpointer.runs > runs and last is not None and last[1] > ROWS:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail(f"no checkpoint after the commit ({checkpointer.runs}, {checkpointer.last})")
    busy, frames, copied = checkpointer.last
    assert busy == 0 and copied == frames  # everything copied, nothing waited
    # the next commit starts the WAL over instead of growing it
    size = _wal_pages(sqlite_store.path)
    await _write_pages(sqlite_store, "b")
    assert _wal_pages(sqlite_store.path) <= size + 10
    assert [r.id for r in (await sqlite_store.read_many([("Binary", "a0"), ("Binary", "b0")]))] \
        == ["a0", "b0"]


async def test_closing_the_store_ends_the_thread(tmp_path: Path):
    store = SQLiteStore(str(tmp_path / "hie.db"))
    await store.open()
    assert any(t.name == "sqlite-checkpoint" for t in threading.enumerate())
    await store.close()
    assert not any(t.name == "sqlite-checkpoint" for t in threading.enumerate())


def test_a_failing_checkpoint_is_logged_and_the_thread_goes_on(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture):
    class Refusing:
        calls = 0

        def execute(self, sql: str) -> None:
            Refusing.calls += 1
            raise sqlite3.OperationalError("disk I/O error")

        def close(self) -> None:
            pass

    checkpointer = Checkpointer(Refusing, min_interval=0.01)  # type: ignore[arg-type]
    checkpointer.start()
    try:
        checkpointer.poke()
        deadline = time.monotonic() + 5
        while Refusing.calls < 2 and time.monotonic() < deadline:
            checkpointer.poke()
            time.sleep(0.02)
    finally:
        checkpointer.stop()
    assert Refusing.calls >= 2 and checkpointer.runs == 0
    assert "WAL checkpoint failed: disk I/O error" in caplog.text
