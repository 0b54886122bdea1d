"""Audit tests run against each store back end: ``sqlite`` (a file in
``tmp_path``), ``mongo`` (the in-memory double) and ``mongo-real`` when
``HIE_TEST_MONGODB_URL`` is set. Tests that edit the SQLite file directly use
``sqlite_store`` instead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hie.store import open_store
from hie.store.base import Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[Store]:
    opened = open_store(f"sqlite:///{db_path}")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
