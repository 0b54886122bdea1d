"""SQLite: the file — URLs, schema versions, settings, and data surviving a reopen."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from store.conftest import Records

from hie.store import open_store
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, SearchQuery, TokenMatch
from hie.store.sqlite import SQLiteStore
from hie.store.sqlite.schema import SCHEMA_VERSION, begin_immediate, connect


def test_from_url_relative_and_absolute() -> None:
    assert SQLiteStore.from_url("sqlite:///./var/hie.db").path == "./var/hie.db"
    assert SQLiteStore.from_url("sqlite:////abs/path.db").path == "/abs/path.db"
    assert isinstance(open_store("sqlite:///var/x.db"), SQLiteStore)
    for bad in ("sqlite://", "sqlite:///", "postgres:///x.db"):
        with pytest.raises(ValueError):
            SQLiteStore.from_url(bad)


async def test_open_creates_folder_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "hie.db"
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.ping()
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_connections_are_durable(tmp_path: Path) -> None:
    for writer in (True, False):
        conn = connect(str(tmp_path / "x.db"), writer=writer)
        try:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        finally:
            conn.close()


def test_a_write_waits_for_another_process_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    mine = connect(path, writer=True)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            begin_immediate(mine, wait_s=0.05)
        threading.Timer(0.1, other.execute, ("COMMIT",)).start()
        started = time.monotonic()
        begin_immediate(mine, wait_s=5)
        assert 0.05 < time.monotonic() - started < 2
        mine.execute("COMMIT")
    finally:
        other.close()
        mine.close()


async def test_data_survives_close_and_reopen(tmp_path: Path, records: Records) -> None:
    url = f"sqlite:///{tmp_path}/hie.db"
    index = IndexEntries(token=[("code", "", "A")])
    store = SQLiteStore.from_url(url)
    await store.open()
    seq = await records.create(store, "Observation", "o1", index=index)
    await records.put(store, records.record("Observation", "o1", version=2, index=index))
    await store.close()

    again = SQLiteStore.from_url(url)
    await again.open()
    try:
        current = await again.read("Observation", "o1")
        assert current is not None and current.version == 2 and current.seq == seq
        assert (await again.read_version("Observation", "o1", 1)).version == 1
        query = SearchQuery("Observation", (AnyOf((TokenMatch("code", "A"),)),))
        assert [r.id for r in (await again.search(query, limit=5)).resources] == ["o1"]
        assert await again.max_seq() == seq
        # new resources continue the sequence
        assert await records.create(again, "Patient", "p1") > seq
    finally:
        await again.close()


async def test_reopening_an_upgraded_file_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "hie.db"
    for _ in range(2):
        store = SQLiteStore(str(path))
        await store.open()
        await store.close()
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"resources", "versions", "idx_token", "idx_string", "idx_date", "idx_number",
            "idx_quantity", "idx_reference", "idx_uri"} <= tables


async def test_a_file_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hie.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = SQLiteStore(str(path))
    with pytest.raises(RuntimeError, match="newer"):
        await store.open()
    await store.close()


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "hie.db"))
    await store.open()
    await store.close()
    assert await store.ping() is False
    await store.close()  # closing twice is harmless
