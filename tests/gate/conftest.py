"""Fixtures of the consent gate's tests: a store of each back end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store.mongo_double import open_double_store

from hie.store import open_store
from hie.store.base import Store


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An opened, empty store: SQLite in a file, or MongoStore over the double."""
    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path}/gate.db")
        await opened.open()
    else:
        opened = await open_double_store()
    try:
        yield opened
    finally:
        await opened.close()
